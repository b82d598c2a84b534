//! The real binary: first run, restarts (graceful and SIGKILL), start-up errors.

use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;

use crate::helpers::{csrf_in, form, random_key, PASSWORD};
use crate::http::{free_port, run_cli, sesija, Browser, Server};
use crate::server::{block_on, count_sessions, first_account, log_in};

fn greets(browser: &mut Browser, name: &str) -> bool {
    let res = browser.get("/user");
    res.status == 200 && res.body.contains(&format!("Hello, {name}!"))
}

const RELEASE: &[(&str, &str)] = &[("ROCKET_PROFILE", "release")];

#[test]
fn a_release_server_without_a_configured_key_keeps_sessions_across_restarts_and_crashes() {
    let work = TempDir::new().unwrap();
    let port = free_port();

    let server = Server::start(work.path(), port, RELEASE);
    let out = server.output();
    assert!(out.contains("generated a new secret key at data/secret.key"), "{out}");
    let key = work.path().join("data/secret.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let key_before = std::fs::read(&key).unwrap();

    let mut alice = first_account(&server, "alice");
    assert!(greets(&mut alice, "alice"));
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0), "graceful shutdown exits 0");

    // Restart: same key, same session, no setup link any more.
    let server = Server::start(work.path(), port, RELEASE);
    assert!(!server.output().contains("/setup?token="));
    assert!(!server.output().contains("generated a new secret key"));
    assert_eq!(std::fs::read(&key).unwrap(), key_before);
    assert!(greets(&mut alice, "alice"), "still logged in after a restart");
    let old_setup = Browser::new(port).get("/setup?token=anything");
    assert_eq!(old_setup.status, 404);

    // A login acknowledged right before a crash survives it.
    let mut phone = Browser::new(port);
    log_in(&mut phone, "alice", true);
    server.kill();
    let server = Server::start(work.path(), port, RELEASE);
    assert!(greets(&mut phone, "alice"), "login survived SIGKILL");
    assert!(greets(&mut alice, "alice"));

    // A logout acknowledged right before a crash stays done.
    let old = alice.clone();
    let page = alice.get("/user");
    let res = alice.post("/logout", &form(&[("csrf_token", &csrf_in(&page.body))]));
    assert_eq!(res.status, 303);
    server.kill();
    let server = Server::start(work.path(), port, RELEASE);
    let mut old = old;
    let res = old.get("/user");
    assert_eq!(res.status, 303, "the logged-out cookie stays dead");
    assert!(greets(&mut phone, "alice"));
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn an_operator_removing_a_user_logs_them_out_of_the_running_server() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let server = Server::start(work.path(), port, &[]);
    let mut alice = first_account(&server, "alice");
    let add =
        run_cli(work.path(), &["user", "add", "bob", "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    assert!(add.status.success());
    let mut bob = Browser::new(port);
    log_in(&mut bob, "bob", false);
    assert!(greets(&mut bob, "bob"));

    let out = sesija(work.path(), &[]).args(["user", "remove", "bob"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "removed user bob; ended 1 sessions");
    assert_eq!(bob.get("/user").status, 303, "honoured on the next request");
    assert!(greets(&mut alice, "alice"));
    drop(server);
}

#[test]
fn an_expired_session_disappears_from_the_database_without_any_request() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let envs = [
        ("ROCKET_SESSION_IDLE_TIMEOUT", "2"),
        ("ROCKET_SESSION_TOUCH_INTERVAL", "1"),
        ("ROCKET_SESSION_PURGE_INTERVAL", "1"),
    ];
    let server = Server::start(work.path(), port, &envs);
    let mut alice = first_account(&server, "alice");
    assert!(greets(&mut alice, "alice"));
    let db = work.path().join("data/sesija.db");
    let started = std::time::Instant::now();
    let mut last = None;
    while started.elapsed() < std::time::Duration::from_secs(8) {
        last = Some(count_sessions(&db));
        if last == Some(0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(last, Some(0), "the purge task removed the idle session");
    assert_eq!(alice.get("/user").status, 303);
    drop(server);
}

fn start_error(envs: &[(&str, &str)], prepare: impl FnOnce(&std::path::Path)) -> String {
    let work = TempDir::new().unwrap();
    prepare(work.path());
    let port = free_port().to_string();
    let mut all = vec![("ROCKET_PORT", port.as_str())];
    all.extend_from_slice(envs);
    let out = sesija(work.path(), &all).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should not start; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn start_up_errors_are_one_line_and_a_non_zero_exit() {
    let err = start_error(&[("ROCKET_SESSION_IDLE_TIMEOUT", "-5")], |_| {});
    assert!(err.contains("session_idle_timeout"), "{err}");
    let err = start_error(&[("ROCKET_SESSION_IDLE_TIMEOUT", "99999999")], |_| {});
    assert!(err.contains("session_absolute_timeout"), "{err}");
    let err = start_error(&[("ROCKET_DATA_DIR", "/proc/sesija-cannot-be-here")], |_| {});
    assert!(err.contains("/proc/sesija-cannot-be-here"), "{err}");
    let err = start_error(&[("ROCKET_SECRET_KEY", "tooshort")], |_| {});
    assert!(err.contains("secret_key") && !err.contains("tooshort"), "names the key, never its value: {err}");
    let err = start_error(&[("ROCKET_SECRET_KEY", "hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBi2QJxBVHQk=")], |_| {});
    assert!(err.contains("secret_key"), "{err}");
    let err = start_error(&[], |dir| {
        std::fs::create_dir(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/secret.key"), "garbage\n").unwrap();
    });
    assert!(err.contains("secret.key"), "{err}");
    let err = start_error(&[], |dir| {
        std::fs::write(dir.join("Rocket.toml"), "[default]\nlogin_lockout = \"soon\"\n").unwrap();
    });
    assert!(err.contains("login_lockout"), "{err}");
}

#[test]
fn a_database_from_a_newer_sesija_is_refused() {
    let work = TempDir::new().unwrap();
    let status = sesija(work.path(), &[]).args(["user", "list"]).output().unwrap();
    assert!(status.status.success());
    let db = work.path().join("data/sesija.db");
    block_on(async {
        let pool = sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let err = start_error(&[], |dir| {
        std::fs::create_dir(dir.join("data")).unwrap();
        std::fs::copy(&db, dir.join("data/sesija.db")).unwrap();
    });
    assert!(err.contains("9999") && err.contains("newer"), "{err}");
}

#[test]
fn a_configured_secret_key_is_used_and_no_key_file_is_written() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let key = &random_key(32);
    let server =
        Server::start(work.path(), port, &[("ROCKET_SECRET_KEY", key), ("ROCKET_PROFILE", "release")]);
    assert!(!work.path().join("data/secret.key").exists());
    let mut alice = first_account(&server, "alice");
    drop(server);
    let server = Server::start(work.path(), port, &[("ROCKET_SECRET_KEY", key)]);
    assert!(greets(&mut alice, "alice"));
    drop(server);
    // Another key: the old cookie is quietly logged out.
    let other = &random_key(64);
    let server = Server::start(work.path(), port, &[("ROCKET_SECRET_KEY", other)]);
    let res = alice.get("/user");
    assert_eq!(res.status, 303);
    assert_eq!(res.header("Location"), Some("/login"));
    drop(server);
}

#[test]
fn an_operator_lists_and_ends_sessions_while_the_server_runs() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let server = Server::start(work.path(), port, &[]);
    let mut alice = first_account(&server, "alice");
    let mut laptop = Browser::new(port);
    log_in(&mut laptop, "alice", true);
    let cli = |args: &[&str]| {
        let out = sesija(work.path(), &[]).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, table, _) = cli(&["sessions", "list"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "HANDLE\tUSER\tCREATED\tLAST ACTIVE\tEXPIRES\tIP\tUSER AGENT");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].contains("\talice\t")
            && lines[1].contains("sesija-tests/1.0")
            && lines[1].contains("127.0.0.1")
    );

    let (code, json, _) = cli(&["sessions", "list", "--user", "alice", "--json"]);
    assert_eq!(code, Some(0));
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for key in
        ["handle", "user", "created_at", "last_seen_at", "expires_at", "ip", "user_agent", "persistent"]
    {
        assert!(rows[0].get(key).is_some(), "{key}");
    }

    // No output holds a token, its hash or a cookie.
    let hashes: Vec<Vec<u8>> = block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(work.path().join("data/sesija.db"));
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::query_scalar("SELECT token_hash FROM sessions").fetch_all(&pool).await.unwrap()
    });
    for hash in &hashes {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!table.contains(&hex) && !json.contains(&hex));
    }
    for browser in [&alice, &laptop] {
        let cookie = &browser.cookies["sesija"];
        assert!(!table.contains(cookie.as_str()) && !json.contains(cookie.as_str()));
    }

    // End one session by handle: that browser is out at its next request.
    let laptop_handle =
        rows.iter().find(|r| r["persistent"] == true).unwrap()["handle"].as_str().unwrap().to_owned();
    assert_eq!(laptop.get("/user").status, 200, "in the server's cache now");
    let (code, out, _) = cli(&["sessions", "revoke", "--id", &laptop_handle]);
    assert_eq!((code, out.trim()), (Some(0), "ended 1 sessions"));
    assert_eq!(laptop.get("/user").status, 303);
    assert_eq!(alice.get("/user").status, 200);

    let (code, _, err) = cli(&["sessions", "revoke", "--id", "no-such-handle"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no-such-handle"), "{err}");
    let (code, _, _) = cli(&["sessions", "revoke"]);
    assert_eq!(code, Some(2), "one of --id, --user, --all is required");
    let (code, _, err) = cli(&["sessions", "list", "--user", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nobody"));

    let (code, out, _) = cli(&["sessions", "revoke", "--user", "alice"]);
    assert_eq!((code, out.trim()), (Some(0), "ended 1 sessions"));
    assert_eq!(alice.get("/user").status, 303);

    log_in(&mut alice, "alice", false);
    let (code, out, _) = cli(&["sessions", "revoke", "--all"]);
    assert_eq!((code, out.trim()), (Some(0), "ended 1 sessions"));
    assert_eq!(alice.get("/user").status, 303);

    // A password set from the command line ends the sessions at once too.
    log_in(&mut alice, "alice", false);
    assert_eq!(alice.get("/user").status, 200);
    let out = run_cli(
        work.path(),
        &["user", "passwd", "alice", "--password-stdin"],
        Some("a whole new password\n"),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(alice.get("/user").status, 303);
    drop(server);
}
