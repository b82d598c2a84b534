//! The login throttle's counts kept in memory, for one server (SQLite).
//! See the [parent module](super) for the rules.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::policy::{
    name_of, source_of, Held, Outcome, ACCOUNT_MAX_FAILURES, ACCOUNT_WINDOW, DEFAULT_CAPACITY,
    IN_FLIGHT_WAIT, SOURCE_WINDOW,
};
use crate::session::{Clock, SystemClock};

/// Failures of one key within its current window, and its attempts in flight.
#[derive(Clone, Copy)]
struct Count {
    failures: u32,
    /// When the first failure of this window was counted (unix seconds,
    /// by the throttle's clock).
    since: i64,
    /// Attempts begun and not yet settled.
    in_flight: u32,
}

/// One table of counts: keys, their limit and window, a bound on its size.
struct Table<K> {
    counts: HashMap<K, Count>,
    limit: u32,
    window: Duration,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(limit: u32, window: Duration) -> Table<K> {
        Table { counts: HashMap::new(), limit, window }
    }

    /// The failures of `key` counted in its live window at `now`.
    fn failures(&self, key: &K, now: i64) -> u32 {
        self.counts.get(key).filter(|c| self.live(c, now)).map_or(0, |c| c.failures)
    }

    /// Whether `count`'s window is still open at `now`.
    fn live(&self, count: &Count, now: i64) -> bool {
        now.saturating_sub(count.since) < self.window_secs()
    }

    fn window_secs(&self) -> i64 {
        i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX)
    }

    /// Seconds to wait when `key` is at its limit by settled failures.
    fn locked(&self, key: &K, now: i64) -> Option<u64> {
        let count = self.counts.get(key)?;
        (self.failures(key, now) >= self.limit).then(|| {
            let left = count.since.saturating_add(self.window_secs()).saturating_sub(now);
            u64::try_from(left).unwrap_or(0).max(1)
        })
    }

    /// Whether one more attempt could exceed the limit, were the attempts
    /// in flight to fail.
    fn busy(&self, key: &K, now: i64) -> bool {
        let in_flight = self.counts.get(key).map_or(0, |c| c.in_flight);
        self.failures(key, now) + in_flight >= self.limit
    }

    /// Whether a new key fits, making room if it must (see the module docs).
    fn room(&mut self, capacity: usize, now: i64) -> bool {
        if self.counts.len() < capacity {
            return true;
        }
        let (window, limit) = (self.window_secs(), self.limit);
        self.counts.retain(|_, c| c.in_flight > 0 || now.saturating_sub(c.since) < window);
        if self.counts.len() >= capacity {
            self.counts.retain(|_, c| c.in_flight > 0 || c.failures >= limit);
        }
        self.counts.len() < capacity
    }

    fn start(&mut self, key: K, now: i64) {
        self.counts.entry(key).or_insert(Count { failures: 0, since: now, in_flight: 0 }).in_flight += 1;
    }

    /// Settles one attempt of `key`: counted as a failure if `failed`.
    fn settle(&mut self, key: &K, failed: bool, now: i64) {
        let window = self.window_secs();
        let count = match self.counts.get_mut(key) {
            Some(count) => {
                count.in_flight = count.in_flight.saturating_sub(1);
                count
            }
            None if failed => {
                self.counts.entry(key.clone()).or_insert(Count { failures: 0, since: now, in_flight: 0 })
            }
            None => return,
        };
        if failed {
            if now.saturating_sub(count.since) >= window {
                count.failures = 0;
                count.since = now;
            }
            count.failures += 1;
        }
    }

    /// Forgets the failures of `key` (attempts in flight stay counted).
    fn clear(&mut self, key: &K) {
        match self.counts.get_mut(key) {
            Some(count) if count.in_flight > 0 => count.failures = 0,
            Some(_) => {
                self.counts.remove(key);
            }
            None => {}
        }
    }
}

struct State {
    by_name_and_source: Table<(String, Option<IpAddr>)>,
    by_account: Table<String>,
    by_source: Table<Option<IpAddr>>,
}

/// The login throttle of one server, in memory (shared by the login form
/// and every password prompt).
pub struct MemoryThrottle {
    state: Arc<Mutex<State>>,
    /// Woken whenever an attempt settles.
    settled: Arc<Notify>,
    capacity: usize,
    /// The time windows are counted in.
    clock: Arc<dyn Clock>,
}

