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
    /// When it was created (unix seconds).
    pub created_at: i64,
    /// When it was last used, as written.
    pub last_seen_at: i64,
    /// The earlier of the idle and the absolute deadline.
    pub expires_at: i64,
    /// A hard end no activity moves the deadline past (a login waiting
    /// for its second factor); `None` for an ordinary session, whose
    /// deadline slides up to the absolute one.
    pub ends_at: Option<i64>,
    /// "Remember me": the cookie outlives the browser session.
    pub persistent: bool,
    /// The User-Agent it logged in with (shown on the devices page).
    pub user_agent: Option<String>,
    /// The address it logged in from.
    pub ip: Option<String>,
}

impl Record {
    /// The deadline after a move to `proposed`: never earlier than now
    /// stored, never past the hard end ([`Record::ends_at`]). Every store
    /// moves deadlines by this rule.
    pub fn moved_deadline(&self, proposed: i64) -> i64 {
        self.expires_at.max(self.ends_at.map_or(proposed, |end| proposed.min(end)))
    }
}

/// A stored session whole, as one store hands it to another (moving an
/// installation between engines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Its row id.
    pub id: i64,
    /// Its token's hash.
    pub token_hash: TokenHash,
    /// The rest of the row.
    pub record: Record,
}

/// Everything a store can fail with, independent of the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is locked, full, read-only or unreachable. Worth retrying later.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Whose sessions a listing is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Every owner's (the operator's view).
    Anyone,
    /// One owner's (the devices page).
    User(i64),
}

/// Which sessions [`SessionStore::end`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending<'a> {
    /// One session, by id and token hash (a logout).
    Session(&'a SessionKey),
    /// The session with this public handle, if it belongs to `owner`.
    Handle {
        /// The session's public handle.
        handle: &'a str,
        /// Whose it must be; `None`: anyone's (the operator).
        owner: Option<i64>,
    },
    /// Every session of one owner but one.
    OwnedBy {
        /// The owner.
        user_id: i64,
        /// The handle of the session to keep, if any.
        keep: Option<&'a str>,
    },
    /// Every session.
    All,
    /// Sessions whose deadline passed (the purge), a batch at a time.
    Expired {
        /// The time deadlines are judged by.
        now: i64,
        /// Most rows one call ends.
        limit: u32,
    },
}

/// Where sessions live: their life cycle, which every request goes through
/// and every wrapper in front of a database (a cache, a notifier) may
/// change. Every method does one job in one statement or one short write
/// transaction, and every write after a load is conditional on the row
/// still being live, so a request in flight can never bring back a session
/// that was ended meanwhile.
///
/// No method has a default: a wrapper that forgot to forward one (a flush
/// of held-back writes, say) would lose it silently.
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

    /// Moves the deadlines of these sessions forward, never back (a batch
    /// may land after a later move), in one transaction where there are
    /// several; returns how many were still live.
    async fn touch(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError>;

    /// Replaces the data of a live session. `false` means it had ended.
    async fn save_data(&self, key: &SessionKey, data: &str, now: i64) -> Result<bool, StoreError>;

    /// Gives a live session a new token (its id stays). `false` means it had ended.
    async fn rotate(&self, old: &SessionKey, new: &TokenHash, now: i64) -> Result<bool, StoreError>;

    /// Ends the sessions `which` names; returns how many ended.
    async fn end(&self, which: Ending<'_>) -> Result<u64, StoreError>;

    /// Live sessions of `whose`, most recently active first, with whatever
    /// activity the store knows of (held-back deadline moves included).
    async fn list(&self, whose: Owner, now: i64) -> Result<Vec<Record>, StoreError>;

    /// Writes out whatever the store holds back (a cache's batched deadline
    /// moves); returns how many sessions it wrote. The session layer calls it
    /// about once a second and at shutdown.
    async fn flush(&self) -> Result<u64, StoreError>;

    /// Sessions changed behind this store's back (another process, a raw SQL
    /// transaction): forget anything remembered about them.
    async fn invalidate(&self);

    /// The database under every wrapper, for what only it can answer.
    fn backend(&self) -> &dyn Backend;
}

/// What only the database itself answers, under any cache or notifier:
/// a wrapper has nothing to add to these, so it hands out its inner
/// store's ([`SessionStore::backend`]) instead of forwarding each.
#[async_trait]
pub trait Backend: Send + Sync {
    /// How many sessions are live at `now` (as stored).
    async fn count_live(&self, now: i64) -> Result<u64, StoreError>;

    /// The background purge's turn: where several servers share the store,
    /// one purges at a time and the others skip the round (`None`). A store
    /// only one server writes keeps the default: always its turn, at the
    /// server's clock.
    async fn purge_turn(&self) -> Result<Option<PurgeTurn>, StoreError> {
        Ok(Some(PurgeTurn::default()))
    }
}

/// A turn of the background purge ([`Backend::purge_turn`]): held
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

/// One deadline move, for [`SessionStore::touch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// The session.
    pub key: SessionKey,
    /// When it was used.
    pub last_seen_at: i64,
    /// Its new deadline (never moved back, never past a hard end).
    pub expires_at: i64,
}
