//! Login throttling: the rules, and their keeping in memory for one server
//! ([`MemoryThrottle`]); [`super::shared_throttle`] keeps the same counts in
//! PostgreSQL for several. [`Throttle`] is either.
//!
//! Three counters of recent failures, each over a window of its own:
//! * per (user name, client IP): `login_max_failures` within `login_lockout`;
//! * per account, from all IPs together: [`ACCOUNT_MAX_FAILURES`] an hour
//!   (ASVS 2.2.1);
//! * per client address over all names (password spraying):
//!   `login_max_failures_per_ip` an hour; IPv6 addresses count by /64, the
//!   block one subscriber usually holds.
//!
//! While any of them is at its limit, every attempt it covers is refused,
//! the right password included, so the refusal says nothing about it.
//! Unknown user names are counted like known ones.
//!
//! **Burst-safe.** [`MemoryThrottle::begin`] counts the attempt as a failure
//! before the password is checked, under the same lock that checks the
//! limits, so simultaneous attempts cannot all slip past a check that has
//! not seen the others yet; a successful attempt is refunded
//! ([`Attempt::succeeded`]).
//!
//! **Bounded.** A name that cannot be an account (empty, or longer than any
//! valid user name) is never stored: only its
//! source address is counted. Each table holds at most `capacity` keys
//! (default [`DEFAULT_CAPACITY`]). When one is full, keys whose window has
//! passed are dropped, then keys that are below their limit (they lose their
//! partial count); a key at its limit is never dropped, so flooding the table
//! cannot lift a lockout. If the table still has no room, the attempt is
//! refused (429) until a window passes: under such a flood, failing closed
//! beats counting nothing.
//!
//! The trade-off: anyone can lock an account for an hour by failing 100 times
//! from many addresses. In memory, counters reset on restart.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::users::MAX_USERNAME_CHARS;

pub const ACCOUNT_MAX_FAILURES: u32 = 100;
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(3600);
/// Window of the per-address limit over all names.
pub const SOURCE_WINDOW: Duration = Duration::from_secs(3600);
/// Most keys each table holds.
pub const DEFAULT_CAPACITY: usize = 50_000;

/// Failures of one key within its current window.
#[derive(Clone, Copy)]
struct Count {
    failures: u32,
    /// When the first failure of this window was counted.
    since: Instant,
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

    /// The live count of `key` at `now` (a passed window counts nothing).
    fn live(&self, key: &K, now: Instant) -> Option<Count> {
        self.counts.get(key).copied().filter(|c| now.duration_since(c.since) < self.window)
    }

    fn locked(&self, key: &K, now: Instant) -> Option<u64> {
        let count = self.live(key, now)?;
        (count.failures >= self.limit).then(|| {
            let left = self.window.saturating_sub(now.duration_since(count.since));
            (left.as_secs_f64().ceil() as u64).max(1)
        })
    }

    /// Whether a new key fits, making room if it must (see the module docs).
    fn room(&mut self, capacity: usize, now: Instant) -> bool {
        if self.counts.len() < capacity {
            return true;
        }
        let (window, limit) = (self.window, self.limit);
        self.counts.retain(|_, c| now.duration_since(c.since) < window);
        if self.counts.len() >= capacity {
            self.counts.retain(|_, c| c.failures >= limit);
        }
        self.counts.len() < capacity
    }

    fn add(&mut self, key: K, now: Instant) {
        let window = self.window;
        let count = self.counts.entry(key).or_insert(Count { failures: 0, since: now });
        if now.duration_since(count.since) >= window {
            *count = Count { failures: 0, since: now };
        }
        count.failures += 1;
    }

    fn refund(&mut self, key: &K, since: Instant) {
        if let Some(count) = self.counts.get_mut(key) {
            // Only a count of the window the attempt was counted in.
            if count.since <= since {
                count.failures = count.failures.saturating_sub(1);
            }
        }
    }
}

/// The address an attempt counts under: IPv4 as is, IPv6 by its /64.
pub(super) fn source_of(ip: Option<IpAddr>) -> Option<IpAddr> {
    match ip? {
        IpAddr::V4(v4) => Some(IpAddr::V4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                Some(IpAddr::V6(octets.into()))
            }
        },
    }
}

