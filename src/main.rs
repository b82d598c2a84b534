use std::process::ExitCode;

fn main() -> ExitCode {
    match sesija::cli::run(std::env::args_os()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sesija: {e}");
            ExitCode::FAILURE
        }
    }
}
