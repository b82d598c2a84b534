//! The database: where it lives, how it is opened, and its schema.
//!
//! All pragmas are set here and nowhere else: WAL so readers never block the
//! writer, `synchronous = FULL` so a logout the user was told about survives
//! even a power loss, a busy timeout so another process holding the lock
//! briefly means a wait rather than an error. Writes go through a pool of one
//! connection, reads through a small pool of their own.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another connection's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The two pools over `sesija.db`.
#[derive(Clone)]
pub struct Db {
    pub reader: SqlitePool,
    pub writer: SqlitePool,
    pub path: PathBuf,
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create data directory {path}: {source}")]
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
}

impl Db {
    /// Creates the data directory if needed, opens (or creates) the database
    /// and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| DbError::DataDir { path: data_dir.to_owned(), source })?;
        let path = data_dir.join("sesija.db");
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
            .connect_with(options.clone())
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
        MIGRATOR.run(&writer).await.map_err(|source| DbError::Migrate { path: path.clone(), source })?;
        Ok(Db { reader, writer, path })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.reader).await.is_ok()
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
