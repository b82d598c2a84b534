//! Shared set-up: an app per test in its own temp data dir, and helpers to
//! log in and look inside the database.

use std::path::{Path, PathBuf};

use rocket::figment::Figment;
use rocket::http::{ContentType, Cookie, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tempfile::TempDir;

use sesija::auth::{users, Hasher};
use sesija::session::ShiftedClock;
use std::sync::Arc;

pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub dir: TempDir,
    pub client: Client,
    pub engine: Engine,
    /// The time this app (and every other browser of it) judges sessions,
    /// codes and forms by: moved on by [`TestApp::advance`], never slept.
    pub clock: Arc<ShiftedClock>,
    /// What every instance of this app shares beyond the defaults: the
    /// database and the cookie key, on PostgreSQL.
    shared: Vec<(&'static str, String)>,
}

/// Where a test's app keeps its data: SQLite in its data directory (the
/// default), or a fresh database of its own in the test cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The configuration every test starts from: a temp data dir, no purge
/// during the test unless asked, quiet logs.
pub fn figment(data_dir: &Path) -> Figment {
    sesija::config::figment()
        .merge(("data_dir", data_dir))
        .merge(("log_level", "off"))
        .merge(("session_purge_interval", 3600))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|f| f).await
}

pub async fn spawn_app_with(configure: impl FnOnce(Figment) -> Figment) -> TestApp {
    spawn_app_on_with(Engine::Sqlite, configure).await
}

pub async fn spawn_app_on(engine: Engine) -> TestApp {
    spawn_app_on_with(engine, |f| f).await
}

pub async fn spawn_app_on_with(engine: Engine, configure: impl FnOnce(Figment) -> Figment) -> TestApp {
    let dir = TempDir::new().unwrap();
    let shared = engine_settings(engine).await;
    let mut base = figment(&dir.path().join("data"));
    for (key, value) in &shared {
        base = base.merge((*key, value));
    }
    let clock = Arc::new(ShiftedClock::default());
    let rocket = sesija::app_with_clock(configure(base), clock.clone()).await.expect("app starts");
    let client = Client::tracked(rocket).await.expect("valid rocket");
    TestApp { dir, client, engine, shared, clock }
}

/// What a fresh app on `engine` needs beyond [`figment`]: on PostgreSQL, a
/// database of its own in the test cluster and a cookie key.
pub async fn engine_settings(engine: Engine) -> Vec<(&'static str, String)> {
    match engine {
        Engine::Sqlite => Vec::new(),
        Engine::Postgres => {
            let cluster = crate::postgres::cluster().expect("a PostgreSQL test runs only with a cluster");
            let url = crate::postgres::fresh_database(&cluster).await;
            vec![("database_url", url), ("secret_key", random_key(64))]
        }
    }
}

/// `settings` as the binary reads them from its environment (`ROCKET_*`).
pub fn rocket_envs(settings: &[(&str, String)]) -> Vec<(String, String)> {
    settings.iter().map(|(key, value)| (format!("ROCKET_{}", key.to_uppercase()), value.clone())).collect()
}

/// [`figment`] for a fresh app on `engine`.
pub async fn figment_on(engine: Engine, data_dir: &Path) -> Figment {
    let mut figment = figment(data_dir);
    for (key, value) in engine_settings(engine).await {
        figment = figment.merge((key, value));
    }
    figment
}

/// Whatever can name the database a test looks into (see [`sql!`]).
pub trait HasStorage {
    fn storage(&self) -> sesija::storage::Storage;
}

impl HasStorage for sesija::storage::Storage {
    fn storage(&self) -> sesija::storage::Storage {
        self.clone()
    }
}

