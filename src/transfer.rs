//! `sesija migrate-to DATABASE_URL`: an SQLite installation moved into an
//! empty PostgreSQL database, so that it can run as several instances.
//!
//! Everything is read in one SQLite read transaction (a consistent snapshot)
//! and written in one PostgreSQL transaction (all or nothing): accounts with
//! their ids, groups, second factors and recovery codes, the server's facts
//! and every live session, under its id, so cookies keep working as long as
//! the instances use the same cookie key. Identity counters continue after
//! the highest id copied, so no id is ever handed out twice. The statements
//! on `sessions` are the stores' own.

use sqlx::postgres::PgPool;
use sqlx::Connection;

use crate::session::{PgStore, SqliteStore};
use crate::storage::Db;

/// What was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Accounts copied.
    pub users: usize,
    /// Group memberships copied.
    pub groups: usize,
    /// Recovery codes copied.
    pub recovery_codes: usize,
    /// Live sessions copied.
    pub sessions: usize,
}

/// Why an installation could not be moved.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant says what it is in its message
pub enum TransferError {
    #[error("the PostgreSQL database already holds {0} accounts; migrate into an empty database")]
    NotEmpty(i64),
    #[error("reading the SQLite database: {0}")]
    Read(sqlx::Error),
    #[error("writing the PostgreSQL database: {0}")]
    Write(sqlx::Error),
}

type UserRow = (i64, String, String, i64, Option<String>, Option<String>, Option<Vec<u8>>, Option<i64>, i64);

/// Copies `db` into `pool` (migrated, empty), as of `now` for sessions.
pub async fn to_postgres(db: &Db, pool: &PgPool, now: i64) -> Result<Moved, TransferError> {
    let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(pool)
        .await
        .map_err(TransferError::Write)?;
    if accounts > 0 {
        return Err(TransferError::NotEmpty(accounts));
    }

    // One snapshot of the whole SQLite database.
    let read = TransferError::Read;
    let mut conn = db.reader.acquire().await.map_err(read)?;
    let mut snapshot = conn.begin().await.map_err(read)?;
    let users: Vec<UserRow> = sqlx::query_as(
        "SELECT id, username, password_hash, created_at, email, display_name, \
         totp_secret, totp_enabled_at, totp_last_step FROM users ORDER BY id",
    )
    .fetch_all(&mut *snapshot)
    .await
    .map_err(read)?;
    let groups: Vec<(i64, String)> = sqlx::query_as("SELECT user_id, name FROM user_groups")
        .fetch_all(&mut *snapshot)
        .await
        .map_err(read)?;
    let codes: Vec<(i64, String, Option<i64>)> =
        sqlx::query_as("SELECT user_id, hash, used_at FROM recovery_codes")
            .fetch_all(&mut *snapshot)
            .await
            .map_err(read)?;
    let state: Vec<(String, i64, i64)> = sqlx::query_as("SELECT key, value, since FROM server_state")
        .fetch_all(&mut *snapshot)
        .await
        .map_err(read)?;
    let sessions = SqliteStore::export_live(&mut snapshot, now).await.map_err(read)?;
    snapshot.commit().await.map_err(read)?;

    let write = TransferError::Write;
    let mut tx = pool.begin().await.map_err(write)?;
    for (id, username, hash, created_at, email, display_name, secret, enabled_at, last_step) in &users {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, email, display_name, \
             totp_secret, totp_enabled_at, totp_last_step) OVERRIDING SYSTEM VALUE \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(username)
        .bind(hash)
        .bind(created_at)
        .bind(email)
        .bind(display_name)
        .bind(secret)
        .bind(enabled_at)
        .bind(last_step)
        .execute(&mut *tx)
        .await
        .map_err(write)?;
    }
    for (user_id, name) in &groups {
        sqlx::query("INSERT INTO user_groups (user_id, name) VALUES ($1, $2)")
            .bind(user_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(write)?;
    }
    for (user_id, hash, used_at) in &codes {
        sqlx::query("INSERT INTO recovery_codes (user_id, hash, used_at) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(hash)
            .bind(used_at)
            .execute(&mut *tx)
            .await
            .map_err(write)?;
    }
    for (key, value, since) in &state {
        sqlx::query("INSERT INTO server_state (key, value, since) VALUES ($1, $2, $3)")
            .bind(key)
            .bind(value)
            .bind(since)
            .execute(&mut *tx)
            .await
            .map_err(write)?;
    }
    PgStore::import(&mut tx, &sessions).await.map_err(write)?;
    // New accounts continue after the highest id copied (never one reused).
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST((SELECT MAX(id) FROM users), 1))",
    )
    .execute(&mut *tx)
    .await
    .map_err(write)?;
    tx.commit().await.map_err(write)?;
    Ok(Moved {
        users: users.len(),
        groups: groups.len(),
        recovery_codes: codes.len(),
        sessions: sessions.len(),
    })
}
