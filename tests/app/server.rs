//! Driving the real binary: first account, logins, database peeks.

use crate::helpers::{csrf_in, form, PASSWORD};
use crate::http::{Browser, Server};

/// The setup link the server printed.
pub fn setup_path(output: &str) -> String {
    let line = output.lines().find(|l| l.contains("/setup?token=")).expect("setup link printed");
    let at = line.find("/setup?token=").unwrap();
    line[at..].trim().to_owned()
}

/// Creates the first account through the printed link; returns the browser.
pub fn first_account(server: &Server, name: &str) -> Browser {
    let mut browser = Browser::new(server.port);
    let page = browser.get(&setup_path(&server.output()));
    assert_eq!(page.status, 200, "{}", page.body);
    let token =
        page.body.split(r#"name="token" value=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    let body = form(&[
        ("token", &token),
        ("username", name),
        ("password", PASSWORD),
        ("csrf_token", &csrf_in(&page.body)),
    ]);
    let res = browser.post("/setup", &body);
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.header("Location"), Some("/user"));
    browser
}

pub fn log_in(browser: &mut Browser, name: &str, remember: bool) {
    let page = browser.get("/login");
    let mut fields = vec![("username", name), ("password", PASSWORD)];
    let token = csrf_in(&page.body);
    fields.push(("csrf_token", &token));
    if remember {
        fields.push(("remember", "on"));
    }
    let res = browser.post("/login", &form(&fields));
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.header("Location"), Some("/user"));
}

/// Runs `job` on a runtime of its own, for the blocking process tests.
pub fn block_on<T>(job: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(job)
}

pub fn count_sessions(db: &std::path::Path) -> i64 {
    block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    })
}
