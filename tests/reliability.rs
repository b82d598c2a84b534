//! The reliability suite: load with churn, crashes, a full, read-only or
//! locked database, and hostile input, each against the real binary on a
//! real SQLite file, each printing its figures. Slow by design, so ignored by
//! the quick suite:
//!
//! ```sh
//! cargo test --release --test reliability -- --ignored --nocapture --test-threads 1
//! ```
//!
//! The database-fault scenarios mount small tmpfs file systems and run the
//! server as another user, and so need root; the PostgreSQL crash rounds
//! start a cluster of their own and need Debian's postgresql installed. `RELIABILITY_SECONDS` shortens or lengthens the load scenario (60).

#[allow(dead_code)]
#[path = "app/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "app/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "app/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "app/server.rs"]
mod server;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helpers::{csrf_in, form, PASSWORD};
use http::{free_port, request, run_cli, Browser, Server};
use server::{block_on, first_account};
use tempfile::TempDir;

fn add_user(work: &Path, name: &str) {
    let out = run_cli(work, &["user", "add", name, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Logs in; `Some(cookie value)` once the 303 with its cookie was fully received.
fn try_login(b: &mut Browser, name: &str) -> Option<(u16, String)> {
    let page = b.try_send("GET", "/login", None).ok()?;
    if page.status != 200 {
        return None;
    }
    let body = form(&[("username", name), ("password", PASSWORD), ("csrf_token", &csrf_in(&page.body))]);
    // A connection cut by `kill -9` is an expected failure, not a panic.
    let res = b.try_send("POST", "/login", Some(&body)).ok()?;
    (res.status == 303).then(|| (res.status, b.cookies.get("sesija").cloned().unwrap_or_default()))
}

fn integrity(db: &Path) -> String {
    block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let r = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&pool).await.unwrap();
        pool.close().await;
        r
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[derive(Default)]
struct Tally {
    statuses: Mutex<BTreeMap<u16, u64>>,
    latencies: Mutex<Vec<Duration>>,
    unexpected_logouts: AtomicU64,
    created: AtomicU64,
    logouts: AtomicU64,
    revocations: AtomicU64,
}

impl Tally {
    fn record(&self, status: u16, took: Duration) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
        self.latencies.lock().unwrap().push(took);
    }
}

/// Each user's "log out all other sessions" runs: when each started and,
/// once answered, when it ended.
type Revoked = Mutex<HashMap<String, Vec<(Instant, Option<Instant>)>>>;

/// Whether a revoke-others of `user` may have ended a session that was
/// logged in at `login_at`.
fn maybe_revoked(revoked: &Revoked, user: &str, login_at: Instant) -> bool {
    revoked
        .lock()
        .unwrap()
        .get(user)
        .is_some_and(|runs| runs.iter().any(|(_, end)| end.is_none_or(|e| e > login_at)))
}

#[test]
#[ignore]
fn load_with_churn_loses_nothing_and_never_fails() {
    let seconds: u64 = std::env::var("RELIABILITY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let idle = 4;
    let work = TempDir::new().unwrap();
    let port = free_port();
    let envs = [
        ("ROCKET_PROFILE", "release"),
        ("ROCKET_LOG_LEVEL", "critical"),
        ("ROCKET_SESSION_IDLE_TIMEOUT", "4"),
        ("ROCKET_SESSION_TOUCH_INTERVAL", "1"),
        ("ROCKET_SESSION_PURGE_INTERVAL", "1"),
        ("ROCKET_LOGIN_MAX_FAILURES", "1000"),
        ("ROCKET_METRICS", "true"),
    ];
    let server = Server::start(work.path(), port, &envs);
    drop(first_account(&server, "user0"));
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    for name in &users[1..] {
        add_user(work.path(), name);
    }

    let tally = Arc::new(Tally::default());
    let revoked: Arc<Revoked> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut threads = Vec::new();
    for c in 0..64u64 {
        let (tally, revoked, stop, name) =
            (tally.clone(), revoked.clone(), stop.clone(), users[c as usize % 8].clone());
        threads.push(std::thread::spawn(move || {
            let mut b = Browser::new(port);
            // (logged in at, last successful activity)
            let mut live: Option<(Instant, Instant)> = None;
            let mut rng = c.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut roll = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % 1000
            };
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                // A person clicks every 20 ms or so.
                std::thread::sleep(Duration::from_millis(20));
                let started = Instant::now();
                let Some((login_at, seen)) = live else {
                    let page = b.get("/login");
                    tally.record(page.status, started.elapsed());
                    let body = form(&[
                        ("username", &name),
                        ("password", PASSWORD),
                        ("csrf_token", &csrf_in(&page.body)),
                    ]);
                    let t = Instant::now();
                    let res = b.post("/login", &body);
                    tally.record(res.status, t.elapsed());
                    if res.status == 303 {
                        tally.created.fetch_add(1, Ordering::Relaxed);
                        live = Some((Instant::now(), Instant::now()));
                    }
                    continue;
                };
                match roll() {
                    0..800 => {
                        let res = b.get("/user");
                        tally.record(res.status, started.elapsed());
                        if res.status == 200 {
                            live = Some((login_at, Instant::now()));
                        } else if res.status == 303 {
                            let idle_out = seen.elapsed() >= Duration::from_secs(idle - 1);
                            let was_revoked = maybe_revoked(&revoked, &name, login_at);
                            if !idle_out && !was_revoked {
                                tally.unexpected_logouts.fetch_add(1, Ordering::Relaxed);
                                eprintln!("client {c}: logged out unexpectedly after {:?}", seen.elapsed());
                            }
                            live = None;
                        }
                    }
                    800..880 => {
                        let page = b.get("/user");
                        if page.status != 200 {
                            live = None;
                            continue;
                        }
                        let res = b.post("/logout", &form(&[("csrf_token", &csrf_in(&page.body))]));
                        tally.record(res.status, started.elapsed());
                        if res.status == 303 {
                            tally.logouts.fetch_add(1, Ordering::Relaxed);
                        }
                        live = None;
                    }
                    880..890 => {
                        let page = b.get("/sessions");
                        if page.status != 200 {
                            live = None;
                            continue;
                        }
                        // Noted before the request: anything ended from here on may be this.
                        let run = {
                            let mut runs = revoked.lock().unwrap();
                            let runs = runs.entry(name.clone()).or_default();
                            runs.push((Instant::now(), None));
                            runs.len() - 1
                        };
                        let res =
                            b.post("/sessions/revoke-others", &form(&[("csrf_token", &csrf_in(&page.body))]));
                        revoked.lock().unwrap().get_mut(&name).unwrap()[run].1 = Some(Instant::now());
                        tally.record(res.status, started.elapsed());
                        tally.revocations.fetch_add(1, Ordering::Relaxed);
                        live = Some((login_at, Instant::now()));
                    }
                    890..892 => {
                        // Go quiet past the idle timeout: the session must end by itself.
                        std::thread::sleep(Duration::from_secs(idle + 1));
                    }
                    _ => {
                        let res = b.get("/healthz");
                        tally.record(res.status, started.elapsed());
                    }
                }
            }
            // At the end, a session that was used recently and not revoked works.
            match live {
                Some((login_at, seen)) if seen.elapsed() < Duration::from_secs(idle - 1) => {
                    let ok = b.get("/user").status == 200 || maybe_revoked(&revoked, &name, login_at);
                    (1, u64::from(!ok))
                }
                _ => (0, 0),
            }
        }));
    }
    let (checked, lost) =
        threads.into_iter().map(|t| t.join().unwrap()).fold((0, 0), |(c, l), (c1, l1)| (c + c1, l + l1));
    let metrics = request(port, "GET", "/metrics", &[], None).unwrap().body;
    let (_, log) = server.terminate();

    let statuses = tally.statuses.lock().unwrap().clone();
    let mut latencies = tally.latencies.lock().unwrap().clone();
    latencies.sort();
    let total: u64 = statuses.values().sum();
    let server_errors: u64 = statuses.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum();
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
            .to_owned()
    };
    println!("load with churn: 64 clients, {seconds} s, idle timeout {idle} s, purge every 1 s");
    println!("  requests: {total} ({:.0}/s), by status: {statuses:?}", total as f64 / seconds as f64);
    println!(
        "  latency: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "  sessions: created {}, logged out {}, revoke-others runs {}, purged as expired {}",
        tally.created.load(Ordering::Relaxed),
        tally.logouts.load(Ordering::Relaxed),
        tally.revocations.load(Ordering::Relaxed),
        metric("sesija_purge_rows_total"),
    );
    println!("  live sessions checked at the end: {checked}, lost: {lost}");
    println!("  unexpected logouts during the run: {}", tally.unexpected_logouts.load(Ordering::Relaxed));
    assert_eq!(server_errors, 0, "no 5xx");
    assert!(!log.contains("database is locked"), "no lock errors: {log}");
    assert_eq!(lost, 0);
    assert_eq!(tally.unexpected_logouts.load(Ordering::Relaxed), 0);
    assert!(tally.created.load(Ordering::Relaxed) > 64);
}

