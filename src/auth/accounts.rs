//! Account changes: the one place where a change commits, ends the sessions
//! it must end, and is announced to whoever caches sessions or identities.
//! The web pages, the command line (and next an admin page) call it; none
//! of them commits an account change of its own.
//!
//! What "announced" means depends on who changes: a server drops its own
//! caches (and, through its store, tells a server it shares a data
//! directory with, or waits until every instance on PostgreSQL applied
//! it); the command line tells the running server over its control socket,
//! or waits for the instances on PostgreSQL. Each is an [`Announce`].

use super::factors;
use super::password::{HashError, Hasher};
use super::users::{self, UserError};
use crate::session::{Ending, SessionStore, StoreError};
use crate::storage::Storage;

/// Why an account change was not made, or not announced.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The account is missing, exists already, or a value is refused.
    #[error(transparent)]
    User(#[from] UserError),
    /// A name or group is not valid: why.
    #[error("{0}")]
    Invalid(String),
    /// The new password could not be hashed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// Sessions could not be ended.
    #[error(transparent)]
    Sessions(#[from] StoreError),
    /// The change is committed, but not every cache is known to honour it.
    #[error("{0}")]
    NotAnnounced(String),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> AccountError {
        AccountError::User(UserError::Db(e))
    }
}

/// Makes a committed account change count everywhere sessions or
/// identities are kept, before it returns.
#[allow(async_fn_in_trait)]
pub trait Announce {
    /// `what` (in words: "the password was changed") was committed.
    async fn changed(&self, what: &str) -> Result<(), AccountError>;
}

/// A new account.
pub struct NewAccount<'a> {
    /// The user name (checked by [`users::check_username`]).
    pub name: &'a str,
    /// The password, hashed here.
    pub password: String,
    /// Its groups (each checked by [`users::check_group`]).
    pub groups: &'a [String],
    /// Its e-mail address, shown to apps.
    pub email: Option<&'a str>,
    /// Its display name, shown to apps.
    pub display_name: Option<&'a str>,
}

/// Account changes over `storage`, ending sessions through `sessions` and
/// announcing through `announce`.
pub struct Accounts<'a, A: Announce> {
    storage: &'a Storage,
    hasher: &'a Hasher,
    sessions: &'a dyn SessionStore,
    announce: A,
}

impl<'a, A: Announce> Accounts<'a, A> {
    /// Changes made on `storage`; sessions ended through `sessions` (a
    /// server's own store, so its caches see its own writes).
    pub fn new(
        storage: &'a Storage,
        hasher: &'a Hasher,
        sessions: &'a dyn SessionStore,
        announce: A,
    ) -> Self {
        Accounts { storage, hasher, sessions, announce }
    }

    /// Whether an account `name` with `groups` could be added: the name
    /// and groups valid, the name free. (The command line asks this before
    /// it prompts for a password.)
    pub async fn check_new(&self, name: &str, groups: &[String]) -> Result<(), AccountError> {
        users::check_username(name).map_err(|why| AccountError::Invalid(why.to_owned()))?;
        groups.iter().try_for_each(|g| users::check_group(g)).map_err(AccountError::Invalid)?;
        if users::by_name(self.storage, name).await?.is_some() {
            return Err(UserError::Exists(name.to_owned()).into());
        }
        Ok(())
    }

    /// Creates an account; its id.
    pub async fn add(&self, new: NewAccount<'_>) -> Result<i64, AccountError> {
        self.check_new(new.name, new.groups).await?;
        let hash = self.hasher.hash(new.password).await?;
        let id = users::create(self.storage, new.name, &hash).await?;
        if new.email.is_some() || new.display_name.is_some() {
            users::set_profile(self.storage, new.name, new.email, new.display_name).await?;
        }
        if !new.groups.is_empty() {
            users::set_groups(self.storage, new.name, new.groups).await?;
        }
        Ok(id)
    }

