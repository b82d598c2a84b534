//! The database: where it lives, how it is opened, and its schema, on
//! either engine ([`Storage`]), with the query macros that compile one
//! statement per engine and the write helpers every writer shares
//! ([`sql`]).
//!
//! All pragmas are set here and nowhere else: WAL so readers never block the
//! writer, `synchronous = FULL` so a logout the user was told about survives
//! even a power loss, a busy timeout so another process holding the lock
//! briefly means a wait rather than an error. Writes go through a pool of one
//! connection, reads through a small pool of their own.

pub mod sql;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static PG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a statement waits for another connection's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer connection closes after this long without a write.
pub const WRITER_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Name prefix of the writer connection's thread.
pub const WRITER_THREAD: &str = "sesija-write-";

/// Where the accounts and sessions live: the SQLite file in the data
/// directory (the default), or a PostgreSQL database that several
/// instances share (`database_url`).
#[derive(Clone)]
pub enum Storage {
    /// An embedded SQLite database in the data directory.
    Sqlite(Db),
    /// A PostgreSQL database several instances share.
    Postgres(PgPool),
}

/// `$body` with `$pool` bound to the pool that reads `$storage`, compiled
/// once per engine: one SQL text, with numbered `$N` parameters (which both
/// engines read), serves both.
macro_rules! reading {
    ($storage:expr, $pool:ident => $body:expr) => {
        $crate::storage::on_pool!($storage, reader, $pool => $body)
    };
}

/// [`reading!`] with the pool that writes (SQLite's single writer).
macro_rules! writing {
    ($storage:expr, $pool:ident => $body:expr) => {
        $crate::storage::on_pool!($storage, writer, $pool => $body)
    };
}

/// `$body` with `$pool` bound to SQLite's `$sqlite` pool or PostgreSQL's
/// one pool.
macro_rules! on_pool {
    ($storage:expr, $sqlite:ident, $pool:ident => $body:expr) => {
        match $storage {
            $crate::storage::Storage::Sqlite(db) => {
                let $pool = &db.$sqlite;
                $body
            }
            $crate::storage::Storage::Postgres(pool) => {
                let $pool = pool;
                $body
            }
        }
    };
}

/// `$body` (an async block's contents, `Result<T, sqlx::Error>`) in one
/// write transaction with `$tx` the connection, on either engine; evaluates
/// to the transaction's result.
macro_rules! transaction {
    ($storage:expr, $tx:ident => $body:expr) => {
        match $storage {
            $crate::storage::Storage::Sqlite(db) => {
                $crate::storage::sql::write_transaction(&db.writer, |$tx| Box::pin(async move { $body }))
                    .await
            }
            $crate::storage::Storage::Postgres(pool) => {
                $crate::storage::sql::pg_transaction(pool, |$tx| Box::pin(async move { $body })).await
            }
        }
    };
}

pub(crate) use {on_pool, reading, transaction, writing};

impl Storage {
    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        reading!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    /// When this database was first served with `key` = `value` (unix
    /// seconds): the time recorded when it last changed, or now, recorded,
    /// if it differs from what was recorded (or nothing was).
    pub async fn setting_since(&self, key: &str, value: i64) -> Result<i64, sqlx::Error> {
        let now = crate::session::now();
        writing!(self, pool => {
            let changed: Option<i64> = sqlx::query_scalar(
                "INSERT INTO server_state (key, value, since) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = $2, since = $3 \
                 WHERE server_state.value IS DISTINCT FROM $2 RETURNING since",
            )
            .bind(key)
            .bind(value)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            match changed {
                Some(since) => Ok(since),
                None => {
                    sqlx::query_scalar("SELECT since FROM server_state WHERE key = $1")
                        .bind(key)
                        .fetch_one(pool)
                        .await
                }
            }
        })
    }

    /// Bytes the database takes (SQLite: pages in use).
    pub async fn size_bytes(&self) -> Result<i64, sqlx::Error> {
        match self {
            Storage::Sqlite(db) => {
                sqlx::query_scalar(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                )
                .fetch_one(&db.reader)
                .await
            }
            Storage::Postgres(pool) => {
                sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(pool).await
            }
        }
    }

    /// The SQLite database, if that is where things live.
    pub fn sqlite(&self) -> Option<&Db> {
        match self {
            Storage::Sqlite(db) => Some(db),
            Storage::Postgres(_) => None,
        }
    }

