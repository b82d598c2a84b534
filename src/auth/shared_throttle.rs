//! The login throttle of [`super::throttle`], kept in PostgreSQL so that
//! every instance counts the same failures: five wrong passwords split
//! across two instances lock as five on one do.
//!
//! Same keys, limits and windows as in memory (per name and address, per
//! account, per address over all names; IPv6 by /64; names no account can
//! have never stored). **Burst-safe across instances:** an attempt upserts
//! the rows of its keys in one fixed order, which locks them until its
//! transaction ends, checks the limits, and counts itself before it
//! commits; simultaneous attempts on any instance queue on those row locks,
//! so no more of them get an answer than the limit allows. Times are the
//! database's clock. Rows whose window passed are deleted now and then.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use super::throttle::{name_of, source_of, Refused, ACCOUNT_MAX_FAILURES, ACCOUNT_WINDOW, SOURCE_WINDOW};

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
        match self.count(&keys).await {
            Ok(Ok(at)) => {
                if self.since_cleanup.fetch_add(1, Ordering::Relaxed).is_multiple_of(CLEANUP_EVERY) {
                    self.cleanup().await;
                }
                Ok(SharedAttempt { pool: self.pool.clone(), keys, at })
            }
            Ok(Err(wait)) => Err(Refused::Wait(wait)),
            Err(e) => {
                log::error!("login throttle: the database did not answer ({e}): attempt refused");
                Err(Refused::Unavailable)
            }
        }
    }

    /// Locks the keys' rows, checks them, counts the attempt: `Ok(Ok(now))`
    /// counted, `Ok(Err(wait))` refused.
    async fn count(&self, keys: &[(Counter, String)]) -> Result<Result<i64, u64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let now: i64 =
            sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM now())::BIGINT").fetch_one(&mut *tx).await?;
        let mut wait: Option<u64> = None;
        for (counter, key) in keys {
            // A passed window starts afresh; the row stays locked until commit.
            let (failures, since): (i32, i64) = sqlx::query_as(
                "INSERT INTO login_failures (scope, key, failures, since) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET \
                 failures = CASE WHEN login_failures.since + $4 <= $3 THEN 0 ELSE login_failures.failures END, \
                 since = CASE WHEN login_failures.since + $4 <= $3 THEN $3 ELSE login_failures.since END \
                 RETURNING failures, since",
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
        }
        if let Some(wait) = wait {
            tx.commit().await?;
            return Ok(Err(wait));
        }
        for (counter, key) in keys {
            sqlx::query("UPDATE login_failures SET failures = failures + 1 WHERE scope = $1 AND key = $2")
                .bind(counter.scope)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(now))
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

/// An attempt counted by [`SharedThrottle::begin`].
#[must_use = "call succeeded() when the password was right"]
pub struct SharedAttempt {
    pool: PgPool,
    keys: Vec<(Counter, String)>,
    /// When it was counted (the database's clock).
    at: i64,
}

impl SharedAttempt {
    /// Takes this attempt's failure back from `keys`, in the window it was
    /// counted in; deletes the rows of `clear`.
    async fn settle(self, clear: Option<&'static str>) {
        let mut result = Ok(());
        for (counter, key) in &self.keys {
            let statement = match clear == Some(counter.scope) {
                true => {
                    sqlx::query("DELETE FROM login_failures WHERE scope = $1 AND key = $2 AND since <= $3")
                }
                false => sqlx::query(
                    "UPDATE login_failures SET failures = GREATEST(failures - 1, 0) \
                     WHERE scope = $1 AND key = $2 AND since <= $3",
                ),
            };
            result = result.and(
                statement.bind(counter.scope).bind(key).bind(self.at).execute(&self.pool).await.map(drop),
            );
        }
        if let Err(e) = result {
            log::warn!("login throttle: an attempt was not refunded: {e}");
        }
    }

    /// The password was never checked: the attempt does not count.
    pub async fn refund(self) {
        self.settle(None).await
    }

    /// The password was right: refunded, and that name's failures from
    /// that address cleared.
    pub async fn succeeded(self) {
        let pair = self.keys.iter().map(|(c, _)| c.scope).find(|s| s.ends_with(":pair"));
        self.settle(pair).await
    }
}
