//! [`SessionManager`]: the session layer's shared state (a store, its
//! configuration, the clock, the previous cookie keys, counters) and what
//! it does for a request: read and open the cookie, load and touch the
//! session, build the cookie that carries it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use rocket::http::{Cookie, CookieJar};
use serde_json::{Map, Value};

use super::clock::{Clock, SystemClock};
use super::purge::{purge_expired, PurgeReport};
use super::store::{Record, SessionStore, StoreError, Touch};
use super::token::{CookieValue, SessionKey, Token};
use super::{cookies, SessionConfig};

/// The session layer's shared state: a store and its configuration. Managed
/// by [`super::SessionLayer`]; reachable from a guard for operations such as listing
/// a user's sessions.
pub struct SessionManager {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) config: SessionConfig,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) fallback_keys: Vec<cookie::Key>,
    pub(super) stats: SessionStats,
}

/// Counters of what this process's session layer did, for metrics.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Sessions started.
    pub created: AtomicU64,
    /// Sessions ended through [`super::Session::destroy`].
    pub destroyed: AtomicU64,
    /// Runs of the background purge.
    pub purge_runs: AtomicU64,
    /// Expired rows the background purge removed.
    pub purged: AtomicU64,
}

impl SessionManager {
    /// A manager of sessions in `store`, configured by `config`.
    pub fn new(store: impl SessionStore, config: SessionConfig) -> SessionManager {
        SessionManager {
            store: Arc::new(store),
            config,
            clock: Arc::new(SystemClock),
            fallback_keys: Vec::new(),
            stats: SessionStats::default(),
        }
    }

    /// Reads the time from `clock` (a test's [`super::ShiftedClock`]) instead of
    /// the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SessionManager {
        self.clock = clock;
        self
    }

    /// Now, by this manager's clock: every deadline of its sessions is
    /// judged by it.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The clock itself, to share with what judges sessions by time.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Previous cookie keys: a cookie that opens only under one of them is
    /// accepted and re-issued under Rocket's current `secret_key`, so
    /// rotating the key logs nobody out.
    pub fn with_fallback_keys(mut self, keys: Vec<cookie::Key>) -> SessionManager {
        self.fallback_keys = keys;
        self
    }

    /// The store (through every cache and notifier).
    pub fn store(&self) -> &dyn SessionStore {
        &*self.store
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// What this process's session layer did.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Deadline for a session created at `created_at` and last seen at `now`.
    pub fn deadline(&self, created_at: i64, now: i64) -> i64 {
        (now + self.config.idle_timeout).min(created_at + self.config.absolute_timeout)
    }

    /// Runs one purge of expired sessions now.
    pub async fn purge_now(&self) -> Result<PurgeReport, StoreError> {
        purge_expired(self.store(), self.now()).await
    }
}

/// What a request's session cookie names.
pub(super) struct CookieKey {
    pub(super) key: SessionKey,
    pub(super) token: Token,
    /// Re-issue the cookie (opened under a previous key or another name).
    pub(super) reissue: bool,
    /// It came under one of `accept_names`.
    pub(super) other_name: bool,
}

/// A loaded session, shared by every guard of one request.
pub(super) struct Live {
    pub(super) key: Mutex<SessionKey>,
    pub(super) record: Record,
    pub(super) data: Mutex<Map<String, Value>>,
}

