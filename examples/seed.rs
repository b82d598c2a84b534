//! Benchmark helper, not part of the server: writes session rows straight
//! into a data directory's database, so that a benchmark can start from
//! a million stored sessions in seconds.
//!
//! ```text
//! cargo run --release --example seed -- DATA_DIR live|expired COUNT
//! cargo run --release --example seed -- DATA_DIR count
//! ```
//!
//! `live` rows expire in a day, `expired` rows expired an hour ago; every row
//! gets a random token hash and handle and belongs to user id 1 (tokens are
//! never known, so nobody can use them). `count` prints live and expired
//! rows. The data directory is created and migrated as the server would.

use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: seed DATA_DIR live|expired COUNT | seed DATA_DIR count";
    let (dir, what) = match args {
        [dir, what, ..] => (PathBuf::from(dir), what.as_str()),
        _ => return Err(usage.into()),
    };
    let db = sesija::storage::Db::open(&dir).await.map_err(|e| e.to_string())?;
    let now = sesija::session::now();
    match (what, args.get(2)) {
        ("count", None) => {
            let (live, expired): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM sessions WHERE expires_at > ?1), \
                 (SELECT COUNT(*) FROM sessions WHERE expires_at <= ?1)",
            )
            .bind(now)
            .fetch_one(&db.reader)
            .await
            .map_err(|e| e.to_string())?;
            println!("{live} live {expired} expired");
        }
        ("live" | "expired", Some(count)) => {
            let count: i64 = count.parse().map_err(|_| format!("COUNT must be a number: {usage}"))?;
            let expires_at = if what == "live" { now + 86_400 } else { now - 3_600 };
            // Every session belongs to an account: the seeded ones to the first.
            let owner: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM users")
                .fetch_one(&db.reader)
                .await
                .map_err(|e| e.to_string())?;
            let owner = owner.ok_or("seed: create an account first (sesija user add NAME)")?;
            // One statement: SQLite generates the rows itself.
            let done = sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
                 INSERT INTO sessions (token_hash, handle, user_id, data, created_at, last_seen_at, \
                 expires_at, persistent, user_agent, ip) \
                 SELECT randomblob(32), lower(hex(randomblob(16))), ?4, '{\"user\":\"seeded\"}', \
                 ?2 - 60, ?2 - 60, ?3, 0, 'seed', '127.0.0.1' FROM n",
            )
            .bind(count)
            .bind(now)
            .bind(expires_at)
            .bind(owner)
            .execute(&db.writer)
            .await
            .map_err(|e| e.to_string())?;
            println!("inserted {} {what} sessions", done.rows_affected());
        }
        _ => return Err(usage.into()),
    }
    db.close().await;
    Ok(())
}
