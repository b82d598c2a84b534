//! The `users` table (and an account's groups), on either engine: each
//! statement is written once, with numbered parameters, and runs on SQLite
//! or PostgreSQL through [`Storage`]'s macros.

use sqlx::FromRow;

use crate::session::EndSessionsIn;
use crate::storage::{reading, transaction, writing, Storage};

#[derive(Debug, Clone, FromRow)]
/// An account as stored.
pub struct User {
    /// Its id (never reused).
    pub id: i64,
    /// Its name, unique.
    pub username: String,
    /// Its argon2id password hash (PHC string).
    pub password_hash: String,
    /// When it was created (unix seconds).
    pub created_at: i64,
    /// Its e-mail address, shown to apps.
    pub email: Option<String>,
    /// Its display name, shown to apps.
    pub display_name: Option<String>,
    /// A second factor is set up (see `second_factor`).
    pub two_factor: bool,
}

macro_rules! user_columns {
    () => {
        "id, username, password_hash, created_at, email, display_name, totp_secret IS NOT NULL AS two_factor"
    };
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant says what it is in its message
pub enum UserError {
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Longest user name, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;

/// Why a user name is refused, in words for the person choosing it.
pub fn check_username(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.chars().count() > MAX_USERNAME_CHARS {
        return Err("User name must be 1 to 64 characters.");
    }
    if !name.chars().all(|c| c.is_alphanumeric() || "._@-".contains(c)) {
        return Err("User name may hold only letters, digits and . _ @ -");
    }
    Ok(())
}

fn map_unique(name: &str, e: sqlx::Error) -> UserError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => UserError::Exists(name.to_owned()),
        _ => UserError::Db(e),
    }
}

/// Creates account `name` with password `hash`; its id.
pub async fn create(storage: &Storage, name: &str, hash: &str) -> Result<i64, UserError> {
    check_username(name).map_err(UserError::Invalid)?;
    let id = writing!(storage, pool => sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(hash)
    .bind(crate::session::now())
    .fetch_one(pool)
    .await)
    .map_err(|e| map_unique(name, e))?;
    Ok(id)
}

/// Creates the first account, only while there is none: `None` if another
/// account exists by now. Two of these at once (two instances, one form
/// each) create one account: SQLite's single writer serialises them, and
/// on PostgreSQL a transaction-scoped advisory lock does.
pub async fn create_first(storage: &Storage, name: &str, hash: &str) -> Result<Option<i64>, UserError> {
    check_username(name).map_err(UserError::Invalid)?;
    let (owned, hash, now) = (name.to_owned(), hash.to_owned(), crate::session::now());
    let postgres = matches!(storage, Storage::Postgres(_));
    let id = transaction!(storage, tx => {
        if postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sesija: the first account'))")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, created_at) \
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM users) RETURNING id",
        )
        .bind(&owned)
        .bind(&hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
    })
    .map_err(|e| map_unique(name, e))?;
    Ok(id)
}

/// How many accounts exist.
pub async fn count(storage: &Storage) -> Result<i64, sqlx::Error> {
    reading!(storage, pool => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await)
}

/// The account named `name`, if any.
pub async fn by_name(storage: &Storage, name: &str) -> Result<Option<User>, sqlx::Error> {
    reading!(storage, pool => sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE username = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await)
}

/// The account with id `id`, if any.
pub async fn by_id(storage: &Storage, id: i64) -> Result<Option<User>, sqlx::Error> {
    reading!(storage, pool => sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await)
}

/// Whether account `id` still exists with exactly this password hash, and
/// if so whether it has a second factor: a login asks after its session is
/// committed, so that a password change, a removal or a second factor that
/// raced the password check always wins (see `web::login`).
///
/// On SQLite the single writer orders the login's insert and the change.
/// On PostgreSQL a change may have ended the account's sessions before
/// the new one was committed and not be committed itself yet: the read
/// takes a share lock on the account's row, so it waits for such a change
/// and sees its outcome.
pub async fn has_password(storage: &Storage, id: i64, hash: &str) -> Result<Option<bool>, sqlx::Error> {
    macro_rules! read {
        () => {
            "SELECT password_hash, totp_secret IS NOT NULL FROM users WHERE id = $1"
        };
    }
    let found: Option<(String, bool)> = match storage {
        Storage::Sqlite(db) => sqlx::query_as(read!()).bind(id).fetch_optional(&db.reader).await?,
        Storage::Postgres(pool) => {
            sqlx::query_as(concat!(read!(), " FOR SHARE")).bind(id).fetch_optional(pool).await?
        }
    };
    Ok(found
        .filter(|(stored, _)| crate::session::constant_time_eq(stored.as_bytes(), hash.as_bytes()))
        .map(|(_, two_factor)| two_factor))
}