impl SessionManager {
    /// The session cookie. A persistent one lasts until the session's
    /// absolute deadline: it is not re-sent as the idle deadline slides
    /// (forward-auth checks, which keep a session alive while its browser
    /// only visits the apps, cannot set cookies), and the server's idle
    /// deadline still ends the session earlier.
    pub(super) fn cookie(
        &self,
        id: i64,
        token: &Token,
        persistent: bool,
        created_at: i64,
        now: i64,
    ) -> Cookie<'static> {
        let lasts = persistent.then(|| created_at + self.config.absolute_timeout - now);
        let (name, domain) = (&self.config.cookie_name, self.config.cookie_domain.as_deref());
        cookies::session(name, CookieValue::encode(id, token), self.config.secure, domain, lasts)
    }

    pub(super) fn removal(&self) -> Cookie<'static> {
        self.removal_named(&self.config.cookie_name)
    }

    pub(super) fn removal_named(&self, name: &str) -> Cookie<'static> {
        cookies::session_removal(name, self.config.secure, self.config.cookie_domain.as_deref())
    }

    /// Opens a cookie sealed under a previous key.
    pub(super) fn open_with_fallbacks(&self, sealed: &Cookie<'static>) -> Option<String> {
        self.fallback_keys.iter().find_map(|key| {
            let mut jar = cookie::CookieJar::new();
            jar.add_original(sealed.clone());
            jar.private(key).get(sealed.name()).map(|c| c.value().to_owned())
        })
    }

    /// What the request's cookie holds, if it opens and is well formed,
    /// whether the cookie must be re-issued (previous key or name), and
    /// whether it came under another name. A cookie that is present but
    /// unusable is removed. A sealed cookie that is not there costs nothing:
    /// no decryption, no query.
    pub(super) fn cookie_value(&self, jar: &CookieJar<'_>) -> Option<(CookieValue, bool, bool)> {
        let names = std::iter::once(&self.config.cookie_name).chain(&self.config.accept_names);
        for (i, name) in names.enumerate() {
            let Some(raw) = jar.get(name) else { continue };
            let opened = match jar.get_private(name) {
                Some(c) => Some((c.value().to_owned(), i > 0)),
                None => self.open_with_fallbacks(&raw.clone()).map(|v| (v, true)),
            };
            if i > 0 || opened.is_none() {
                jar.remove_private(self.removal_named(name));
            }
            match opened.and_then(|(value, reissue)| CookieValue::decode(&value).map(|v| (v, reissue, i > 0)))
            {
                Some(found) => return Some(found),
                None => log::warn!("unreadable session cookie ignored"),
            }
        }
        None
    }

    /// The key of the cookie's session, its token, whether the cookie must
    /// be re-issued and whether it came under another name.
    pub(super) fn key(&self, jar: &CookieJar<'_>) -> Option<CookieKey> {
        let (CookieValue { id, token }, reissue, other_name) = self.cookie_value(jar)?;
        let hash = token.hash();
        Some(CookieKey { key: SessionKey { id, hash }, token, reissue, other_name })
    }

    pub(super) async fn load(&self, jar: &CookieJar<'_>) -> Result<Option<Arc<Live>>, StoreError> {
        let now = self.now();
        let Some(CookieKey { key, token, reissue, other_name }) = self.key(jar) else {
            return Ok(None);
        };
        let Some(mut record) = self.store.load(&key, now).await? else {
            jar.remove_private(self.removal());
            return Ok(None);
        };
        if other_name && record.created_at > self.config.accept_names_created_until {
            log::warn!(
                "session {}: cookie under a former name refused (session newer than the name change)",
                record.handle
            );
            jar.remove_private(self.removal());
            return Ok(None);
        }

        if now - record.last_seen_at >= self.config.touch_interval && now > record.last_seen_at {
            let expires_at = record.moved_deadline(self.deadline(record.created_at, now));
            let touch = Touch { key, last_seen_at: now, expires_at };
            if self.store.touch(&[touch], now).await? == 0 {
                jar.remove_private(self.removal());
                return Ok(None);
            }
            record.last_seen_at = now;
            record.expires_at = expires_at;
        }
        if reissue {
            jar.add_private(self.cookie(key.id, &token, record.persistent, record.created_at, now));
        }

        let data = match serde_json::from_str::<Map<String, Value>>(&record.data) {
            Ok(data) => data,
            Err(e) => {
                log::warn!("session {}: undecodable data dropped: {e}", record.handle);
                Map::new()
            }
        };
        Ok(Some(Arc::new(Live { key: Mutex::new(key), record, data: Mutex::new(data) })))
    }
}
