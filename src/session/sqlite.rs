//! [`SessionStore`] on SQLite through sqlx.
//!
//! Reads go through a pool of readers; every write goes through a pool with a
//! single connection, so writers queue in-process instead of fighting over
//! SQLite's one write lock. The `sessions` table is created by the
//! application's migrations (see `migrations/sqlite/`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rocket::async_trait;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::store::{Backend, Ending, Owner, Record, SessionStore, StoreError, StoredSession, Touch};
use super::token::{SessionKey, TokenHash};
use crate::storage::sql::{write_transaction, ExecuteOn};

macro_rules! columns {
    () => {
        "handle, user_id, data, created_at, last_seen_at, expires_at, ends_at, persistent, user_agent, ip"
    };
}

/// Sessions kept in the `sessions` table of a SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    loader: Arc<Loader>,
}

impl SqliteStore {
    /// `writer` should hold one connection; `reader` may hold several. Both
    /// must point at the same WAL-mode database.
    pub fn new(reader: SqlitePool, writer: SqlitePool) -> SqliteStore {
        SqliteStore { loader: Arc::new(Loader::new(reader.clone())), reader, writer }
    }
}

/// Look-ups by id, gathered: every look-up that arrives while one
/// query runs waits for the next, which fetches them all at once. A query is
/// a trip to sqlx's connection thread and back, which costs far more than
/// the indexed read itself; alone, a look-up costs the same one query.
struct Loader {
    reader: SqlitePool,
    queue: Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

struct Job {
    key: SessionKey,
    now: i64,
    reply: oneshot::Sender<Result<Option<Record>, String>>,
}

/// Most look-ups one query answers.
const LOAD_BATCH: usize = 64;

impl Loader {
    fn new(reader: SqlitePool) -> Loader {
        Loader { reader, queue: Mutex::new(None) }
    }

