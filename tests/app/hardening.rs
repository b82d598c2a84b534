//! What an attacker and a rolling restart found, each reproduced the way it
//! was found: logins racing a password change or a removal, id reuse,
//! throttle bursts, memory from long names, spraying from one address,
//! file modes, in-flight logins across SIGTERM, listing order, terminal
//! injection, weak keys, planted plain cookies, sudo mode, the setup token
//! in logs, cross-origin posts.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocket::http::{ContentType, Cookie, Header, Status};
use rocket::local::asynchronous::Client;
use tempfile::TempDir;

use sesija::auth::{users, Hasher};

use crate::helpers::*;
use crate::http::{free_port, request, run_cli, Browser, Server};
use crate::server::{block_on, log_in, setup_path};

on_each_engine!(
    logins_racing_a_password_change_leave_no_session_of_the_old_password,
    logins_racing_a_removal_leave_no_session,
    ids_are_never_reused_and_sessions_end_with_their_account,
    a_burst_of_wrong_passwords_gets_at_most_the_limit_of_401s,
    twenty_simultaneous_guesses_yield_at_most_max_failures_401s,
    twenty_simultaneous_right_logins_from_one_address_all_get_in,
    one_address_spraying_many_names_is_locked_for_every_name,
    a_weaker_stored_hash_is_replaced_at_login,
    ending_other_sessions_asks_for_the_password_unless_it_was_entered_recently,
    wrong_confirmation_passwords_are_throttled,
);

/// One anonymous login form: its CSRF cookie (sealed) and token.
async fn login_form(client: &Client) -> (Cookie<'static>, String) {
    let page = client.get("/login").dispatch().await;
    let cookie = page.cookies().get("sesija_csrf").expect("csrf cookie").clone().into_owned();
    let token = csrf_in(&page.into_string().await.unwrap());
    (cookie, token)
}

/// A login posted by a client that keeps no cookies: the status and the
/// sealed session cookie it was given, if any.
async fn post_login(
    client: &Client,
    form_cookie: &Cookie<'static>,
    token: &str,
    name: &str,
    password: &str,
    remote: Option<SocketAddr>,
) -> (Status, Option<String>) {
    let body = form(&[("username", name), ("password", password), ("csrf_token", token)]);
    let mut req = client.post("/login").header(ContentType::Form).cookie(form_cookie.clone()).body(body);
    if let Some(remote) = remote {
        req = req.remote(remote);
    }
    let res = req.dispatch().await;
    (res.status(), set_cookie(&res, "sesija").filter(|c| !c.contains("Max-Age=0")).map(|c| sealed(&c)))
}

async fn untracked(figment: rocket::figment::Figment) -> Arc<Client> {
    Arc::new(Client::untracked(sesija::app(figment).await.unwrap()).await.unwrap())
}

fn storage_of(client: &Client) -> &sesija::storage::Storage {
    client.rocket().state::<sesija::storage::Storage>().unwrap()
}

/// Keys the app's (in-memory) login throttle holds.
fn tracked(client: &Client) -> usize {
    match client.rocket().state::<sesija::auth::Authenticator>().unwrap().password_throttle() {
        sesija::auth::Throttle::Memory(memory) => memory.tracked(),
        sesija::auth::Throttle::Shared(_) => panic!("a SQLite app keeps its throttle in memory"),
    }
}