    /// The store of the sessions in this database.
    pub fn session_store(&self) -> Box<dyn crate::session::SessionStore> {
        match self {
            Storage::Sqlite(db) => {
                Box::new(crate::session::SqliteStore::new(db.reader.clone(), db.writer.clone()))
            }
            Storage::Postgres(pool) => Box::new(crate::session::PgStore::new(pool.clone())),
        }
    }

    /// Closes the pools (SQLite: after a last checkpoint).
    pub async fn close(&self) {
        match self {
            Storage::Sqlite(db) => db.close().await,
            Storage::Postgres(pool) => pool.close().await,
        }
    }

    /// What this is, for messages: the database file, or the URL without
    /// its password.
    pub fn describe(&self) -> String {
        match self {
            Storage::Sqlite(db) => db.path.display().to_string(),
            Storage::Postgres(pool) => {
                let options = pool.connect_options();
                format!(
                    "PostgreSQL database {} at {}:{}",
                    options.get_database().unwrap_or("postgres"),
                    options.get_host(),
                    options.get_port()
                )
            }
        }
    }
}

/// The two pools over `sesija.db`.
#[derive(Clone)]
pub struct Db {
    /// Connections that read.
    pub reader: SqlitePool,
    /// The one connection that writes.
    pub writer: SqlitePool,
    /// The database file.
    pub path: PathBuf,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant says what it is in its message
pub enum DbError {
    #[error("cannot create data directory {path} (or make it private): {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error(
        "database {path} has schema version {found}, newer than this sesija ({known}); \
         run a newer sesija or restore a backup"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("cannot migrate database {path}: {source}")]
    Migrate { path: PathBuf, source: sqlx::migrate::MigrateError },
    #[error("cannot copy database {path} before migrating it: {source}")]
    PreMigrationCopy { path: PathBuf, source: BackupError },
    /// `database_url` names a PostgreSQL database that cannot be used; the
    /// URL is shown without its password.
    #[error("database_url {url}: {why}")]
    Postgres { url: String, why: String },
}

/// Why a backup could not be made.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant says what it is in its message
pub enum BackupError {
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Db(#[from] sqlx::Error),
    #[error("the copy at {0} failed its integrity check")]
    Corrupt(PathBuf),
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Size of the copy.
    pub bytes: u64,
    /// Accounts in it.
    pub users: i64,
    /// Sessions in it.
    pub sessions: i64,
}

/// Creates `dir` (and its parents) with mode 0700; an existing `dir` that
/// others can read or enter is made 0700, with a line saying so.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        println!(
            "sesija: made data directory {} private (mode {mode:o} -> 700): it holds password hashes",
            dir.display()
        );
    }
    Ok(())
}