/// One test per engine for each function named: `name::sqlite` and
/// `name::postgres` run `name(Engine)` (the latter says it was skipped
/// only when `SESIJA_SKIP_POSTGRES` is set). `blocking:` first: for
/// functions that are not async.
#[allow(unused_macros)]
macro_rules! on_each_engine {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[rocket::async_test]
            async fn sqlite() {
                super::$name($crate::helpers::Engine::Sqlite).await
            }

            #[rocket::async_test]
            async fn postgres() {
                if $crate::postgres::cluster().is_some() {
                    super::$name($crate::helpers::Engine::Postgres).await
                }
            }
        }
    )*};
    (blocking: $($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::helpers::Engine::Sqlite)
            }

            #[test]
            fn postgres() {
                if $crate::postgres::cluster().is_some() {
                    super::$name($crate::helpers::Engine::Postgres)
                }
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_each_engine;

/// Runs a query on the database of a test app (or any [`HasStorage`]),
/// whichever engine: `$query` is built once per engine (SQL with numbered
/// `$N` parameters, which both read), then `fetch_one`, `fetch_all` or
/// `fetch_optional` it, or `execute` it (how many rows it changed).
macro_rules! sql {
    ($app:expr, execute, $query:expr) => {
        match {
            use $crate::helpers::HasStorage as _;
            $app.storage()
        } {
            sesija::storage::Storage::Sqlite(db) => $query.execute(&db.writer).await.unwrap().rows_affected(),
            sesija::storage::Storage::Postgres(pool) => $query.execute(&pool).await.unwrap().rows_affected(),
        }
    };
    ($app:expr, $fetch:ident, $query:expr) => {
        match {
            use $crate::helpers::HasStorage as _;
            $app.storage()
        } {
            sesija::storage::Storage::Sqlite(db) => $query.$fetch(&db.writer).await.unwrap(),
            sesija::storage::Storage::Postgres(pool) => $query.$fetch(&pool).await.unwrap(),
        }
    };
}
#[allow(unused_imports)]
pub(crate) use sql;

/// The app's own storage (its pools).
impl HasStorage for TestApp {
    fn storage(&self) -> sesija::storage::Storage {
        self.client.rocket().state::<sesija::storage::Storage>().unwrap().clone()
    }
}

impl TestApp {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// This app's configuration for another instance: its data dir, and
    /// its database and key on PostgreSQL.
    pub fn figment(&self) -> Figment {
        let mut figment = figment(&self.data_dir());
        for (key, value) in &self.shared {
            figment = figment.merge((*key, value));
        }
        figment
    }

    /// What [`TestApp::figment`] adds, as the binary reads it from its
    /// environment (for the command line against this app's data).
    pub fn envs(&self) -> Vec<(String, String)> {
        rocket_envs(&self.shared)
    }

    /// Another browser with an empty cookie jar: a second app on the same
    /// data (and key).
    pub async fn other_browser(&self) -> Client {
        self.browser(self.figment()).await
    }

    /// Another browser of this app configured by `figment`, on its clock.
    pub async fn browser(&self, figment: Figment) -> Client {
        let rocket = sesija::app_with_clock(figment, self.clock.clone()).await.unwrap();
        Client::tracked(rocket).await.unwrap()
    }

    /// `seconds` pass for this app and its other browsers.
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(seconds);
    }

    /// A connection of the test's own to the app's database file (SQLite only).
    pub async fn db(&self) -> SqlitePool {
        assert_eq!(self.engine, Engine::Sqlite, "a test of SQLite's file");
        let options = SqliteConnectOptions::new().filename(self.data_dir().join("sesija.db"));
        SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap()
    }

    pub async fn conn(&self) -> SqliteConnection {
        assert_eq!(self.engine, Engine::Sqlite, "a test of SQLite's file");
        let options = SqliteConnectOptions::new().filename(self.data_dir().join("sesija.db"));
        SqliteConnection::connect_with(&options).await.unwrap()
    }

    /// Every stored account and session, as text: equal before and after
    /// means a request changed nothing stored.
    pub async fn contents(&self) -> String {
        let sessions: Vec<(i64, Vec<u8>, String, i64, i64, i64)> = sql!(
            self,
            fetch_all,
            sqlx::query_as(
                "SELECT id, token_hash, data, user_id, last_seen_at, expires_at FROM sessions ORDER BY id"
            )
        );
        let users: Vec<(i64, String, String)> = sql!(
            self,
            fetch_all,
            sqlx::query_as("SELECT id, username, password_hash FROM users ORDER BY id")
        );
        format!("{sessions:?} {users:?}")
    }

    pub async fn add_user(&self, name: &str) -> i64 {
        let hash = Hasher::default().hash(PASSWORD.into()).await.unwrap();
        users::create(&self.storage(), name, &hash).await.unwrap()
    }

    pub async fn session_rows(&self) -> i64 {
        sql!(self, fetch_one, sqlx::query_scalar("SELECT COUNT(*) FROM sessions"))
    }
}

