//! A bounded in-process cache in front of any [`SessionStore`], so that a page
//! view of a recently seen session costs a hash-map look-up instead of a trip
//! to the database.
//!
//! ```no_run
//! # fn pools() -> (sqlx::SqlitePool, sqlx::SqlitePool) { unimplemented!() }
//! use sesija::session::{CachingStore, SessionConfig, SessionLayer, SqliteStore};
//! let (reader, writer) = pools();
//! let store = CachingStore::new(SqliteStore::new(reader, writer), 10_000);
//! let layer = SessionLayer::new(store, SessionConfig::default());
//! ```
//!
//! What it guarantees:
//! * Every write goes to the inner store and is committed first; only then is
//!   the entry dropped and a generation counter moved, so a look-up that read
//!   the database before the write finished cannot put the old row back.
//! * An entry is never honoured past its `expires_at`.
//! * Deadline moves ([`SessionStore::touch`]) of cached sessions are held
//!   back and written in one transaction per [`SessionStore::flush`] (the
//!   session layer flushes about once a second and at shutdown), unless the
//!   stored deadline is less than [`FLUSH_MARGIN`] away: a crash can lose one
//!   second of deadline moves, which only shortens sessions. A held move is
//!   written as of when it was made, however late (a slow or unreachable
//!   database), and before any later move of its session: the stored
//!   deadline it was to push back never ends the session it kept alive.
//! * Changes made behind the store's back (another process, a raw SQL
//!   transaction) must be announced with [`SessionStore::invalidate`], which
//!   forgets everything.
//! * At most `capacity` entries: when full, an arbitrary entry makes room.
//! * Where several servers share the inner store, each announces what it
//!   changed and the others drop it ([`CacheHandle::forget_ids`]); a cache
//!   [`gated`](CachingStore::gated) on whether those announcements still
//!   arrive serves nothing from memory while they may not, and an entry
//!   that looks expired is read again (another server may have extended it).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocket::async_trait;

use super::store::{Backend, Ending, Owner, Record, SessionStore, StoreError, Touch};
use super::token::{SessionKey, TokenHash};

/// A held-back deadline move is written at once instead when the stored
/// deadline is this close (seconds), so a purge never removes a session
/// whose newer deadline is still waiting for the next flush.
pub const FLUSH_MARGIN: i64 = 5;

/// Sessions cached in memory in front of `S`.
pub struct CachingStore<S> {
    inner: S,
    capacity: usize,
    state: Arc<Mutex<State>>,
    /// Whether what is cached may be served (see [`CachingStore::gated`]).
    trusted: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Drops entries of a [`CachingStore`] from outside it: changes another
/// server announced.
#[derive(Clone)]
pub struct CacheHandle(Arc<Mutex<State>>);

impl CacheHandle {
    /// Forgets the sessions with these ids (whatever their token).
    pub fn forget_ids(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let ids: std::collections::HashSet<i64> = ids.iter().copied().collect();
        let mut state = self.0.lock().unwrap();
        state.generation += 1;
        state.entries.retain(|key, _| !ids.contains(&key.id));
    }

