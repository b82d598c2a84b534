//! sesija on PostgreSQL (`database_url`): the web app through Rocket's local
//! client, several instances on one database (each its own Rocket, its own
//! data directory, the same key), the command line, start-up errors, an
//! outage of the database, and two real instances of the binary.

use std::path::Path;

use rocket::figment::Figment;
use rocket::http::{ContentType, Cookie, Status};
use rocket::local::asynchronous::Client;
use tempfile::TempDir;

use crate::helpers::*;
use crate::http::{free_port, run_cli, run_cli_with, sesija, Browser, Server};
use crate::server::log_in;

async fn user_page(client: &Client, cookie: &str) -> Status {
    client.get("/user").cookie(Cookie::new("sesija", cookie.to_owned())).dispatch().await.status()
}

/// The `/user` page `client` shows for `cookie` (its logout form carries
/// the session's token).
async fn user_html(client: &Client, cookie: &str) -> String {
    let res = client.get("/user").cookie(Cookie::new("sesija", cookie.to_owned())).dispatch().await;
    res.into_string().await.unwrap()
}

/// Logs `cookie`'s session out on `client`, with the form token of the
/// `/user` page `html` it showed.
async fn log_out(client: &Client, cookie: &str, html: &str) {
    let res = client
        .post("/logout")
        .cookie(Cookie::new("sesija", cookie.to_owned()))
        .header(ContentType::Form)
        .body(form(&[("csrf_token", &csrf_in(html))]))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther);
}

#[rocket::async_test]
async fn every_instance_honours_a_login_logout_and_password_change_at_once() {
    let Some(db) = Installation::new().await else { return };
    let (a, b) = (db.instance("a").await, db.instance("b").await);
    db.add_user(&a, "alice").await;
    let cookie = sealed(&logged_in(&a, "alice", true).await);
    assert_eq!(user_page(&a, &cookie).await, Status::Ok);
    let res = b.get("/user").cookie(Cookie::new("sesija", cookie.clone())).dispatch().await;
    assert_eq!(res.status(), Status::Ok, "a login on A is one on B");
    let html = res.into_string().await.unwrap();
    assert!(html.contains("Hello, alice!"));

    // Logged out on B: A refuses the cookie from its very next request on.
    log_out(&b, &cookie, &html).await;
    for _ in 0..200 {
        assert_eq!(user_page(&a, &cookie).await, Status::SeeOther, "a replay was served");
    }

    // A password change on A ends alice's other sessions, on B too.
    let laptop = sealed(&logged_in(&a, "alice", false).await);
    let phone = db.instance("phone").await;
    logged_in(&phone, "alice", false).await;
    assert_eq!(user_page(&b, &laptop).await, Status::Ok);
    let token = csrf_in(&phone.get("/account/password").dispatch().await.into_string().await.unwrap());
    let res = phone
        .post("/account/password")
        .header(ContentType::Form)
        .body(form(&[
            ("current_password", PASSWORD),
            ("new_password", "another good password"),
            ("confirm_password", "another good password"),
            ("csrf_token", &token),
        ]))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(user_page(&b, &laptop).await, Status::SeeOther, "ended on every instance");
    assert_eq!(user_page(&a, &laptop).await, Status::SeeOther);
    assert_eq!(phone.get("/user").dispatch().await.status(), Status::Ok, "the changing session stays");

    // The devices page of any instance lists what the database holds.
    let html = phone.get("/sessions").dispatch().await.into_string().await.unwrap();
    assert_eq!(html.matches("signed in ").count(), 1, "{html}");
}

#[rocket::async_test]
async fn a_code_used_on_one_instance_is_refused_on_every_other() {
    let Some(db) = Installation::new().await else { return };
    let (a, b) = (db.instance("a").await, db.instance("b").await);
    db.add_user(&a, "alice").await;
    logged_in(&a, "alice", false).await;
    let (secret, recovery) = crate::helpers::enrol(&a).await;
    // The password alone, on B: nothing opens.
    crate::two_factor::password_step(&b, "alice", false).await;
    assert_eq!(crate::two_factor::user_status(&b).await, Status::SeeOther);
    let next = crate::helpers::code(&secret, 1);
    assert_eq!(crate::two_factor::send_code(&b, &next).await.status(), Status::SeeOther);
    assert_eq!(crate::two_factor::user_status(&b).await, Status::Ok);
    // The same code on a third instance: refused (one step, used once).
    let c = db.instance("c").await;
    crate::two_factor::password_step(&c, "alice", false).await;
    assert_eq!(crate::two_factor::send_code(&c, &next).await.status(), Status::Unauthorized);
    // A recovery code works once, across instances too.
    assert_eq!(crate::two_factor::send_code(&c, &recovery[0]).await.status(), Status::SeeOther);
    let d = db.instance("d").await;
    crate::two_factor::password_step(&d, "alice", false).await;
    assert_eq!(crate::two_factor::send_code(&d, &recovery[0]).await.status(), Status::Unauthorized);
}

