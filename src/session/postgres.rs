//! [`SessionStore`] on PostgreSQL through sqlx, for several instances of
//! the server on one database.
//!
//! The same rules as on SQLite, in PostgreSQL's terms: every write after a
//! load is conditional on the row still being live (`... AND expires_at >
//! $now`), so no request brings back a session ended meanwhile; a login's
//! insert and the delete of the session it replaces share one transaction;
//! batched deadline moves are one statement that never moves a deadline
//! back (`GREATEST`); the purge takes at most `limit` expired rows per
//! statement and skips rows another instance holds (`FOR UPDATE SKIP
//! LOCKED`), so instances purging at once neither wait for each other nor
//! delete twice. Times are BIGINT unix seconds. The table comes from the
//! application's migrations (see `migrations/postgres/`).

use rocket::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::Row;

use super::store::{
    Backend, Ending, Owner, PurgeTurn, Record, SessionStore, StoreError, StoredSession, Touch,
};
use super::token::{SessionKey, TokenHash};

macro_rules! columns {
    () => {
        "handle, user_id, data, created_at, last_seen_at, expires_at, ends_at, persistent, user_agent, ip"
    };
}

/// `UPDATE sessions SET <set>` of one session, only while it is live: the
/// `SET` values are bound first, then id, token hash and now (`$id`, `$hash`,
/// `$now` name their placeholders).
macro_rules! update_live {
    ($set:literal, $id:literal, $hash:literal, $now:literal) => {
        concat!(
            "UPDATE sessions SET ",
            $set,
            " WHERE id = ",
            $id,
            " AND token_hash = ",
            $hash,
            " AND expires_at > ",
            $now
        )
    };
}

/// Sessions kept in the `sessions` table of a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// The advisory lock whose holder runs the purge (any fixed number that no
/// other lock of the application uses).
const PURGE_LOCK: i64 = 0x7365_7369_6a61_0001;

/// Ends every session of one owner but the one with handle `keep`.
const DELETE_FOR_USER: &str = "DELETE FROM sessions WHERE user_id = $1 AND handle IS DISTINCT FROM $2";

impl PgStore {
    /// Sessions in the `sessions` table of the database `pool` reaches.
    pub fn new(pool: PgPool) -> PgStore {
        PgStore { pool }
    }

    /// Runs an [`update_live!`] statement whose `SET` values are bound:
    /// `true` if the session was still live (and is now changed).
    async fn update_live<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        key: &'q SessionKey,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = query
            .bind(key.id)
            .bind(&key.hash.0[..])
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}

impl PgStore {
    /// Inserts `sessions` under their own ids on the caller's transaction
    /// (moving an installation here); new sessions then get ids after the
    /// highest one.
    pub async fn import(tx: &mut PgConnection, sessions: &[StoredSession]) -> Result<(), sqlx::Error> {
        for s in sessions {
            let r = &s.record;
            let query = sqlx::query(concat!(
                "INSERT INTO sessions (id, token_hash, ",
                columns!(),
                ") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(s.id)
            .bind(&s.token_hash.0[..]);
            bind_record(query, r).execute(&mut *tx).await?;
        }
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('sessions', 'id'), GREATEST((SELECT MAX(id) FROM sessions), 1))",
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

impl super::EndSessionsIn for PgConnection {
    async fn end_sessions_of(&mut self, user_id: i64, keep: Option<&str>) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(DELETE_FOR_USER).bind(user_id).bind(keep).execute(&mut *self).await?;
        Ok(done.rows_affected())
    }
}

/// Binds a record's values in the order of `columns!()`.
fn bind_record<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    r: &'q Record,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&r.handle)
        .bind(r.user_id)
        .bind(&r.data)
        .bind(r.created_at)
        .bind(r.last_seen_at)
        .bind(r.expires_at)
        .bind(r.ends_at)
        .bind(r.persistent)
        .bind(&r.user_agent)
        .bind(&r.ip)
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn record(row: &PgRow) -> Result<Record, sqlx::Error> {
    Ok(Record {
        handle: row.try_get("handle")?,
        user_id: row.try_get("user_id")?,
        data: row.try_get("data")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        ends_at: row.try_get("ends_at")?,
        persistent: row.try_get("persistent")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
    })
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create(
        &self,
        token_hash: &TokenHash,
        r: &Record,
        replaces: Option<&SessionKey>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        if let Some(old) = replaces {
            sqlx::query("DELETE FROM sessions WHERE id = $1 AND token_hash = $2")
                .bind(old.id)
                .bind(&old.hash.0[..])
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        let query = sqlx::query(concat!(
            "INSERT INTO sessions (token_hash, ",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id"
        ))
        .bind(&token_hash.0[..]);
        let id: i64 = bind_record(query, r)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get("id"))
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(id)
    }

    async fn load(&self, key: &SessionKey, now: i64) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT token_hash, ",
            columns!(),
            " FROM sessions WHERE id = $1 AND expires_at > $2"
        ))
        .bind(key.id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let hash: Vec<u8> = row.try_get("token_hash").map_err(unavailable)?;
        // The id finds the row; only the token's hash opens it (compared in
        // constant time by `TokenHash`'s equality).
        match <[u8; 32]>::try_from(hash) {
            Ok(hash) if TokenHash(hash) == key.hash => Ok(Some(record(&row).map_err(unavailable)?)),
            _ => Ok(None),
        }
    }

