//! [`SessionManager`]: the session layer's shared state (a store, its
//! configuration, the clock, the previous cookie keys, counters) and what
//! it does for a request: read and open the cookie, load and touch the
//! session, build the cookie that carries it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use rocket::http::{Cookie, CookieJar};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::clock::{Clock, SystemClock};
use super::opened::OpenedCookies;
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
    /// Sealed cookies already opened, and what they named.
    opened: OpenedCookies,
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
            opened: OpenedCookies::default(),
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
    /// The token, when the cookie must be re-issued (it opened under a
    /// previous key or came under another name).
    pub(super) reissue: Option<Token>,
    /// It came under one of `accept_names`.
    pub(super) other_name: bool,
}

/// A loaded session, shared by every guard of one request.
pub(super) struct Live {
    pub(super) key: Mutex<SessionKey>,
    pub(super) record: Record,
    /// The values, once read as a whole (until then, `record.data` is
    /// all there is: a request that reads one value, as every
    /// forward-auth check does, picks it out of the text without building
    /// the map).
    pub(super) data: Mutex<Option<Map<String, Value>>>,
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

    /// What the request's cookie names, if it opens and is well formed. A
    /// cookie that is present but unusable is removed. A sealed cookie that
    /// is not there costs nothing: no decryption, no query; one opened
    /// before under the current key and name costs a look-up (see
    /// [`OpenedCookies`]).
    pub(super) fn key(&self, jar: &CookieJar<'_>) -> Option<CookieKey> {
        let names = std::iter::once(&self.config.cookie_name).chain(&self.config.accept_names);
        for (i, name) in names.enumerate() {
            let Some(raw) = jar.get(name) else { continue };
            if i == 0 {
                if let Some(key) = self.opened.get(raw.value()) {
                    return Some(CookieKey { key, reissue: None, other_name: false });
                }
            }
            let opened = match jar.get_private(name) {
                Some(c) => Some((c.value().to_owned(), i > 0)),
                None => self.open_with_fallbacks(&raw.clone()).map(|v| (v, true)),
            };
            if i > 0 || opened.is_none() {
                jar.remove_private(self.removal_named(name));
            }
            let Some((CookieValue { id, token }, reissue)) =
                opened.and_then(|(value, reissue)| CookieValue::decode(&value).map(|v| (v, reissue)))
            else {
                log::warn!("unreadable session cookie ignored");
                continue;
            };
            let key = SessionKey { id, hash: token.hash() };
            if !reissue {
                self.opened.insert(raw.value(), key);
            }
            return Some(CookieKey { key, reissue: reissue.then_some(token), other_name: i > 0 });
        }
        None
    }

    pub(super) async fn load(&self, jar: &CookieJar<'_>) -> Result<Option<Arc<Live>>, StoreError> {
        let now = self.now();
        let Some(CookieKey { key, reissue, other_name }) = self.key(jar) else {
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
        if let Some(token) = reissue {
            jar.add_private(self.cookie(key.id, &token, record.persistent, record.created_at, now));
        }

        Ok(Some(Arc::new(Live { key: Mutex::new(key), record, data: Mutex::new(None) })))
    }
}

impl Live {
    /// `change` of the values (read from the stored text at the first
    /// need; undecodable text is dropped with a warning).
    pub(super) fn with_values<R>(&self, change: impl FnOnce(&mut Map<String, Value>) -> R) -> R {
        let mut data = self.data.lock().unwrap();
        let values = data.get_or_insert_with(|| {
            serde_json::from_str(&self.record.data).unwrap_or_else(|e| {
                log::warn!("session {}: undecodable data dropped: {e}", self.record.handle);
                Map::new()
            })
        });
        change(values)
    }

    /// The value under `key`, if present and of type `T`: from the values
    /// when they were read already, else picked out of the stored text.
    pub(super) fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        match &*self.data.lock().unwrap() {
            Some(values) => T::deserialize(values.get(key)?).ok(),
            None => field(&self.record.data, key),
        }
    }
}

/// The value under `key` of the JSON object `text`, read without building
/// the object (the last one when the key is repeated, as a map would keep);
/// `None` when absent, of another shape, or when `text` is no object.
fn field<T: DeserializeOwned>(text: &str, key: &str) -> Option<T> {
    use serde::de::{DeserializeSeed, Error, IgnoredAny, MapAccess, Visitor};
    use std::fmt;
    use std::marker::PhantomData;

    /// Whether a key is the one wanted (borrowed from the text when it
    /// has no escapes).
    struct IsKey<'k>(&'k str);
    impl<'de> Visitor<'de> for IsKey<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: Error>(self, key: &str) -> Result<bool, E> {
            Ok(key == self.0)
        }
    }
    impl<'de> DeserializeSeed<'de> for IsKey<'_> {
        type Value = bool;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }

    struct Field<'k, T>(&'k str, PhantomData<T>);
    impl<'de, T: DeserializeOwned> Visitor<'de> for Field<'_, T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
            let mut found = None;
            while let Some(wanted) = map.next_key_seed(IsKey(self.0))? {
                match wanted {
                    true => found = Some(map.next_value::<T>()?),
                    false => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let found = serde::Deserializer::deserialize_map(&mut de, Field(key, PhantomData)).ok()?;
    de.end().ok()?;
    found
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn one_value_is_picked_out_of_the_text_as_the_map_would_hold_it() {
        let text = r#"{"csrf":"abc","auth":"complete password 1 1","n":[1,{"auth":2}],"e":"a\"b"}"#;
        assert_eq!(field::<String>(text, "auth").as_deref(), Some("complete password 1 1"));
        assert_eq!(field::<String>(text, "csrf").as_deref(), Some("abc"));
        assert_eq!(field::<String>(text, "e").as_deref(), Some("a\"b"));
        assert_eq!(field::<String>(text, "missing"), None);
        // Another shape: none, as `Session::get` says.
        assert_eq!(field::<String>(text, "n"), None);
        assert_eq!(field::<String>(r#"{"a":"1","a":"2"}"#, "a").as_deref(), Some("2"));
        assert_eq!(field::<String>(r#"{"\u0061uth":"x"}"#, "auth").as_deref(), Some("x"));
        for broken in ["", "[]", "\"auth\"", r#"{"auth":"x"} trailing"#, r#"{"auth":"x""#] {
            assert_eq!(field::<String>(broken, "auth"), None, "{broken}");
        }
    }
}
