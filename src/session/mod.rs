//! Server-side sessions for Rocket: one row per login, an encrypted cookie
//! holding only the row's id and a random token, sliding and absolute expiry,
//! and a purge task.
//!
//! This module owns the session life cycle and knows nothing of users or
//! pages: a session belongs to an opaque `user_id` and carries a JSON object
//! of typed values. Attach [`SessionLayer`] once, then take a guard:
//!
//! * [`Session`]: the live session of this request. It forwards (status 401)
//!   when there is none, so a `rank = 2` route can redirect to a login page.
//! * [`Sessions`]: always available; starts a new session at login.
//!
//! ```no_run
//! use rocket::{get, post, routes, response::Redirect};
//! use sesija::session::{Session, SessionConfig, SessionLayer, Sessions, SqliteStore};
//!
//! #[post("/login")]
//! async fn login(sessions: Sessions<'_>) -> Result<Redirect, sesija::session::SessionError> {
//!     // ...check credentials first, then:
//!     let session = sessions.start(42, true, Default::default()).await?;
//!     session.insert("theme", "dark").await?;
//!     Ok(Redirect::to("/me"))
//! }
//!
//! #[get("/me")]
//! fn me(session: Session<'_>) -> String {
//!     let theme: Option<String> = session.get("theme");
//!     format!("user {} prefers {:?}", session.user_id(), theme)
//! }
//!
//! #[post("/logout")]
//! async fn logout(session: Session<'_>) -> Result<Redirect, sesija::session::SessionError> {
//!     session.destroy().await?;
//!     Ok(Redirect::to("/"))
//! }
//!
//! # async fn app(reader: sqlx::SqlitePool, writer: sqlx::SqlitePool) -> rocket::Rocket<rocket::Build> {
//! let store = SqliteStore::new(reader, writer);
//! rocket::build()
//!     .attach(SessionLayer::new(store, SessionConfig::default()))
//!     .mount("/", routes![login, me, logout])
//! # }
//! ```
//!
//! # Life cycle
//! [`Sessions::start`] mints a fresh 256-bit token, deletes the session the
//! client held before (if any) in the same transaction as it inserts the new
//! row, and sets the cookie to `ID.TOKEN`: the id the store gave the row
//! finds it, and SHA-256 of the token, all the database keeps, must match.
//! Each request that takes a [`Session`] costs one read by primary key; the
//! row's
//! deadlines are moved (one write) at most once per `touch_interval`.
//! `expires_at` is the earlier of `last_seen + idle_timeout` and
//! `created + absolute_timeout`, and a row past it is never honoured.
//!
//! # Cookie
//! A Rocket private cookie (AES-256-GCM), HttpOnly, SameSite=Lax, Path=/,
//! Secure when configured. A persistent ("remember me") session gets a
//! Max-Age matching the server deadline, re-sent whenever the deadline moves;
//! otherwise the cookie lasts for the browser session only.
//!
//! # Concurrency
//! Every write after a load is conditional on the row still being live, so a
//! request that loaded a session before a concurrent logout cannot write it
//! back. The cached load of a request is not refreshed by [`Session::destroy`]
//! or [`Sessions::start`] within the same request.

mod cache;
mod clock;
mod coherence;
pub mod cookies;
mod guard;
mod manager;
mod notify;
mod opened;
mod postgres;
pub mod purge;
mod sqlite;
mod store;
mod token;

use std::time::Duration;

pub use cache::{CacheHandle, CachingStore, FLUSH_MARGIN};
pub use clock::{Clock, ShiftedClock, SystemClock};
pub use coherence::{barrier, Coherence};
pub use guard::{Session, SessionError, SessionLayer, Sessions};
pub use manager::{SessionManager, SessionStats};
pub use notify::{NotifyingStore, Peers};
pub use postgres::PgStore;
pub use purge::{purge_expired, PurgeReport, PURGE_BATCH};
pub use sqlite::SqliteStore;
pub use store::{Backend, Ending, Owner, PurgeTurn, Record, SessionStore, StoreError, StoredSession, Touch};
pub use token::{constant_time_eq, new_handle, CookieValue, SessionKey, Token, TokenHash};

/// How sessions behave. Times in seconds unless a `Duration`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Name of the private cookie that carries the token.
    pub cookie_name: String,
    /// Sliding deadline: a session unused this long ends.
    pub idle_timeout: i64,
    /// Hard deadline counted from login, whatever the activity.
    pub absolute_timeout: i64,
    /// Least time between two writes that move a session's deadlines.
    pub touch_interval: i64,
    /// Time between two runs of the background purge.
    pub purge_interval: Duration,
    /// Mark the cookie `Secure` (serve over HTTPS only).
    pub secure: bool,
    /// Other names a session cookie may arrive under (an earlier
    /// `cookie_name`): read, then re-issued under `cookie_name`...
    pub accept_names: Vec<String>,
    /// ...but only for sessions created at or before this time (unix
    /// seconds): when the name changed. A cookie planted under an old name
    /// later (a plain cookie where the current one is `__Host-`) opens nothing.
    pub accept_names_created_until: i64,
    /// The cookie's `Domain` (every subdomain shares the session), or none:
    /// the host that set it only.
    pub cookie_domain: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "sesija".into(),
            idle_timeout: 5 * 24 * 3600,
            absolute_timeout: 30 * 24 * 3600,
            touch_interval: 60,
            purge_interval: Duration::from_secs(300),
            secure: false,
            accept_names: Vec::new(),
            accept_names_created_until: i64::MIN,
            cookie_domain: None,
        }
    }
}

/// Ending an owner's sessions inside a transaction the caller holds (an
/// account's password change or removal ends its sessions in the same
/// commit), on the connection type of each engine: the store owns the
/// statement, the accounts code calls it. A cache in front of the store is
/// told afterwards ([`SessionStore::invalidate`]).
#[allow(async_fn_in_trait)]
pub trait EndSessionsIn {
    /// Ends every session of `user_id` but the one with handle `keep`;
    /// returns how many ended.
    async fn end_sessions_of(&mut self, user_id: i64, keep: Option<&str>) -> Result<u64, sqlx::Error>;
}

/// The current time in unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