/// Three clients log in with alice's password in a loop while `change`
/// runs; afterwards no session minted from the old password may open
/// `/user`, and alice has no session row left.
async fn logins_racing(engine: Engine, change: impl AsyncFnOnce(&sesija::storage::Storage)) {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let client = untracked(figment_on(engine, &data).await).await;
    let storage = storage_of(&client).clone();
    let hash = Hasher::default().hash(PASSWORD.into()).await.unwrap();
    users::create(&storage, "alice", &hash).await.unwrap();
    let (form_cookie, token) = login_form(&client).await;
    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..3 {
        let (client, stop, succeeded, form_cookie, token) =
            (client.clone(), stop.clone(), succeeded.clone(), form_cookie.clone(), token.clone());
        loops.push(tokio::spawn(async move {
            let mut minted = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (status, cookie) =
                    post_login(&client, &form_cookie, &token, "alice", PASSWORD, None).await;
                if status == Status::SeeOther {
                    minted.push(cookie.expect("a 303 sets the cookie"));
                    succeeded.fetch_add(1, Ordering::SeqCst);
                }
            }
            minted
        }));
    }
    // The change lands while logins are in flight, once a few went through
    // (however slow the machine hashes).
    let started = std::time::Instant::now();
    while succeeded.load(Ordering::SeqCst) < 3 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    change(&storage).await;
    stop.store(true, Ordering::SeqCst);
    let mut minted = Vec::new();
    for l in loops {
        minted.extend(l.await.unwrap());
    }
    assert!(minted.len() >= 3, "logins succeeded before the change: {}", minted.len());
    for cookie in &minted {
        let res = client.get("/user").cookie(Cookie::new("sesija", cookie.clone())).dispatch().await;
        assert_eq!(res.status(), Status::SeeOther, "a session from the old password survived");
    }
    let left: i64 = sql!(storage, fetch_one, sqlx::query_scalar("SELECT COUNT(*) FROM sessions"));
    assert_eq!(left, 0);
}

async fn logins_racing_a_password_change_leave_no_session_of_the_old_password(engine: Engine) {
    for _ in 0..3 {
        logins_racing(engine, async |storage: &sesija::storage::Storage| {
            let hash = Hasher::default().hash("a new password entirely".into()).await.unwrap();
            users::set_password(storage, "alice", &hash, None).await.unwrap();
        })
        .await;
    }
}

async fn logins_racing_a_removal_leave_no_session(engine: Engine) {
    for _ in 0..3 {
        logins_racing(engine, async |storage: &sesija::storage::Storage| {
            users::remove(storage, "alice").await.unwrap();
        })
        .await;
    }
}

async fn ids_are_never_reused_and_sessions_end_with_their_account(engine: Engine) {
    let app = spawn_app_on(engine).await;
    let alice = app.add_user("alice").await;
    let _bob = app.add_user("bob").await;
    logged_in(&app.client, "alice", false).await;
    // Removed by hand, without ending the sessions first: the foreign key does.
    sql!(app, execute, sqlx::query("DELETE FROM users WHERE id = $1").bind(alice));
    let left: i64 = sql!(
        app,
        fetch_one,
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1").bind(alice)
    );
    assert_eq!(left, 0, "ON DELETE CASCADE");
    let carol = app.add_user("carol").await;
    assert!(carol > alice, "carol got a new id ({carol}), not alice's ({alice})");
    // A session for an account that does not exist cannot be stored.
    let orphan = "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at) \
                  VALUES ($1, 'h', 9999, 0, 0, 1)";
    let orphan = match app.storage() {
        sesija::storage::Storage::Sqlite(db) => {
            sqlx::query(orphan).bind(vec![0u8]).execute(&db.writer).await.err()
        }
        sesija::storage::Storage::Postgres(pool) => {
            sqlx::query(orphan).bind(vec![0u8]).execute(&pool).await.err()
        }
    };
    assert!(orphan.is_some());
}