/// The name an attempt counts under, if it could be an account's (no
/// longer than the longest user name: at most 256 bytes).
pub(super) fn name_of(username: &str) -> Option<String> {
    let fits = !username.is_empty() && username.chars().count() <= MAX_USERNAME_CHARS;
    fits.then(|| username.to_lowercase())
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
    capacity: usize,
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
        MemoryThrottle { state: Arc::new(Mutex::new(state)), capacity: capacity.max(1) }
    }

    /// Counts an attempt for `username` from `ip` as failed before its
    /// password is checked, unless a limit is reached: then `Err(seconds to
    /// wait)`. Keep the [`Attempt`] and call [`Attempt::succeeded`] if the
    /// password was right; dropping it leaves the failure counted.
    pub fn begin(&self, username: &str, ip: Option<IpAddr>) -> Result<Attempt, u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let source = source_of(ip);
        let name = name_of(username);
        let mut wait = state.by_source.locked(&source, now);
        if let Some(name) = &name {
            let by_pair = state.by_name_and_source.locked(&(name.clone(), ip), now);
            let by_account = state.by_account.locked(name, now);
            wait = [wait, by_pair, by_account].into_iter().flatten().max();
        }
        if let Some(wait) = wait {
            return Err(wait);
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
            return Err(SOURCE_WINDOW.as_secs().min(60));
        }
        state.by_source.add(source, now);
        if let Some(name) = &name {
            state.by_name_and_source.add((name.clone(), ip), now);
            state.by_account.add(name.clone(), now);
        }
        Ok(Attempt { state: self.state.clone(), name, ip, source, at: now })
    }

    /// Keys tracked in all tables together (for tests and metrics).
    pub fn tracked(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.by_name_and_source.counts.len() + state.by_account.counts.len() + state.by_source.counts.len()
    }
}

/// An attempt counted as failed by [`MemoryThrottle::begin`].
#[must_use = "call succeeded() when the password was right"]
pub struct Attempt {
    state: Arc<Mutex<State>>,
    name: Option<String>,
    ip: Option<IpAddr>,
    source: Option<IpAddr>,
    at: Instant,
}

impl Attempt {
    /// The password was never checked (no hashing slot, the database
    /// down): the attempt does not count.
    pub fn refund(self) {
        let mut state = self.state.lock().unwrap();
        state.by_source.refund(&self.source, self.at);
        if let Some(name) = &self.name {
            state.by_account.refund(name, self.at);
            state.by_name_and_source.refund(&(name.clone(), self.ip), self.at);
        }
    }

    /// The password was right: the attempt is refunded, and the failures of
    /// that name from that IP are cleared.
    pub fn succeeded(self) {
        let mut state = self.state.lock().unwrap();
        state.by_source.refund(&self.source, self.at);
        if let Some(name) = &self.name {
            state.by_account.refund(name, self.at);
            state.by_name_and_source.counts.remove(&(name.clone(), self.ip));
        }
    }
}

/// Why [`Throttle::begin`] refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A limit is reached: the seconds to wait.
    Wait(u64),
    /// The shared counts could not be read: refused (failing closed), as
    /// the database is unavailable anyway.
    Unavailable,
}

/// The login throttle a server uses: its own counts in memory (SQLite, one
/// server), or counts every instance shares (PostgreSQL).
pub enum Throttle {
    Memory(MemoryThrottle),
    Shared(super::shared_throttle::SharedThrottle),
}

impl Throttle {
    /// Counts an attempt as failed before its password (or code) is
    /// checked, unless a limit is reached or the counts cannot be read.
    /// Call [`LoginAttempt::succeeded`] if it was right, or
    /// [`LoginAttempt::refund`] if it was never checked; dropping it leaves
    /// the failure counted.
    pub async fn begin(&self, username: &str, ip: Option<IpAddr>) -> Result<LoginAttempt, Refused> {
        match self {
            Throttle::Memory(memory) => {
                memory.begin(username, ip).map(LoginAttempt::Memory).map_err(Refused::Wait)
            }
            Throttle::Shared(shared) => shared.begin(username, ip).await.map(LoginAttempt::Shared),
        }
    }
}

/// An attempt counted as failed by [`Throttle::begin`].
#[must_use = "call succeeded() when the password was right"]
pub enum LoginAttempt {
    Memory(Attempt),
    Shared(super::shared_throttle::SharedAttempt),
}

impl LoginAttempt {
    /// The password was never checked: the attempt does not count.
    pub async fn refund(self) {
        match self {
            LoginAttempt::Memory(attempt) => attempt.refund(),
            LoginAttempt::Shared(attempt) => attempt.refund().await,
        }
    }