/// The set-up form of an instance's printed link, filled in for `name`.
async fn setup_form(client: &Client, name: &str) -> String {
    let token = client.rocket().state::<sesija::web::SetupToken>().unwrap().get().unwrap();
    let page = client.get(format!("/setup?token={token}")).dispatch().await;
    let csrf = csrf_in(&page.into_string().await.unwrap());
    form(&[("token", &token), ("username", name), ("password", PASSWORD), ("csrf_token", &csrf)])
}

#[rocket::async_test]
async fn two_instances_given_the_setup_form_at_once_create_one_account() {
    let Some(db) = Installation::new().await else { return };
    for round in 0..3 {
        let url = crate::postgres::fresh_database(&crate::postgres::cluster().unwrap()).await;
        let (fa, fb) = (
            db.figment(&format!("a{round}")).merge(("database_url", &url)),
            db.figment(&format!("b{round}")).merge(("database_url", &url)),
        );
        let a = Client::tracked(sesija::app(fa).await.unwrap()).await.unwrap();
        let b = Client::tracked(sesija::app(fb).await.unwrap()).await.unwrap();
        // Two different names: a shared name would be refused by the
        // unique index anyway, which proves nothing.
        let (body_a, body_b) = (setup_form(&a, "admin").await, setup_form(&b, "root").await);
        let (ra, rb) = tokio::join!(
            a.post("/setup").header(ContentType::Form).body(body_a).dispatch(),
            b.post("/setup").header(ContentType::Form).body(body_b).dispatch(),
        );
        let created = [ra.status(), rb.status()].iter().filter(|s| **s == Status::SeeOther).count();
        assert_eq!(created, 1, "{:?} {:?}", ra.status(), rb.status());
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&pool).await.unwrap();
        assert_eq!(users, 1);
    }
}