#[rocket::async_test]
async fn the_upgrade_keeps_accounts_and_sessions_and_drops_orphans() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A database at schema 3, as the last release left it.
    let old = TempDir::new().unwrap();
    for m in ["0001_users.sql", "0002_sessions.sql", "0003_sessions_by_id.sql"] {
        std::fs::copy(format!("{}/migrations/sqlite/{m}", env!("CARGO_MANIFEST_DIR")), old.path().join(m))
            .unwrap();
    }
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("sesija.db")).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
    for (id, name) in [(1, "alice"), (3, "gone-and-back")] {
        sqlx::query("INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, 'x', 0)")
            .bind(id)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM users WHERE id = 3").execute(&pool).await.unwrap();
    for (handle, owner) in [("kept", 1), ("orphan", 3)] {
        sqlx::query(
            "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at) \
             VALUES (randomblob(32), ?, ?, 0, 0, 9999999999)",
        )
        .bind(handle)
        .bind(owner)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let db = sesija::storage::Db::open(&data).await.unwrap();
    let handles: Vec<String> =
        sqlx::query_scalar("SELECT handle FROM sessions").fetch_all(&db.reader).await.unwrap();
    assert_eq!(handles, ["kept"]);
    let id = users::create(&sesija::storage::Storage::Sqlite(db.clone()), "dave", "x").await.unwrap();
    assert_eq!(id, 2, "AUTOINCREMENT continues after the highest id the table holds");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&db.writer).await.unwrap();
    assert_eq!(fk, 1);
}

async fn a_burst_of_wrong_passwords_gets_at_most_the_limit_of_401s(engine: Engine) {
    let dir = TempDir::new().unwrap();
    let client = untracked(figment_on(engine, &dir.path().join("data")).await).await;
    let hash = Hasher::default().hash(PASSWORD.into()).await.unwrap();
    users::create(storage_of(&client), "alice", &hash).await.unwrap();
    let (cookie, token) = login_form(&client).await;
    let from = Some("192.0.2.9:4000".parse().unwrap());
    // 20 wrong guesses at once, then 40 more with the right password last.
    let burst = (0..60).map(|i| {
        let (client, cookie, token) = (client.clone(), cookie.clone(), token.clone());
        tokio::spawn(async move {
            let password = if i == 59 { PASSWORD.to_owned() } else { format!("guess {i}") };
            post_login(&client, &cookie, &token, "alice", &password, from).await.0
        })
    });
    let mut statuses = Vec::new();
    for task in burst.collect::<Vec<_>>() {
        statuses.push(task.await.unwrap());
    }
    let count = |s: Status| statuses.iter().filter(|x| **x == s).count();
    // At most the limit of attempts got a verdict on the password; the
    // right one among them only if it was one of the first five.
    assert!(count(Status::Unauthorized) + count(Status::SeeOther) <= 5, "{statuses:?}");
    assert!(count(Status::TooManyRequests) >= 55, "{statuses:?}");
}

