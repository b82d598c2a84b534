//! [`SessionStore`] on SQLite through sqlx.
//!
//! Reads go through a pool of readers; every write goes through a pool with a
//! single connection, so writers queue in-process instead of fighting over
//! SQLite's one write lock. The `sessions` table is created by the
//! application's migrations (see `migrations/`).

use rocket::async_trait;
use rocket::futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Connection, Row};

use super::store::{Record, SessionStore, StoreError, Touch};
use super::token::TokenHash;

macro_rules! columns {
    () => {
        "handle, user_id, data, created_at, last_seen_at, expires_at, persistent, user_agent, ip"
    };
}

/// Sessions kept in the `sessions` table of a SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// `writer` should hold one connection; `reader` may hold several. Both
    /// must point at the same WAL-mode database.
    pub fn new(reader: SqlitePool, writer: SqlitePool) -> SqliteStore {
        SqliteStore { reader, writer }
    }
}

/// Runs `work` in a `BEGIN IMMEDIATE` transaction on a connection of `pool`.
///
/// After a failure the connection is closed rather than handed back: SQLite
/// rolls some transactions back by itself (a full disk, an I/O error), after
/// which sqlx still counts the transaction as open and refuses every later
/// `BEGIN` on that connection. With a single writer connection that would
/// stop every write until a restart.
pub async fn write_transaction<T: Send>(
    pool: &SqlitePool,
    work: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
) -> Result<T, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let result = async {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let value = work(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }
    .await;
    if result.is_err() {
        let _ = conn.close().await;
    }
    result
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn record(row: &SqliteRow) -> Result<Record, sqlx::Error> {
    Ok(Record {
        handle: row.try_get("handle")?,
        user_id: row.try_get("user_id")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        persistent: row.try_get("persistent")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(
        &self,
        token_hash: &TokenHash,
        r: &Record,
        replaces: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        let (token_hash, replaces, r) = (*token_hash, replaces.copied(), r.clone());
        write_transaction(&self.writer, |tx| {
            Box::pin(async move {
                if let Some(old) = replaces {
                    sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
                        .bind(&old.0[..])
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(concat!(
                    "INSERT INTO sessions (token_hash, ",
                    columns!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .bind(&token_hash.0[..])
                .bind(&r.handle)
                .bind(r.user_id)
                .bind(&r.data)
                .bind(r.created_at)
                .bind(r.last_seen_at)
                .bind(r.expires_at)
                .bind(r.persistent)
                .bind(&r.user_agent)
                .bind(&r.ip)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        })
        .await
        .map_err(unavailable)
    }

    async fn load(&self, token_hash: &TokenHash, now: i64) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE token_hash = ? AND expires_at > ?"
        ))
        .bind(&token_hash.0[..])
        .bind(now)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(record).transpose().map_err(unavailable)
    }

    async fn touch(
        &self,
        token_hash: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = ?, expires_at = ? \
             WHERE token_hash = ? AND expires_at > ?",
        )
        .bind(last_seen_at)
        .bind(expires_at)
        .bind(&token_hash.0[..])
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_data(&self, token_hash: &TokenHash, data: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE sessions SET data = ? WHERE token_hash = ? AND expires_at > ?")
            .bind(data)
            .bind(&token_hash.0[..])
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate(&self, old: &TokenHash, new: &TokenHash, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE sessions SET token_hash = ? WHERE token_hash = ? AND expires_at > ?")
            .bind(&new.0[..])
            .bind(&old.0[..])
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete(&self, token_hash: &TokenHash) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(&token_hash.0[..])
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_expired(&self, now: i64, limit: u32) -> Result<u64, StoreError> {
        // The bundled SQLite has no DELETE ... LIMIT; batch through rowids. The
        // predicate is evaluated inside the statement, so a row extended since
        // it was picked is not removed.
        let done = sqlx::query(
            "DELETE FROM sessions WHERE rowid IN \
             (SELECT rowid FROM sessions WHERE expires_at <= ?1 LIMIT ?2) AND expires_at <= ?1",
        )
        .bind(now)
        .bind(limit)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn list_for_user(&self, user_id: i64, now: i64) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY last_seen_at DESC, id DESC"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(record).collect::<Result<_, _>>().map_err(unavailable)
    }

    async fn delete_for_user(&self, user_id: i64, keep: Option<&str>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = ? AND handle IS NOT ?")
            .bind(user_id)
            .bind(keep)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn delete_handle(&self, handle: &str, user_id: Option<i64>) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE handle = ?1 AND (?2 IS NULL OR user_id = ?2)")
            .bind(handle)
            .bind(user_id)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_live(&self, now: i64) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE expires_at > ? ORDER BY last_seen_at DESC, id DESC"
        ))
        .bind(now)
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(record).collect::<Result<_, _>>().map_err(unavailable)
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions").execute(&self.writer).await.map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn touch_many(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError> {
        if touches.is_empty() {
            return Ok(0);
        }
        let touches = touches.to_vec();
        write_transaction(&self.writer, |tx| {
            Box::pin(async move {
                let mut live = 0;
                for t in touches {
                    live += sqlx::query(
                        // A batch may land after a later single touch: never move back.
                        "UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?), \
                         expires_at = MAX(expires_at, ?) WHERE token_hash = ? AND expires_at > ?",
                    )
                    .bind(t.last_seen_at)
                    .bind(t.expires_at)
                    .bind(&t.token_hash.0[..])
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                Ok(live)
            })
        })
        .await
        .map_err(unavailable)
    }
}
