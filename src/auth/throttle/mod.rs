//! Login throttling: the rules, and their keeping in memory for one server
//! ([`MemoryThrottle`]); [`SharedThrottle`] keeps the same counts in
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
//! **Burst-safe, and fair to right passwords.** [`MemoryThrottle::begin`]
//! counts an attempt as in flight before its password is checked, under
//! the same lock that checks the limits, and its verdict settles it: a
//! failure is counted, a success is not (and clears that name's failures
//! from that address). An attempt that would exceed a limit only because of
//! attempts still in flight waits for their verdicts (at most
//! [`IN_FLIGHT_WAIT`]) instead of being refused at once: twenty
//! simultaneous wrong guesses still get at most `login_max_failures`
//! verdicts, and twenty simultaneous right passwords all get in.
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

mod memory;
pub mod policy;
mod shared;

use std::net::IpAddr;

pub use memory::{Attempt, MemoryThrottle};
pub use policy::{
    Refused, ACCOUNT_MAX_FAILURES, ACCOUNT_WINDOW, DEFAULT_CAPACITY, IN_FLIGHT_WAIT, SOURCE_WINDOW,
};
pub use shared::{Kind, SharedAttempt, SharedThrottle};

/// The login throttle a server uses: its own counts in memory (SQLite, one
/// server), or counts every instance shares (PostgreSQL).
pub enum Throttle {
    /// One server's counts, in memory (SQLite).
    Memory(MemoryThrottle),
    /// Counts every instance shares (PostgreSQL).
    Shared(shared::SharedThrottle),
}

impl Throttle {
    /// Counts an attempt as in flight before its password (or code) is
    /// checked, unless a limit is reached or the counts cannot be read;
    /// waits a little for the verdicts of attempts in flight when only they
    /// stand in the way. Call [`LoginAttempt::succeeded`] if it was right,
    /// or [`LoginAttempt::refund`] if it was never checked; dropping it
    /// counts a failure.
    pub async fn begin(&self, username: &str, ip: Option<IpAddr>) -> Result<LoginAttempt, Refused> {
        match self {
            Throttle::Memory(memory) => {
                memory.begin(username, ip).await.map(LoginAttempt::Memory).map_err(Refused::Wait)
            }
            Throttle::Shared(shared) => shared.begin(username, ip).await.map(LoginAttempt::Shared),
        }
    }
}

/// An attempt counted as failed by [`Throttle::begin`].
#[must_use = "call succeeded() when the password was right"]
pub enum LoginAttempt {
    /// An attempt counted in memory.
    Memory(Attempt),
    /// An attempt counted in the shared table.
    Shared(shared::SharedAttempt),
}

impl LoginAttempt {
    /// The password (or code) was wrong: counted as a failure. Dropping
    /// the attempt does the same, later for the shared throttle.
    pub async fn failed(self) {
        match self {
            LoginAttempt::Memory(attempt) => drop(attempt),
            LoginAttempt::Shared(attempt) => attempt.failed().await,
        }
    }

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