async fn twenty_simultaneous_guesses_yield_at_most_max_failures_401s(engine: Engine) {
    let dir = TempDir::new().unwrap();
    let figment = figment_on(engine, &dir.path().join("data")).await;
    let client = untracked(figment.merge(("login_max_failures", 3))).await;
    let (cookie, token) = login_form(&client).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (client, cookie, token) = (client.clone(), cookie.clone(), token.clone());
            tokio::spawn(async move {
                post_login(&client, &cookie, &token, "nobody", &format!("guess {i}"), None).await.0
            })
        })
        .collect();
    let mut unauthorized = 0;
    for t in tasks {
        match t.await.unwrap() {
            Status::Unauthorized => unauthorized += 1,
            Status::TooManyRequests => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(unauthorized, 3);
}

/// Attempts in flight hold back those that could exceed a limit, but only
/// until their verdicts: right passwords are never refused because others
/// were being checked at the same moment.
async fn twenty_simultaneous_right_logins_from_one_address_all_get_in(engine: Engine) {
    let dir = TempDir::new().unwrap();
    let client = untracked(figment_on(engine, &dir.path().join("data")).await).await;
    let hash = Hasher::default().hash(PASSWORD.into()).await.unwrap();
    for name in ["alice", "bob"] {
        users::create(storage_of(&client), name, &hash).await.unwrap();
    }
    let (cookie, token) = login_form(&client).await;
    let from = Some("192.0.2.10:4000".parse().unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (client, cookie, token) = (client.clone(), cookie.clone(), token.clone());
            let name = if i % 2 == 0 { "alice" } else { "bob" };
            tokio::spawn(async move { post_login(&client, &cookie, &token, name, PASSWORD, from).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let (status, session) = task.await.unwrap();
        statuses.push(status);
        assert!(status != Status::SeeOther || session.is_some(), "a login gives a session");
    }
    assert!(statuses.iter().all(|s| *s == Status::SeeOther), "{statuses:?}");
}

#[rocket::async_test]
async fn long_user_names_are_answered_but_never_kept() {
    let dir = TempDir::new().unwrap();
    let client = untracked(figment(&dir.path().join("data"))).await;
    let (cookie, token) = login_form(&client).await;
    let before = tracked(&client);
    for i in 0..60u8 {
        let name = format!("{i}{}", "n".repeat(32_000));
        let from = SocketAddr::new(IpAddr::from([198, 51, 100, i]), 1000);
        let (status, _) = post_login(&client, &cookie, &token, &name, "guess", Some(from)).await;
        assert_eq!(status, Status::Unauthorized);
    }
    // One entry per address; none per name (each of those would hold 32 KB).
    assert_eq!(tracked(&client) - before, 60);
}

async fn one_address_spraying_many_names_is_locked_for_every_name(engine: Engine) {
    let dir = TempDir::new().unwrap();
    let figment = figment_on(engine, &dir.path().join("data")).await;
    let client = untracked(figment.merge(("login_max_failures_per_ip", 8))).await;
    let hash = Hasher::default().hash(PASSWORD.into()).await.unwrap();
    users::create(storage_of(&client), "alice", &hash).await.unwrap();
    let (cookie, token) = login_form(&client).await;
    let sprayer: SocketAddr = "203.0.113.5:1234".parse().unwrap();
    for i in 0..8 {
        let name = format!("user{i}");
        assert_eq!(
            post_login(&client, &cookie, &token, &name, "x", Some(sprayer)).await.0,
            Status::Unauthorized
        );
    }
    let (status, _) = post_login(&client, &cookie, &token, "alice", PASSWORD, Some(sprayer)).await;
    assert_eq!(status, Status::TooManyRequests, "the ninth name from that address");
    // IPv6: the same /64 is one source.
    let v6 = |last: &str| SocketAddr::new(format!("2001:db8:5:6::{last}").parse().unwrap(), 1);
    for i in 0..8 {
        let name = format!("v6user{i}");
        let (status, _) = post_login(&client, &cookie, &token, &name, "x", Some(v6(&format!("{i:x}")))).await;
        assert_eq!(status, Status::Unauthorized);
    }
    assert_eq!(
        post_login(&client, &cookie, &token, "alice", PASSWORD, Some(v6("ff"))).await.0,
        Status::TooManyRequests
    );
    let elsewhere: SocketAddr = "203.0.113.6:1234".parse().unwrap();
    assert_eq!(
        post_login(&client, &cookie, &token, "alice", PASSWORD, Some(elsewhere)).await.0,
        Status::SeeOther
    );
}

/// A data directory in `work` with the account alice.
fn with_alice(work: &std::path::Path) {
    let add = run_cli(work, &["user", "add", "alice", "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The binary under `umask 022`, the common default.
fn cli_with_umask(work: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut sh = std::process::Command::new("sh");
    sh.current_dir(work).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    sh.arg("-c").arg("umask 022 && exec \"$@\"").arg("sh").arg(env!("CARGO_BIN_EXE_sesija")).args(args);
    sh.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = sh.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn the_data_directory_database_and_backups_are_private_whatever_the_umask() {
    let work = TempDir::new().unwrap();
    let out = cli_with_umask(
        work.path(),
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = work.path().join("data");
    assert_eq!(mode(&data), 0o700);
    // The server keeps the WAL and shared-memory files open: check them live.
    let port = free_port();
    let server = Server::start(work.path(), port, &[]);
    let mut browser = Browser::new(port);
    log_in(&mut browser, "alice", false);
    for name in ["sesija.db", "sesija.db-wal", "sesija.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    let out = cli_with_umask(work.path(), &["backup", "copy.db"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&work.path().join("copy.db")), 0o600);
    drop(server);

    // A data directory and database left readable by an older version are tightened.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(data.join("sesija.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli_with_umask(work.path(), &["user", "list"], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("made data directory"), "says so");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("sesija.db")), 0o600);
}

#[test]
fn a_login_whose_body_is_still_arriving_at_sigterm_is_answered_303() {
    let work = TempDir::new().unwrap();
    with_alice(work.path());
    let port = free_port();
    let server = Server::start(work.path(), port, &[]);
    let mut browser = Browser::new(port);
    let page = browser.get("/login");
    let cookie = browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &csrf_in(&page.body))]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal_term();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let (code, out) = server.wait();
    assert_eq!(code, Some(0), "{out}");
}

#[rocket::async_test]
async fn the_sessions_page_lists_activity_as_the_server_knows_it_current_first() {
    let dir = TempDir::new().unwrap();
    // One app, with its cache: it holds deadline moves back for a second.
    let client = untracked(figment(&dir.path().join("data")).merge(("session_touch_interval", 1))).await;
    let storage = storage_of(&client).clone();
    let db = storage.sqlite().unwrap().clone();
    let hash = Hasher::default().hash(PASSWORD.into()).await.unwrap();
    users::create(&storage, "alice", &hash).await.unwrap();
    let (form_cookie, token) = login_form(&client).await;
    let mut cookies = Vec::new();
    for agent in ["agent-a", "agent-b", "agent-c"] {
        let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token)]);
        let res = client
            .post("/login")
            .header(ContentType::Form)
            .header(Header::new("User-Agent", agent))
            .cookie(form_cookie.clone())
            .body(body)
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::SeeOther);
        cookies.push(Cookie::new("sesija", sealed(&set_cookie(&res, "sesija").unwrap())));
    }
    // All three last seen long ago, as the database and the cache know it.
    sqlx::query("UPDATE sessions SET created_at = created_at - 500, last_seen_at = last_seen_at - 500")
        .execute(&db.writer)
        .await
        .unwrap();
    let manager = client.rocket().state::<Arc<sesija::session::SessionManager>>().unwrap();
    manager.store().invalidate().await;
    let handle = async |agent: &str| -> String {
        sqlx::query_scalar("SELECT handle FROM sessions WHERE user_agent = ?")
            .bind(agent)
            .fetch_one(&db.reader)
            .await
            .unwrap()
    };
    let (hb, hc) = (handle("agent-b").await, handle("agent-c").await);
    // b is active now: its new deadline waits in the cache.
    assert_eq!(client.get("/user").cookie(cookies[1].clone()).dispatch().await.status(), Status::Ok);
    let res = client.get("/sessions").cookie(cookies[0].clone()).dispatch().await;
    let html = res.into_string().await.unwrap();
    let at = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("{needle} in {html}"));
    assert!(at("This device") < at(&hb), "the current session first");
    assert!(at(&hb) < at(&hc), "b (active a moment ago, not yet written) before c (idle since login)");
    assert_eq!(html.matches("active now").count(), 1);
    let stored: i64 = sqlx::query_scalar("SELECT last_seen_at FROM sessions WHERE handle = ?")
        .bind(&hb)
        .fetch_one(&db.reader)
        .await
        .unwrap();
    assert!(stored < sesija::session::now() - 100, "b's move was still held back by the cache");
}

#[test]
fn sessions_list_shows_activity_the_server_holds_back_and_no_control_characters() {
    let work = TempDir::new().unwrap();
    with_alice(work.path());
    let port = free_port();
    let server = Server::start(work.path(), port, &[]);
    let mut older = Browser::new(port);
    log_in(&mut older, "alice", false);
    let mut newer = Browser::new(port);
    log_in(&mut newer, "alice", false);
    let hostile = "Evil\u{85}\u{9b}31m\u{9c}\u{9d}\u{202e}gnp.exe\u{1b}[2J\u{7f}";
    block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(work.path().join("data/sesija.db"));
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::query("UPDATE sessions SET last_seen_at = last_seen_at - 500, created_at = created_at - 500")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE sessions SET user_agent = ? WHERE id = (SELECT MIN(id) FROM sessions)")
            .bind(hostile)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    // Any command that changes sessions makes the server forget its cache.
    assert!(run_cli(work.path(), &["sessions", "purge"], None).status.success());
    assert_eq!(older.get("/user").status, 200, "the older session is active now (held back in the cache)");
    let out = run_cli(work.path(), &["sessions", "list", "--json"], None);
    assert!(out.status.success());
    let json = String::from_utf8(out.stdout).unwrap();
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let agents: Vec<&str> =
        rows.as_array().unwrap().iter().map(|r| r["user_agent"].as_str().unwrap()).collect();
    assert!(agents[0].starts_with("Evil"), "the session active a moment ago first: {agents:?}");
    let table = String::from_utf8(run_cli(work.path(), &["sessions", "list"], None).stdout).unwrap();
    for text in [json.as_str(), table.as_str()] {
        assert!(text.contains("Evil"));
        for bad in ['\u{85}', '\u{9b}', '\u{9c}', '\u{9d}', '\u{202e}', '\u{1b}', '\u{7f}'] {
            assert!(!text.contains(bad), "{bad:?} in {text:?}");
        }
        assert!(!text.contains("\\u001b"), "escaped ESC in JSON is still ESC once printed by jq");
    }
    drop(server);
}

#[rocket::async_test]
async fn weak_keys_are_refused_in_any_encoding_and_among_the_fallbacks() {
    use base64::Engine;
    let published = base64::engine::general_purpose::STANDARD
        .decode("hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBi2QJxBVHQk=")
        .unwrap();
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let start = |key: &str, value: serde_json::Value| {
        let figment = figment(&data).merge((key, value));
        async move { sesija::app(figment).await.err().map(|e| e.to_string()) }
    };
    for weak in [hex(&published), hex(&published).to_uppercase(), "00".repeat(32), "ab".repeat(32)] {
        let err = start("secret_key", weak.clone().into()).await.expect("refused");
        assert!(err.contains("`secret_key`") && !err.contains(&weak), "{err}");
    }
    let err =
        start("secret_key_fallbacks", serde_json::json!([random_key(64), hex(&published)])).await.unwrap();
    assert!(err.contains("secret_key_fallbacks") && err.contains("#2") && err.contains("published"), "{err}");
    assert!(start("secret_key", random_key(32).into()).await.is_none(), "a random key starts");
}

#[rocket::async_test]
async fn a_planted_plain_cookie_opens_nothing_under_cookie_secure() {
    let app = spawn_app_with(|f| f.merge(("cookie_secure", true))).await;
    app.add_user("mallory").await;
    app.add_user("victim").await;
    // The switch to cookie_secure happened a while ago.
    sqlx::query("UPDATE server_state SET since = since - 60 WHERE key = 'session_cookie'")
        .execute(&app.db().await)
        .await
        .unwrap();
    let portal =
        Client::tracked(sesija::app(figment(&app.data_dir()).merge(("cookie_secure", true))).await.unwrap())
            .await
            .unwrap();
    let res = login(&portal, "mallory", PASSWORD, false).await;
    assert_eq!(res.status(), Status::SeeOther);
    drop(res);
    // Mallory's own session, planted in the victim's browser under the plain name.
    let value = portal.cookies().get_private("__Host-sesija").expect("secure cookie").value().to_owned();
    let victim =
        Client::tracked(sesija::app(figment(&app.data_dir()).merge(("cookie_secure", true))).await.unwrap())
            .await
            .unwrap();
    let res = victim.get("/user").private_cookie(Cookie::new("sesija", value.clone())).dispatch().await;
    assert_eq!(res.status(), Status::SeeOther, "a plain cookie of a session newer than the switch");
    let res = victim.get("/user").private_cookie(Cookie::new("__Host-sesija", value)).dispatch().await;
    assert_eq!(res.status(), Status::Ok, "the same session under its own name");
}

async fn a_weaker_stored_hash_is_replaced_at_login(engine: Engine) {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let app = spawn_app_on(engine).await;
    let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
    let weak = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(1024, 1, 1, None).unwrap(),
    )
    .hash_password(PASSWORD.as_bytes(), &salt)
    .unwrap()
    .to_string();
    users::create(&app.storage(), "alice", &weak).await.unwrap();
    logged_in(&app.client, "alice", false).await;
    let stored: String = sql!(app, fetch_one, sqlx::query_scalar("SELECT password_hash FROM users"));
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
    assert_eq!(log_out(&app.client).await.status(), Status::SeeOther);
    logged_in(&app.client, "alice", false).await;
    assert_eq!(
        app.client.get("/user").dispatch().await.status(),
        Status::Ok,
        "the session survived the re-hash"
    );
}

async fn ending_other_sessions_asks_for_the_password_unless_it_was_entered_recently(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let phone = app.other_browser().await;
    logged_in(&phone, "alice", false).await;
    app.advance(sesija::auth::state::SUDO_WINDOW);

    let html = app.client.get("/sessions").dispatch().await.into_string().await.unwrap();
    assert!(html.contains(r#"name="password""#), "the page asks for it up front");
    let token = csrf_in(&html);
    let post = |body: String| {
        app.client.post("/sessions/revoke-others").header(ContentType::Form).body(body).dispatch()
    };
    let res = post(form(&[("csrf_token", &token)])).await;
    assert_eq!(res.status(), Status::Forbidden);
    assert!(res.into_string().await.unwrap().contains("Confirm your password"));
    let res = post(form(&[("csrf_token", &token), ("password", "wrong one")])).await;
    assert_eq!(res.status(), Status::UnprocessableEntity);
    assert_eq!(phone.get("/user").dispatch().await.status(), Status::Ok, "nothing ended yet");
    let phone_handle: String =
        sql!(app, fetch_one, sqlx::query_scalar("SELECT handle FROM sessions ORDER BY id DESC LIMIT 1"));
    let res = app
        .client
        .post("/sessions/revoke")
        .header(ContentType::Form)
        .body(form(&[("csrf_token", &token), ("handle", &phone_handle)]))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Forbidden, "ending one other session asks too");
    let res = post(form(&[("csrf_token", &token), ("password", PASSWORD)])).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(phone.get("/user").dispatch().await.status(), Status::SeeOther, "ended");

    // Within the next ten minutes it does not ask again.
    logged_in(&phone, "alice", false).await;
    let res = post(form(&[("csrf_token", &token)])).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(phone.get("/user").dispatch().await.status(), Status::SeeOther);
}

async fn wrong_confirmation_passwords_are_throttled(engine: Engine) {
    let app = spawn_app_on_with(engine, |f| f.merge(("login_max_failures", 2))).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    app.advance(sesija::auth::state::SUDO_WINDOW);
    let token = csrf_in(&app.client.get("/sessions").dispatch().await.into_string().await.unwrap());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let body = form(&[("csrf_token", &token), ("password", "nope nope")]);
        statuses.push(
            app.client
                .post("/sessions/revoke-others")
                .header(ContentType::Form)
                .body(body)
                .dispatch()
                .await
                .status(),
        );
    }
    assert_eq!(statuses, [Status::UnprocessableEntity, Status::UnprocessableEntity, Status::TooManyRequests]);
}

#[test]
fn the_setup_token_reaches_no_log_at_any_level() {
    let work = TempDir::new().unwrap();
    let port = free_port();
    let server = Server::start(work.path(), port, &[("ROCKET_LOG_LEVEL", "debug")]);
    let link = setup_path(&server.output());
    let token = link.trim_start_matches("/setup?token=").to_owned();
    let page = request(port, "GET", &link, &[], None).unwrap();
    assert_eq!(page.status, 200, "the link still opens the form");
    assert!(page.body.contains(&token), "the form carries it on");
    std::thread::sleep(Duration::from_millis(200));
    let out = server.output();
    assert_eq!(out.matches(&token).count(), 1, "printed once, at start-up, and never logged: {out}");
    assert!(out.contains("GET /setup"), "the request itself is logged: {out}");
}

/// The portal's own origin is public_url's scheme, host and port exactly:
/// the same host under another scheme or port is another origin.
#[rocket::async_test]
async fn the_public_origin_matches_by_scheme_host_and_port() {
    let app = spawn_app_with(|f| f.merge(("public_url", "https://portal.example"))).await;
    app.add_user("alice").await;
    let token = login_token(&app.client).await;
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token)]);
    let post = |origin: &'static str| {
        app.client
            .post("/login")
            .header(ContentType::Form)
            .header(Header::new("Host", "127.0.0.1:8000"))
            .header(Header::new("Origin", origin))
            .body(body.clone())
            .dispatch()
    };
    for origin in ["http://portal.example", "https://portal.example:8443", "http://portal.example:443"] {
        assert_eq!(post(origin).await.status(), Status::Forbidden, "{origin}");
    }
    assert_eq!(post("https://portal.example").await.status(), Status::SeeOther);
}

