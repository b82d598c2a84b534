//! SQL helpers every writer shares (the session stores, the accounts
//! code): write transactions on each engine, and a single SQLite write
//! statement, that close their connection after a failure. Knows no table.

use rocket::futures::future::BoxFuture;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqlitePool, SqliteQueryResult};
use sqlx::Connection;

/// Runs `work` in a transaction on a connection of `pool` (PostgreSQL's
/// default isolation, READ COMMITTED: statements that must not race take
/// row or advisory locks themselves). A failed transaction is rolled back
/// when it is dropped.
pub async fn pg_transaction<T: Send>(
    pool: &PgPool,
    work: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
) -> Result<T, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let value = work(&mut tx).await?;
    tx.commit().await?;
    Ok(value)
}

/// Runs `work` in a `BEGIN IMMEDIATE` transaction on a connection of `pool`.
///
/// After a failure the connection is closed rather than handed back: SQLite
/// rolls some transactions back by itself (a full disk, an I/O error), after
/// which sqlx still counts the transaction as open and refuses every later
/// `BEGIN` on that connection. With a single writer connection that would
/// stop every write until a restart.
pub async fn write_transaction<T: Send>(
    pool: &SqlitePool,
    work: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
) -> Result<T, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let result = async {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let value = work(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }
    .await;
    if result.is_err() {
        let _ = conn.close().await;
    }
    result
}

/// One write statement on a connection of `pool`, closed after a failure
/// for the reasons given at [`write_transaction`].
pub trait ExecuteOn<'q> {
    /// Runs the statement on `pool`.
    fn execute_on(self, pool: &SqlitePool) -> BoxFuture<'q, Result<SqliteQueryResult, sqlx::Error>>;
}

impl<'q> ExecuteOn<'q> for sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    fn execute_on(self, pool: &SqlitePool) -> BoxFuture<'q, Result<SqliteQueryResult, sqlx::Error>> {
        let pool = pool.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            let result = self.execute(&mut *conn).await;
            if result.is_err() {
                let _ = conn.close().await;
            }
            result
        })
    }
}