/// The `csrf_token` value of the first form in `html`.
pub fn csrf_in(html: &str) -> String {
    let at = html.find(r#"name="csrf_token" value=""#).expect("form has a csrf_token");
    let rest = &html[at + r#"name="csrf_token" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Fetches the login form with `client`'s cookies and returns its token.
pub async fn login_token(client: &Client) -> String {
    let page = client.get("/login").dispatch().await;
    if page.status() == Status::SeeOther {
        // Logged in: the anonymous token was dropped at login, as if this
        // were a login form left open in another tab. Its refusal carries a
        // fresh one.
        let refused = client.post("/login").header(ContentType::Form).body("").dispatch().await;
        assert_eq!(refused.status(), Status::Forbidden);
        return csrf_in(&refused.into_string().await.unwrap());
    }
    assert_eq!(page.status(), Status::Ok);
    csrf_in(&page.into_string().await.unwrap())
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&")
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Posts the login form (with a fresh token from the same client).
pub async fn login<'c>(client: &'c Client, name: &str, password: &str, remember: bool) -> LocalResponse<'c> {
    let token = login_token(client).await;
    let mut fields = vec![("username", name), ("password", password), ("csrf_token", token.as_str())];
    if remember {
        fields.push(("remember", "on"));
    }
    client.post("/login").header(ContentType::Form).body(form(&fields)).dispatch().await
}

/// Posts the login form (correct password) with one extra request header
/// and, optionally, the client's socket address.
pub async fn login_from<'c>(
    client: &'c Client,
    name: &str,
    header: Header<'static>,
    remote: Option<std::net::SocketAddr>,
) -> LocalResponse<'c> {
    let token = login_token(client).await;
    let body = form(&[("username", name), ("password", PASSWORD), ("csrf_token", &token)]);
    let mut request = client.post("/login").header(ContentType::Form).header(header).body(body);
    if let Some(remote) = remote {
        request = request.remote(remote);
    }
    request.dispatch().await
}

/// Logs in and checks it worked.
pub async fn logged_in(client: &Client, name: &str, remember: bool) -> String {
    let res = login(client, name, PASSWORD, remember).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/user"));
    set_cookie(&res, "sesija").expect("login sets the session cookie")
}

/// The raw `Set-Cookie` header for `name`, if the response sets one.
pub fn set_cookie(res: &LocalResponse<'_>, name: &str) -> Option<String> {
    res.headers().get("Set-Cookie").find(|h| h.starts_with(&format!("{name}="))).map(str::to_owned)
}

/// The (sealed) value of a raw `Set-Cookie` header.
pub fn sealed(header: &str) -> String {
    let value = header.split(';').next().unwrap().split_once('=').unwrap().1;
    percent_decode(value)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Logs out through the form on `/user` (with the session's token).
pub async fn log_out<'c>(client: &'c Client) -> LocalResponse<'c> {
    let html = client.get("/user").dispatch().await.into_string().await.unwrap();
    client
        .post("/logout")
        .header(ContentType::Form)
        .body(form(&[("csrf_token", &csrf_in(&html))]))
        .dispatch()
        .await
}

/// Sends `GET /user` carrying exactly this session cookie value.
pub async fn user_page_with<'c>(client: &'c Client, sealed_value: &str) -> LocalResponse<'c> {
    client.get("/user").cookie(Cookie::new("sesija", sealed_value.to_owned())).dispatch().await
}

/// Asserts a 303 to `/login`.
pub fn assert_to_login(res: &LocalResponse<'_>) {
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/login"));
}

/// SQLite's change counter, as seen from `conn`: changes when another
/// connection commits.
pub async fn data_version(conn: &mut SqliteConnection) -> i64 {
    sqlx::query_scalar("PRAGMA data_version").fetch_one(conn).await.unwrap()
}

/// Accounts 0 to 200, for tests of the session layer that give sessions
/// made-up owners: every session belongs to an existing account (a foreign
/// key), so those owners must exist.
pub async fn add_owners(pool: &SqlitePool) {
    sqlx::query(
        "INSERT OR IGNORE INTO users (id, username, password_hash, created_at) \
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
         SELECT i, 'owner' || i, 'x', 0 FROM n",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// The app's database opened as the session-layer tests use it, with
/// accounts 0 to 200 to own their sessions.
pub async fn open_db(data_dir: &Path) -> sesija::storage::Db {
    let db = sesija::storage::Db::open(data_dir).await.unwrap();
    add_owners(&db.writer).await;
    db
}

/// A fresh random cookie key of `len` bytes (32 or 64), base64.
pub fn random_key(len: usize) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Hexadecimal of `bytes`, lower-case.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session of `user_id` created at `now`, live for a minute.
pub fn live_record(user_id: i64, now: i64) -> sesija::session::Record {
    sesija::session::Record {
        handle: sesija::session::new_handle(),
        user_id,
        data: "{}".into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 60,
        ends_at: None,
        persistent: false,
        user_agent: None,
        ip: None,
    }
}

// Second-factor fixtures: codes computed from the secret a page shows.

/// The code of `secret` for the step `offset` steps from now.
pub fn code(secret: &[u8], offset: i64) -> String {
    code_at(secret, wall_now() + offset * 30)
}

/// The code of `secret` at `time` (unix seconds: an app's clock, moved on).
pub fn code_at(secret: &[u8], time: i64) -> String {
    let totp = totp_rs::Builder::new().with_secret(secret.to_vec()).build().unwrap();
    totp.generate(time as u64).to_string()
}

fn wall_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Waits out the last seconds of a 30 s step, so that "this step" and "the
/// step after" stay what they were when a test computed its codes.
pub async fn early_in_step() {
    let into = wall_now() % 30;
    if into >= 26 {
        tokio::time::sleep(std::time::Duration::from_secs((31 - into) as u64)).await;
    }
}

/// [`early_in_step`] for a test without a runtime.
pub fn early_in_step_blocking() {
    let into = wall_now() % 30;
    if into >= 26 {
        std::thread::sleep(std::time::Duration::from_secs((31 - into) as u64));
    }
}

pub fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let at = html.find(start).unwrap_or_else(|| panic!("{start:?} in {html}")) + start.len();
    &html[at..at + html[at..].find(end).unwrap()]
}

pub async fn body(res: LocalResponse<'_>) -> String {
    res.into_string().await.unwrap_or_default()
}

pub async fn post<'c>(client: &'c Client, path: &str, fields: &[(&str, &str)]) -> LocalResponse<'c> {
    client.post(path.to_owned()).header(ContentType::Form).body(form(fields)).dispatch().await
}

