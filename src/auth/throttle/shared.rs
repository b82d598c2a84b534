//! The login throttle of [`super`], kept in PostgreSQL so that
//! every instance counts the same failures: five wrong passwords split
//! across two instances lock as five on one do.
//!
//! Same keys, limits and windows as in memory (per name and address, per
//! account, per address over all names; IPv6 by /64; names no account can
//! have never stored). **Burst-safe across instances:** an attempt upserts
//! the rows of its keys in one fixed order, which locks them until its
//! transaction ends, checks the limits, and counts itself as in flight
//! before it commits; simultaneous attempts on any instance queue on those
//! row locks, so no more of them get an answer than the limit allows. Its
//! verdict settles it (a failure is counted then). One that could exceed a
//! limit only because of attempts in flight looks again every
//! 50 ms until they settle, at most [`IN_FLIGHT_WAIT`]. Times are the
//! database's clock. Rows whose window passed are deleted now and then.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use super::policy::{
    name_of, source_of, Held, Outcome, Refused, ACCOUNT_MAX_FAILURES, ACCOUNT_WINDOW, IN_FLIGHT_WAIT,
    SOURCE_WINDOW,
};

/// How often an attempt held back by attempts in flight looks again.
const POLL: Duration = Duration::from_millis(50);

/// What is being guessed: each kind has counters of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Passwords (the login form and every password prompt).
    Login,
    /// Second-factor codes.
    Code,
}

/// One counter: its scope in the table, limit and window (seconds).
#[derive(Clone, Copy)]
struct Counter {
    scope: &'static str,
    limit: u32,
    window: i64,
}

/// The shared throttle of one kind of attempt (`login`, `code`).
pub struct SharedThrottle {
    pool: PgPool,
    pair: Counter,
    account: Counter,
    source: Counter,
    /// Attempts since the last clean-up of passed windows.
    since_cleanup: AtomicU32,
}

/// Attempts between two deletes of rows whose window passed.
const CLEANUP_EVERY: u32 = 256;

impl SharedThrottle {
    /// Counters of `kind` of attempt: `max_failures` per (name,
    /// address) within `lockout`, [`ACCOUNT_MAX_FAILURES`] per account and
    /// `per_source` per address an hour.
    pub fn new(
        pool: PgPool,
        kind: Kind,
        max_failures: u32,
        lockout: Duration,
        per_source: u32,
    ) -> SharedThrottle {
        let [pair, account, source] = match kind {
            Kind::Login => ["login:pair", "login:account", "login:source"],
            Kind::Code => ["code:pair", "code:account", "code:source"],
        };
        SharedThrottle {
            pool,
            pair: Counter { scope: pair, limit: max_failures, window: lockout.as_secs() as i64 },
            account: Counter {
                scope: account,
                limit: ACCOUNT_MAX_FAILURES,
                window: ACCOUNT_WINDOW.as_secs() as i64,
            },
            source: Counter { scope: source, limit: per_source, window: SOURCE_WINDOW.as_secs() as i64 },
            since_cleanup: AtomicU32::new(0),
        }
    }

    /// The keys an attempt counts under, in the order they are locked.
    fn keys(&self, username: &str, ip: Option<IpAddr>) -> Vec<(Counter, String)> {
        let source = source_of(ip).map(|s| s.to_string()).unwrap_or_default();
        let mut keys = vec![(self.source, source)];
        if let Some(name) = name_of(username) {
            let address = ip.map(|ip| ip.to_string()).unwrap_or_default();
            keys.push((self.account, name.clone()));
            keys.push((self.pair, format!("{name}\n{address}")));
        }
        keys
    }

    /// See [`super::Throttle::begin`]. The database unreachable: the
    /// attempt is refused (failing closed), and logged.
    pub async fn begin(&self, username: &str, ip: Option<IpAddr>) -> Result<SharedAttempt, Refused> {
        let keys = self.keys(username, ip);
        let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
        loop {
            match self.count(&keys).await {
                Ok(Ok(())) => {
                    if self.since_cleanup.fetch_add(1, Ordering::Relaxed).is_multiple_of(CLEANUP_EVERY) {
                        self.cleanup().await;
                    }
                    return Ok(SharedAttempt { pool: self.pool.clone(), keys, done: false });
                }
                Ok(Err(Held::Locked(wait))) => return Err(Refused::Wait(wait)),
                Ok(Err(Held::Busy)) if tokio::time::Instant::now() + POLL < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Ok(Err(Held::Busy)) => {
                    log::warn!("login throttle: attempts in flight did not settle in time: refused");
                    return Err(Refused::Wait(1));
                }
                Err(e) => {
                    log::error!("login throttle: the database did not answer ({e}): attempt refused");
                    return Err(Refused::Unavailable);
                }
            }
        }
    }