/// Creates the database file 0600 if it is missing, and makes it and its
/// journal files 0600 where they exist with a wider mode.
fn private_files(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !db.exists() {
        create_private(db)?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        match std::fs::metadata(&file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates an empty file readable and writable by its owner only (an
/// existing one is left as it is).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map(drop)
}

impl Db {
    /// Creates the data directory if needed, opens (or creates) the database
    /// and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Db, DbError> {
        private_dir(data_dir).map_err(|source| DbError::DataDir { path: data_dir.to_owned(), source })?;
        let path = data_dir.join("sesija.db");
        // SQLite gives its -wal and -shm files the mode of the database
        // file: made 0600 here, they are too, whatever the umask.
        private_files(&path).map_err(|source| DbError::DataDir { path: path.clone(), source })?;
        let open_err = |source| DbError::Open { path: path.clone(), source };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_err)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            // Reopened after a pause, so a database file whose permissions
            // or file system changed meanwhile is seen afresh.
            .idle_timeout(WRITER_IDLE_TIMEOUT)
            // Writes yield the core to page views (see `niceness`); a new
            // connection after a failure gets a new thread, lowered again.
            .after_connect(|_, _| {
                Box::pin(async {
                    crate::niceness::lower_threads_named(WRITER_THREAD);
                    Ok(())
                })
            })
            .connect_with(options.clone().thread_name(|id| format!("{WRITER_THREAD}{id}")))
            .await
            .map_err(open_err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open_err)?;

        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let has_history: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '_sqlx_migrations')")
                .fetch_one(&writer)
                .await
                .map_err(open_err)?;
        let found: Option<i64> = if has_history {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(&writer)
                .await
                .map_err(open_err)?
        } else {
            None
        };
        if let Some(found) = found.filter(|v| *v > known) {
            return Err(DbError::TooNew { path, found, known });
        }
        // A database that already has a schema is copied before it changes,
        // so an upgrade can always be undone by hand.
        if let Some(found) = found.filter(|v| *v < known) {
            let next = MIGRATOR.iter().map(|m| m.version).filter(|v| *v > found).min().unwrap_or(known);
            let copy = path.with_extension(format!("db.pre-{next}"));
            let db = Db { reader: reader.clone(), writer: writer.clone(), path: path.clone() };
            db.backup(&copy, true)
                .await
                .map_err(|source| DbError::PreMigrationCopy { path: path.clone(), source })?;
            println!(
                "sesija: copied {} to {} before upgrading its schema from version {found} to {known}",
                path.display(),
                copy.display()
            );
        }
        MIGRATOR.run(&writer).await.map_err(|source| DbError::Migrate { path: path.clone(), source })?;
        Ok(Db { reader, writer, path })
    }

    /// Writes a consistent snapshot of the live database to `target`
    /// (`VACUUM INTO` a temporary file beside it, synced, then renamed), and
    /// checks the copy. Readers and writers carry on meanwhile.
    pub async fn backup(&self, target: &Path, force: bool) -> Result<BackupReport, BackupError> {
        if !force && target.exists() {
            return Err(BackupError::Exists(target.to_owned()));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BackupError::Io { path, source }
        };
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().ok_or_else(|| BackupError::Io {
            path: target.to_owned(),
            source: std::io::Error::other("not a file name"),
        })?;
        let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
            _ => {}
        }
        let tmp_text = tmp.to_str().ok_or_else(|| BackupError::Io {
            path: tmp.clone(),
            source: std::io::Error::other("path is not UTF-8"),
        })?;
        // VACUUM INTO fills an empty file it finds: created 0600 here, the
        // copy is readable by its owner only, whatever the umask.
        create_private(&tmp).map_err(io(&tmp))?;
        sqlx::query("VACUUM INTO ?").bind(tmp_text).execute(&self.reader).await?;

        let options = SqliteConnectOptions::new().filename(&tmp);
        let copy = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&copy).await?;
        let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&copy)
            .await?;
        let has = |name: &str| tables.iter().any(|t| t == name);
        let users: i64 = match has("users") {
            true => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&copy).await?,
            false => 0,
        };
        let sessions: i64 = match has("sessions") {
            true => crate::session::SqliteStore::count_all(&copy).await?,
            false => 0,
        };
        copy.close().await;
        if check != "ok" {
            let _ = std::fs::remove_file(&tmp);
            return Err(BackupError::Corrupt(tmp));
        }
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, target).map_err(io(target))?;
        std::fs::File::open(&dir).and_then(|f| f.sync_all()).map_err(io(&dir))?;
        let bytes = std::fs::metadata(target).map_err(io(target))?.len();
        Ok(BackupReport { bytes, users, sessions })
    }

    /// Closes the pools (SQLite: after a last checkpoint).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// How long a request waits for a PostgreSQL connection before it is
/// answered 503: never a hang while the server is unreachable.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a message may show of `url`: its scheme, host, port and database
/// only. A password hides in more places than the user-info part (a
/// `?password=` parameter, a `passfile`, an `options` value), so nothing
/// else of the URL is ever shown.
pub fn redacted(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else { return "(not a URL)".into() };
    let mut shown = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(parsed.path());
    shown
}

/// Connects to the PostgreSQL database `url` names and brings its schema up
/// to date (sqlx holds an advisory lock meanwhile, so instances starting
/// together do not race). A database written by a newer sesija is refused.
pub async fn open_postgres(url: &str) -> Result<PgPool, DbError> {
    let fail = |why: String| DbError::Postgres { url: redacted(url), why };
    let options = PgConnectOptions::from_str(url).map_err(|e| fail(format!("is not a usable URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let known = PG_MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let unreadable = |e: sqlx::Error| fail(format!("cannot read the schema version: {e}"));
    let has_history: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .map_err(unreadable)?;
    let found: Option<i64> = match has_history {
        true => sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .map_err(unreadable)?,
        false => None,
    };
    if let Some(found) = found.filter(|v| *v > known) {
        return Err(fail(format!(
            "has schema version {found}, newer than this sesija ({known}); run a newer sesija"
        )));
    }
    PG_MIGRATOR.run(&pool).await.map_err(|e| fail(format!("cannot migrate: {e}")))?;
    Ok(pool)
}