    async fn load(&self, key: &SessionKey, now: i64) -> Result<Option<Record>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let mut job = Job { key: *key, now, reply };
        // The task lives on the runtime of the first look-up; should that
        // runtime be gone, the next look-up starts another.
        for _ in 0..2 {
            let sender = {
                let mut queue = self.queue.lock().unwrap();
                match &*queue {
                    Some(sender) if !sender.is_closed() => sender.clone(),
                    _ => {
                        let (sender, receiver) = mpsc::unbounded_channel();
                        tokio::spawn(run_loader(self.reader.clone(), receiver));
                        *queue = Some(sender.clone());
                        sender
                    }
                }
            };
            match sender.send(job) {
                Ok(()) => {
                    return match answer.await {
                        Ok(result) => result.map_err(StoreError::Unavailable),
                        Err(_) => Err(StoreError::Unavailable("session look-up abandoned".into())),
                    }
                }
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        Err(StoreError::Unavailable("session look-up task unavailable".into()))
    }
}

async fn run_loader(reader: SqlitePool, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::with_capacity(LOAD_BATCH);
    while queue.recv_many(&mut jobs, LOAD_BATCH).await > 0 {
        let found = load_many(&reader, &jobs).await;
        for job in jobs.drain(..) {
            let answer = match &found {
                Ok(rows) => Ok(rows
                    .get(&job.key.id)
                    .filter(|(hash, r)| *hash == job.key.hash && r.expires_at > job.now)
                    .map(|(_, r)| r.clone())),
                Err(e) => Err(e.clone()),
            };
            let _ = job.reply.send(answer);
        }
    }
}

/// The rows with the jobs' ids, by id, with their token hashes (which the
/// caller compares: the id alone finds a row, it does not open it).
async fn load_many(reader: &SqlitePool, jobs: &[Job]) -> Result<HashMap<i64, (TokenHash, Record)>, String> {
    let oldest = jobs.iter().map(|j| j.now).min().unwrap_or(0);
    let mut query = sqlx::QueryBuilder::new(concat!(
        "SELECT id, token_hash, ",
        columns!(),
        " FROM sessions WHERE expires_at > "
    ));
    query.push_bind(oldest).push(" AND id IN (");
    let mut list = query.separated(", ");
    for job in jobs {
        list.push_bind(job.key.id);
    }
    query.push(")");
    let rows = query.build().fetch_all(reader).await.map_err(|e| e.to_string())?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id").map_err(|e| e.to_string())?;
        let hash: Vec<u8> = row.try_get("token_hash").map_err(|e| e.to_string())?;
        let Ok(hash) = <[u8; 32]>::try_from(hash) else { continue };
        found.insert(id, (TokenHash(hash), record(row).map_err(|e| e.to_string())?));
    }
    Ok(found)
}

/// `UPDATE sessions SET <set>` of one session, only while it is live.
macro_rules! update_live {
    ($set:literal) => {
        concat!("UPDATE sessions SET ", $set, " WHERE id = ? AND token_hash = ? AND expires_at > ?")
    };
}

impl SqliteStore {
    /// Runs an [`update_live!`] statement whose `SET` values are bound:
    /// `true` if the session was still live (and is now changed).
    async fn update_live<'q>(
        &self,
        query: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
        key: &'q SessionKey,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = query
            .bind(key.id)
            .bind(&key.hash.0[..])
            .bind(now)
            .execute_on(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}

/// Ends every session of one owner but the one with handle `keep`.
const DELETE_FOR_USER: &str = "DELETE FROM sessions WHERE user_id = ? AND handle IS NOT ?";

/// Counts over a pool that is no store's (a backup's copy): the store owns
/// every statement on the table.
impl SqliteStore {
    /// Every stored session, live or not.
    pub async fn count_all(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(pool).await
    }
}

impl SqliteStore {
    /// Every session live at `now`, read on the caller's connection (a
    /// snapshot).
    pub async fn export_live(
        conn: &mut SqliteConnection,
        now: i64,
    ) -> Result<Vec<StoredSession>, sqlx::Error> {
        let rows = sqlx::query(concat!(
            "SELECT id, token_hash, ",
            columns!(),
            " FROM sessions WHERE expires_at > ? ORDER BY id"
        ))
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            let hash: Vec<u8> = row.try_get("token_hash")?;
            let Ok(hash) = <[u8; 32]>::try_from(hash) else { continue };
            sessions.push(StoredSession {
                id: row.try_get("id")?,
                token_hash: TokenHash(hash),
                record: record(row)?,
            });
        }
        Ok(sessions)
    }
}

impl super::EndSessionsIn for SqliteConnection {
    async fn end_sessions_of(&mut self, user_id: i64, keep: Option<&str>) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(DELETE_FOR_USER).bind(user_id).bind(keep).execute(&mut *self).await?;
        Ok(done.rows_affected())
    }
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
        ends_at: row.try_get("ends_at")?,
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
        replaces: Option<&SessionKey>,
    ) -> Result<i64, StoreError> {
        let (token_hash, replaces, r) = (*token_hash, replaces.copied(), r.clone());
        write_transaction(&self.writer, |tx| {
            Box::pin(async move {
                if let Some(old) = replaces {
                    sqlx::query("DELETE FROM sessions WHERE id = ? AND token_hash = ?")
                        .bind(old.id)
                        .bind(&old.hash.0[..])
                        .execute(&mut *tx)
                        .await?;
                }
                let done = sqlx::query(concat!(
                    "INSERT INTO sessions (token_hash, ",
                    columns!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .bind(&token_hash.0[..])
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
                .execute(&mut *tx)
                .await?;
                Ok(done.last_insert_rowid())
            })
        })
        .await
        .map_err(unavailable)
    }

    async fn load(&self, key: &SessionKey, now: i64) -> Result<Option<Record>, StoreError> {
        self.loader.load(key, now).await
    }

    async fn touch(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError> {
        // A batch may land after a later single move: never move back; and
        // never past the session's hard end.
        const TOUCH: &str =
            update_live!("last_seen_at = MAX(last_seen_at, ?), expires_at = MAX(expires_at, MIN(?, IFNULL(ends_at, 1 << 62)))");
        match touches {
            [] => Ok(0),
            [t] => {
                let query = sqlx::query(TOUCH).bind(t.last_seen_at).bind(t.expires_at);
                Ok(u64::from(self.update_live(query, &t.key, now).await?))
            }
            _ => {
                let touches = touches.to_vec();
                write_transaction(&self.writer, |tx| {
                    Box::pin(async move {
                        let mut live = 0;
                        for t in touches {
                            live += sqlx::query(TOUCH)
                                .bind(t.last_seen_at)
                                .bind(t.expires_at)
                                .bind(t.key.id)
                                .bind(&t.key.hash.0[..])
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
    }

    async fn save_data(&self, key: &SessionKey, data: &str, now: i64) -> Result<bool, StoreError> {
        self.update_live(sqlx::query(update_live!("data = ?")).bind(data), key, now).await
    }

    async fn rotate(&self, old: &SessionKey, new: &TokenHash, now: i64) -> Result<bool, StoreError> {
        self.update_live(sqlx::query(update_live!("token_hash = ?")).bind(&new.0[..]), old, now).await
    }

    async fn end(&self, which: Ending<'_>) -> Result<u64, StoreError> {
        let query = match which {
            Ending::Session(key) => sqlx::query("DELETE FROM sessions WHERE id = ? AND token_hash = ?")
                .bind(key.id)
                .bind(&key.hash.0[..]),
            Ending::Handle { handle, owner } => {
                sqlx::query("DELETE FROM sessions WHERE handle = ?1 AND (?2 IS NULL OR user_id = ?2)")
                    .bind(handle)
                    .bind(owner)
            }
            Ending::OwnedBy { user_id, keep } => sqlx::query(DELETE_FOR_USER).bind(user_id).bind(keep),
            Ending::All => sqlx::query("DELETE FROM sessions"),
            // The bundled SQLite has no DELETE ... LIMIT; batch through
            // rowids. The predicate is evaluated inside the statement, so a
            // row extended since it was picked is not removed.
            Ending::Expired { now, limit } => sqlx::query(
                "DELETE FROM sessions WHERE rowid IN \
                 (SELECT rowid FROM sessions WHERE expires_at <= ?1 LIMIT ?2) AND expires_at <= ?1",
            )
            .bind(now)
            .bind(limit),
        };
        let done = query.execute_on(&self.writer).await.map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn list(&self, whose: Owner, now: i64) -> Result<Vec<Record>, StoreError> {
        let query = match whose {
            Owner::Anyone => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE expires_at > ? ORDER BY last_seen_at DESC, id DESC"
            ))
            .bind(now),
            Owner::User(user_id) => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY last_seen_at DESC, id DESC"
            ))
            .bind(user_id)
            .bind(now),
        };
        let rows = query.fetch_all(&self.reader).await.map_err(unavailable)?;
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
impl Backend for SqliteStore {
    async fn count_live(&self, now: i64) -> Result<u64, StoreError> {
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE expires_at > ?")
            .bind(now)
            .fetch_one(&self.reader)
            .await
            .map_err(unavailable)?;
        Ok(live.try_into().unwrap_or(0))
    }
}
