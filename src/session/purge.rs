//! Removal of expired sessions, on demand and as a background task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::store::{Ending, SessionStore, StoreError};
use super::SessionManager;

/// Most rows one purge statement deletes: about a millisecond of work, so
/// other writers never wait long behind it, and page views never wait long
/// for the core (the writer runs at low priority, but a statement that has
/// the core keeps it to the end). Fewer rows per statement would cost more
/// in commits than they save.
pub const PURGE_BATCH: u32 = 250;

/// What one purge run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeReport {
    /// Rows removed.
    pub removed: u64,
    /// Statements issued.
    pub batches: u32,
}

/// Deletes every session with `expires_at <= now`, [`PURGE_BATCH`] rows at a
/// time, yielding between batches.
pub async fn purge_expired(store: &dyn SessionStore, now: i64) -> Result<PurgeReport, StoreError> {
    let mut report = PurgeReport::default();
    loop {
        let removed = store.end(Ending::Expired { now, limit: PURGE_BATCH }).await?;
        report.removed += removed;
        report.batches += 1;
        if removed < u64::from(PURGE_BATCH) {
            return Ok(report);
        }
        tokio::task::yield_now().await;
    }
}

/// How often the background task asks the store to write out what it holds
/// back ([`SessionStore::flush`]).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Purges at once, then every `purge_interval`, and flushes the store every
/// [`FLUSH_INTERVAL`] and once more when `shutdown` resolves. An error is
/// logged and the next round tries again: the task never dies of it.
/// Returns the number of purge rounds run.
pub async fn run(manager: Arc<SessionManager>, shutdown: impl std::future::Future<Output = ()>) -> u64 {
    tokio::pin!(shutdown);
    let interval = manager.config().purge_interval;
    let mut rounds = 0;
    let mut next_purge = Instant::now();
    loop {
        if Instant::now() >= next_purge {
            rounds += 1;
            purge_round(&manager).await;
            next_purge = Instant::now() + interval;
        }
        tokio::select! {
            _ = &mut shutdown => {
                flush(&manager).await;
                return rounds;
            }
            _ = tokio::time::sleep(FLUSH_INTERVAL.min(interval)) => flush(&manager).await,
        }
    }
}

/// One round, if it is this server's turn (see [`Backend::purge_turn`](super::Backend::purge_turn)).
async fn purge_round(manager: &SessionManager) {
    let turn = match manager.store().backend().purge_turn().await {
        Ok(Some(turn)) => turn,
        Ok(None) => {
            log::debug!("session purge: another server has this round");
            return;
        }
        Err(e) => {
            log::error!("session purge failed, will retry next round: {e}");
            return;
        }
    };
    let result = purge_expired(manager.store(), turn.now.unwrap_or_else(super::now)).await;
    turn.end().await;
    manager.stats().purge_runs.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(report) if report.removed > 0 => {
            manager.stats().purged.fetch_add(report.removed, Ordering::Relaxed);
            log::info!("session purge removed {} expired sessions", report.removed);
        }
        Ok(_) => log::debug!("session purge found no expired sessions"),
        Err(e) => log::error!("session purge failed, will retry next round: {e}"),
    }
}

async fn flush(manager: &SessionManager) {
    if let Err(e) = manager.store().flush().await {
        log::warn!("session deadline flush failed, will retry: {e}");
    }
}
