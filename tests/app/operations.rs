//! Running it for years: key rotation, cookie_secure switches, backups,
//! upgrades, metrics, configuration checks, graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rocket::http::{Header, Status};
use rocket::local::asynchronous::Client;
use tempfile::TempDir;

use crate::helpers::*;
use crate::http::{free_port, sesija, Browser, Server};
use crate::server::{block_on, first_account, log_in};

on_each_engine!(
    a_cookie_under_a_configured_fallback_key_is_accepted_and_resealed,
    switching_cookie_secure_logs_nobody_out,
    metrics_count_logins_sessions_and_requests_when_enabled,
    a_configured_proxy_header_supplies_the_client_ip,
);

/// An app on `base` (one test's data), configured further.
async fn client_on(
    base: rocket::figment::Figment,
    configure: impl FnOnce(rocket::figment::Figment) -> rocket::figment::Figment,
) -> Client {
    let rocket = sesija::app(configure(base)).await.unwrap();
    Client::tracked(rocket).await.unwrap()
}

async fn switching_cookie_secure_logs_nobody_out(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let plain = sealed(&logged_in(&app.client, "alice", true).await);

    let secure = client_on(app.figment(), |f| f.merge(("cookie_secure", true))).await;
    let res = secure.get("/user").cookie(rocket::http::Cookie::new("sesija", plain.clone())).dispatch().await;
    assert_eq!(res.status(), Status::Ok, "the old name is still read");
    let reissued = set_cookie(&res, "__Host-sesija").expect("re-issued under the new name");
    assert!(reissued.contains("Secure") && reissued.contains("Max-Age="), "{reissued}");
    assert!(set_cookie(&res, "sesija").is_some_and(|c| c.contains("Max-Age=0")), "old name removed");
    let prefixed = sealed(&reissued);
    drop(res);

    // And back again.
    let plain_again = client_on(app.figment(), |f| f).await;
    let res = plain_again
        .get("/user")
        .cookie(rocket::http::Cookie::new("__Host-sesija", prefixed))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert!(set_cookie(&res, "sesija").is_some());
}

async fn a_cookie_under_a_configured_fallback_key_is_accepted_and_resealed(engine: Engine) {
    let dir = TempDir::new().unwrap();
    let base = figment_on(engine, &dir.path().join("data")).await;
    let (old, new) = (random_key(64), random_key(32));
    let before = client_on(base.clone(), |f| f.merge(("secret_key", old.clone()))).await;
    let hash = sesija::auth::Hasher::default().hash(PASSWORD.into()).await.unwrap();
    let storage = &before.rocket().state::<sesija::storage::Storage>().unwrap();
    sesija::auth::users::create(storage, "alice", &hash).await.unwrap();
    let cookie = sealed(&logged_in(&before, "alice", false).await);

    let without = client_on(base.clone(), |f| f.merge(("secret_key", new.clone()))).await;
    assert_to_login(&user_page_with(&without, &cookie).await);
    let with = client_on(base.clone(), |f| {
        f.merge(("secret_key", new.clone())).merge(("secret_key_fallbacks", vec![old.clone()]))
    })
    .await;
    let res = user_page_with(&with, &cookie).await;
    assert_eq!(res.status(), Status::Ok);
    let resealed = sealed(&set_cookie(&res, "sesija").expect("re-issued under the current key"));
    assert!(!set_cookie(&res, "sesija").unwrap().contains("Max-Age"), "still a browser-session cookie");
    drop(res);
    // Until the browser holds the new cookie, every request re-issues it:
    // a cookie opened under a previous key is not remembered as opened.
    let again = user_page_with(&with, &cookie).await;
    assert_eq!(again.status(), Status::Ok);
    assert!(set_cookie(&again, "sesija").is_some(), "re-issued again");
    drop(again);
    assert_eq!(
        user_page_with(&without, &resealed).await.status(),
        Status::Ok,
        "opens under the new key alone"
    );

    let res = sesija::app(base.merge(("secret_key_fallbacks", vec!["not a key"]))).await;
    assert!(res.err().unwrap().to_string().contains("previous secret key"));
}

