//! A store that tells the other servers that may cache sessions of each
//! change it writes, before the write returns: [`NotifyingStore`] over a
//! store, and [`Peers`], who the others are and how they are told (a
//! server's control socket; a barrier every instance on PostgreSQL
//! confirms, see [`super::Coherence`]).

use std::sync::Arc;

use rocket::async_trait;

use super::store::{Backend, Ending, Owner, Record, SessionStore, StoreError, Touch};
use super::token::{SessionKey, TokenHash};

/// The other servers that may cache this store's sessions.
#[async_trait]
pub trait Peers: Send + Sync {
    /// A session changed or ended: returns once they honour it (or once it
    /// is logged that they may not yet).
    async fn changed(&self);

    /// Whether they hold deadline moves back and must hear of those too
    /// (caches on PostgreSQL read an entry again when it looks expired, and
    /// the database announces no deadline moves).
    fn hold_deadlines(&self) -> bool;
}

/// A store that, after each write that changes or ends a session, makes
/// every other server that may cache it forget it before the write returns.
pub struct NotifyingStore<S> {
    inner: S,
    peers: Arc<dyn Peers>,
}

impl<S: SessionStore> NotifyingStore<S> {
    /// `inner`, telling `peers` of every change.
    pub fn new(inner: S, peers: Arc<dyn Peers>) -> NotifyingStore<S> {
        NotifyingStore { inner, peers }
    }

    async fn tell<T>(&self, written: T) -> T {
        self.peers.changed().await;
        written
    }

    async fn tell_deadline<T>(&self, written: T) -> T {
        match self.peers.hold_deadlines() {
            true => self.tell(written).await,
            false => written,
        }
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for NotifyingStore<S> {
    async fn create(
        &self,
        hash: &TokenHash,
        record: &Record,
        replaces: Option<&SessionKey>,
    ) -> Result<i64, StoreError> {
        let id = self.inner.create(hash, record, replaces).await?;
        // A brand-new session is in nobody's cache; the one it replaces may be.
        if replaces.is_some() {
            self.tell(()).await;
        }
        Ok(id)
    }

    async fn load(&self, key: &SessionKey, now: i64) -> Result<Option<Record>, StoreError> {
        self.inner.load(key, now).await
    }

    async fn touch(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError> {
        let live = self.inner.touch(touches, now).await?;
        Ok(self.tell_deadline(live).await)
    }

    async fn save_data(&self, key: &SessionKey, data: &str, now: i64) -> Result<bool, StoreError> {
        let live = self.inner.save_data(key, data, now).await?;
        Ok(self.tell(live).await)
    }

    async fn rotate(&self, old: &SessionKey, new: &TokenHash, now: i64) -> Result<bool, StoreError> {
        let live = self.inner.rotate(old, new, now).await?;
        Ok(self.tell(live).await)
    }

    async fn end(&self, which: Ending<'_>) -> Result<u64, StoreError> {
        match self.inner.end(which).await? {
            // A purge that found nothing changed nothing anyone caches.
            0 if matches!(which, Ending::Expired { .. }) => Ok(0),
            ended => Ok(self.tell(ended).await),
        }
    }

    async fn list(&self, whose: Owner, now: i64) -> Result<Vec<Record>, StoreError> {
        self.inner.list(whose, now).await
    }

    async fn flush(&self) -> Result<u64, StoreError> {
        self.inner.flush().await
    }

    async fn invalidate(&self) {
        self.inner.invalidate().await;
        self.tell(()).await;
    }

    fn backend(&self) -> &dyn Backend {
        self.inner.backend()
    }
}
