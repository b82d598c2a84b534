//! A real PostgreSQL for the tests: the cluster `scripts/test` starts for
//! the run (its URL in `SESIJA_TEST_POSTGRES`), and a fresh database in it
//! for each test.

/// The cluster's URL; `None` (the test then says it was skipped) only when
/// `SESIJA_SKIP_POSTGRES` is set.
pub fn cluster() -> Option<String> {
    if let Ok(url) = std::env::var("SESIJA_TEST_POSTGRES") {
        return Some(url);
    }
    if std::env::var_os("SESIJA_SKIP_POSTGRES").is_some() {
        eprintln!("SESIJA_SKIP_POSTGRES is set: PostgreSQL test skipped");
        return None;
    }
    panic!(
        "no PostgreSQL for the tests: run scripts/test (it starts a throwaway cluster), or set \
         SESIJA_TEST_POSTGRES to a server's URL, or SESIJA_SKIP_POSTGRES=1"
    );
}

/// A new, empty database in the cluster: its URL.
pub async fn fresh_database(cluster: &str) -> String {
    use sqlx::Connection;
    let name =
        format!("sesija_test_{}", sesija::session::new_handle().to_lowercase().replace(['-', '_'], ""));
    let mut admin = sqlx::PgConnection::connect(cluster).await.expect("the test cluster answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let mut url = url::Url::parse(cluster).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A fresh database with the application's schema and accounts 0 to 200
/// to own sessions, as `helpers::open_db` makes on SQLite.
pub async fn open_db(cluster: &str) -> sqlx::PgPool {
    let pool = sesija::storage::open_postgres(&fresh_database(cluster).await).await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, created_at) OVERRIDING SYSTEM VALUE \
         SELECT i, 'owner' || i, 'x', 0 FROM generate_series(0, 200) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// A PostgreSQL cluster of a test's own (`scripts/postgres`), to stop and
/// start; stopped and removed when dropped.
pub struct OwnCluster {
    dir: tempfile::TempDir,
    pub url: String,
}

fn script(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/postgres: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl OwnCluster {
    pub fn start() -> OwnCluster {
        let dir = tempfile::TempDir::new().unwrap();
        let url = script(&["start".as_ref(), dir.path().join("cluster").as_os_str()]);
        OwnCluster { dir, url }
    }

    /// Stops the server, keeping its files.
    pub fn halt(&self) {
        script(&["halt".as_ref(), self.dir.path().join("cluster").as_os_str()]);
    }

    pub fn resume(&self) {
        script(&["resume".as_ref(), self.dir.path().join("cluster").as_os_str()]);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres"))
            .arg("stop")
            .arg(self.dir.path().join("cluster"))
            .status();
    }
}