#[test]
#[ignore]
fn kill_9_at_random_moments_loses_no_acknowledged_session() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let envs = [("ROCKET_PROFILE", "release"), ("ROCKET_LOG_LEVEL", "critical")];
    let server = Server::start(work.path(), port, &envs);
    drop(first_account(&server, "alice"));
    drop(server);
    let db = work.path().join("data/sesija.db");

    // Every acknowledged login and what is known of its logout.
    let acknowledged: Arc<Mutex<Vec<(String, Ended)>>> = Arc::default();
    let (mut checked, mut lost, mut resurrected) = (0, 0, 0);
    let mut seed = 0x2545f4914f6cdd1du64;
    for round in 0..20 {
        let server = Server::start(work.path(), port, &envs);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut b = Browser::new(port);
                        let Some(_) = try_login(&mut b, "alice") else { continue };
                        let cookie = b.cookies["sesija"].clone();
                        let index = {
                            let mut a = acknowledged.lock().unwrap();
                            a.push((cookie, Ended::No));
                            a.len() - 1
                        };
                        let Ok(page) = b.try_send("GET", "/user", None) else { continue };
                        if page.status != 200 {
                            continue;
                        }
                        // From here on the logout may have happened.
                        acknowledged.lock().unwrap()[index].1 = Ended::Maybe;
                        let body = form(&[("csrf_token", &csrf_in(&page.body))]);
                        let logout = b.try_send("POST", "/logout", Some(&body)).map(|r| r.status);
                        if let Ok(303) = logout {
                            acknowledged.lock().unwrap()[index].1 = Ended::Yes;
                        }
                    }
                })
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 1200));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.join();
        }
        assert_eq!(integrity(&db), "ok", "round {round}");
        let server = Server::start(work.path(), port, &envs);
        for (cookie, ended) in acknowledged.lock().unwrap().iter_mut() {
            let mut b = Browser::new(port);
            b.cookies.insert("sesija".into(), cookie.clone());
            let status = b.get("/user").status;
            checked += 1;
            match (*ended, status) {
                (Ended::No, 200) | (Ended::Yes, 303) => {}
                // A logout cut short by the kill either happened or did not;
                // what this restart shows must hold from now on.
                (Ended::Maybe, 200) => *ended = Ended::No,
                (Ended::Maybe, 303) => *ended = Ended::Yes,
                (Ended::No | Ended::Maybe, _) => lost += 1,
                (Ended::Yes, _) => resurrected += 1,
            }
        }
        drop(server);
    }
    let total = acknowledged.lock().unwrap().len();
    println!("crash consistency: 20 rounds of load then kill -9 at a random moment, restart");
    println!("  acknowledged sessions: {total}; checks after restarts: {checked}; lost: {lost}; resurrected: {resurrected}");
    println!("  integrity_check after every kill: ok");
    assert!(total > 20);
    assert_eq!((lost, resurrected), (0, 0));
}

