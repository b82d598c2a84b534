//! Work that must not take the core from page views runs at a lower CPU
//! priority: password hashing and the database writer (logins, logouts, the
//! batched deadline moves and the purge of expired sessions). A hash or a
//! purge batch costs tens of milliseconds of CPU; at equal priority it would
//! hold the core for whole time slices while page views queue. At niceness
//! 19 such work still gets a share when the machine is busy, so it never
//! stalls, and all of the CPU that page views leave idle.

/// Niceness of background work.
pub const BACKGROUND_NICENESS: i32 = 19;

/// Lowers the priority of the calling thread.
pub fn lower_this_thread() {
    lower(rustix::thread::gettid());
}

/// Lowers the priority of every thread of this process whose name starts
/// with `prefix` (threads we do not start ourselves, such as sqlx's
/// connection threads, which are named on creation). Linux only; elsewhere
/// it does nothing.
pub fn lower_threads_named(prefix: &str) {
    for task in threads_named(prefix) {
        let tid = task.file_name().and_then(|t| t.to_str()).and_then(|t| t.parse::<i32>().ok());
        if let Some(pid) = tid.and_then(rustix::process::Pid::from_raw) {
            lower(pid);
        }
    }
}

fn lower(thread: rustix::process::Pid) {
    if let Err(e) = rustix::process::setpriority_process(Some(thread), BACKGROUND_NICENESS) {
        log::warn!("cannot lower the priority of background work: {e}");
    }
}

/// The niceness of each thread of this process whose name starts with
/// `prefix` (Linux), for tests and diagnostics.
pub fn niceness_of_threads_named(prefix: &str) -> Vec<i32> {
    threads_named(prefix)
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            // After the parenthesised name, niceness is the 17th field.
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            rest.split(' ').nth(16)?.parse().ok()
        })
        .collect()
}

/// `/proc/self/task/<tid>` of each thread whose name starts with `prefix`.
fn threads_named(prefix: &str) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten().map(|task| task.path()).filter(
        move |task| std::fs::read_to_string(task.join("comm")).is_ok_and(|name| name.starts_with(prefix)),
    )
}