/// The session's CSRF token, from a page that has a form.
pub async fn token_of(client: &Client, path: &str) -> String {
    let res = client.get(path.to_owned()).dispatch().await;
    assert_eq!(res.status(), Status::Ok, "{path}");
    csrf_in(&body(res).await)
}

/// Starts the set-up: the secret the page shows (decoded) and the token.
pub async fn start_setup(client: &Client, rd: &str) -> (Vec<u8>, String, String) {
    let token = token_of(client, "/account/2fa").await;
    let res = post(client, "/account/2fa/setup", &[("csrf_token", &token), ("rd", rd)]).await;
    assert_eq!(res.status(), Status::Ok);
    let html = body(res).await;
    assert!(html.contains("<svg"), "an inline QR code");
    assert!(!html.contains("<?xml"));
    let text = between(&html, r#"<code id="secret">"#, "</code>").replace(' ', "");
    let secret = totp_rs::Secret::try_from_base32(&text).unwrap().as_bytes().to_vec();
    assert_eq!(secret.len(), 20);
    let uri = between(&html, r#"<a href="otpauth://totp/sesija:"#, "\"");
    assert!(uri.contains(&format!("secret={text}")) && uri.contains("issuer=sesija"), "{uri}");
    (secret, token, html)
}

/// Sets up 2FA on `client`'s session with the current step's code: the
/// secret and the recovery codes shown.
pub async fn enrol(client: &Client) -> (Vec<u8>, Vec<String>) {
    early_in_step().await;
    let (secret, token, _) = start_setup(client, "").await;
    let res =
        post(client, "/account/2fa/enable", &[("code", &code(&secret, 0)), ("csrf_token", &token)]).await;
    assert_eq!(res.status(), Status::Ok);
    let html = body(res).await;
    let codes: Vec<String> = between(&html, r#"<ul class="codes" id="recovery-codes">"#, "</ul>")
        .split("<code>")
        .skip(1)
        .map(|c| c[..c.find("</code>").unwrap()].to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{html}");
    (secret, codes)
}

/// Several instances of sesija on one PostgreSQL database, each with a
/// data directory of its own: the database, and what every instance shares.
pub struct Installation {
    pub dir: TempDir,
    pub url: String,
    pub key: String,
}

impl Installation {
    /// A fresh database in the test cluster; `None` only when the tests
    /// were told to skip PostgreSQL.
    pub async fn new() -> Option<Installation> {
        let cluster = crate::postgres::cluster()?;
        let url = crate::postgres::fresh_database(&cluster).await;
        Some(Installation { dir: TempDir::new().unwrap(), url, key: random_key(64) })
    }

    pub fn figment(&self, instance: &str) -> Figment {
        figment(&self.dir.path().join(instance))
            .merge(("database_url", &self.url))
            .merge(("secret_key", &self.key))
    }

    /// Another instance of the server (its own data directory).
    pub async fn instance(&self, name: &str) -> Client {
        self.instance_with(name, |f| f).await
    }

    /// [`Installation::instance`], configured further.
    pub async fn instance_with(&self, name: &str, configure: impl FnOnce(Figment) -> Figment) -> Client {
        let figment = configure(self.figment(name));
        Client::tracked(sesija::app(figment).await.expect("starts on PostgreSQL")).await.unwrap()
    }

    pub fn envs(&self) -> [(&'static str, &str); 2] {
        [("ROCKET_DATABASE_URL", &self.url), ("ROCKET_SECRET_KEY", &self.key)]
    }

    pub fn workdir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub async fn add_user(&self, client: &Client, name: &str) {
        let storage = client.rocket().state::<sesija::storage::Storage>().unwrap().clone();
        let hash = sesija::auth::Hasher::default().hash(PASSWORD.into()).await.unwrap();
        sesija::auth::users::create(&storage, name, &hash).await.unwrap();
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }
}
