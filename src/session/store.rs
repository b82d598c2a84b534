//! The storage seam: what the session layer needs from a database, and nothing more.

use rocket::async_trait;

use super::token::{SessionKey, TokenHash};

/// One stored session, as the store returns it. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Public id of the row (never a credential).
    pub handle: String,
    /// Whoever the application says owns this session.
    pub user_id: i64,
    /// JSON object text with the application's values.
    pub data: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The earlier of the idle and the absolute deadline.
    pub expires_at: i64,
    /// "Remember me": the cookie outlives the browser session.
    pub persistent: bool,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// A stored session whole, as one store hands it to another (moving an
/// installation between engines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub id: i64,
    pub token_hash: TokenHash,
    pub record: Record,
}

/// Everything a store can fail with, independent of the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is locked, full, read-only or unreachable. Worth retrying later.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Where sessions live. Every method does one job in one statement or one
/// short write transaction, and every write after a load is conditional on the
/// row still being live, so a request in flight can never bring back a
/// session that was ended meanwhile.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a new session under `token_hash` and returns the id it gave
    /// it (positive, never reused while the session lives); in the same
    /// transaction deletes the session `replaces` (the one the client held
    /// before logging in), if any.
    async fn create(
        &self,
        token_hash: &TokenHash,
        record: &Record,
        replaces: Option<&SessionKey>,
    ) -> Result<i64, StoreError>;

    /// The session with this id and token hash if it is live at `now`
    /// (`expires_at > now`).
    async fn load(&self, key: &SessionKey, now: i64) -> Result<Option<Record>, StoreError>;

    /// The id of the live session with this token hash, for cookies issued
    /// before they carried the id. A store that never issued such cookies
    /// keeps the default, which finds nothing.
    async fn find_id(&self, token_hash: &TokenHash, now: i64) -> Result<Option<i64>, StoreError> {
        let _ = (token_hash, now);
        Ok(None)
    }

    /// Moves the deadlines forward. `false` means the session had ended.
    async fn touch(
        &self,
        key: &SessionKey,
        last_seen_at: i64,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Replaces the data of a live session. `false` means it had ended.
    async fn save_data(&self, key: &SessionKey, data: &str, now: i64) -> Result<bool, StoreError>;

    /// Gives a live session a new token (its id stays). `false` means it had ended.
    async fn rotate(&self, old: &SessionKey, new: &TokenHash, now: i64) -> Result<bool, StoreError>;

    /// Ends one session. `false` means there was nothing to end.
    async fn delete(&self, key: &SessionKey) -> Result<bool, StoreError>;

    /// Deletes at most `limit` sessions with `expires_at <= now`; returns how many.
    async fn delete_expired(&self, now: i64, limit: u32) -> Result<u64, StoreError>;

    /// Live sessions of one owner, most recently active first.
    async fn list_for_user(&self, user_id: i64, now: i64) -> Result<Vec<Record>, StoreError>;

    /// Ends every session of one owner, except the one with handle `keep`.
    async fn delete_for_user(&self, user_id: i64, keep: Option<&str>) -> Result<u64, StoreError>;

    /// Ends the session with this public handle, if it belongs to `user_id`
    /// (any owner when `None`). `false` means no such session.
    async fn delete_handle(&self, handle: &str, user_id: Option<i64>) -> Result<bool, StoreError>;

    /// Every live session, most recently active first.
    async fn list_live(&self, now: i64) -> Result<Vec<Record>, StoreError>;

    /// Ends every session; returns how many.
    async fn delete_all(&self) -> Result<u64, StoreError>;

    /// How many sessions are live at `now` (as stored).
    async fn count_live(&self, now: i64) -> Result<u64, StoreError>;

    /// Moves the deadlines of many sessions, in one transaction where the
    /// backend has them; returns how many were still live.
    async fn touch_many(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError> {
        let mut live = 0;
        for t in touches {
            live += u64::from(self.touch(&t.key, t.last_seen_at, t.expires_at, now).await?);
        }
        Ok(live)
    }

    /// Writes out whatever the store holds back (a cache's batched deadline
    /// moves); returns how many sessions it wrote. The session layer calls it
    /// about once a second and at shutdown.
    async fn flush(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Sessions changed behind this store's back (another process, a raw SQL
    /// transaction): forget anything remembered about them.
    async fn invalidate(&self) {}

    /// The background purge's turn: where several servers share the store,
    /// one purges at a time and the others skip the round (`None`). A store
    /// only one server writes keeps the default: always its turn, at the
    /// server's clock.
    async fn purge_turn(&self) -> Result<Option<PurgeTurn>, StoreError> {
        Ok(Some(PurgeTurn::default()))
    }
}

/// A turn of the background purge ([`SessionStore::purge_turn`]): held
/// until [`PurgeTurn::end`].
#[derive(Default)]
pub struct PurgeTurn {
    /// The cutoff to purge at, from the database's clock where the store
    /// has one shared by every server; else the caller's clock.
    pub now: Option<i64>,
    /// The connection that holds the turn (an advisory lock), if any.
    pub(super) lock: Option<sqlx::PgConnection>,
}

impl PurgeTurn {
    /// Gives the turn up.
    pub async fn end(self) {
        if let Some(lock) = self.lock {
            use sqlx::Connection;
            // Closing the session releases its advisory lock.
            let _ = lock.close().await;
        }
    }
}

/// One deadline move, for [`SessionStore::touch_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub key: SessionKey,
    pub last_seen_at: i64,
    pub expires_at: i64,
}
