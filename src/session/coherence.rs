//! Several servers on one PostgreSQL database, each with a cache in
//! memory, kept as strict as one server: a logout, a revocation or a
//! password change made on any of them is honoured by every one from the
//! first request that starts after the response.
//!
//! * **Announcements.** The database announces every change that ends or
//!   alters a session, from the transaction that made it (triggers on
//!   `sessions`, see `migrations/postgres/`), whoever made it. Each server
//!   listens and drops what is named ([`CacheHandle::forget_ids`]).
//! * **Proof of hearing.** Each server announces a heartbeat of its own
//!   every [`HEARTBEAT`] and serves from its cache only while the last one it
//!   heard back was sent less than [`FRESH`] ago ([`Coherence::trusted`]).
//!   A listener error, a half-dead connection, a paused process: no fresh
//!   heartbeat, so every look-up reads the database. Any listener error also
//!   empties the caches (announcements may have been lost meanwhile).
//! * **Barrier.** After its change commits, a writer announces a barrier
//!   number and waits, at most [`BARRIER_TIMEOUT`], until every server seen
//!   in the last seconds has applied it (announcements arrive in commit
//!   order, so a server that applied the barrier dropped the change before).
//!   A server that does not confirm in time has not heard a heartbeat for
//!   that long either, so it serves nothing from memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgNotification, PgPool};

use super::cache::CacheHandle;
use super::token::new_handle;

/// How often a server announces its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A cache serves only while the last heartbeat heard back was sent within this.
pub const FRESH: Duration = Duration::from_millis(1500);
/// Longest a writer waits for every server to apply its change.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// Servers that confirmed anything within this many seconds are waited for.
const LIVE_SECONDS: i64 = 2;

const SESSIONS: &str = "sesija_sessions";
const HEARTBEATS: &str = "sesija_heartbeat";
const BARRIERS: &str = "sesija_barrier";

type Hook = Arc<dyn Fn() + Send + Sync>;

/// One server's part: its listener, heartbeat and caches to keep.
pub struct Coherence {
    id: String,
    pool: PgPool,
    state: Mutex<State>,
    caches: Mutex<Vec<CacheHandle>>,
    /// Run when their channel announces anything, or announcements were lost.
    hooks: Mutex<Vec<(&'static str, Hook)>>,
}

#[derive(Default)]
struct State {
    /// Serving from memory is allowed until then.
    fresh_until: Option<Instant>,
    /// Heartbeats sent: their number and when.
    sent: VecDeque<(u64, Instant)>,
    next: u64,
}

impl Coherence {
    /// Registers this server, subscribes to `sessions` announcements and to
    /// `channels` (see [`Coherence::on`]), and starts the listener and the
    /// heartbeat; both stop when `pool` closes.
    pub async fn start(pool: PgPool, channels: &[&'static str]) -> Result<Arc<Coherence>, sqlx::Error> {
        let id = new_handle();
        sqlx::query("DELETE FROM sesija_instances WHERE seen_at < EXTRACT(EPOCH FROM now())::BIGINT - 3600")
            .execute(&pool)
            .await?;
        sqlx::query(
            // Every barrier announced so far is applied (the cache is empty);
            // a fresh sequence's last_value is the number it will hand out
            // first, so it counts only once called.
            "INSERT INTO sesija_instances (id, applied, seen_at) \
             SELECT $1, CASE WHEN is_called THEN last_value ELSE 0 END, EXTRACT(EPOCH FROM now())::BIGINT \
             FROM sesija_barrier",
        )
        .bind(&id)
        .execute(&pool)
        .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        let mut all = vec![SESSIONS, HEARTBEATS, BARRIERS];
        all.extend_from_slice(channels);
        listener.listen_all(all).await?;
        let me = Arc::new(Coherence {
            id,
            pool,
            state: Mutex::default(),
            caches: Mutex::default(),
            hooks: Mutex::default(),
        });
        tokio::spawn(listen(me.clone(), listener));
        tokio::spawn(beat(me.clone()));
        Ok(me)
    }

    /// Whether this server still hears every announcement (its own last
    /// heartbeat came back in time): only then may it serve from memory.
    pub fn trusted(&self) -> bool {
        self.state.lock().unwrap().fresh_until.is_some_and(|until| Instant::now() < until)
    }

    /// [`Coherence::trusted`] as a closure, for [`super::CachingStore::gated`].
    /// It holds the coherence weakly (what it gates is often among the
    /// coherence's own hooks, and a cycle would keep the pool open for
    /// good); once the coherence is gone, nothing is trusted.
    pub fn trust(self: &Arc<Self>) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let me = Arc::downgrade(self);
        Arc::new(move || me.upgrade().is_some_and(|me| me.trusted()))
    }

    /// Keeps `cache` coherent: the sessions announced are dropped from it.
    pub fn forgets(&self, cache: CacheHandle) {
        self.caches.lock().unwrap().push(cache);
    }

    /// Runs `hook` whenever `channel` (one passed to [`Coherence::start`])
    /// announces anything, and when announcements may have been lost.
    pub fn on(&self, channel: &'static str, hook: Hook) {
        self.hooks.lock().unwrap().push((channel, hook));
    }

    /// Waits until every live server applied what was committed before.
    pub async fn barrier(&self) {
        barrier(&self.pool).await;
    }

    /// Announcements may have been lost: forget everything, trust nothing
    /// until a heartbeat comes back.
    fn lost(&self, why: &str) {
        log::warn!("session announcements may have been lost ({why}): caches emptied");
        self.state.lock().unwrap().fresh_until = None;
        for cache in self.caches.lock().unwrap().iter() {
            cache.forget_all();
        }
        for (_, hook) in self.hooks.lock().unwrap().iter() {
            hook();
        }
    }

