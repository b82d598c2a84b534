//! The administrative commands, run as the real binary.

use std::process::Output;

use tempfile::TempDir;

use crate::helpers::*;
use crate::http::{run_cli_with, sesija};
use crate::server::block_on;

on_each_engine!(
    blocking: users_are_added_listed_changed_and_removed,
    sessions_purge_removes_expired_rows_and_says_how_many,
);

/// Where the commands run: a directory with `./data`, and on PostgreSQL
/// a database of its own and a cookie key (in the environment).
struct Install {
    work: TempDir,
    settings: Vec<(&'static str, String)>,
}

impl Install {
    fn new(engine: Engine) -> Install {
        Install { work: TempDir::new().unwrap(), settings: block_on(engine_settings(engine)) }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let envs = rocket_envs(&self.settings);
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_cli_with(self.work.path(), &envs, args, stdin)
    }

    /// The database the commands use, opened as the server opens it.
    async fn storage(&self) -> sesija::storage::Storage {
        match self.settings.iter().find(|(k, _)| *k == "database_url") {
            None => sesija::storage::Storage::Sqlite(
                sesija::storage::Db::open(&self.work.path().join("data")).await.unwrap(),
            ),
            Some((_, url)) => {
                sesija::storage::Storage::Postgres(sesija::storage::open_postgres(url).await.unwrap())
            }
        }
    }

    fn count_sessions(&self) -> i64 {
        block_on(async {
            let storage = self.storage().await;
            let n = sql!(storage, fetch_one, sqlx::query_scalar("SELECT COUNT(*) FROM sessions"));
            storage.close().await;
            n
        })
    }

    /// Puts a session for `name` in the database, expiring `ttl` seconds from now.
    fn seed_session(&self, name: &str, ttl: i64) {
        block_on(async {
            let storage = self.storage().await;
            let now = sesija::session::now();
            sql!(
                storage,
                execute,
                sqlx::query(
                    "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at) \
                     SELECT $1, $2, id, $3, $4, $5 FROM users WHERE username = $6",
                )
                .bind(sesija::session::Token::generate().hash().0.to_vec())
                .bind(sesija::session::new_handle())
                .bind(now)
                .bind(now)
                .bind(now + ttl)
                .bind(name)
            );
            storage.close().await;
        });
    }
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

fn users_are_added_listed_changed_and_removed(engine: Engine) {
    let work = Install::new(engine);
    let line = format!("{PASSWORD}\n");
    let out = work.run(&["user", "add", "alice", "--password-stdin"], Some(&line));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "created user alice");

    fails_with(&work.run(&["user", "add", "alice", "--password-stdin"], Some(&line)), "already exists");
    fails_with(&work.run(&["user", "add", "bob", "--password-stdin"], Some("short\n")), "at least 8");
    fails_with(&work.run(&["user", "add", "bad name", "--password-stdin"], Some(&line)), "user name");
    fails_with(&work.run(&["user", "passwd", "nobody", "--password-stdin"], Some(&line)), "no user");
    fails_with(&work.run(&["user", "remove", "nobody"], None), "no user");
    // Without a terminal and without --password-stdin there is no prompt to answer.
    fails_with(&work.run(&["user", "add", "carol"], None), "--password-stdin");

    let out = work.run(&["user", "list"], None);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("alice\tcreated "), "{}", text(&out.stdout));

    work.seed_session("alice", 100);
    let out = work.run(&["user", "passwd", "alice", "--password-stdin"], Some("a new password\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "changed the password of alice; ended 1 sessions");

    work.seed_session("alice", 100);
    work.seed_session("alice", -100);
    let out = work.run(&["user", "remove", "alice"], None);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "removed user alice; ended 2 sessions");
    assert_eq!(work.count_sessions(), 0);
}

fn sessions_purge_removes_expired_rows_and_says_how_many(engine: Engine) {
    let work = Install::new(engine);
    let out = work.run(&["user", "add", "alice", "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    assert!(out.status.success());
    for ttl in [-5, -5, -5, 3600] {
        work.seed_session("alice", ttl);
    }
    let out = work.run(&["sessions", "purge"], None);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "purged 3 expired sessions");
    assert_eq!(work.count_sessions(), 1);
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
