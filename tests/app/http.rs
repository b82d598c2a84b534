//! Just enough HTTP/1.1 to drive the real binary (and a WebDriver server)
//! from tests: one request per connection, cookies kept like a browser.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str())
    }
}

pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" && method != "DELETE" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let raw = read_response(&mut stream)?;
    parse_response(&raw).ok_or_else(|| std::io::Error::other("malformed response"))
}

/// Reads one response: up to its Content-Length, the end of its chunks, or
/// the end of the stream (a peer may keep the connection open regardless).
fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let body = raw.len() - split - 4;
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body >= n) || (head.contains("chunked") && raw.ends_with(b"0\r\n\r\n"))
            {
                return Ok(raw);
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = out;
    }
    Some(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// A cookie-keeping client of one server.
#[derive(Clone)]
pub struct Browser {
    pub port: u16,
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(port: u16) -> Browser {
        Browser { port, cookies: BTreeMap::new() }
    }

    pub fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.try_send(method, path, body).expect("request")
    }

    /// [`Browser::send`], with a connection the server cut (a crash test
    /// kills it mid-request) as an error rather than a panic.
    pub fn try_send(&mut self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Response> {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = vec![("User-Agent", "sesija-tests/1.0")];
        if !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let res = request(self.port, method, path, &headers, body)?;
        for set in res.set_cookies() {
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Ok(res)
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: &str) -> Response {
        self.send("POST", path, Some(body))
    }
}

/// The real `sesija` binary, running in a working directory of the test's.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub output: Arc<Mutex<String>>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A command for the binary with a clean environment: only `envs` apply.
pub fn sesija(workdir: &std::path::Path, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sesija"));
    cmd.current_dir(workdir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a command line of the binary to its end, with `stdin` (if any) as
/// its whole input: how an operator's script passes a password.
pub fn run_cli(workdir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    run_cli_with(workdir, &[], args, stdin)
}

impl crate::helpers::TestApp {
    /// The command line against this app's data (its database and key on
    /// PostgreSQL), run where the app's data directory is `./data`.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let (work, envs) = (self.dir.path().to_owned(), self.envs());
        let args: Vec<String> = args.iter().map(std::string::ToString::to_string).collect();
        tokio::task::spawn_blocking(move || {
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli_with(&work, &envs, &args, None)
        })
        .await
        .unwrap()
    }
}

/// [`run_cli`] with `envs` (a configuration in `ROCKET_*` variables).
pub fn run_cli_with(
    workdir: &std::path::Path,
    envs: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = sesija(workdir, envs)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A command that refuses before reading its input (the account
        // exists already) may have closed it: its output says why.
        if let Err(e) = input.write_all(text.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}

impl Server {
    /// Starts the server on `port` and waits until `/healthz` answers.
    pub fn start(workdir: &std::path::Path, port: u16, envs: &[(&str, &str)]) -> Server {
        Server::start_as(workdir, port, envs, None)
    }

    /// [`Server::start`], as user and group `uid` when given.
    pub fn start_as(workdir: &std::path::Path, port: u16, envs: &[(&str, &str)], uid: Option<u32>) -> Server {
        let port_text = port.to_string();
        let mut all = vec![("ROCKET_PORT", port_text.as_str()), ("ROCKET_CLI_COLORS", "false")];
        all.extend_from_slice(envs);
        let mut cmd = sesija(workdir, &all);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut server = Server { child, port, output };
        let started = Instant::now();
        loop {
            if let Ok(res) = request(port, "GET", "/healthz", &[], None) {
                if res.status == 200 {
                    break;
                }
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited with {status}: {}", server.output());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "server did not start: {}", server.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Give the liftoff lines a moment to be read.
        std::thread::sleep(Duration::from_millis(100));
        server
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(self) -> (Option<i32>, String) {
        self.signal_term();
        self.wait()
    }

    pub fn signal_term(&self) {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
    }

    /// Waits (at most 15 s) for the exit code.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (status.code(), self.output());
            }
            if started.elapsed() > Duration::from_secs(15) {
                self.child.kill().unwrap();
                panic!("no exit within 15 s of SIGTERM: {}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