fn cli(work: &TempDir, args: &[&str]) -> (i32, String, String) {
    let out = sesija(work.path(), &[]).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn key_rotation_with_a_restart_logs_nobody_out_until_the_old_key_is_dropped() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let server = Server::start(work.path(), port, &[]);
    let mut alice = first_account(&server, "alice");
    let (code, _, _) = cli(&work, &["user", "add", "bob", "--password-stdin"]);
    assert_ne!(code, 0, "no stdin: refused");
    let out = {
        let mut child = sesija(work.path(), &[])
            .args(["user", "add", "bob", "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
        child.wait().unwrap()
    };
    assert!(out.success());
    let mut bob = Browser::new(port);
    log_in(&mut bob, "bob", true);
    drop(server);

    let old_key = std::fs::read_to_string(work.path().join("data/secret.key")).unwrap();
    let (code, out, _) = cli(&work, &["key", "rotate"]);
    assert_eq!(code, 0);
    assert!(out.contains("sesija key drop-old"), "{out}");
    let new_key = std::fs::read_to_string(work.path().join("data/secret.key")).unwrap();
    assert_ne!(old_key, new_key);
    let previous = work.path().join("data/secret.key.previous");
    assert_eq!(std::fs::read_to_string(&previous).unwrap().trim(), old_key.trim());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&previous).unwrap().permissions().mode() & 0o777, 0o600);

    let server = Server::start(work.path(), port, &[]);
    let res = alice.get("/user");
    assert_eq!(res.status, 200, "still logged in after rotation");
    assert!(res.set_cookies().any(|c| c.starts_with("sesija=")), "re-encrypted cookie in the same response");
    drop(server);

    let (code, out, _) = cli(&work, &["key", "drop-old"]);
    assert_eq!(code, 0);
    assert!(out.contains("dropped 1"), "{out}");
    let server = Server::start(work.path(), port, &[]);
    assert_eq!(alice.get("/user").status, 200, "came back in time: re-sealed under the new key");
    assert_eq!(bob.get("/user").status, 303, "never came back: logged out once the old key is gone");
    drop(server);

    let configured = sesija(work.path(), &[("ROCKET_SECRET_KEY", &random_key(64))])
        .args(["key", "rotate"])
        .output()
        .unwrap();
    assert!(!configured.status.success());
    assert!(String::from_utf8_lossy(&configured.stderr).contains("secret_key_fallbacks"));
}

#[test]
fn a_backup_taken_under_write_load_is_sound_and_restores_sessions() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let server = Server::start(work.path(), port, &[]);
    let mut alice = first_account(&server, "alice");
    // Keep logging in while the backup runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut logins = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut b = Browser::new(port);
                log_in(&mut b, "alice", false);
                logins += 1;
            }
            logins
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = cli(&work, &["backup", "snapshot.db"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let logins = load.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(logins > 0);
    assert!(out.starts_with("backed up ") && out.contains(" bytes, 1 users, "), "{out}");
    let (code, _, err) = cli(&work, &["backup", "snapshot.db"]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    let (code, _, _) = cli(&work, &["backup", "snapshot.db", "--force"]);
    assert_eq!(code, 0);
    drop(server);

    let check: String = block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(work.path().join("snapshot.db"));
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&pool).await.unwrap()
    });
    assert_eq!(check, "ok");

    // Restore: a fresh data dir with the copy and the key file.
    let restored = TempDir::new().unwrap();
    std::fs::create_dir(restored.path().join("data")).unwrap();
    std::fs::copy(work.path().join("snapshot.db"), restored.path().join("data/sesija.db")).unwrap();
    std::fs::copy(work.path().join("data/secret.key"), restored.path().join("data/secret.key")).unwrap();
    let server = Server::start(restored.path(), port, &[]);
    assert_eq!(alice.get("/user").status, 200, "a session in the backup is honoured");
    drop(server);
}

#[test]
fn an_older_database_is_copied_before_its_schema_changes() {
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A database at schema version 1 (accounts only), with an account.
    let first = TempDir::new().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/0001_users.sql"),
        first.path().join("0001_users.sql"),
    )
    .unwrap();
    block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data.join("sesija.db"))
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(first.path()).await.unwrap().run(&pool).await.unwrap();
        sqlx::query("INSERT INTO users (username, password_hash, created_at) VALUES ('old', 'x', 0)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let (code, out, err) = cli(&work, &["user", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sesija.db.pre-2") && out.contains("from version 1 to 7"), "{out}");
    assert!(out.contains("old\tcreated"));
    assert!(data.join("sesija.db.pre-2").exists());
    let (_, out, _) = cli(&work, &["user", "list"]);
    assert!(!out.contains("pre-"), "copied once, before the change only");
}