#[rocket::async_test]
async fn the_command_line_manages_a_postgresql_installation() {
    let Some(db) = Installation::new().await else { return };
    let a = db.instance("a").await;
    let work = db.workdir();
    let envs = db.envs();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let out = run_cli_with(&work, &envs, args, stdin);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) =
        cli(&["user", "add", "bob", "--password-stdin", "--group", "ops"], Some(&format!("{PASSWORD}\n")));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("created user bob"));
    let (_, out, _) = cli(&["user", "list"], None);
    assert!(out.contains("bob\tcreated") && out.contains("groups ops") && out.contains("2fa off"), "{out}");

    let cookie = sealed(&logged_in(&a, "bob", false).await);
    assert_eq!(user_page(&a, &cookie).await, Status::Ok);
    let (code, out, _) = cli(&["sessions", "list", "--user", "bob"], None);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, err) = cli(&["sessions", "revoke", "--user", "bob"], None);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "ended 1 sessions");
    assert_eq!(user_page(&a, &cookie).await, Status::SeeOther, "the running instance honours it at once");

    let (code, _, err) = cli(&["backup", "copy.db"], None);
    assert_ne!(code, Some(0));
    assert!(err.contains("pg_dump") && err.lines().count() == 1, "{err}");
    let (code, _, err) = cli(&["key", "rotate"], None);
    assert_ne!(code, Some(0));
    assert!(err.contains("secret_key"), "{err}");
    let (code, out, _) = cli(&["check-config"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("database_url = postgres://"), "{out}");
    let (code, out, _) = cli(&["user", "remove", "bob"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("removed user bob"));
}

/// Runs the binary (serving) with `envs` until it exits: its exit code and
/// everything it printed.
fn start_fails(work: &Path, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = sesija(work, envs).output().unwrap();
    (
        out.status.code(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn bad_postgresql_settings_stop_start_up_in_one_line_without_the_password() {
    let work = TempDir::new().unwrap();
    let key = random_key(64);
    for (envs, expect) in [
        (
            vec![("ROCKET_DATABASE_URL", "postgres://sesija@127.0.0.1:1/sesija")],
            "`secret_key` must be configured",
        ),
        (
            vec![("ROCKET_DATABASE_URL", "mysql://sesija:hunter2@localhost/x"), ("ROCKET_SECRET_KEY", &key)],
            "`database_url` must be a postgres:// URL",
        ),
        (
            vec![
                ("ROCKET_DATABASE_URL", "postgres://sesija:hunter2@127.0.0.1:1/sesija"),
                ("ROCKET_SECRET_KEY", &key),
            ],
            "database_url postgres://127.0.0.1:1/sesija: cannot connect",
        ),
        (
            vec![
                ("ROCKET_DATABASE_URL", "postgres://sesija@127.0.0.1:1/sesija?password=hunter2"),
                ("ROCKET_SECRET_KEY", &key),
            ],
            "database_url postgres://127.0.0.1:1/sesija: cannot connect",
        ),
        (
            vec![
                ("ROCKET_DATABASE_URL", "mysql://localhost/x?password=hunter2"),
                ("ROCKET_SECRET_KEY", &key),
            ],
            "`database_url` must be a postgres:// URL (got mysql://localhost/x)",
        ),
    ] {
        let (code, said) = start_fails(work.path(), &envs);
        assert_ne!(code, Some(0), "{said}");
        assert!(said.contains(expect), "{said}");
        assert!(!said.contains("hunter2"), "the password was shown: {said}");
        assert_eq!(said.trim().lines().count(), 1, "{said}");
    }
}

/// A password given as a `?password=` parameter, or in the user-info part,
/// is never shown: not by `check-config` (which promises masked secrets),
/// nor by `migrate-to`'s errors; and `migrate-to` takes its URL from
/// standard input or the environment, off the command line.
#[test]
fn database_urls_are_shown_without_any_password() {
    let work = TempDir::new().unwrap();
    let key = random_key(64);
    for url in [
        "postgres://sesija@127.0.0.1:1/sesija?password=hunter2",
        "postgres://sesija:hunter2@127.0.0.1:1/sesija",
    ] {
        let out = sesija(work.path(), &[("ROCKET_DATABASE_URL", url), ("ROCKET_SECRET_KEY", &key)])
            .arg("check-config")
            .output()
            .unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{said}");
        assert!(said.contains("database_url = postgres://127.0.0.1:1/sesija\n"), "{said}");
        assert!(!said.contains("hunter2") && !said.contains("sesija@"), "{said}");
    }

    // migrate-to, with a SQLite installation to copy: the URL as an
    // argument, on standard input and in the environment; each error names
    // the database without the password.
    let added =
        run_cli(work.path(), &["user", "add", "alice", "--password-stdin"], Some("a long password\n"));
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let url = "postgres://sesija@127.0.0.1:1/sesija?password=hunter2";
    for (envs, args, stdin) in [
        (vec![], vec!["migrate-to", url], None),
        (vec![], vec!["migrate-to", "--url-stdin"], Some(format!("{url}\n"))),
        (vec![("SESIJA_MIGRATE_TO_URL", url)], vec!["migrate-to"], None),
    ] {
        let out = run_cli_with(work.path(), &envs, &args, stdin.as_deref());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("postgres://127.0.0.1:1/sesija") && err.contains("cannot connect"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let out = run_cli(work.path(), &["migrate-to"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--url-stdin") && err.contains("SESIJA_MIGRATE_TO_URL"),
        "{err}"
    );
    let help = run_cli(work.path(), &["migrate-to", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--url-stdin") && help.contains("SESIJA_MIGRATE_TO_URL"), "{help}");
}

#[rocket::async_test]
async fn an_outage_of_postgresql_is_503_and_recovery_needs_no_restart() {
    if crate::postgres::cluster().is_none() {
        return;
    }
    // A cluster of this test's own, to stop and start.
    let cluster = crate::postgres::OwnCluster::start();
    let url = cluster.url.clone();

    let db = Installation { dir: TempDir::new().unwrap(), url: url.clone(), key: random_key(64) };
    let app = db.instance("a").await;
    db.add_user(&app, "alice").await;
    let cookie = sealed(&logged_in(&app, "alice", false).await);
    assert_eq!(app.get("/healthz").dispatch().await.status(), Status::Ok);

    let stranger = db.instance("b").await;
    let token = login_token(&stranger).await;
    cluster.halt();
    let started = std::time::Instant::now();
    // A login meanwhile: 503 (the shared throttle cannot count it), not a
    // 429 and not a 500.
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token)]);
    let res = stranger.post("/login").header(ContentType::Form).body(body).dispatch().await;
    assert_eq!(res.status(), Status::ServiceUnavailable);
    assert_eq!(app.get("/healthz").dispatch().await.status(), Status::ServiceUnavailable);
    let res = app.get("/user").cookie(Cookie::new("sesija", cookie.clone())).dispatch().await;
    assert_eq!(res.status(), Status::ServiceUnavailable, "never served unverified, never a 500");
    assert!(res.into_string().await.unwrap().contains("cannot reach its database"));
    assert_eq!(app.get("/login").dispatch().await.status(), Status::ServiceUnavailable);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "answers came within the acquire timeout"
    );

    cluster.resume();
    let mut healthy = false;
    for _ in 0..50 {
        if app.get("/healthz").dispatch().await.status() == Status::Ok {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(healthy, "back without a restart");
    assert_eq!(user_page(&app, &cookie).await, Status::Ok, "nothing acknowledged was lost");
}

fn signal(server: &Server, which: &str) {
    let status =
        std::process::Command::new("kill").arg(which).arg(server.child.id().to_string()).status().unwrap();
    assert!(status.success());
}

/// Starts instances of the real binary on one database at once; each on
/// its own port and data directory.
fn start_together(db: &Installation, names: &[&str]) -> Vec<Server> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let work = db.dir.path().join(name);
                std::fs::create_dir_all(&work).unwrap();
                scope.spawn(move || Server::start(&work, free_port(), &db.envs()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[rocket::async_test]
async fn two_real_instances_serve_one_set_of_users() {
    let Some(db) = Installation::new().await else { return };
    // Started together on an empty database: both come up (one migrates,
    // the other waits for its lock and finds the schema done).
    let servers = tokio::task::block_in_place(|| start_together(&db, &["a", "b"]));
    let (a, b) = (&servers[0], &servers[1]);
    let pool = db.pool().await;
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    let files =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres")).unwrap().count();
    assert_eq!(versions as usize, files, "each migration applied once");
    let out = run_cli_with(
        &db.workdir(),
        &db.envs(),
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success());

    tokio::task::block_in_place(|| {
        let mut on_a = Browser::new(a.port);
        log_in(&mut on_a, "alice", false);
        let mut on_b = on_a.clone();
        on_b.port = b.port;
        assert_eq!(on_b.get("/user").status, 200, "logged in on A, read on B");

        // A paused while B logs the session out; resumed, A refuses it.
        let replay = on_a.clone();
        signal(a, "-STOP");
        let page = on_b.get("/user");
        let res = on_b.post("/logout", &form(&[("csrf_token", &csrf_in(&page.body))]));
        assert_eq!(res.status, 303);
        signal(a, "-CONT");
        for _ in 0..200 {
            assert_eq!(replay.clone().get("/user").status, 303, "a replay was served on A");
        }

        // The operator's revoke while both run.
        let mut again = Browser::new(b.port);
        log_in(&mut again, "alice", false);
        let mut same_on_a = again.clone();
        same_on_a.port = a.port;
        assert_eq!(same_on_a.get("/user").status, 200);
        let out = run_cli_with(&db.workdir(), &db.envs(), &["sessions", "revoke", "--user", "alice"], None);
        assert!(out.status.success());
        assert_eq!(same_on_a.get("/user").status, 303);
        assert_eq!(again.get("/user").status, 303);
    });
}

#[rocket::async_test]
async fn a_burst_of_first_accounts_creates_one() {
    let Some(cluster) = crate::postgres::cluster() else { return };
    for _ in 0..5 {
        let url = crate::postgres::fresh_database(&cluster).await;
        let storage = sesija::storage::Storage::Postgres(sesija::storage::open_postgres(&url).await.unwrap());
        // Many connections at once, each racing to be the first account.
        let tries = (0..16).map(|i| {
            let storage = storage.clone();
            tokio::spawn(async move {
                sesija::auth::users::create_first(&storage, &format!("admin{i}"), "x").await
            })
        });
        let mut created = 0;
        for attempt in rocket::futures::future::join_all(tries).await {
            created += usize::from(attempt.unwrap().unwrap().is_some());
        }
        assert_eq!(created, 1);
        assert_eq!(sesija::auth::users::count(&storage).await.unwrap(), 1);
    }
}

#[rocket::async_test]
async fn one_instance_purges_at_a_time_and_a_vanished_one_lets_go() {
    use sesija::session::{PgStore, SessionStore};
    let Some(cluster) = crate::postgres::cluster() else { return };
    let pool = crate::postgres::open_db(&cluster).await;
    let (a, b) = (PgStore::new(pool.clone()), PgStore::new(pool.clone()));
    let turn = a.backend().purge_turn().await.unwrap().expect("A's turn");
    let clock = turn.now.expect("the database's clock");
    assert!((clock - sesija::session::now()).abs() < 5);
    assert!(b.backend().purge_turn().await.unwrap().is_none(), "B skips the round while A purges");
    turn.end().await;
    let turn = b.backend().purge_turn().await.unwrap().expect("B's turn once A is done");

    // B's machine vanishes (its connection is cut): A may purge again.
    assert!(a.backend().purge_turn().await.unwrap().is_none());
    let cut: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(cut, 1);
    let mut again = None;
    for _ in 0..50 {
        again = a.backend().purge_turn().await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    again.expect("the lock went with the connection").end().await;
    drop(turn);
}

#[rocket::async_test]
async fn failed_logins_count_across_instances_even_in_a_burst() {
    let Some(db) = Installation::new().await else { return };
    let three = |f: Figment| f.merge(("login_max_failures", 3));
    let (a, b) = (db.instance_with("a", three).await, db.instance_with("b", three).await);
    db.add_user(&a, "alice").await;
    assert_eq!(login(&a, "alice", "wrong password", false).await.status(), Status::Unauthorized);
    assert_eq!(login(&b, "alice", "wrong password", false).await.status(), Status::Unauthorized);
    assert_eq!(login(&a, "alice", "wrong password", false).await.status(), Status::Unauthorized);
    // Three failures split across A and B: locked on both, the right
    // password included.
    for client in [&a, &b] {
        let res = login(client, "alice", PASSWORD, false).await;
        assert_eq!(res.status(), Status::TooManyRequests);
        assert!(res.headers().get_one("Retry-After").is_some_and(|s| s.parse::<u64>().unwrap() > 0));
    }

    // Twenty wrong guesses at once, half on each instance, for bob.
    db.add_user(&a, "bob").await;
    let (ta, tb) = (login_token(&a).await, login_token(&b).await);
    let body =
        |token: &str| form(&[("username", "bob"), ("password", "wrong password"), ("csrf_token", token)]);
    let guesses = (0..20).map(|i| {
        let (client, body) = if i % 2 == 0 { (&a, body(&ta)) } else { (&b, body(&tb)) };
        async move { client.post("/login").header(ContentType::Form).body(body).dispatch().await.status() }
    });
    let answers = rocket::futures::future::join_all(guesses).await;
    let refused = answers.iter().filter(|s| **s == Status::Unauthorized).count();
    let throttled = answers.iter().filter(|s| **s == Status::TooManyRequests).count();
    assert_eq!((refused, throttled), (3, 17), "{answers:?}");
}

#[rocket::async_test]
async fn an_sqlite_installation_moves_to_postgresql_and_nobody_logs_in_again() {
    let Some(cluster) = crate::postgres::cluster() else { return };
    let url = crate::postgres::fresh_database(&cluster).await;
    let app = spawn_app().await;
    app.add_user("alice").await;
    sesija::auth::users::set_groups(&app.storage(), "alice", &["admins".into()]).await.unwrap();
    let alice = sealed(&logged_in(&app.client, "alice", true).await);
    let phone = app.other_browser().await;
    app.add_user("bob").await;
    logged_in(&phone, "bob", false).await;
    let (secret, _) = crate::helpers::enrol(&phone).await;
    let work = app.dir.path().to_owned();
    let migrate = |url: &str| {
        let out = run_cli_with(&work, &[], &["migrate-to", url], None);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, _, err) = migrate(&url);
    assert_ne!(code, Some(0));
    assert!(err.contains("stop it first"), "{err}");
    drop(phone);
    let TestApp { dir, client, .. } = app;
    drop(client);

    let (code, out, err) = migrate(&url);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("copied 2 accounts, 1 group memberships, 10 recovery codes and 2 live sessions"),
        "{out}"
    );
    let (code, _, err) = migrate(&url);
    assert_ne!(code, Some(0), "a second copy into the same database is refused");
    assert!(err.contains("already holds 2 accounts"), "{err}");

    // An instance on PostgreSQL with the installation's key: the old
    // cookie still opens, groups and the second factor came along.
    let key = std::fs::read_to_string(dir.path().join("data/secret.key")).unwrap().trim().to_owned();
    let db = Installation { dir, url, key };
    let a = db.instance("pg-a").await;
    let res = a.get("/user").cookie(Cookie::new("sesija", alice)).dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert!(res.into_string().await.unwrap().contains("Hello, alice!"));
    let storage = a.rocket().state::<sesija::storage::Storage>().unwrap().clone();
    let alice = sesija::auth::users::by_name(&storage, "alice").await.unwrap().unwrap();
    assert_eq!(sesija::auth::users::groups(&storage, alice.id).await.unwrap(), ["admins"]);
    crate::two_factor::password_step(&a, "bob", false).await;
    let next = crate::helpers::code(&secret, 1);
    assert_eq!(crate::two_factor::send_code(&a, &next).await.status(), Status::SeeOther);
    // New accounts and sessions continue after the copied ids.
    let carol = sesija::auth::users::create(&storage, "carol", "x").await.unwrap();
    assert_eq!(carol, 3);
    let b = db.instance("pg-b").await;
    logged_in(&b, "alice", false).await;
}

#[rocket::async_test]
async fn a_change_waits_for_every_listening_instance_and_no_longer() {
    let Some(db) = Installation::new().await else { return };
    let a = db.instance("a").await;
    let pool = db.pool().await;
    // A listening instance confirms at once.
    let started = std::time::Instant::now();
    sesija::session::barrier(&pool).await;
    assert!(started.elapsed() < std::time::Duration::from_millis(1500), "{:?}", started.elapsed());
    let applied: i64 =
        sqlx::query_scalar("SELECT MAX(applied) FROM sesija_instances").fetch_one(&pool).await.unwrap();
    let last: i64 =
        sqlx::query_scalar("SELECT last_value FROM sesija_barrier").fetch_one(&pool).await.unwrap();
    assert_eq!(applied, last, "the instance applied the barrier");

    // One seen a moment ago that never confirms (paused, say): the writer
    // waits for it, about two seconds, and no longer.
    sqlx::query("INSERT INTO sesija_instances (id, applied, seen_at) VALUES ('paused', 0, EXTRACT(EPOCH FROM now())::BIGINT)")
        .execute(&pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    sesija::session::barrier(&pool).await;
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1900) && waited < std::time::Duration::from_secs(4),
        "{waited:?}"
    );
    // Not seen for a while: not waited for.
    sqlx::query("UPDATE sesija_instances SET seen_at = seen_at - 10 WHERE id = 'paused'")
        .execute(&pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    sesija::session::barrier(&pool).await;
    assert!(started.elapsed() < std::time::Duration::from_millis(1500));
    drop(a);
}

#[rocket::async_test]
async fn a_listener_cut_off_by_the_server_never_serves_a_revoked_session() {
    let Some(db) = Installation::new().await else { return };
    let a = db.instance("a").await;
    db.add_user(&a, "alice").await;
    let pool = db.pool().await;
    for round in 0..3 {
        let cookie = sealed(&logged_in(&a, "alice", false).await);
        assert_eq!(user_page(&a, &cookie).await, Status::Ok, "round {round}: cached now");
        // The server cuts the instance's listening connection, and the
        // operator ends the session meanwhile.
        let cut: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(cut, 1, "round {round}");
        let (work, url, key) = (db.workdir(), db.url.clone(), db.key.clone());
        let out = tokio::task::spawn_blocking(move || {
            let envs = [("ROCKET_DATABASE_URL", url.as_str()), ("ROCKET_SECRET_KEY", key.as_str())];
            run_cli_with(&work, &envs, &["sessions", "revoke", "--user", "alice"], None)
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for _ in 0..200 {
            assert_eq!(
                user_page(&a, &cookie).await,
                Status::SeeOther,
                "round {round}: a revoked session was served"
            );
        }
    }
    // It hears again: a logout elsewhere still counts on it.
    let cookie = sealed(&logged_in(&a, "alice", false).await);
    assert_eq!(user_page(&a, &cookie).await, Status::Ok);
    let b = db.instance("b").await;
    let html = user_html(&b, &cookie).await;
    log_out(&b, &cookie, &html).await;
    assert_eq!(user_page(&a, &cookie).await, Status::SeeOther);
}

/// A login on `port` through the form: the cookie once the 303 was received.
fn log_in_on(port: u16) -> Result<Browser, u16> {
    let mut b = Browser::new(port);
    let page = b.try_send("GET", "/login", None).map_err(|_| 0u16)?;
    if page.status != 200 {
        return Err(page.status);
    }
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &csrf_in(&page.body))]);
    let res = b.try_send("POST", "/login", Some(&body)).map_err(|_| 0u16)?;
    match res.status {
        303 => Ok(b),
        status => Err(status),
    }
}

#[test]
fn postgresql_restarted_under_load_answers_503_meanwhile_and_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    if crate::postgres::cluster().is_none() {
        return;
    }
    let cluster = crate::postgres::OwnCluster::start();
    let db = Installation { dir: TempDir::new().unwrap(), url: cluster.url.clone(), key: random_key(64) };
    let servers = start_together(&db, &["a", "b"]);
    let ports = [servers[0].port, servers[1].port];
    let out = run_cli_with(
        &db.workdir(),
        &db.envs(),
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success());

    let acknowledged: Arc<Mutex<Vec<Browser>>> = Arc::default();
    let statuses: Arc<Mutex<std::collections::BTreeMap<u16, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (acknowledged, statuses, stop) = (acknowledged.clone(), statuses.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut turn = i;
                while !stop.load(Ordering::Relaxed) {
                    turn += 1;
                    let status = match log_in_on(ports[turn % 2]) {
                        Ok(mut b) => {
                            // Read on the other instance.
                            b.port = ports[(turn + 1) % 2];
                            let status = b.try_send("GET", "/user", None).map_or(0, |r| r.status);
                            acknowledged.lock().unwrap().push(b);
                            status
                        }
                        Err(status) => status,
                    };
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = acknowledged.lock().unwrap().len();
    cluster.halt();
    std::thread::sleep(std::time::Duration::from_secs(1));
    // Meanwhile the instances say they cannot serve.
    for port in ports {
        let health = crate::http::request(port, "GET", "/healthz", &[], None).map_or(0, |r| r.status);
        *statuses.lock().unwrap().entry(health).or_default() += 1;
        assert_eq!(health, 503, "/healthz during the outage");
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    cluster.resume();
    std::thread::sleep(std::time::Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        before > 0 && acknowledged.len() > before,
        "logins before and after: {before}, {}",
        acknowledged.len()
    );
    // 429: logins in flight count against alice's limit until refunded,
    // and a refund that found the database down is lost (failing closed).
    for status in statuses.keys() {
        assert!(
            matches!(status, 200 | 429 | 503),
            "only 200, 429 and 503, never a 500 or a hang: {statuses:?}"
        );
    }
    // Every acknowledged session opens on both instances.
    for browser in &acknowledged {
        for port in ports {
            let mut b = browser.clone();
            b.port = port;
            assert_eq!(b.get("/user").status, 200, "an acknowledged session was lost");
        }
    }
    drop(servers);
}

#[rocket::async_test]
async fn a_logout_waits_for_an_instance_that_has_not_heard_it_yet() {
    use sqlx::Connection;
    let Some(db) = Installation::new().await else { return };
    let (a, b) = (db.instance("a").await, db.instance("b").await);
    db.add_user(&a, "alice").await;
    let cookie = sealed(&logged_in(&a, "alice", false).await);
    assert_eq!(user_page(&a, &cookie).await, Status::Ok, "cached on A");
    let html = user_html(&b, &cookie).await;
    // Hold every instance's listener back: the confirmation each writes
    // after a batch of announcements waits for these row locks, so the
    // logout's announcement stays unread meanwhile.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM sesija_instances FOR UPDATE").execute(&mut *held).await.unwrap();
    // Let each listener reach the lock with a heartbeat of its own.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let started = std::time::Instant::now();
    log_out(&b, &cookie, &html).await;
    // The logout answered only once A could no longer trust its cache
    // (more than 2 s after A last confirmed anything, which may have been
    // up to a heartbeat before the hold began)...
    assert!(started.elapsed() >= std::time::Duration::from_millis(500), "{:?}", started.elapsed());
    // ...so A, which has not read the announcement yet, refuses the cookie.
    assert_eq!(user_page(&a, &cookie).await, Status::SeeOther, "A served a session logged out on B");
    held.rollback().await.unwrap();
}

/// An instance built and dropped inside a process (as these tests do, or
/// any program that embeds the app) leaves no connection open once its
/// runtime has ended: nothing keeps its pool alive. (A reference cycle
/// through the cache's trust in the announcements once did, and the test
/// suite ran the cluster out of connections.)
#[test]
fn an_instance_that_is_gone_leaves_no_connection_open() {
    let Some(install) = rocket::async_test(Installation::new()) else { return };
    rocket::async_test(async {
        let a = install.instance("a").await;
        install.add_user(&a, "alice").await;
        logged_in(&a, "alice", false).await;
        assert_eq!(a.get("/user").dispatch().await.status(), Status::Ok);
    });
    rocket::async_test(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&install.url).await.unwrap();
        let mut open: i64 = -1;
        for _ in 0..50 {
            open = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if open == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(open, 0, "connections of an instance that is gone");
    });
}

/// A login whose password check ran while a password change had already
/// ended the account's sessions but was not committed yet: the change
/// wins (the login's check of its own session waits for it), and no
/// session of the old password is left. Reproduced with the change held
/// open in a transaction of the test's own.
#[rocket::async_test]
async fn a_login_racing_an_uncommitted_password_change_keeps_no_session() {
    let Some(install) = Installation::new().await else { return };
    let a = install.instance("a").await;
    install.add_user(&a, "alice").await;
    let pool = install.pool().await;
    let mut change = pool.begin().await.unwrap();
    sqlx::query("UPDATE users SET password_hash = 'changed' WHERE username = 'alice'")
        .execute(&mut *change)
        .await
        .unwrap();
    sqlx::query("DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = 'alice')")
        .execute(&mut *change)
        .await
        .unwrap();
    let committed = std::sync::Mutex::new(None);
    let (cookie, answered): (Option<String>, _) = tokio::join!(
        async {
            let res = login(&a, "alice", PASSWORD, false).await;
            let cookie = set_cookie(&res, "sesija").filter(|c| !c.contains("Max-Age=0")).map(|c| sealed(&c));
            (cookie, std::time::Instant::now())
        },
        async {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            change.commit().await.unwrap();
            *committed.lock().unwrap() = Some(std::time::Instant::now());
        }
    )
    .0;
    let committed = committed.lock().unwrap().expect("committed");
    if let Some(cookie) = &cookie {
        assert_ne!(user_page(&a, cookie).await, Status::Ok, "a session of the old password survived");
    }
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "no session of the old password is stored");
    assert!(answered >= committed, "the login answered only once the change was decided");
}

/// Two instances on one database behind nginx, set up as docs/several-instances.md shows
/// (its upstream block): the proxy spreads the checks over both, and a
/// login, a logout, an operator's revocation and a password change count on
/// both at once; after `kill -9` of one, the proxy's next tries go to the
/// other and everyone is still logged in.
#[rocket::async_test]
async fn two_instances_behind_nginx_serve_one_set_of_users() {
    use crate::proxies::{log_in_through, nginx_upstream, via, EchoApp, HTML};
    if crate::proxies::skip() {
        return;
    }
    let Some(db) = Installation::new().await else { return };
    tokio::task::block_in_place(|| {
        let add = |password: &str| {
            let args = ["user", "add", "alice", "--password-stdin"];
            let out = run_cli_with(&db.workdir(), &db.envs(), &args, Some(&format!("{password}\n")));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        add(PASSWORD);
        let app = EchoApp::start();
        let ports = [free_port(), free_port()];
        let proxy = nginx_upstream(&ports, app.port);
        let p = proxy.port;
        let public = format!("http://auth.sesija.test:{p}");
        let mut envs = db.envs().to_vec();
        envs.extend([("ROCKET_PUBLIC_URL", public.as_str()), ("ROCKET_COOKIE_DOMAIN", "sesija.test")]);
        let servers: Vec<Server> = ["a", "b"]
            .iter()
            .zip(ports)
            .map(|(name, port)| {
                let work = db.dir.path().join(name);
                std::fs::create_dir_all(&work).unwrap();
                Server::start(&work, port, &envs)
            })
            .collect();
        let target = format!("http://app.sesija.test:{p}/page");
        let page =
            |cookie: &str| via(p, "GET", "app.sesija.test", "/page", &[HTML, ("Cookie", cookie)], None);
        let portal = |method: &str, path: &str, cookie: &str, body: Option<&str>| {
            via(p, method, "auth.sesija.test", path, &[HTML, ("Cookie", cookie)], body)
        };
        let all_refused = |cookie: &str, what: &str| {
            for _ in 0..20 {
                let res = page(cookie);
                assert_eq!(res.status, 302, "{what}: a check let the old session through: {}", res.body);
            }
        };

        // Logged in through the proxy, in on every check, whichever instance answers.
        let (cookie, _) = log_in_through(p, &target);
        for _ in 0..10 {
            let res = page(&cookie);
            assert_eq!(res.status, 200, "{}", res.body);
            assert!(res.body.contains("remote-user: alice"), "{}", res.body);
        }
        for server in &servers {
            assert!(server.output().contains("auth-request"), "both instances answered checks");
        }

        // A logout, made on whichever instance the proxy chose.
        let user = portal("GET", "/user", &cookie, None);
        assert_eq!(user.status, 200);
        let res = portal("POST", "/logout", &cookie, Some(&form(&[("csrf_token", &csrf_in(&user.body))])));
        assert_eq!(res.status, 303);
        all_refused(&cookie, "logged out");

        // The operator's revocation.
        let (cookie, _) = log_in_through(p, &target);
        assert_eq!(page(&cookie).status, 200);
        let out = run_cli_with(&db.workdir(), &db.envs(), &["sessions", "revoke", "--user", "alice"], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        all_refused(&cookie, "revoked");

        // A password change ends the other browser's session.
        let (laptop, _) = log_in_through(p, &target);
        let (phone, _) = log_in_through(p, &target);
        assert_eq!(page(&phone).status, 200);
        let html = portal("GET", "/account/password", &laptop, None).body;
        let body = form(&[
            ("csrf_token", &csrf_in(&html)),
            ("current_password", PASSWORD),
            ("new_password", "another good password"),
            ("confirm_password", "another good password"),
        ]);
        let res = portal("POST", "/account/password", &laptop, Some(&body));
        assert_eq!(res.status, 303, "{}", res.body);
        all_refused(&phone, "password changed");
        let out = run_cli_with(&db.workdir(), &db.envs(), &["user", "remove", "alice"], None);
        assert!(out.status.success());
        add(PASSWORD);

        // kill -9 of one instance: the other serves everyone still logged in.
        let (cookie, _) = log_in_through(p, &target);
        signal(&servers[0], "-KILL");
        for _ in 0..20 {
            let res = page(&cookie);
            assert_eq!(res.status, 200, "after a kill: {}", res.body);
            assert!(res.body.contains("remote-user: alice"));
        }
        let (fresh, _) = log_in_through(p, &target);
        assert_eq!(page(&fresh).status, 200, "a new login after the kill");
    });
}

/// A raw SQL edit of a session (an operator's, another program's) is
/// announced by the database itself, and an instance that holds the session
/// in memory drops it as soon as the announcement arrives (no barrier
/// waits for a raw edit): the row deleted, its deadline moved earlier, its
/// owner changed.
#[rocket::async_test]
async fn raw_sql_edits_reach_an_instance_that_holds_the_session_in_memory() {
    let Some(db) = Installation::new().await else { return };
    let (a, b) = (db.instance("a").await, db.instance("b").await);
    db.add_user(&a, "alice").await;
    db.add_user(&a, "bob").await;
    let pool = db.pool().await;
    // B trusts its memory once its first heartbeat came back.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let edits = [
        ("DELETE FROM sessions", "Log in"),
        ("UPDATE sessions SET expires_at = 1", "Log in"),
        ("UPDATE sessions SET user_id = (SELECT id FROM users WHERE username = 'bob')", "Hello, bob!"),
    ];
    for (edit, then) in edits {
        let cookie = sealed(&logged_in(&a, "alice", true).await);
        for _ in 0..3 {
            assert_eq!(user_page(&b, &cookie).await, Status::Ok, "B holds the session");
        }
        sqlx::query(sqlx::AssertSqlSafe(edit)).execute(&pool).await.unwrap();
        let started = std::time::Instant::now();
        loop {
            let res = b.get("/user").cookie(Cookie::new("sesija", cookie.clone())).dispatch().await;
            let followed = match res.status() {
                Status::SeeOther => b.get("/login").dispatch().await.into_string().await.unwrap(),
                _ => res.into_string().await.unwrap(),
            };
            if followed.contains(then) {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "{edit}: B still serves the old session"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        sqlx::query("DELETE FROM sessions").execute(&pool).await.unwrap();
    }
}

/// An announcement on the sessions channel that an instance cannot read
/// (sent by hand, or in a format a newer release might use) empties its
/// caches instead of being dropped: something changed that it cannot name.
/// Shown with a row deleted while the announcing trigger is off, then an
/// unreadable announcement.
#[rocket::async_test]
async fn an_unreadable_announcement_empties_the_caches() {
    let Some(db) = Installation::new().await else { return };
    let (a, b) = (db.instance("a").await, db.instance("b").await);
    db.add_user(&a, "alice").await;
    let pool = db.pool().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let cookie = sealed(&logged_in(&a, "alice", true).await);
    for _ in 0..3 {
        assert_eq!(user_page(&b, &cookie).await, Status::Ok, "B holds the session");
    }
    let mut quiet = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE sessions DISABLE TRIGGER sessions_announced")
        .execute(&mut *quiet)
        .await
        .unwrap();
    sqlx::query("DELETE FROM sessions").execute(&mut *quiet).await.unwrap();
    sqlx::query("ALTER TABLE sessions ENABLE TRIGGER sessions_announced").execute(&mut *quiet).await.unwrap();
    quiet.commit().await.unwrap();
    assert_eq!(user_page(&b, &cookie).await, Status::Ok, "unannounced: B still serves it from memory");
    sqlx::query("SELECT pg_notify('sesija_sessions', 'not an id')").execute(&pool).await.unwrap();
    let started = std::time::Instant::now();
    while user_page(&b, &cookie).await == Status::Ok {
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "B kept the session in memory");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