/// Replaces the password hash of account `id` by a stronger hash of the same
/// password, only if it is still `old`; ends no session. `false` means the
/// password changed meanwhile (or the account is gone).
pub async fn upgrade_hash(storage: &Storage, id: i64, old: &str, new: &str) -> Result<bool, sqlx::Error> {
    let affected = writing!(storage, pool => sqlx::query(
        "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
    )
    .bind(new)
    .bind(id)
    .bind(old)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(affected == 1)
}

/// Every account, by name.
pub async fn list(storage: &Storage) -> Result<Vec<User>, sqlx::Error> {
    reading!(storage, pool => sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users ORDER BY username"))
        .fetch_all(pool)
        .await)
}

/// The id of account `name`, inside a transaction (either engine).
macro_rules! id_in {
    ($tx:expr, $name:expr) => {
        sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE username = $1")
            .bind($name)
            .fetch_optional(&mut *$tx)
    };
}

/// Why a group name is refused (names travel comma-separated in
/// `Remote-Groups`, so no comma, no space).
pub fn check_group(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name.chars().all(|c| c.is_alphanumeric() || "._@-".contains(c));
    ok.then_some(()).ok_or_else(|| format!("group {name:?} must be 1 to 64 letters, digits or . _ @ -"))
}

/// The groups of account `id`, sorted.
pub async fn groups(storage: &Storage, id: i64) -> Result<Vec<String>, sqlx::Error> {
    reading!(storage, pool => sqlx::query_scalar("SELECT name FROM user_groups WHERE user_id = $1 ORDER BY name")
        .bind(id)
        .fetch_all(pool)
        .await)
}

/// The groups of every account, by id.
pub async fn all_groups(
    storage: &Storage,
) -> Result<std::collections::HashMap<i64, Vec<String>>, sqlx::Error> {
    let rows: Vec<(i64, String)> = reading!(storage, pool => sqlx::query_as(
        "SELECT user_id, name FROM user_groups ORDER BY name",
    )
    .fetch_all(pool)
    .await)?;
    let mut by_user = std::collections::HashMap::<i64, Vec<String>>::new();
    for (id, name) in rows {
        by_user.entry(id).or_default().push(name);
    }
    Ok(by_user)
}

/// Replaces the groups of account `name` (in one transaction); returns
/// them as now stored, sorted.
pub async fn set_groups(storage: &Storage, name: &str, groups: &[String]) -> Result<Vec<String>, UserError> {
    let (owned, list) = (name.to_owned(), groups.to_vec());
    let stored = transaction!(storage, tx => {
        let Some(id) = id_in!(tx, &owned).await? else { return Ok(None) };
        sqlx::query("DELETE FROM user_groups WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
        for group in &list {
            sqlx::query("INSERT INTO user_groups (user_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(group)
                .execute(&mut *tx)
                .await?;
        }
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT name FROM user_groups WHERE user_id = $1 ORDER BY name")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        Ok(Some(stored))
    })?;
    stored.ok_or_else(|| UserError::NotFound(name.to_owned()))
}

/// Sets the e-mail and display name of account `name` (`None` clears).
pub async fn set_profile(
    storage: &Storage,
    name: &str,
    email: Option<&str>,
    display_name: Option<&str>,
) -> Result<(), UserError> {
    let affected = writing!(storage, pool => sqlx::query(
        "UPDATE users SET email = $1, display_name = $2 WHERE username = $3",
    )
    .bind(email)
    .bind(display_name)
    .bind(name)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    match affected {
        0 => Err(UserError::NotFound(name.to_owned())),
        _ => Ok(()),
    }
}

/// Sets a new password and, in the same transaction, ends every session of
/// the account but `keep` (a session handle); returns how many ended.
pub async fn set_password(
    storage: &Storage,
    name: &str,
    hash: &str,
    keep: Option<&str>,
) -> Result<u64, UserError> {
    let (owned, hash, keep) = (name.to_owned(), hash.to_owned(), keep.map(str::to_owned));
    let ended = transaction!(storage, tx => {
        let id: Option<i64> =
            sqlx::query_scalar("UPDATE users SET password_hash = $1 WHERE username = $2 RETURNING id")
                .bind(&hash)
                .bind(&owned)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else { return Ok(None) };
        Ok(Some(tx.end_sessions_of(id, keep.as_deref()).await?))
    })?;
    ended.ok_or_else(|| UserError::NotFound(name.to_owned()))
}

/// Removes the account and, in the same transaction, every session it has;
/// returns how many sessions ended.
pub async fn remove(storage: &Storage, name: &str) -> Result<u64, UserError> {
    let owned = name.to_owned();
    let ended = transaction!(storage, tx => {
        let Some(id) = id_in!(tx, &owned).await? else { return Ok(None) };
        // The foreign key would end them with the account; ended here
        // first, they are counted.
        let ended = tx.end_sessions_of(id, None).await?;
        sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
        Ok(Some(ended))
    })?;
    ended.ok_or_else(|| UserError::NotFound(name.to_owned()))
}
