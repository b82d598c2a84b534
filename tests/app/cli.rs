//! The administrative commands, run as the real binary.

use std::process::Output;

use tempfile::TempDir;

use crate::helpers::PASSWORD;
use crate::http::{run_cli, sesija};
use crate::server::{block_on, count_sessions};

fn run(work: &TempDir, args: &[&str], stdin: Option<&str>) -> Output {
    run_cli(work.path(), args, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(needle), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn users_are_added_listed_changed_and_removed() {
    let work = TempDir::new().unwrap();
    let line = format!("{PASSWORD}\n");
    let out = run(&work, &["user", "add", "alice", "--password-stdin"], Some(&line));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "created user alice");

    fails_with(&run(&work, &["user", "add", "alice", "--password-stdin"], Some(&line)), "already exists");
    fails_with(&run(&work, &["user", "add", "bob", "--password-stdin"], Some("short\n")), "at least 8");
    fails_with(&run(&work, &["user", "add", "bad name", "--password-stdin"], Some(&line)), "user name");
    fails_with(&run(&work, &["user", "passwd", "nobody", "--password-stdin"], Some(&line)), "no user");
    fails_with(&run(&work, &["user", "remove", "nobody"], None), "no user");
    // Without a terminal and without --password-stdin there is no prompt to answer.
    fails_with(&run(&work, &["user", "add", "carol"], None), "--password-stdin");

    let out = run(&work, &["user", "list"], None);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("alice\tcreated "), "{}", text(&out.stdout));

    seed_session(&work, "alice", 100);
    let out = run(&work, &["user", "passwd", "alice", "--password-stdin"], Some("a new password\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "changed the password of alice; ended 1 sessions");

    seed_session(&work, "alice", 100);
    seed_session(&work, "alice", -100);
    let out = run(&work, &["user", "remove", "alice"], None);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "removed user alice; ended 2 sessions");
    assert_eq!(count_sessions(&work.path().join("data/sesija.db")), 0);
}

/// Puts a session for `name` in the database, expiring `ttl` seconds from now.
fn seed_session(work: &TempDir, name: &str, ttl: i64) {
    block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(work.path().join("data/sesija.db"));
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let now = sesija::session::now();
        sqlx::query(
            "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at) \
             SELECT ?, ?, id, ?, ?, ? FROM users WHERE username = ?",
        )
        .bind(sesija::session::Token::generate().hash().0.to_vec())
        .bind(sesija::session::new_handle())
        .bind(now)
        .bind(now)
        .bind(now + ttl)
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    })
}

#[test]
fn sessions_purge_removes_expired_rows_and_says_how_many() {
    let work = TempDir::new().unwrap();
    let out = run(&work, &["user", "add", "alice", "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    assert!(out.status.success());
    for ttl in [-5, -5, -5, 3600] {
        seed_session(&work, "alice", ttl);
    }
    let out = run(&work, &["sessions", "purge"], None);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "purged 3 expired sessions");
    assert_eq!(count_sessions(&work.path().join("data/sesija.db")), 1);
}

#[test]
fn commands_report_bad_configuration_and_unusable_data_dirs() {
    let work = TempDir::new().unwrap();
    let out =
        sesija(work.path(), &[("ROCKET_DATA_DIR", "/proc/nope")]).args(["user", "list"]).output().unwrap();
    fails_with(&out, "/proc/nope");
    let out =
        sesija(work.path(), &[("ROCKET_LOGIN_LOCKOUT", "0")]).args(["sessions", "purge"]).output().unwrap();
    fails_with(&out, "login_lockout");
    let out = sesija(work.path(), &[]).arg("--version").output().unwrap();
    assert!(text(&out.stdout).starts_with("sesija "));
    let out = sesija(work.path(), &[]).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