    /// Locks the keys' rows, checks them, and counts the attempt as in
    /// flight unless a limit stands in the way.
    async fn count(&self, keys: &[(Counter, String)]) -> Result<Result<(), Held>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let now: i64 =
            sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM now())::BIGINT").fetch_one(&mut *tx).await?;
        let mut wait: Option<u64> = None;
        let mut busy = false;
        for (counter, key) in keys {
            // A passed window starts afresh; the row stays locked until commit.
            let (failures, in_flight, since): (i32, i32, i64) = sqlx::query_as(
                "INSERT INTO login_failures (scope, key, failures, since) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET \
                 failures = CASE WHEN login_failures.since + $4 <= $3 THEN 0 ELSE login_failures.failures END, \
                 in_flight = CASE WHEN login_failures.since + $4 <= $3 THEN 0 ELSE login_failures.in_flight END, \
                 since = CASE WHEN login_failures.since + $4 <= $3 THEN $3 ELSE login_failures.since END \
                 RETURNING failures, in_flight, since",
            )
            .bind(counter.scope)
            .bind(key)
            .bind(now)
            .bind(counter.window)
            .fetch_one(&mut *tx)
            .await?;
            if i64::from(failures) >= i64::from(counter.limit) {
                let left = (since + counter.window - now).max(1) as u64;
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
            busy |= i64::from(failures) + i64::from(in_flight) >= i64::from(counter.limit);
        }
        if let Some(wait) = wait {
            tx.commit().await?;
            return Ok(Err(Held::Locked(wait)));
        }
        if busy {
            tx.commit().await?;
            return Ok(Err(Held::Busy));
        }
        for (counter, key) in keys {
            sqlx::query("UPDATE login_failures SET in_flight = in_flight + 1 WHERE scope = $1 AND key = $2")
                .bind(counter.scope)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn cleanup(&self) {
        let longest =
            [self.pair.window, self.account.window, self.source.window].into_iter().max().unwrap_or(3600);
        let done =
            sqlx::query("DELETE FROM login_failures WHERE since < EXTRACT(EPOCH FROM now())::BIGINT - $1")
                .bind(longest)
                .execute(&self.pool)
                .await;
        if let Err(e) = done {
            log::warn!("login throttle: old counts not deleted: {e}");
        }
    }
}

/// An attempt in flight, begun by [`SharedThrottle::begin`]; dropped
/// without a verdict, it counts as a failure (written by a task of its
/// own, as a drop cannot wait).
#[must_use = "call succeeded() when the password was right"]
pub struct SharedAttempt {
    pool: PgPool,
    keys: Vec<(Counter, String)>,
    done: bool,
}

impl SharedAttempt {
    /// Takes this attempt out of flight on every key, counting a failure
    /// if it failed; a success also clears the failures of its pair.
    async fn settle(pool: PgPool, keys: Vec<(Counter, String)>, verdict: Outcome) {
        let mut result = Ok(());
        for (counter, key) in &keys {
            let statement = match verdict {
                Outcome::Failed => {
                    "UPDATE login_failures SET in_flight = GREATEST(in_flight - 1, 0), failures = failures + 1 \
                     WHERE scope = $1 AND key = $2"
                }
                Outcome::Succeeded if counter.scope.ends_with(":pair") => {
                    "UPDATE login_failures SET in_flight = GREATEST(in_flight - 1, 0), failures = 0 \
                     WHERE scope = $1 AND key = $2"
                }
                _ => {
                    "UPDATE login_failures SET in_flight = GREATEST(in_flight - 1, 0) \
                     WHERE scope = $1 AND key = $2"
                }
            };
            result = result
                .and(sqlx::query(statement).bind(counter.scope).bind(key).execute(&pool).await.map(drop));
        }
        if let Err(e) = result {
            log::warn!("login throttle: an attempt was not settled: {e}");
        }
    }

    async fn finish(mut self, verdict: Outcome) {
        self.done = true;
        let keys = std::mem::take(&mut self.keys);
        SharedAttempt::settle(self.pool.clone(), keys, verdict).await;
    }

    /// The password was wrong: counted as a failure.
    pub async fn failed(self) {
        self.finish(Outcome::Failed).await;
    }

    /// The password was never checked: the attempt does not count.
    pub async fn refund(self) {
        self.finish(Outcome::NeverChecked).await;
    }

    /// The password was right: it does not count, and that name's failures
    /// from that address are cleared.
    pub async fn succeeded(self) {
        self.finish(Outcome::Succeeded).await;
    }
}

impl Drop for SharedAttempt {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (pool, keys) = (self.pool.clone(), std::mem::take(&mut self.keys));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(SharedAttempt::settle(pool, keys, Outcome::Failed));
            }
            // No runtime to write it on: it stays in flight until its
            // window passes, holding back (never letting through) others.
            Err(_) => log::warn!("login throttle: a failed attempt could not be counted"),
        }
    }
}