    async fn touch(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError> {
        if touches.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = touches.iter().map(|t| t.key.id).collect();
        let hashes: Vec<Vec<u8>> = touches.iter().map(|t| t.key.hash.0.to_vec()).collect();
        let seen: Vec<i64> = touches.iter().map(|t| t.last_seen_at).collect();
        let expires: Vec<i64> = touches.iter().map(|t| t.expires_at).collect();
        // One statement for the batch; a batch may land after a later single
        // touch, so a deadline never moves back; nor past a hard end.
        let done = sqlx::query(
            "UPDATE sessions AS s SET last_seen_at = GREATEST(s.last_seen_at, t.seen), \
             expires_at = GREATEST(s.expires_at, LEAST(t.expires, COALESCE(s.ends_at, t.expires))) \
             FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BIGINT[], $4::BIGINT[]) AS t(id, hash, seen, expires) \
             WHERE s.id = t.id AND s.token_hash = t.hash AND s.expires_at > $5",
        )
        .bind(&ids)
        .bind(&hashes)
        .bind(&seen)
        .bind(&expires)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn save_data(&self, key: &SessionKey, data: &str, now: i64) -> Result<bool, StoreError> {
        self.update_live(sqlx::query(update_live!("data = $1", "$2", "$3", "$4")).bind(data), key, now).await
    }

    async fn rotate(&self, old: &SessionKey, new: &TokenHash, now: i64) -> Result<bool, StoreError> {
        self.update_live(
            sqlx::query(update_live!("token_hash = $1", "$2", "$3", "$4")).bind(&new.0[..]),
            old,
            now,
        )
        .await
    }

    async fn end(&self, which: Ending<'_>) -> Result<u64, StoreError> {
        let query = match which {
            Ending::Session(key) => sqlx::query("DELETE FROM sessions WHERE id = $1 AND token_hash = $2")
                .bind(key.id)
                .bind(&key.hash.0[..]),
            Ending::Handle { handle, owner } => {
                sqlx::query("DELETE FROM sessions WHERE handle = $1 AND ($2::BIGINT IS NULL OR user_id = $2)")
                    .bind(handle)
                    .bind(owner)
            }
            Ending::OwnedBy { user_id, keep } => sqlx::query(DELETE_FOR_USER).bind(user_id).bind(keep),
            Ending::All => sqlx::query("DELETE FROM sessions"),
            // The predicate is checked again on the locked row, so a session
            // extended since it was picked stays; rows another instance's
            // purge holds are skipped, not waited for.
            Ending::Expired { now, limit } => sqlx::query(
                "DELETE FROM sessions WHERE id IN \
                 (SELECT id FROM sessions WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 AND expires_at <= $1",
            )
            .bind(now)
            .bind(i64::from(limit)),
        };
        let done = query.execute(&self.pool).await.map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn list(&self, whose: Owner, now: i64) -> Result<Vec<Record>, StoreError> {
        let query = match whose {
            Owner::Anyone => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE expires_at > $1 ORDER BY last_seen_at DESC, id DESC"
            ))
            .bind(now),
            Owner::User(user_id) => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY last_seen_at DESC, id DESC"
            ))
            .bind(user_id)
            .bind(now),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(record).collect::<Result<_, _>>().map_err(unavailable)
    }

    async fn flush(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn invalidate(&self) {}

    fn backend(&self) -> &dyn Backend {
        self
    }
}

#[async_trait]
impl Backend for PgStore {
    async fn count_live(&self, now: i64) -> Result<u64, StoreError> {
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE expires_at > $1")
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(live.try_into().unwrap_or(0))
    }

    /// A connection of its own holds a session-level advisory lock for the
    /// round; the server closes it (and so releases the lock) if this
    /// machine vanishes, as the keepalive settings make it notice within
    /// about half a minute rather than hours.
    async fn purge_turn(&self) -> Result<Option<PurgeTurn>, StoreError> {
        use sqlx::Connection;
        let options = self.pool.connect_options();
        let mut conn = PgConnection::connect_with(&options).await.map_err(unavailable)?;
        sqlx::raw_sql(
            "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3",
        )
        .execute(&mut conn)
        .await
        .map_err(unavailable)?;
        let (ours, now): (bool, i64) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1), EXTRACT(EPOCH FROM clock_timestamp())::BIGINT")
                .bind(PURGE_LOCK)
                .fetch_one(&mut conn)
                .await
                .map_err(unavailable)?;
        if !ours {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(PurgeTurn { now: Some(now), lock: Some(conn) }))
    }
}