    /// Forgets every session (announcements may have been lost).
    pub fn forget_all(&self) {
        let mut state = self.0.lock().unwrap();
        state.generation += 1;
        state.entries.clear();
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<SessionKey, Entry, KeyHasher>,
    /// Deadline moves not yet written, by session.
    pending: HashMap<SessionKey, Touch, KeyHasher>,
    /// Moves on every write and invalidation; a load may fill the cache only
    /// if it did not move while the load read the database.
    generation: u64,
}

struct Entry {
    record: Record,
    /// The deadline the inner store holds (the record's may be later).
    stored_expires_at: i64,
}

/// For keys already uniformly spread (SHA-256 outputs of random tokens,
/// keyed hashes): their first bytes are used as they are, since hashing
/// them again would only cost time.
pub(super) type KeyHasher = BuildHasherDefault<PrefixHasher>;

#[derive(Default)]
pub(super) struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

impl<S: SessionStore> CachingStore<S> {
    /// A cache of at most `capacity` sessions (0 caches nothing, and every
    /// call goes straight to `inner`).
    pub fn new(inner: S, capacity: usize) -> CachingStore<S> {
        CachingStore {
            inner,
            capacity,
            state: Arc::default(),
            trusted: None,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Serves from memory only while `trusted()` says the changes of every
    /// other server still arrive; otherwise every look-up reads the inner
    /// store (and fills nothing).
    pub fn gated(mut self, trusted: Arc<dyn Fn() -> bool + Send + Sync>) -> CachingStore<S> {
        self.trusted = Some(trusted);
        self
    }

    /// A handle that drops entries from outside (see [`CacheHandle`]).
    pub fn handle(&self) -> CacheHandle {
        CacheHandle(self.state.clone())
    }

    /// Look-ups answered from memory and from the inner store.
    pub fn hit_miss(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Sessions held in memory now.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }

    /// Whether it holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Listed rows with the activity this cache knows of and has not written
    /// yet (batched deadline moves), most recently active first again.
    fn as_known(&self, mut records: Vec<Record>) -> Vec<Record> {
        {
            let state = self.state.lock().unwrap();
            if state.pending.is_empty() {
                return records;
            }
            let newer: HashMap<&str, (i64, i64)> = state
                .pending
                .keys()
                .filter_map(|key| state.entries.get(key))
                .map(|e| (e.record.handle.as_str(), (e.record.last_seen_at, e.record.expires_at)))
                .collect();
            for r in &mut records {
                if let Some((last_seen_at, expires_at)) = newer.get(r.handle.as_str()) {
                    r.last_seen_at = r.last_seen_at.max(*last_seen_at);
                    r.expires_at = r.expires_at.max(*expires_at);
                }
            }
        }
        // Stable: rows active in the same second keep the store's order.
        records.sort_by_key(|r| std::cmp::Reverse(r.last_seen_at));
        records
    }

    /// After a committed write: forget the entries `drop` picks.
    fn written(&self, mut drop: impl FnMut(&Record) -> bool) {
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        state.entries.retain(|_, entry| !drop(&entry.record));
    }

    /// After a committed write to one session: forget it.
    fn written_one(&self, key: &SessionKey) {
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        state.entries.remove(key);
        state.pending.remove(key);
    }
}

/// When the earliest of `touches` was made. A held move is written as of
/// then, not as of the flush: each was held while its session was live by
/// its stored deadline (more than [`FLUSH_MARGIN`] ahead), and a flush that
/// comes late (a busy database, an outage) must not find the session over
/// by the very deadline the move was to push back.
fn earliest_seen(touches: &[Touch]) -> i64 {
    touches.iter().map(|t| t.last_seen_at).min().unwrap_or(i64::MAX)
}

#[async_trait]
impl<S: SessionStore> SessionStore for CachingStore<S> {
    async fn create(
        &self,
        token_hash: &TokenHash,
        record: &Record,
        replaces: Option<&SessionKey>,
    ) -> Result<i64, StoreError> {
        let id = self.inner.create(token_hash, record, replaces).await?;
        // The new session is in no cache yet (the first page view after a
        // login fills it); the one it replaces may be.
        if let Some(old) = replaces {
            self.written_one(old);
        }
        Ok(id)
    }

    async fn load(&self, key: &SessionKey, now: i64) -> Result<Option<Record>, StoreError> {
        if self.capacity == 0 || self.trusted.as_ref().is_some_and(|trusted| !trusted()) {
            return self.inner.load(key, now).await;
        }
        let generation = {
            let mut state = self.state.lock().unwrap();
            if let Some(entry) = state.entries.get(key) {
                if entry.record.expires_at > now {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(entry.record.clone()));
                }
                // Over, as far as this cache knows: the store says for sure
                // (another server sharing it may have moved the deadline).
                state.entries.remove(key);
                state.pending.remove(key);
            }
            state.generation
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let found = self.inner.load(key, now).await?;
        if let Some(record) = &found {
            let mut state = self.state.lock().unwrap();
            if state.generation == generation {
                if state.entries.len() >= self.capacity {
                    if let Some(victim) = state.entries.keys().next().copied() {
                        state.entries.remove(&victim);
                    }
                }
                let entry = Entry { record: record.clone(), stored_expires_at: record.expires_at };
                state.entries.insert(*key, entry);
            }
        }
        Ok(found)
    }

    async fn touch(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError> {
        // Moves of cached sessions whose stored deadline is not near are
        // held back for the next flush; the rest are written now.
        let (mut held, mut now_due, mut overdue) = (0, Vec::new(), Vec::new());
        {
            let mut state = self.state.lock().unwrap();
            for t in touches {
                match state.entries.get_mut(&t.key) {
                    Some(entry) if entry.stored_expires_at - now > FLUSH_MARGIN => {
                        entry.record.last_seen_at = entry.record.last_seen_at.max(t.last_seen_at);
                        entry.record.expires_at = entry.record.moved_deadline(t.expires_at);
                        state.pending.insert(t.key, *t);
                        held += 1;
                    }
                    _ => {
                        // A move held back and not flushed yet goes first:
                        // the stored deadline may be past it already.
                        overdue.extend(state.pending.remove(&t.key));
                        now_due.push(*t);
                    }
                }
            }
        }
        if now_due.is_empty() {
            return Ok(held);
        }
        if !overdue.is_empty() {
            if let Err(e) = self.inner.touch(&overdue, earliest_seen(&overdue)).await {
                // Kept for the next try, as a failed flush keeps its batch.
                let mut state = self.state.lock().unwrap();
                for t in overdue {
                    state.pending.entry(t.key).or_insert(t);
                }
                return Err(e);
            }
        }
        let live = self.inner.touch(&now_due, now).await?;
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        for t in &now_due {
            state.entries.remove(&t.key);
            state.pending.remove(&t.key);
        }
        Ok(held + live)
    }

    async fn save_data(&self, key: &SessionKey, data: &str, now: i64) -> Result<bool, StoreError> {
        let live = self.inner.save_data(key, data, now).await?;
        self.written_one(key);
        Ok(live)
    }

    async fn rotate(&self, old: &SessionKey, new: &TokenHash, now: i64) -> Result<bool, StoreError> {
        let live = self.inner.rotate(old, new, now).await?;
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        state.entries.remove(old);
        if let Some(mut touch) = state.pending.remove(old) {
            touch.key = SessionKey { id: old.id, hash: *new };
            state.pending.insert(touch.key, touch);
        }
        Ok(live)
    }

    async fn end(&self, which: Ending<'_>) -> Result<u64, StoreError> {
        let ended = self.inner.end(which).await?;
        match which {
            Ending::Session(key) => self.written_one(key),
            Ending::Handle { handle, .. } => self.written(|r| r.handle == handle),
            Ending::OwnedBy { user_id, keep } => {
                self.written(|r| r.user_id == user_id && Some(r.handle.as_str()) != keep);
            }
            Ending::All => {
                self.written(|_| true);
                self.state.lock().unwrap().pending.clear();
            }
            // Only rows whose stored deadline passed went; a cached entry
            // whose newer deadline had not been flushed yet went with them.
            Ending::Expired { now, .. } if ended > 0 => {
                let mut state = self.state.lock().unwrap();
                state.generation += 1;
                state.entries.retain(|_, entry| entry.stored_expires_at > now);
            }
            Ending::Expired { .. } => {}
        }
        Ok(ended)
    }

    async fn list(&self, whose: Owner, now: i64) -> Result<Vec<Record>, StoreError> {
        let records = self.inner.list(whose, now).await?;
        Ok(self.as_known(records))
    }

    async fn flush(&self) -> Result<u64, StoreError> {
        let batch: Vec<Touch> = {
            let mut state = self.state.lock().unwrap();
            state.pending.drain().map(|(_, t)| t).collect()
        };
        let inner = self.inner.flush().await?;
        if batch.is_empty() {
            return Ok(inner);
        }
        match self.inner.touch(&batch, earliest_seen(&batch)).await {
            Ok(_) => {
                let mut state = self.state.lock().unwrap();
                for t in &batch {
                    if let Some(entry) = state.entries.get_mut(&t.key) {
                        let moved = entry.record.ends_at.map_or(t.expires_at, |end| t.expires_at.min(end));
                        entry.stored_expires_at = entry.stored_expires_at.max(moved);
                    }
                }
                Ok(inner + batch.len() as u64)
            }
            Err(e) => {
                // Keep them for the next flush, unless a newer move came in.
                let mut state = self.state.lock().unwrap();
                for t in batch {
                    state.pending.entry(t.key).or_insert(t);
                }
                Err(e)
            }
        }
    }

    async fn invalidate(&self) {
        self.inner.invalidate().await;
        self.written(|_| true);
    }

    fn backend(&self) -> &dyn Backend {
        self.inner.backend()
    }
}
