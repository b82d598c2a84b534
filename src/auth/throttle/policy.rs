//! What every keeper of the login throttle counts by: the limits and
//! windows, the keys an attempt counts under, and why one is refused.

use std::net::IpAddr;
use std::time::Duration;

use crate::auth::users::MAX_USERNAME_CHARS;

/// Failures an account may have from all addresses within [`ACCOUNT_WINDOW`].
pub const ACCOUNT_MAX_FAILURES: u32 = 100;
/// Window of the per-account limit.
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(3600);
/// Window of the per-address limit over all names.
pub const SOURCE_WINDOW: Duration = Duration::from_secs(3600);
/// Most keys each table holds.
pub const DEFAULT_CAPACITY: usize = 50_000;
/// Longest an attempt waits for the verdicts of attempts in flight before
/// it is refused.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// The address an attempt counts under: IPv4 as is, IPv6 by its /64.
pub fn source_of(ip: Option<IpAddr>) -> Option<IpAddr> {
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
pub fn name_of(username: &str) -> Option<String> {
    let fits = !username.is_empty() && username.chars().count() <= MAX_USERNAME_CHARS;
    fits.then(|| username.to_lowercase())
}

/// Why [`super::Throttle::begin`] refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A limit is reached: the seconds to wait.
    Wait(u64),
    /// The shared counts could not be read: refused (failing closed), as
    /// the database is unavailable anyway.
    Unavailable,
}

/// Why one look at the counts began no attempt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// A limit is reached by settled failures: the seconds to wait.
    Locked(u64),
    /// A limit could be reached by the attempts in flight: wait for them.
    Busy,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The credential was wrong: counted.
    Failed,
    /// It was never checked: not counted.
    NeverChecked,
    /// It was right: not counted, and its pair's failures cleared.
    Succeeded,
}