    /// Creates the first account, only while none exists (the set-up
    /// link): its id, or `None` when one exists already.
    pub async fn add_first(&self, name: &str, password: String) -> Result<Option<i64>, AccountError> {
        users::check_username(name).map_err(|why| AccountError::Invalid(why.to_owned()))?;
        let hash = self.hasher.hash(password).await?;
        Ok(users::create_first(self.storage, name, &hash).await?)
    }

    /// Sets `name`'s password and ends every session of the account but
    /// `keep` (a session handle) in the same transaction; how many ended.
    pub async fn set_password(
        &self,
        name: &str,
        password: String,
        keep: Option<&str>,
    ) -> Result<u64, AccountError> {
        let hash = self.hasher.hash(password).await?;
        let ended = users::set_password(self.storage, name, &hash, keep).await?;
        self.announce.changed("the password was changed").await?;
        Ok(ended)
    }

    /// Replaces `name`'s groups; as now stored, sorted.
    pub async fn set_groups(&self, name: &str, groups: &[String]) -> Result<Vec<String>, AccountError> {
        groups.iter().try_for_each(|g| users::check_group(g)).map_err(AccountError::Invalid)?;
        let stored = users::set_groups(self.storage, name, groups).await?;
        self.announce.changed("the groups were changed").await?;
        Ok(stored)
    }

    /// Removes `name` and, in the same transaction, its sessions; how many
    /// ended.
    pub async fn remove(&self, name: &str) -> Result<u64, AccountError> {
        let ended = users::remove(self.storage, name).await?;
        self.announce.changed("the user was removed").await?;
        Ok(ended)
    }

    /// Turns on account `id`'s second factor (`sealed` secret, the `step`
    /// of the code that confirmed it, recovery-code `hashes`) and ends
    /// every other session but `keep`: how many ended, or `None` when it
    /// was on already (or the account is gone).
    pub async fn second_factor_on(
        &self,
        id: i64,
        sealed: &[u8],
        step: u64,
        hashes: &[String],
        now: i64,
        keep: &str,
    ) -> Result<Option<u64>, AccountError> {
        if !factors::enable(self.storage, id, sealed, step, hashes, now).await? {
            return Ok(None);
        }
        self.end_sessions(id, Some(keep), "two-factor authentication was turned on").await.map(Some)
    }

    /// Turns off account `id`'s second factor and ends every other
    /// session but `keep`; how many ended.
    pub async fn second_factor_off(&self, id: i64, keep: &str) -> Result<u64, AccountError> {
        factors::disable(self.storage, id).await?;
        self.end_sessions(id, Some(keep), "two-factor authentication was turned off").await
    }

    /// New recovery codes (their `hashes`) for account `id`, retiring the
    /// old ones; `false` when its second factor is off.
    pub async fn new_recovery_codes(&self, id: i64, hashes: &[String]) -> Result<bool, AccountError> {
        Ok(factors::replace_codes(self.storage, id, hashes).await?)
    }

    /// The operator's reset of a lost device: `name`'s second factor off
    /// and every session ended; how many, or `None` when it was off.
    pub async fn reset_second_factor(&self, name: &str) -> Result<Option<u64>, AccountError> {
        let (id, was_on) = factors::reset(self.storage, name).await?;
        if !was_on {
            return Ok(None);
        }
        self.end_sessions(id, None, "two-factor authentication was reset").await.map(Some)
    }

    async fn end_sessions(&self, id: i64, keep: Option<&str>, what: &str) -> Result<u64, AccountError> {
        let ended = self.sessions.end(Ending::OwnedBy { user_id: id, keep }).await?;
        self.announce.changed(what).await?;
        Ok(ended)
    }
}

/// The announcement of a server: its own session store forgets what it
/// holds (and tells its peers), and its identity cache too.
pub struct Caches<'a> {
    /// The server's session store.
    pub sessions: &'a dyn SessionStore,
    /// The server's identities.
    pub identities: &'a super::identity::Identities,
}

impl Announce for Caches<'_> {
    async fn changed(&self, _: &str) -> Result<(), AccountError> {
        self.sessions.invalidate().await;
        self.identities.forget();
        Ok(())
    }
}