impl MemoryThrottle {
    /// `max_failures` per (name, IP) within `lockout`; `per_source` per
    /// address over all names an hour.
    pub fn new(max_failures: u32, lockout: Duration, per_source: u32) -> MemoryThrottle {
        MemoryThrottle::with_capacity(max_failures, lockout, per_source, DEFAULT_CAPACITY)
    }

    /// [`MemoryThrottle::new`] with at most `capacity` keys per table.
    pub fn with_capacity(
        max_failures: u32,
        lockout: Duration,
        per_source: u32,
        capacity: usize,
    ) -> MemoryThrottle {
        let state = State {
            by_name_and_source: Table::new(max_failures, lockout),
            by_account: Table::new(ACCOUNT_MAX_FAILURES, ACCOUNT_WINDOW),
            by_source: Table::new(per_source, SOURCE_WINDOW),
        };
        MemoryThrottle {
            state: Arc::new(Mutex::new(state)),
            settled: Arc::new(Notify::new()),
            capacity: capacity.max(1),
            clock: Arc::new(SystemClock),
        }
    }

    /// Counts windows by `clock` (the server's, which tests move on)
    /// instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> MemoryThrottle {
        self.clock = clock;
        self
    }

    /// Counts an attempt for `username` from `ip` as in flight before its
    /// password is checked, unless a limit is reached: then `Err(seconds
    /// to wait)`. When only attempts in flight stand in the way, waits for
    /// their verdicts, at most [`IN_FLIGHT_WAIT`]. Keep the [`Attempt`] and
    /// call [`Attempt::succeeded`] if the password was right; dropping it
    /// counts a failure.
    pub async fn begin(&self, username: &str, ip: Option<IpAddr>) -> Result<Attempt, u64> {
        let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
        loop {
            // Registered before the look, so a verdict in between wakes it.
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.try_begin(username, ip) {
                Ok(attempt) => return Ok(attempt),
                Err(Held::Locked(wait)) => return Err(wait),
                Err(Held::Busy) => {
                    if tokio::time::timeout_at(deadline, settled).await.is_err() {
                        log::warn!("login throttle: attempts in flight did not settle in time: refused");
                        return Err(1);
                    }
                }
            }
        }
    }

    /// One look at the counts: the attempt begun, or why not.
    fn try_begin(&self, username: &str, ip: Option<IpAddr>) -> Result<Attempt, Held> {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap();
        let source = source_of(ip);
        let name = name_of(username);
        let mut wait = state.by_source.locked(&source, now);
        let mut busy = state.by_source.busy(&source, now);
        if let Some(name) = &name {
            let pair = (name.clone(), ip);
            let by_pair = state.by_name_and_source.locked(&pair, now);
            let by_account = state.by_account.locked(name, now);
            wait = [wait, by_pair, by_account].into_iter().flatten().max();
            busy |= state.by_name_and_source.busy(&pair, now) || state.by_account.busy(name, now);
        }
        if let Some(wait) = wait {
            return Err(Held::Locked(wait));
        }
        if busy {
            return Err(Held::Busy);
        }
        let capacity = self.capacity;
        let full = |state: &mut State| {
            let mut room =
                state.by_source.counts.contains_key(&source) || state.by_source.room(capacity, now);
            if let Some(name) = &name {
                let pair = (name.clone(), ip);
                room &= state.by_name_and_source.counts.contains_key(&pair)
                    || state.by_name_and_source.room(capacity, now);
                room &= state.by_account.counts.contains_key(name) || state.by_account.room(capacity, now);
            }
            !room
        };
        if full(&mut state) {
            log::warn!("login throttle tables are full: attempt refused");
            return Err(Held::Locked(SOURCE_WINDOW.as_secs().min(60)));
        }
        state.by_source.start(source, now);
        if let Some(name) = &name {
            state.by_name_and_source.start((name.clone(), ip), now);
            state.by_account.start(name.clone(), now);
        }
        Ok(Attempt {
            clock: self.clock.clone(),
            state: self.state.clone(),
            settled: self.settled.clone(),
            name,
            ip,
            source,
            done: false,
        })
    }

    /// Keys tracked in all tables together (for tests and metrics).
    pub fn tracked(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.by_name_and_source.counts.len() + state.by_account.counts.len() + state.by_source.counts.len()
    }
}