#[test]
#[ignore]
fn kill_9_of_a_random_instance_on_postgresql_loses_no_acknowledged_session() {
    let cluster = postgres::OwnCluster::start();
    let work = TempDir::new().unwrap();
    let key = helpers::random_key(64);
    let envs = [
        ("ROCKET_PROFILE", "release"),
        ("ROCKET_LOG_LEVEL", "critical"),
        ("ROCKET_DATABASE_URL", cluster.url.as_str()),
        ("ROCKET_SECRET_KEY", key.as_str()),
    ];
    let names = ["a", "b"];
    for name in names {
        std::fs::create_dir_all(work.path().join(name)).unwrap();
    }
    let out = http::run_cli_with(
        &work.path().join("a"),
        &envs,
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ports = [free_port(), free_port()];
    let mut servers: Vec<Option<Server>> =
        names.iter().zip(ports).map(|(n, p)| Some(Server::start(&work.path().join(n), p, &envs))).collect();

    let acknowledged: Arc<Mutex<Vec<(String, Ended)>>> = Arc::default();
    let (mut checked, mut lost, mut resurrected) = (0, 0, 0);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let rounds = 10;
    for round in 0..rounds {
        for (i, name) in names.iter().enumerate() {
            if servers[i].is_none() {
                servers[i] = Some(Server::start(&work.path().join(name), ports[i], &envs));
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % 2) as usize;
        let survivor = 1 - victim;
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    let mut turn = w;
                    while !stop.load(Ordering::Relaxed) {
                        turn += 1;
                        // Log in on one instance, read and log out on the other.
                        let (first, second) = (ports[turn % 2], ports[(turn + 1) % 2]);
                        let mut b = Browser::new(first);
                        let Some(_) = try_login(&mut b, "alice") else { continue };
                        let cookie = b.cookies["sesija"].clone();
                        let index = {
                            let mut a = acknowledged.lock().unwrap();
                            a.push((cookie, Ended::No));
                            a.len() - 1
                        };
                        b.port = second;
                        let Ok(page) = b.try_send("GET", "/user", None) else { continue };
                        if page.status != 200 {
                            continue;
                        }
                        acknowledged.lock().unwrap()[index].1 = Ended::Maybe;
                        let body = form(&[("csrf_token", &csrf_in(&page.body))]);
                        if let Ok(303) = b.try_send("POST", "/logout", Some(&body)).map(|r| r.status) {
                            acknowledged.lock().unwrap()[index].1 = Ended::Yes;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + seed % 1200));
        servers[victim].take().unwrap().kill();
        // The other instance keeps serving meanwhile.
        std::thread::sleep(Duration::from_millis(500));
        let health = request(ports[survivor], "GET", "/healthz", &[], None).map(|r| r.status);
        assert_eq!(health.ok(), Some(200), "round {round}: the survivor stopped answering");
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.join();
        }
        // Every acknowledged session as the survivor sees it.
        for (cookie, ended) in acknowledged.lock().unwrap().iter_mut() {
            let mut b = Browser::new(ports[survivor]);
            b.cookies.insert("sesija".into(), cookie.clone());
            let status = b.get("/user").status;
            checked += 1;
            match (*ended, status) {
                (Ended::No, 200) | (Ended::Yes, 303) => {}
                (Ended::Maybe, 200) => *ended = Ended::No,
                (Ended::Maybe, 303) => *ended = Ended::Yes,
                (Ended::No | Ended::Maybe, _) => lost += 1,
                (Ended::Yes, _) => resurrected += 1,
            }
        }
    }
    let total = acknowledged.lock().unwrap().len();
    println!("multi-instance crash consistency on PostgreSQL: {rounds} rounds of load over two instances, kill -9 of a random one");
    println!("  acknowledged sessions: {total}; checks on the survivor: {checked}; lost: {lost}; resurrected: {resurrected}");
    println!("  the survivor answered /healthz 200 half a second after every kill");
    assert!(total > 20);
    assert_eq!((lost, resurrected), (0, 0));
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ended {
    No,
    Maybe,
    Yes,
}

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A login from a fresh browser: status and time taken.
fn login_attempt(port: u16) -> (u16, Duration, String) {
    let started = Instant::now();
    let mut b = Browser::new(port);
    let page = b.get("/login");
    if page.status != 200 {
        return (page.status, started.elapsed(), page.body);
    }
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &csrf_in(&page.body))]);
    let res = b.post("/login", &body);
    (res.status, started.elapsed(), res.body)
}