#[rocket::async_test]
async fn a_post_from_another_origin_is_refused() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    let token = login_token(&app.client).await;
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token)]);
    for (header, value) in [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Origin", "http://portal.example:8001"),
        ("Referer", "https://evil.example/page"),
    ] {
        let res = app
            .client
            .post("/login")
            .header(ContentType::Form)
            .header(Header::new("Host", "portal.example:8000"))
            .header(Header::new(header, value))
            .body(body.clone())
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Forbidden, "{header}: {value}");
        assert!(set_cookie(&res, "sesija").is_none());
    }
    let res = app
        .client
        .post("/login")
        .header(ContentType::Form)
        .header(Header::new("Host", "portal.example:8000"))
        .header(Header::new("Origin", "http://portal.example:8000"))
        .body(body)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther, "the portal's own origin");
    // Logged in: the same for every state-changing form.
    let html = app.client.get("/user").dispatch().await.into_string().await.unwrap();
    let res = app
        .client
        .post("/logout")
        .header(ContentType::Form)
        .header(Header::new("Host", "portal.example:8000"))
        .header(Header::new("Origin", "https://evil.example"))
        .body(form(&[("csrf_token", &csrf_in(&html))]))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Forbidden);
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok, "still logged in");
}

#[rocket::async_test]
async fn an_anonymous_csrf_token_expires_after_a_day() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    let client = Client::untracked(sesija::app(figment(&app.data_dir())).await.unwrap()).await.unwrap();
    let token = sesija::session::Token::generate().encode();
    let issued = |age: i64| format!("{}.{token}", sesija::session::now() - age);
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token)]);
    let post = |value: String| {
        client
            .post("/login")
            .header(ContentType::Form)
            .private_cookie(Cookie::new("sesija_csrf", value))
            .body(body.clone())
            .dispatch()
    };
    assert_eq!(post(issued(86_400 + 5)).await.status(), Status::Forbidden, "a day old");
    assert_eq!(post(token.clone()).await.status(), Status::Forbidden, "no issue time");
    assert_eq!(post(issued(3_600)).await.status(), Status::SeeOther, "an hour old");
}
