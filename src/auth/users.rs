//! The `users` table.

use sqlx::{FromRow, SqlitePool};

use crate::session::SqliteStore;
use crate::sql::write_transaction;

#[derive(Debug, Clone, FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// A second factor is set up (see `second_factor`).
    pub two_factor: bool,
}

macro_rules! user_columns {
    () => {
        "id, username, password_hash, created_at, email, display_name, totp_secret IS NOT NULL AS two_factor"
    };
}

#[derive(Debug, thiserror::Error)]
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

pub async fn create(writer: &SqlitePool, name: &str, hash: &str) -> Result<i64, UserError> {
    check_username(name).map_err(UserError::Invalid)?;
    let id = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(name)
    .bind(hash)
    .bind(crate::session::now())
    .fetch_one(writer)
    .await
    .map_err(|e| map_unique(name, e))?;
    Ok(id)
}

/// Creates the first account, only while there is none: `None` if another
/// account exists by now.
pub async fn create_first(writer: &SqlitePool, name: &str, hash: &str) -> Result<Option<i64>, UserError> {
    check_username(name).map_err(UserError::Invalid)?;
    let id = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at) \
         SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM users) RETURNING id",
    )
    .bind(name)
    .bind(hash)
    .bind(crate::session::now())
    .fetch_optional(writer)
    .await
    .map_err(|e| map_unique(name, e))?;
    Ok(id)
}

pub async fn count(reader: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(reader).await
}

pub async fn by_name(reader: &SqlitePool, name: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE username = ?"))
        .bind(name)
        .fetch_optional(reader)
        .await
}

pub async fn by_id(reader: &SqlitePool, id: i64) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"))
        .bind(id)
        .fetch_optional(reader)
        .await
}

/// Whether account `id` still exists with exactly this password hash, and
/// if so whether it has a second factor: a login asks after its session is
/// committed, so that a password change, a removal or a second factor that
/// raced the password check always wins (see `web::login`).
pub async fn has_password(reader: &SqlitePool, id: i64, hash: &str) -> Result<Option<bool>, sqlx::Error> {
    let found: Option<(String, bool)> =
        sqlx::query_as("SELECT password_hash, totp_secret IS NOT NULL FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(reader)
            .await?;
    Ok(found
        .filter(|(stored, _)| crate::session::constant_time_eq(stored.as_bytes(), hash.as_bytes()))
        .map(|(_, two_factor)| two_factor))
}

/// Replaces the password hash of account `id` by a stronger hash of the same
/// password, only if it is still `old`; ends no session. `false` means the
/// password changed meanwhile (or the account is gone).
pub async fn upgrade_hash(writer: &SqlitePool, id: i64, old: &str, new: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?")
        .bind(new)
        .bind(id)
        .bind(old)
        .execute(writer)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list(reader: &SqlitePool) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users ORDER BY username"))
        .fetch_all(reader)
        .await
}

/// The id of account `name`, inside a write transaction.
async fn id_in(tx: &mut sqlx::SqliteConnection, name: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM users WHERE username = ?").bind(name).fetch_optional(tx).await
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
pub async fn groups(reader: &SqlitePool, id: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM user_groups WHERE user_id = ? ORDER BY name")
        .bind(id)
        .fetch_all(reader)
        .await
}

/// The groups of every account, by id.
pub async fn all_groups(
    reader: &SqlitePool,
) -> Result<std::collections::HashMap<i64, Vec<String>>, sqlx::Error> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT user_id, name FROM user_groups ORDER BY name").fetch_all(reader).await?;
    let mut by_user = std::collections::HashMap::<i64, Vec<String>>::new();
    for (id, name) in rows {
        by_user.entry(id).or_default().push(name);
    }
    Ok(by_user)
}

/// Replaces the groups of account `name` (in one transaction); returns
/// them as now stored, sorted.
pub async fn set_groups(
    writer: &SqlitePool,
    name: &str,
    groups: &[String],
) -> Result<Vec<String>, UserError> {
    let (owned, list) = (name.to_owned(), groups.to_vec());
    let stored = write_transaction(writer, |tx| {
        Box::pin(async move {
            let Some(id) = id_in(tx, &owned).await? else { return Ok(None) };
            sqlx::query("DELETE FROM user_groups WHERE user_id = ?").bind(id).execute(&mut *tx).await?;
            for group in &list {
                sqlx::query("INSERT OR IGNORE INTO user_groups (user_id, name) VALUES (?, ?)")
                    .bind(id)
                    .bind(group)
                    .execute(&mut *tx)
                    .await?;
            }
            let stored: Vec<String> =
                sqlx::query_scalar("SELECT name FROM user_groups WHERE user_id = ? ORDER BY name")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            Ok(Some(stored))
        })
    })
    .await?;
    stored.ok_or_else(|| UserError::NotFound(name.to_owned()))
}

/// Sets the e-mail and display name of account `name` (`None` clears).
pub async fn set_profile(
    writer: &SqlitePool,
    name: &str,
    email: Option<&str>,
    display_name: Option<&str>,
) -> Result<(), UserError> {
    let done = sqlx::query("UPDATE users SET email = ?, display_name = ? WHERE username = ?")
        .bind(email)
        .bind(display_name)
        .bind(name)
        .execute(writer)
        .await?;
    match done.rows_affected() {
        0 => Err(UserError::NotFound(name.to_owned())),
        _ => Ok(()),
    }
}

/// Sets a new password and, in the same transaction, ends every session of
/// the account but `keep` (a session handle); returns how many ended.
pub async fn set_password(
    writer: &SqlitePool,
    name: &str,
    hash: &str,
    keep: Option<&str>,
) -> Result<u64, UserError> {
    let (owned, hash, keep) = (name.to_owned(), hash.to_owned(), keep.map(str::to_owned));
    let ended = write_transaction(writer, |tx| {
        Box::pin(async move {
            let id: Option<i64> =
                sqlx::query_scalar("UPDATE users SET password_hash = ? WHERE username = ? RETURNING id")
                    .bind(&hash)
                    .bind(&owned)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(id) = id else { return Ok(None) };
            Ok(Some(SqliteStore::delete_for_user_in(tx, id, keep.as_deref()).await?))
        })
    })
    .await?;
    ended.ok_or_else(|| UserError::NotFound(name.to_owned()))
}

/// Removes the account and, in the same transaction, every session it has;
/// returns how many sessions ended.
pub async fn remove(writer: &SqlitePool, name: &str) -> Result<u64, UserError> {
    let owned = name.to_owned();
    let ended = write_transaction(writer, |tx| {
        Box::pin(async move {
            let Some(id) = id_in(tx, &owned).await? else { return Ok(None) };
            // The foreign key would end them with the account; ended here
            // first, they are counted.
            let ended = SqliteStore::delete_for_user_in(tx, id, None).await?;
            sqlx::query("DELETE FROM users WHERE id = ?").bind(id).execute(&mut *tx).await?;
            Ok(Some(ended))
        })
    })
    .await?;
    ended.ok_or_else(|| UserError::NotFound(name.to_owned()))
}