/// Sets the mode of `path`.
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
#[ignore]
fn a_read_only_database_answers_503_and_recovers_by_itself() {
    // File modes bind only an unprivileged process: the server runs as
    // nobody (65534) in a data dir of its own.
    const NOBODY: u32 = 65534;
    let work = TempDir::new().unwrap();
    chmod(work.path(), 0o755);
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).expect("changing owners needs root");
    let port = free_port();
    let envs = [("ROCKET_PROFILE", "release"), ("ROCKET_LOG_LEVEL", "critical")];
    let server = Server::start_as(work.path(), port, &envs, Some(NOBODY));
    let mut alice = first_account(&server, "alice");
    assert_eq!(login_attempt(port).0, 303);
    let db = data.join("sesija.db");

    // The database becomes read-only: file, journal files and directory.
    let files = ["sesija.db", "sesija.db-wal", "sesija.db-shm"].map(|f| data.join(f));
    for file in files.iter().filter(|f| f.exists()) {
        chmod(file, 0o444);
    }
    chmod(&data, 0o555);
    // The open writer connection keeps its descriptor until it has been idle
    // for WRITER_IDLE_TIMEOUT (closed at the pool's next check, at most as
    // long again); the next write opens the file anew.
    std::thread::sleep(sesija::storage::WRITER_IDLE_TIMEOUT * 2 + Duration::from_secs(2));
    let refused: Vec<_> = (0..3).map(|_| login_attempt(port)).collect();
    let reads: Vec<_> = (0..5).map(|_| alice.get("/user").status).collect();
    chmod(&data, 0o755);
    for file in files.iter().filter(|f| f.exists()) {
        chmod(file, 0o644);
    }
    let after = login_attempt(port);
    println!(
        "read-only database: logins {:?}; existing session reads {reads:?}; login after: {}",
        refused.iter().map(|(s, t, _)| (*s, t.as_millis())).collect::<Vec<_>>(),
        after.0
    );
    assert!(
        refused
            .iter()
            .all(|(s, t, body)| *s == 503 && *t < Duration::from_secs(10) && body.contains("Try again")),
        "{}",
        server.output()
    );
    assert!(reads.iter().all(|s| *s == 200), "reads go on");
    assert_eq!(after.0, 303, "recovers by itself: {}", server.output());
    assert_eq!(alice.get("/user").status, 200, "nothing written before the fault was lost");
    let (code, output) = server.terminate();
    assert_eq!(code, Some(0), "{output}");
    assert!(!output.contains("panicked"), "{output}");
    assert_eq!(integrity(&db), "ok");
}