async fn metrics_count_logins_sessions_and_requests_when_enabled(engine: Engine) {
    let off = spawn_app_on(engine).await;
    assert_eq!(off.client.get("/metrics").dispatch().await.status(), Status::NotFound);

    let app =
        spawn_app_on_with(engine, |f| f.merge(("metrics", true)).merge(("login_max_failures", 2))).await;
    app.add_user("alice").await;
    assert_eq!(login(&app.client, "alice", "wrong password", false).await.status(), Status::Unauthorized);
    assert_eq!(login(&app.client, "alice", "wrong password", false).await.status(), Status::Unauthorized);
    assert_eq!(login(&app.client, "alice", PASSWORD, false).await.status(), Status::TooManyRequests);
    let other = app.other_browser().await;
    logged_in(&other, "alice", false).await;
    let res = log_out(&other).await;
    assert_to_login(&res);
    drop(res);
    logged_in(&other, "alice", false).await;

    let res = app.client.get("/metrics").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert!(res.content_type().unwrap().to_string().starts_with("application/openmetrics-text"));
    let text = res.into_string().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text, whole: {text}");
    for expected in [
        "sesija_sessions_active 1",
        "sesija_logins_total{result=\"failed\"} 2",
        "sesija_logins_total{result=\"throttled\"} 1",
        "sesija_sessions_ended_total{reason=\"expiry\"} 0",
        "# TYPE sesija_http_request_duration_seconds histogram",
        "sesija_purge_runs_total 1",
        "sesija_database_size_bytes ",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(
        text.contains("sesija_http_request_duration_seconds_count{method=\"POST\",route=\"/login\"}"),
        "{text}"
    );
    assert!(
        text.contains("sesija_http_requests_total{method=\"POST\",route=\"/login\",status=\"401\"} 2"),
        "{text}"
    );
}

async fn a_configured_proxy_header_supplies_the_client_ip(engine: Engine) {
    let app = spawn_app_on_with(engine, |f| f.merge(("ip_header", "X-Forwarded-For"))).await;
    app.add_user("alice").await;
    let forwarded = Header::new("X-Forwarded-For", "203.0.113.5");
    let res = login_from(&app.client, "alice", forwarded, Some("127.0.0.1:9999".parse().unwrap())).await;
    assert_eq!(res.status(), Status::SeeOther);
    let ip: String = sql!(app, fetch_one, sqlx::query_scalar("SELECT ip FROM sessions"));
    assert_eq!(ip, "203.0.113.5");
}

#[test]
fn check_config_prints_the_effective_settings_with_secrets_masked() {
    let work = TempDir::new().unwrap();
    let key = random_key(64);
    let out = sesija(work.path(), &[("ROCKET_SECRET_KEY", &key), ("ROCKET_SESSION_IDLE_TIMEOUT", "3600")])
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("session_idle_timeout = 3600") && stdout.contains("secret_key = [configured]"),
        "{stdout}"
    );
    assert!(!stdout.contains(&key));
    let fallbacks = format!(r#"["{}", "{}"]"#, random_key(64), random_key(32));
    let out = sesija(work.path(), &[("ROCKET_SECRET_KEY_FALLBACKS", &fallbacks)])
        .arg("check-config")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("secret_key_fallbacks = [2 key(s)]"));
    for (key, value) in [
        ("ROCKET_SESSION_PURGE_INTERVAL", "0"),
        ("ROCKET_COOKIE_SECURE", "perhaps"),
        ("ROCKET_PORT", "port"),
        ("ROCKET_SECRET_KEY", "short"),
    ] {
        let out = sesija(work.path(), &[(key, value)]).arg("check-config").output().unwrap();
        assert!(!out.status.success(), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        let name = key.trim_start_matches("ROCKET_").to_lowercase();
        assert!(err.contains(&name), "{key}: {err}");
    }
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_and_exits_cleanly() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let server = Server::start(work.path(), port, &[("ROCKET_SESSION_PURGE_INTERVAL", "1")]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = "username=alice&password=x&csrf_token=y";
    write!(
        stream,
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal_term();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body.as_bytes()[5..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "the request in flight was answered: {response}");
    let (code, _) = server.wait();
    assert_eq!(code, Some(0));
    let wal = work.path().join("data/sesija.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "database closed cleanly");
}