    /// The password was right: refunded, and that name's failures from
    /// that address cleared.
    pub async fn succeeded(self) {
        match self {
            LoginAttempt::Memory(attempt) => attempt.succeeded(),
            LoginAttempt::Shared(attempt) => attempt.succeeded().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn locks_after_max_failures_per_source_and_per_account() {
        let t = MemoryThrottle::new(3, Duration::from_secs(60), 1000);
        for _ in 0..3 {
            drop(t.begin("alice", ip("10.0.0.1")).unwrap());
        }
        let wait = t.begin("Alice", ip("10.0.0.1")).err().unwrap();
        assert!((59..=60).contains(&wait), "{wait}");
        assert!(t.begin("alice", ip("10.0.0.2")).is_ok());

        let t = MemoryThrottle::new(1000, Duration::from_secs(60), 1000);
        for i in 0..ACCOUNT_MAX_FAILURES {
            drop(t.begin("bob", Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]))).unwrap());
        }
        assert!(t.begin("bob", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn a_success_is_refunded_and_clears_that_pair() {
        let t = MemoryThrottle::new(3, Duration::from_secs(60), 1000);
        for _ in 0..2 {
            drop(t.begin("alice", ip("10.0.0.1")).unwrap());
        }
        t.begin("alice", ip("10.0.0.1")).unwrap().succeeded();
        for _ in 0..3 {
            drop(t.begin("alice", ip("10.0.0.1")).unwrap());
        }
        assert!(t.begin("alice", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn an_attempt_whose_password_was_never_checked_does_not_count() {
        let t = MemoryThrottle::new(2, Duration::from_secs(60), 1000);
        for _ in 0..5 {
            t.begin("alice", ip("10.0.0.1")).unwrap().refund();
        }
        drop(t.begin("alice", ip("10.0.0.1")).unwrap());
        assert!(t.begin("alice", ip("10.0.0.1")).is_ok(), "one failure counted, not six");
    }

    #[test]
    fn attempts_in_flight_count_before_their_outcome() {
        let t = MemoryThrottle::new(5, Duration::from_secs(60), 1000);
        // Twenty attempts begun at once, none finished yet.
        let begun: Vec<_> = (0..20).map(|_| t.begin("alice", ip("10.0.0.1"))).collect();
        assert_eq!(begun.iter().filter(|b| b.is_ok()).count(), 5);
    }

    #[test]
    fn one_address_is_limited_across_names_and_ipv6_counts_by_64() {
        let t = MemoryThrottle::new(5, Duration::from_secs(60), 100);
        for i in 0..100 {
            drop(t.begin(&format!("user{i}"), ip("2001:db8:1:2::1")).unwrap());
        }
        assert!(t.begin("someone-else", ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(t.begin("someone-else", ip("2001:db8:1:3::1")).is_ok(), "another /64");
        assert!(t.begin("someone-else", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn names_no_account_can_have_are_never_stored() {
        let t = MemoryThrottle::new(5, Duration::from_secs(60), 1_000_000);
        for i in 0..3000 {
            let name = format!("{i}{}", "x".repeat(32_000));
            drop(t.begin(&name, Some(IpAddr::from([10, (i / 65536) as u8, (i / 256 % 256) as u8, i as u8]))));
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
            drop(t.begin("alice", ip("10.0.0.1")).unwrap());
        }
        assert!(t.begin("alice", ip("10.0.0.1")).is_err());
        // A flood of other names from other addresses fills the tables.
        let mut refused = 0;
        for i in 0..1000u32 {
            let b = t.begin(&format!("n{i}"), Some(IpAddr::from([10, 1, (i / 256) as u8, i as u8])));
            refused += usize::from(b.is_err());
        }
        assert!(t.tracked() <= 300, "bounded: {}", t.tracked());
        assert_eq!(refused, 0, "keys below their limit make room");
        assert!(t.begin("alice", ip("10.0.0.1")).is_err(), "the lockout survived the flood");

        // When every key is at its limit, a new key is refused, not counted.
        let t = MemoryThrottle::with_capacity(1, Duration::from_secs(60), 1_000_000, 10);
        for i in 0..10u8 {
            drop(t.begin(&format!("n{i}"), Some(IpAddr::from([10, 2, 0, i]))).unwrap());
        }
        assert!(t.begin("fresh", ip("10.3.0.1")).is_err());
        assert!(t.begin("n0", Some(IpAddr::from([10, 2, 0, 0]))).is_err(), "still locked");
    }
}