#[test]
#[ignore]
fn a_full_or_locked_database_answers_503_and_recovers_by_itself() {
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    let _fs = Tmpfs::mount(&data, "4m");
    let port = free_port();
    let envs = [("ROCKET_PROFILE", "release"), ("ROCKET_LOG_LEVEL", "critical")];
    let server = Server::start(work.path(), port, &envs);
    let mut alice = first_account(&server, "alice");
    let db = data.join("sesija.db");

    // 1. The disk fills up.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut full = Vec::new();
    for _ in 0..5 {
        full.push(login_attempt(port));
    }
    let reads = (0..5).map(|_| alice.get("/user").status).collect::<Vec<_>>();
    std::fs::remove_file(&filler).unwrap();
    let after_full = login_attempt(port);
    println!(
        "database full: logins {:?}",
        full.iter().map(|(s, t, _)| (*s, t.as_millis())).collect::<Vec<_>>()
    );
    println!("  existing session reads during it: {reads:?}; login after space returned: {}", after_full.0);
    assert!(full
        .iter()
        .all(|(s, t, body)| *s == 503 && *t < Duration::from_secs(10) && body.contains("Try again")));
    assert!(reads.iter().all(|s| *s == 200), "reads go on");
    assert_eq!(after_full.0, 303, "recovers by itself: {}", server.output());

    // 2. Another process holds the write lock for longer than the busy timeout.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = {
        let db = db.clone();
        std::thread::spawn(move || {
            block_on(async {
                use sqlx::Connection;
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
                sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await.unwrap();
                locked_tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_secs(7)).await;
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            });
        })
    };
    locked_rx.recv().unwrap();
    let reader = {
        let mut alice = alice.clone();
        std::thread::spawn(move || {
            (0..10)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(300));
                    alice.get("/user").status
                })
                .collect::<Vec<_>>()
        })
    };
    let locked = login_attempt(port);
    let locked_reads = reader.join().unwrap();
    holder.join().unwrap();
    let after_lock = login_attempt(port);
    println!("locked by another process for 7 s: login {} after {} ms; reads meanwhile {locked_reads:?}; login after: {}", locked.0, locked.1.as_millis(), after_lock.0);
    assert!(locked.0 == 503 && locked.1 < Duration::from_secs(7), "503 within the busy timeout, not a hang");
    assert!(locked_reads.iter().all(|s| *s == 200));
    assert_eq!(after_lock.0, 303);

    assert_eq!(alice.get("/user").status, 200, "nothing written before the faults was lost");
    drop(server);
    assert_eq!(integrity(&db), "ok");
}