/// An attempt in flight, begun by [`MemoryThrottle::begin`]; dropped
/// without a verdict, it counts as a failure.
#[must_use = "call succeeded() when the password was right"]
pub struct Attempt {
    state: Arc<Mutex<State>>,
    settled: Arc<Notify>,
    clock: Arc<dyn Clock>,
    name: Option<String>,
    ip: Option<IpAddr>,
    source: Option<IpAddr>,
    done: bool,
}

impl Attempt {
    fn settle(&mut self, verdict: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = self.clock.now();
        let failed = verdict == Outcome::Failed;
        {
            let mut state = self.state.lock().unwrap();
            state.by_source.settle(&self.source, failed, now);
            if let Some(name) = &self.name {
                let pair = (name.clone(), self.ip);
                state.by_account.settle(name, failed, now);
                state.by_name_and_source.settle(&pair, failed, now);
                if verdict == Outcome::Succeeded {
                    state.by_name_and_source.clear(&pair);
                }
            }
        }
        self.settled.notify_waiters();
    }

    /// The password was never checked (no hashing slot, the database
    /// down): the attempt does not count.
    pub fn refund(mut self) {
        self.settle(Outcome::NeverChecked);
    }

    /// The password was right: the attempt does not count, and the
    /// failures of that name from that IP are cleared.
    pub fn succeeded(mut self) {
        self.settle(Outcome::Succeeded);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.settle(Outcome::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::ACCOUNT_MAX_FAILURES;
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    /// One look, as a sequential caller sees it (nothing is in flight).
    fn begin(t: &MemoryThrottle, name: &str, ip: Option<IpAddr>) -> Result<Attempt, u64> {
        t.try_begin(name, ip).map_err(|look| match look {
            Held::Locked(wait) => wait,
            Held::Busy => panic!("busy with nothing in flight"),
        })
    }

    #[test]
    fn locks_after_max_failures_per_source_and_per_account() {
        let t = MemoryThrottle::new(3, Duration::from_secs(60), 1000);
        for _ in 0..3 {
            drop(begin(&t, "alice", ip("10.0.0.1")).unwrap());
        }
        let wait = begin(&t, "Alice", ip("10.0.0.1")).err().unwrap();
        assert!((59..=60).contains(&wait), "{wait}");
        assert!(begin(&t, "alice", ip("10.0.0.2")).is_ok());

        let t = MemoryThrottle::new(1000, Duration::from_secs(60), 1000);
        for i in 0..ACCOUNT_MAX_FAILURES {
            drop(begin(&t, "bob", Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]))).unwrap());
        }
        assert!(begin(&t, "bob", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn a_success_is_refunded_and_clears_that_pair() {
        let t = MemoryThrottle::new(3, Duration::from_secs(60), 1000);
        for _ in 0..2 {
            drop(begin(&t, "alice", ip("10.0.0.1")).unwrap());
        }
        begin(&t, "alice", ip("10.0.0.1")).unwrap().succeeded();
        for _ in 0..3 {
            drop(begin(&t, "alice", ip("10.0.0.1")).unwrap());
        }
        assert!(begin(&t, "alice", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn an_attempt_whose_password_was_never_checked_does_not_count() {
        let t = MemoryThrottle::new(2, Duration::from_secs(60), 1000);
        for _ in 0..5 {
            begin(&t, "alice", ip("10.0.0.1")).unwrap().refund();
        }
        drop(begin(&t, "alice", ip("10.0.0.1")).unwrap());
        assert!(begin(&t, "alice", ip("10.0.0.1")).is_ok(), "one failure counted, not six");
    }

    #[test]
    fn attempts_in_flight_hold_back_those_that_could_exceed_the_limit() {
        let t = MemoryThrottle::new(5, Duration::from_secs(60), 1000);
        // Twenty attempts begun at once, none settled yet.
        let begun: Vec<_> = (0..20).map(|_| t.try_begin("alice", ip("10.0.0.1"))).collect();
        assert_eq!(begun.iter().filter(|b| b.is_ok()).count(), 5);
        assert!(begun.iter().skip(5).all(|b| matches!(b, Err(Held::Busy))));
    }

    /// Twenty simultaneous attempts, each settled as `settle` says after
    /// a while: how many got a verdict, and the refusals' waits.
    async fn burst(t: Arc<MemoryThrottle>, right: bool) -> (usize, Vec<u64>) {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    let attempt = t.begin("alice", ip("10.0.0.1")).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if right {
                        attempt.succeeded();
                    }
                    Ok::<(), u64>(())
                })
            })
            .collect();
        let mut verdicts = 0;
        let mut refused = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => verdicts += 1,
                Err(wait) => refused.push(wait),
            }
        }
        (verdicts, refused)
    }

    #[rocket::async_test]
    async fn simultaneous_right_passwords_all_get_in() {
        let t = Arc::new(MemoryThrottle::new(5, Duration::from_secs(60), 1000));
        let (verdicts, refused) = burst(t.clone(), true).await;
        assert_eq!((verdicts, refused.len()), (20, 0));
        assert!(begin(&t, "alice", ip("10.0.0.1")).is_ok(), "nothing left counted");
    }

    #[rocket::async_test]
    async fn simultaneous_wrong_guesses_get_no_more_verdicts_than_the_limit() {
        let t = Arc::new(MemoryThrottle::new(5, Duration::from_secs(60), 1000));
        let (verdicts, refused) = burst(t.clone(), false).await;
        assert_eq!((verdicts, refused.len()), (5, 15));
        assert!(refused.iter().all(|&wait| wait > 1), "locked, not timed out: {refused:?}");
        assert!(begin(&t, "alice", ip("10.0.0.1")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_attempts_in_flight_is_bounded() {
        let t = MemoryThrottle::new(1, Duration::from_secs(60), 1000);
        let held = t.begin("alice", ip("10.0.0.1")).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(t.begin("alice", ip("10.0.0.1")).await.err(), Some(1));
        assert_eq!(started.elapsed(), IN_FLIGHT_WAIT, "the paused clock moved by the bound, no more");
        held.succeeded();
        assert!(t.begin("alice", ip("10.0.0.1")).await.is_ok());
    }

    #[test]
    fn one_address_is_limited_across_names_and_ipv6_counts_by_64() {
        let t = MemoryThrottle::new(5, Duration::from_secs(60), 100);
        for i in 0..100 {
            drop(begin(&t, &format!("user{i}"), ip("2001:db8:1:2::1")).unwrap());
        }
        assert!(begin(&t, "someone-else", ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(begin(&t, "someone-else", ip("2001:db8:1:3::1")).is_ok(), "another /64");
        assert!(begin(&t, "someone-else", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn names_no_account_can_have_are_never_stored() {
        let t = MemoryThrottle::new(5, Duration::from_secs(60), 1_000_000);
        for i in 0..3000 {
            let name = format!("{i}{}", "x".repeat(32_000));
            drop(begin(
                &t,
                &name,
                Some(IpAddr::from([10, (i / 65536) as u8, (i / 256 % 256) as u8, i as u8])),
            ));
        }
        // Only the 3,000 addresses: no name of 32 KB was kept.
        assert_eq!(t.tracked(), 3000);
        let state = t.state.lock().unwrap();
        assert!(state.by_account.counts.is_empty() && state.by_name_and_source.counts.is_empty());
    }

    #[test]
    fn a_full_table_never_drops_a_lockout() {
        let t = MemoryThrottle::with_capacity(3, Duration::from_secs(60), 1_000_000, 100);
        for _ in 0..3 {
            drop(begin(&t, "alice", ip("10.0.0.1")).unwrap());
        }
        assert!(begin(&t, "alice", ip("10.0.0.1")).is_err());
        // A flood of other names from other addresses fills the tables.
        let mut refused = 0;
        for i in 0..1000u32 {
            let b = begin(&t, &format!("n{i}"), Some(IpAddr::from([10, 1, (i / 256) as u8, i as u8])));
            refused += usize::from(b.is_err());
        }
        assert!(t.tracked() <= 300, "bounded: {}", t.tracked());
        assert_eq!(refused, 0, "keys below their limit make room");
        assert!(begin(&t, "alice", ip("10.0.0.1")).is_err(), "the lockout survived the flood");

        // When every key is at its limit, a new key is refused, not counted.
        let t = MemoryThrottle::with_capacity(1, Duration::from_secs(60), 1_000_000, 10);
        for i in 0..10u8 {
            drop(begin(&t, &format!("n{i}"), Some(IpAddr::from([10, 2, 0, i]))).unwrap());
        }
        assert!(begin(&t, "fresh", ip("10.3.0.1")).is_err());
        assert!(begin(&t, "n0", Some(IpAddr::from([10, 2, 0, 0]))).is_err(), "still locked");
    }
}