    /// Applies a batch of announcements, in the order they came.
    async fn apply(&self, batch: Vec<PgNotification>) {
        let mut ids = Vec::new();
        let mut channels = Vec::new();
        let (mut beat, mut applied) = (None, None::<i64>);
        for n in &batch {
            match n.channel() {
                SESSIONS => match n.payload().parse::<i64>() {
                    Ok(id) => ids.push(id),
                    // Something changed that this instance cannot name (a
                    // hand-sent NOTIFY, a format it does not know): forget
                    // everything rather than keep what may have changed.
                    Err(_) => {
                        log::warn!("unreadable session announcement {:?}: caches emptied", n.payload());
                        for cache in self.caches.lock().unwrap().iter() {
                            cache.forget_all();
                        }
                    }
                },
                HEARTBEATS => {
                    let ours = n.payload().strip_prefix(self.id.as_str()).and_then(|r| r.strip_prefix(':'));
                    if let Some(number) = ours.and_then(|r| r.parse::<u64>().ok()) {
                        beat = beat.max(Some(number));
                    }
                }
                BARRIERS => applied = applied.max(n.payload().parse().ok()),
                other => channels.push(other.to_owned()),
            }
        }
        // First drop what changed...
        for cache in self.caches.lock().unwrap().iter() {
            cache.forget_ids(&ids);
        }
        for (channel, hook) in self.hooks.lock().unwrap().iter() {
            if channels.iter().any(|c| c == channel) {
                hook();
            }
        }
        // ...then confirm, and trust again.
        if beat.is_none() && applied.is_none() {
            return;
        }
        let confirmed = sqlx::query(
            "INSERT INTO sesija_instances (id, applied, seen_at) VALUES ($1, $2, EXTRACT(EPOCH FROM now())::BIGINT) \
             ON CONFLICT (id) DO UPDATE SET applied = GREATEST(sesija_instances.applied, $2), \
             seen_at = EXCLUDED.seen_at",
        )
        .bind(&self.id)
        .bind(applied.unwrap_or(0))
        .execute(&self.pool)
        .await;
        if let Err(e) = confirmed {
            log::warn!("session announcements: could not confirm: {e}");
            return;
        }
        if let Some(number) = beat {
            let mut state = self.state.lock().unwrap();
            let sent = state.sent.iter().find(|(n, _)| *n == number).map(|(_, at)| *at);
            if let Some(at) = sent {
                state.fresh_until = state.fresh_until.max(Some(at + FRESH));
            }
        }
    }
}

async fn listen(me: Arc<Coherence>, mut listener: PgListener) {
    loop {
        match listener.try_recv().await {
            Ok(Some(first)) => {
                let mut batch = vec![first];
                while batch.len() < 4096 {
                    match listener.next_buffered() {
                        Some(n) => batch.push(n),
                        None => break,
                    }
                }
                me.apply(batch).await;
            }
            // The connection was lost (and made again): what was announced
            // meanwhile is gone.
            Ok(None) => me.lost("the listening connection was lost"),
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                me.lost(&e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if me.pool.is_closed() {
            return;
        }
    }
}

async fn beat(me: Arc<Coherence>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if me.pool.is_closed() {
            return;
        }
        let number = {
            let mut state = me.state.lock().unwrap();
            state.next += 1;
            let number = state.next;
            // Recorded before it is sent: the freshness it gives is never late.
            state.sent.push_back((number, Instant::now()));
            while state.sent.len() > 16 {
                state.sent.pop_front();
            }
            number
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(HEARTBEATS)
            .bind(format!("{}:{number}", me.id))
            .execute(&me.pool)
            .await;
        if let Err(e) = sent {
            log::debug!("session heartbeat not sent: {e}");
        }
    }
}

/// Announces a barrier after what the caller committed and waits (at most
/// `BARRIER_TIMEOUT`, 2 s) until every server seen in the last seconds has
/// applied it. For writers that are no server too (the command line).
pub async fn barrier(pool: &PgPool) {
    let started = Instant::now();
    let number: Result<i64, sqlx::Error> = async {
        let number: i64 = sqlx::query_scalar("SELECT nextval('sesija_barrier')").fetch_one(pool).await?;
        sqlx::query("SELECT pg_notify($1, $2)").bind(BARRIERS).bind(number.to_string()).execute(pool).await?;
        Ok(number)
    }
    .await;
    let number = match number {
        Ok(number) => number,
        Err(e) => {
            // Every server's heartbeat goes through the same database: they
            // stop serving from memory within `FRESH` anyway.
            log::warn!("session change not announced as a barrier: {e}");
            return;
        }
    };
    loop {
        let waiting: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sesija_instances \
             WHERE applied < $1 AND seen_at >= EXTRACT(EPOCH FROM now())::BIGINT - $2",
        )
        .bind(number)
        .bind(LIVE_SECONDS)
        .fetch_one(pool)
        .await;
        match waiting {
            Ok(0) => return,
            Ok(n) if started.elapsed() >= BARRIER_TIMEOUT => {
                log::warn!("{n} server(s) did not confirm a session change in time; they serve nothing from memory until they hear again");
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => {
                log::warn!("session change barrier: {e}");
                return;
            }
        }
    }
}

/// Every instance listening on the database is told of a change by the
/// barrier, which returns once each confirmed it (or was given up on).
#[rocket::async_trait]
impl super::Peers for Coherence {
    async fn changed(&self) {
        self.barrier().await;
    }

    fn hold_deadlines(&self) -> bool {
        false
    }
}