#[test]
#[ignore]
fn oversized_input_and_slow_clients_cost_a_4xx_and_bounded_memory() {
    use std::io::{Read, Write};
    let work = TempDir::new().unwrap();
    let port = free_port();
    let server =
        Server::start(work.path(), port, &[("ROCKET_PROFILE", "release"), ("ROCKET_LOG_LEVEL", "critical")]);
    drop(first_account(&server, "alice"));
    let raw = |text: String| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(text.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0)
    };
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        ("200 headers", raw(format!("GET /user HTTP/1.1\r\nHost: x\r\n{many_headers}Connection: close\r\n\r\n"))),
        ("500 KiB cookie", raw(format!("GET /user HTTP/1.1\r\nHost: x\r\nCookie: sesija={}\r\nConnection: close\r\n\r\n", "A".repeat(500 * 1024)))),
        ("100 KiB URI", raw(format!("GET /user?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(100 * 1024)))),
        ("1 MiB login form", raw(format!("POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", 1 << 20, "a".repeat(1 << 20)))),
        ("garbage request line", raw("\x00\x01\x02 nonsense\r\n\r\n".into())),
    ];
    println!("oversized input: {cases:?}");
    // A refusal (4xx), "not logged in" (303) or a closed connection: never a 5xx or a 200.
    for (what, status) in cases {
        assert!((300..500).contains(&status) || status == 0, "{what}: {status}");
    }

    // 200 slow clients trickle one header byte a second; others are served meanwhile.
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let before = rss(server.child.id());
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return };
                for b in "GET /user HTTP/1.1\r\nHost: slow\r\nX-Slow: ".bytes().chain(std::iter::repeat(b'a'))
                {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        assert_eq!(request(port, "GET", "/healthz", &[], None).unwrap().status, 200);
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = rss(server.child.id());
    stop.store(true, Ordering::Relaxed);
    for t in slow {
        let _ = t.join();
    }
    times.sort();
    println!(
        "200 slow clients for ~8 s: /healthz p50 {:.1} ms, p99 {:.1} ms; server RSS {} -> {} KiB",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        before,
        during
    );
    assert!(percentile(&times, 0.99) < 250.0);
    assert!(during < before + 64 * 1024, "memory stays bounded");
    drop(server);
}

mod properties {
    use proptest::prelude::*;
    use rocket::figment::Figment;
    use rocket::http::{ContentType, Cookie};
    use rocket::local::blocking::Client;
    use sesija::config::Settings;
    use sesija::session::{CookieValue, Token};

    fn client() -> (tempfile::TempDir, Client) {
        let dir = tempfile::TempDir::new().unwrap();
        let figment = crate::helpers::figment(&dir.path().join("data"));
        let rocket = rocket::execute(sesija::app(figment)).unwrap();
        (dir, Client::untracked(rocket).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        #[ignore]
        fn token_decoding_never_panics_and_accepts_only_43_char_tokens(s in ".{0,100}") {
            if let Some(t) = Token::decode(&s) {
                prop_assert_eq!(s.len(), 43);
                prop_assert_eq!(t.encode(), s);
            }
        }

        #[test]
        #[ignore]
        fn cookie_values_never_panic_and_open_only_id_dot_token(
            id in any::<i64>(),
            token in "[A-Za-z0-9_-]{40,46}",
            noise in ".{0,100}",
        ) {
            for s in [format!("{id}.{token}"), token.clone(), noise.clone(), format!("{noise}.{token}")] {
                if let Some(v) = CookieValue::decode(&s) {
                    prop_assert!(v.id > 0);
                    prop_assert_eq!(CookieValue::encode(v.id, &v.token), s);
                }
            }
        }

        #[test]
        #[ignore]
        fn the_configuration_parser_never_panics_and_names_the_bad_key(
            key in prop::sample::select(vec![
                "session_idle_timeout", "session_absolute_timeout", "session_touch_interval",
                "session_purge_interval", "session_cache_capacity", "cookie_secure", "login_max_failures",
                "login_lockout", "data_dir", "metrics",
            ]),
            int in any::<i64>(),
            text in ".{0,20}",
            pick in 0..3u8,
        ) {
            let figment = Figment::new();
            let figment = match pick {
                0 => figment.merge((key, int)),
                1 => figment.merge((key, text)),
                _ => figment.merge((key, int % 2 == 0)),
            };
            if let Err(e) = Settings::from_figment(&figment) {
                let message = e.to_string();
                prop_assert!(message.contains('`'), "{}", message);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        #[ignore]
        fn forms_and_cookies_of_any_shape_never_cause_a_5xx(
            path in prop::sample::select(vec![
                "/login", "/logout", "/setup", "/sessions/revoke", "/sessions/revoke-others", "/account/password",
            ]),
            body in prop::collection::vec(any::<u8>(), 0..300),
            cookie in "[ -~]{0,200}",
            name in prop::sample::select(vec!["sesija", "__Host-sesija", "sesija_csrf"]),
        ) {
            thread_local!(static APP: (tempfile::TempDir, Client) = client());
            APP.with(|(_, client)| {
                let res = client
                    .post(path)
                    .header(ContentType::Form)
                    .cookie(Cookie::new(name, cookie.clone()))
                    .body(body.clone())
                    .dispatch();
                assert!(res.status().code < 500, "{path}: {}", res.status());
                let res = client.get("/user").cookie(Cookie::new(name, cookie.clone())).dispatch();
                assert!(res.status().code == 303, "{}", res.status());
            });
        }
    }
}
