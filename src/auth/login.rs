//! The login steps, one handler per credential kind, for every way in:
//! the login form, the password asked again before a sensitive action, the
//! code after the password, the first code of a factor being set up (and
//! next: passkeys, the provider's `prompt=login`).
//!
//! Each step runs the same order: the throttle counts the attempt as in
//! flight, the credential is checked, and the verdict settles the attempt
//! (a failure counted, a success cleared, an attempt never checked
//! refunded). Knows nothing of HTTP, cookies or sessions: the web layer
//! turns a [`Verdict`] into a page and starts the session.

use std::net::IpAddr;

use super::factors::{self, FactorError, Sealer, Verified};
use super::password::{needs_rehash, HashError, Hasher, MAX_PASSWORD_BYTES};
use super::state::{Method, Stage};
use super::throttle::{Refused, Throttle};
use super::users::{self, User, UserError, MAX_USERNAME_CHARS};
use crate::storage::Storage;

/// Why a step could not be decided: nothing below answered.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Hashing failed, or every hashing slot is taken.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The accounts could not be read.
    #[error(transparent)]
    Accounts(#[from] UserError),
    /// The second factor could not be checked.
    #[error(transparent)]
    Factor(#[from] FactorError),
    /// The throttle's shared counts could not be read (refused, failing
    /// closed).
    #[error("the login throttle's counts cannot be read")]
    Throttle,
}

impl From<sqlx::Error> for LoginError {
    fn from(e: sqlx::Error) -> LoginError {
        LoginError::Accounts(UserError::Db(e))
    }
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    /// The credential is right.
    Right(T),
    /// It is not (or the account does not exist: the same answer).
    Wrong,
    /// A limit is reached: the seconds to wait. The credential was not
    /// checked.
    Throttled(u64),
}

/// A password proved at the login form.
#[derive(Debug)]
pub struct Proved {
    /// The account, as it was read.
    pub user: User,
    /// The hash the account holds for this password now (a stronger one
    /// may have replaced the hash that was read).
    pub hash: String,
    /// Where the login stands: complete, or the second factor next.
    pub stage: Stage,
}

/// The login core: accounts, hashing, the two throttles, the key that
/// seals second-factor secrets, and whether a second factor is required.
pub struct Authenticator {
    storage: Storage,
    hasher: Hasher,
    passwords: Throttle,
    codes: Throttle,
    sealer: Sealer,
    required: bool,
}

impl Authenticator {
    /// The core over `storage`; `passwords` and `codes` throttle wrong
    /// passwords and wrong codes; `required` is `require_2fa`.
    pub fn new(
        storage: Storage,
        hasher: Hasher,
        passwords: Throttle,
        codes: Throttle,
        sealer: Sealer,
        required: bool,
    ) -> Authenticator {
        Authenticator { storage, hasher, passwords, codes, sealer, required }
    }

    /// The hasher (for new passwords and recovery codes).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The password throttle (its counts are shown as metrics and tested).
    pub fn password_throttle(&self) -> &Throttle {
        &self.passwords
    }

    /// The key second-factor secrets are sealed with.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Whether every account must have a second factor.
    pub fn second_factor_required(&self) -> bool {
        self.required
    }

    /// The login form's step: `username` and `password` from `ip`. An
    /// unknown name, or one no account can have, is checked against the
    /// dummy hash, so the answer takes the usual time; so is an over-long
    /// password, which cannot match. A right password stored with weaker
    /// settings than new ones get is re-hashed.
    pub async fn password(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<Verdict<Proved>, LoginError> {
        let fits = password.len() <= MAX_PASSWORD_BYTES;
        let candidate = if fits { password.to_owned() } else { String::new() };
        let check = async {
            let user = match username.chars().count() <= MAX_USERNAME_CHARS {
                true => users::by_name(&self.storage, username).await?,
                false => None,
            };
            let hash = user.as_ref().filter(|_| fits).map(|u| u.password_hash.clone());
            let right = self.hasher.verify(candidate.clone(), hash).await?;
            Ok::<_, LoginError>(user.filter(|_| right))
        };
        let user = match attempt(&self.passwords, username, ip, check).await? {
            Verdict::Right(user) => user,
            Verdict::Wrong => return Ok(Verdict::Wrong),
            Verdict::Throttled(wait) => return Ok(Verdict::Throttled(wait)),
        };
        let hash = self.stronger_hash(&user, candidate).await;
        let stage = Stage::after_password(user.two_factor, self.required);
        Ok(Verdict::Right(Proved { user, hash, stage }))
    }

    /// The race re-check, once the login's session is committed: the
    /// password was checked against the account as it was read, tens of
    /// milliseconds before. A password change, a removal or a second factor
    /// turned on, committed since, must win: it ended every session that
    /// existed when it committed, and one committed after the new
    /// session's insert is seen here. `false`: end the new session.
    pub async fn still_current(&self, user: &User, hash: &str) -> Result<bool, LoginError> {
        let now = users::has_password(&self.storage, user.id, hash).await?;
        Ok(now == Some(user.two_factor))
    }

    /// Whether the account with `user`'s id is gone, or holds another
    /// password than `hash` (a session insert that failed for it is a
    /// wrong login, not an outage).
    pub async fn gone(&self, user: &User, hash: &str) -> Result<bool, LoginError> {
        Ok(users::has_password(&self.storage, user.id, hash).await?.is_none())
    }

    /// The signed-in account's password asked for again before a sensitive
    /// action: through the login throttle, so guessing it here is no
    /// faster than at the login form.
    pub async fn confirm_password(
        &self,
        user: &User,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<Verdict<()>, LoginError> {
        let candidate = if password.len() > MAX_PASSWORD_BYTES { String::new() } else { password.to_owned() };
        let check = async {
            let right = self.hasher.verify(candidate, Some(user.password_hash.clone())).await?;
            Ok::<_, HashError>(right.then_some(()))
        };
        attempt(&self.passwords, &user.username, ip, check).await
    }

    /// A second factor of `user`: an authenticator code (once per step) or
    /// an unused recovery code, through the code throttle.
    pub async fn second_factor(
        &self,
        user: &User,
        code: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<Verdict<Method>, LoginError> {
        let check = async {
            Ok::<_, FactorError>(
                match factors::verify(&self.storage, &self.hasher, &self.sealer, user.id, code, now).await? {
                    Verified::Wrong => None,
                    Verified::RecoveryCode => Some(Method::RecoveryCode),
                    Verified::Code => Some(Method::Totp),
                },
            )
        };
        attempt(&self.codes, &user.username, ip, check).await
    }

    /// The first code of a secret being set up for `user`: the step it is
    /// for, through the code throttle.
    pub async fn first_code(
        &self,
        user: &User,
        secret: &[u8],
        code: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<Verdict<u64>, LoginError> {
        let check = async { Ok::<_, LoginError>(factors::step_of(secret, code, now)) };
        attempt(&self.codes, &user.username, ip, check).await
    }

    /// After a login proved `password`: if the stored hash was made with
    /// weaker settings than new ones get, stores a new hash (unless the
    /// password changed meanwhile). Returns the hash the account holds for
    /// it now.
    async fn stronger_hash(&self, user: &User, password: String) -> String {
        if !needs_rehash(&user.password_hash) {
            return user.password_hash.clone();
        }
        let Ok(new) = self.hasher.hash(password).await else { return user.password_hash.clone() };
        match users::upgrade_hash(&self.storage, user.id, &user.password_hash, &new).await {
            Ok(true) => {
                log::info!("login: stored a stronger password hash for user {:?}", user.username);
                new
            }
            Ok(false) => user.password_hash.clone(),
            Err(e) => {
                log::warn!("login: could not store a stronger password hash: {e}");
                user.password_hash.clone()
            }
        }
    }
}

/// One attempt under `throttle` for `name` from `ip`: counted in flight,
/// then `check` decides it, and its outcome settles the attempt (`Some`:
/// right, cleared; `None`: wrong, counted; an error: never checked,
/// refunded). A throttle that refuses answers without running `check`.
async fn attempt<T, E: Into<LoginError>>(
    throttle: &Throttle,
    name: &str,
    ip: Option<IpAddr>,
    check: impl std::future::Future<Output = Result<Option<T>, E>>,
) -> Result<Verdict<T>, LoginError> {
    let attempt = match throttle.begin(name, ip).await {
        Ok(attempt) => attempt,
        Err(Refused::Wait(wait)) => return Ok(Verdict::Throttled(wait)),
        Err(Refused::Unavailable) => return Err(LoginError::Throttle),
    };
    match check.await {
        Ok(Some(right)) => {
            attempt.succeeded().await;
            Ok(Verdict::Right(right))
        }
        Ok(None) => {
            attempt.failed().await;
            Ok(Verdict::Wrong)
        }
        Err(e) => {
            attempt.refund().await;
            Err(e.into())
        }
    }
}
