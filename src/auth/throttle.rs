//! Login throttling, in memory.
//!
//! Two counters of recent failures: per (user name, client IP), limited to
//! `login_max_failures` within `login_lockout` seconds, and per account from
//! all IPs together, limited to [`ACCOUNT_MAX_FAILURES`] an hour (ASVS 2.2.1).
//! While either is over its limit every attempt for that name is refused,
//! the right password included, so the refusal says nothing about it. Unknown
//! user names are counted like known ones.
//!
//! The trade-off: anyone can lock an account for an hour by failing 100 times
//! from many addresses. The per-(name, IP) lockout alone only slows the
//! attacker's own address. Counters live in memory and reset on restart.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const ACCOUNT_MAX_FAILURES: usize = 100;
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(3600);
/// Past this many tracked keys, stale ones are swept on the next failure.
const SWEEP_AT: usize = 10_000;

pub struct Throttle {
    max_failures: usize,
    lockout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_source: HashMap<(String, Option<IpAddr>), VecDeque<Instant>>,
    by_account: HashMap<String, VecDeque<Instant>>,
}

fn prune(times: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
        times.pop_front();
    }
}

/// Seconds until the oldest counted failure leaves its window, at least 1.
fn wait(times: &VecDeque<Instant>, window: Duration, now: Instant) -> u64 {
    let oldest = times.front().copied().unwrap_or(now);
    let left = window.saturating_sub(now.duration_since(oldest));
    (left.as_secs_f64().ceil() as u64).max(1)
}

impl Throttle {
    pub fn new(max_failures: u32, lockout: Duration) -> Throttle {
        Throttle { max_failures: max_failures as usize, lockout, state: Mutex::default() }
    }

    /// `Some(seconds)` to wait if attempts for `username` from `ip` are locked.
    pub fn check(&self, username: &str, ip: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let name = username.to_lowercase();
        if let Some(times) = state.by_source.get_mut(&(name.clone(), ip)) {
            prune(times, self.lockout, now);
            if times.len() >= self.max_failures {
                return Some(wait(times, self.lockout, now));
            }
        }
        if let Some(times) = state.by_account.get_mut(&name) {
            prune(times, ACCOUNT_WINDOW, now);
            if times.len() >= ACCOUNT_MAX_FAILURES {
                return Some(wait(times, ACCOUNT_WINDOW, now));
            }
        }
        None
    }

    pub fn failed(&self, username: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        if state.by_source.len() + state.by_account.len() > SWEEP_AT {
            let (lockout, account) = (self.lockout, ACCOUNT_WINDOW);
            state.by_source.retain(|_, t| {
                prune(t, lockout, now);
                !t.is_empty()
            });
            state.by_account.retain(|_, t| {
                prune(t, account, now);
                !t.is_empty()
            });
        }
        let name = username.to_lowercase();
        state.by_source.entry((name.clone(), ip)).or_default().push_back(now);
        state.by_account.entry(name).or_default().push_back(now);
    }

    /// A successful login clears the failures of that name from that IP.
    pub fn succeeded(&self, username: &str, ip: Option<IpAddr>) {
        self.state.lock().unwrap().by_source.remove(&(username.to_lowercase(), ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_per_source_and_per_account() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let ip: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(t.check("alice", ip), None);
            t.failed("alice", ip);
        }
        let wait = t.check("Alice", ip).unwrap();
        assert!((59..=60).contains(&wait), "{wait}");
        assert_eq!(t.check("alice", Some("10.0.0.2".parse().unwrap())), None);

        let t = Throttle::new(1000, Duration::from_secs(60));
        for i in 0..ACCOUNT_MAX_FAILURES {
            t.failed("bob", Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8])));
        }
        assert!(t.check("bob", Some("192.0.2.1".parse().unwrap())).is_some());
    }
}
