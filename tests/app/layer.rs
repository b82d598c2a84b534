//! The session layer: storage, cookies, expiry, touch, purge.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rocket::async_trait;
use rocket::http::Status;
use sha2::{Digest, Sha256};

use sesija::session::{
    self, purge, Backend, CookieValue, Ending, Owner, Record, SessionConfig, SessionKey, SessionManager,
    SessionStore, SqliteStore, StoreError, Token, TokenHash, Touch,
};

use crate::conformance::{end, touch};
use crate::helpers::*;

/// What the client's session cookie holds (the local client opens private
/// cookies with the app's key).
fn cookie_of(client: &rocket::local::asynchronous::Client) -> CookieValue {
    CookieValue::decode(client.cookies().get_private("sesija").expect("client holds the cookie").value())
        .unwrap()
}

/// The token inside the client's session cookie.
fn token_of(app: &TestApp) -> Token {
    cookie_of(&app.client).token
}

#[rocket::async_test]
async fn the_database_holds_only_the_token_hash() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let token = token_of(&app);
    let (hash, handle, data): (Vec<u8>, String, String) =
        sqlx::query_as("SELECT token_hash, handle, data FROM sessions")
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    let expected: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    assert_eq!(hash, expected);
    let dump: Vec<u8> = std::fs::read(app.data_dir().join("sesija.db"))
        .into_iter()
        .chain(std::fs::read(app.data_dir().join("sesija.db-wal")))
        .flatten()
        .collect();
    for form in [token.encode(), STANDARD.encode(token.as_bytes())] {
        assert!(!windows(&dump, form.as_bytes()), "token found in the database file");
        assert!(!handle.contains(&form) && !data.contains(&form));
    }
    assert!(!windows(&dump, token.as_bytes()));

    // A leaked hash is not a credential, even sealed with the right key.
    let other = app.other_browser().await;
    for forged in [hex(&hash), STANDARD.encode(&hash)] {
        let res = other.get("/user").private_cookie(("sesija", forged)).dispatch().await;
        assert_to_login(&res);
    }
}

fn windows(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[rocket::async_test]
async fn tokens_are_fresh_random_256_bit_values() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    let mut seen = std::collections::HashSet::new();
    let mut ones = 0u32;
    for _ in 0..20 {
        logged_in(&app.client, "alice", false).await;
        let token = token_of(&app);
        ones += token.as_bytes().iter().map(|b| b.count_ones()).sum::<u32>();
        assert!(seen.insert(token.encode()));
    }
    let share = f64::from(ones) / (20.0 * 256.0);
    assert!((0.4..0.6).contains(&share), "{share}");
}

#[rocket::async_test]
async fn bad_cookies_mean_logged_out_never_an_error() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    let good = sealed(&logged_in(&app.client, "alice", false).await);
    let csrf_value = {
        let browser = app.other_browser().await;
        let page = browser.get("/login").dispatch().await;
        sealed(&set_cookie(&page, "sesija_csrf").unwrap())
    };
    let foreign = {
        let stranger = spawn_app().await;
        stranger.add_user("alice").await;
        sealed(&logged_in(&stranger.client, "alice", false).await)
    };
    let mut flipped = good.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let cases = [
        String::from_utf8(flipped).unwrap(),
        good[..good.len() / 2].to_owned(),
        String::new(),
        STANDARD.encode(vec![7u8; 6000]),
        foreign,
        csrf_value,
    ];
    let other = app.other_browser().await;
    for case in &cases {
        let res = user_page_with(&other, case).await;
        assert_to_login(&res);
    }
    assert_eq!(user_page_with(&other, &good).await.status(), Status::Ok, "the untampered cookie works");
    // A well-sealed cookie holding an unknown token is not honoured, and
    // nothing is created for it: not as a bare token, not under another
    // session's id (the id finds the row, only the token opens it), not
    // under an id that is not a row's.
    let id = cookie_of(&app.client).id;
    for _ in 0..20 {
        let token = Token::generate();
        for value in [
            token.encode(),
            CookieValue::encode(id, &token),
            CookieValue::encode(id + 1, &token),
            format!("0.{}", token.encode()),
            format!("-{id}.{}", token.encode()),
            format!("{id}.{}", token_of(&app).encode().to_lowercase()),
        ] {
            let res = other.get("/user").private_cookie(("sesija", value.clone())).dispatch().await;
            assert_to_login(&res);
        }
    }
    assert_eq!(app.session_rows().await, 1);
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok, "the real one still works");
}

#[rocket::async_test]
async fn a_changed_secret_key_logs_out_quietly() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    let cookie = sealed(&logged_in(&app.client, "alice", false).await);
    let key = random_key(64);
    let rocket = sesija::app(figment(&app.data_dir()).merge(("secret_key", key))).await.unwrap();
    let rekeyed = rocket::local::asynchronous::Client::untracked(rocket).await.unwrap();
    let res = user_page_with(&rekeyed, &cookie).await;
    assert_to_login(&res);
}

#[rocket::async_test]
async fn reads_within_the_touch_interval_write_nothing() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let mut conn = app.conn().await;
    let before = data_version(&mut conn).await;
    for _ in 0..30 {
        assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok);
        assert_eq!(app.client.get("/healthz").dispatch().await.status(), Status::Ok);
    }
    assert_eq!(data_version(&mut conn).await, before);
}

#[rocket::async_test]
async fn touch_moves_the_deadline_once_per_interval_and_sets_no_cookie() {
    let app =
        spawn_app_with(|f| f.merge(("session_touch_interval", 1)).merge(("session_idle_timeout", 100))).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", true).await;
    let other = app.other_browser().await;
    app.add_user("bob").await;
    let bob = login(&other, "bob", PASSWORD, false).await;
    let bob = sealed(&set_cookie(&bob, "sesija").unwrap());
    let db = app.db().await;
    let before: i64 = sqlx::query_scalar("SELECT expires_at FROM sessions ORDER BY id LIMIT 1")
        .fetch_one(&db)
        .await
        .unwrap();

    app.advance(1);
    let res = app.client.get("/user").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert!(set_cookie(&res, "sesija").is_none(), "the cookie already lasts until the absolute deadline");
    // The move may be held back for one flush (about a second), no longer.
    let mut after = before;
    for _ in 0..30 {
        after = sqlx::query_scalar("SELECT expires_at FROM sessions ORDER BY id LIMIT 1")
            .fetch_one(&db)
            .await
            .unwrap();
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after > before, "the new deadline was written");

    // A browser-session cookie is not re-sent when its deadline moves.
    let res = user_page_with(&other, &bob).await;
    assert_eq!(res.status(), Status::Ok);
    assert!(set_cookie(&res, "sesija").is_none());
}

#[rocket::async_test]
async fn an_idle_session_expires_on_the_server() {
    let app =
        spawn_app_with(|f| f.merge(("session_touch_interval", 1)).merge(("session_idle_timeout", 3))).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", true).await;
    app.advance(2);
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok);
    app.advance(2);
    assert_eq!(
        app.client.get("/user").dispatch().await.status(),
        Status::Ok,
        "sliding past the first deadline"
    );
    app.advance(4);
    let res = app.client.get("/user").dispatch().await;
    assert_to_login(&res);
    let page = app.client.get("/login").dispatch().await.into_string().await.unwrap();
    assert!(page.contains("Your session has expired"), "flash shown");
}

#[rocket::async_test]
async fn the_absolute_deadline_holds_whatever_the_activity() {
    let app = spawn_app_with(|f| {
        f.merge(("session_touch_interval", 0))
            .merge(("session_idle_timeout", 3))
            .merge(("session_absolute_timeout", 3))
    })
    .await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let created: i64 =
        sqlx::query_scalar("SELECT created_at FROM sessions").fetch_one(&app.db().await).await.unwrap();
    let mut last = Status::Ok;
    for _ in 0..5 {
        app.advance(1);
        last = app.client.get("/user").dispatch().await.status();
        let expires: Option<i64> = sqlx::query_scalar("SELECT expires_at FROM sessions")
            .fetch_optional(&app.db().await)
            .await
            .unwrap();
        assert!(expires.is_none_or(|e| e <= created + 3));
    }
    assert_eq!(last, Status::SeeOther);
}

#[rocket::async_test]
async fn an_expired_row_is_never_honoured_even_before_the_purge() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    sqlx::query("UPDATE sessions SET expires_at = strftime('%s','now') - 1")
        .execute(&app.db().await)
        .await
        .unwrap();
    assert_to_login(&app.client.get("/user").dispatch().await);
    assert_eq!(app.session_rows().await, 1, "still there: correctness does not wait for the purge");
}

async fn seed(pool: &sqlx::SqlitePool, expired: usize, live: usize) {
    add_owners(pool).await;
    let now = session::now();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..expired + live {
        let expires = if i < expired { now - 10 } else { now + 3600 };
        sqlx::query(
            "INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at) \
             VALUES (?, ?, 1, ?, ?, ?)",
        )
        .bind(Token::generate().hash().0.to_vec())
        .bind(session::new_handle())
        .bind(now - 100)
        .bind(now - 100)
        .bind(expires)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

#[rocket::async_test]
async fn purge_removes_expired_rows_in_batches_of_at_most_1000() {
    let app = spawn_app().await;
    // The app's own purge runs once at launch: let it finish first, so
    // that it cannot take a share of the rows seeded below.
    let manager = app.client.rocket().state::<Arc<session::SessionManager>>().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while manager.stats().purge_runs.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the launch purge ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let db = app.db().await;
    seed(&db, 2500, 10).await;
    let store = SqliteStore::new(db.clone(), db.clone());
    let report = session::purge_expired(&store, session::now()).await.unwrap();
    assert_eq!(report.removed, 2500);
    const { assert!(session::PURGE_BATCH <= 1000) };
    assert_eq!(report.batches, 2500 / session::PURGE_BATCH + 1);
    assert_eq!(app.session_rows().await, 10);

    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as("EXPLAIN QUERY PLAN SELECT rowid FROM sessions WHERE expires_at <= 5 LIMIT 1000")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(plan.iter().any(|p| p.3.contains("INDEX sessions_expires_at")), "{plan:?}");
}

#[rocket::async_test]
async fn the_purge_task_runs_at_launch_and_on_its_interval() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let db = open_db(&data).await;
    seed(&db.writer, 1500, 5).await;
    let rocket = sesija::app(figment(&data).merge(("session_purge_interval", 1))).await.unwrap();
    let client = rocket::local::asynchronous::Client::tracked(rocket).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions").fetch_one(&db.reader).await.unwrap()
    };
    for _ in 0..50 {
        if count().await == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count().await, 5, "purged at launch");
    seed(&db.writer, 30, 0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count().await != 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count().await, 5, "purged again on the interval");
    let started = std::time::Instant::now();
    client.terminate().await;
    assert!(started.elapsed() < Duration::from_secs(3), "the task stops at shutdown");
}

/// A store that counts look-ups and purges, fails the first `failures`
/// purges, and can hold look-ups at a gate.
pub struct Instrumented {
    pub inner: SqliteStore,
    pub failures: AtomicU32,
    /// Deadline moves that fail (the database busy) before one succeeds.
    pub touch_failures: Arc<AtomicU32>,
    pub calls: Arc<AtomicU32>,
    pub loads: Arc<AtomicU32>,
    /// When set, every look-up waits for a permit after reading the database.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Look-ups that have read the database and wait at the gate.
    pub at_gate: Arc<AtomicU32>,
}

impl Instrumented {
    pub fn new(db: &sesija::storage::Db, failures: u32) -> Instrumented {
        Instrumented {
            inner: SqliteStore::new(db.reader.clone(), db.writer.clone()),
            failures: AtomicU32::new(failures),
            touch_failures: Arc::default(),
            calls: Arc::default(),
            loads: Arc::default(),
            gate: None,
            at_gate: Arc::default(),
        }
    }
}

#[async_trait]
impl SessionStore for Instrumented {
    async fn create(&self, h: &TokenHash, r: &Record, old: Option<&SessionKey>) -> Result<i64, StoreError> {
        self.inner.create(h, r, old).await
    }
    async fn load(&self, h: &SessionKey, now: i64) -> Result<Option<Record>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.load(h, now).await;
        if let Some(gate) = &self.gate {
            self.at_gate.fetch_add(1, Ordering::SeqCst);
            let _ = gate.acquire().await.unwrap();
        }
        found
    }
    async fn touch(&self, touches: &[Touch], now: i64) -> Result<u64, StoreError> {
        if self.touch_failures.load(Ordering::SeqCst) > 0 {
            self.touch_failures.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("database is locked".into()));
        }
        self.inner.touch(touches, now).await
    }
    async fn save_data(&self, h: &SessionKey, data: &str, now: i64) -> Result<bool, StoreError> {
        self.inner.save_data(h, data, now).await
    }
    async fn rotate(&self, old: &SessionKey, new: &TokenHash, now: i64) -> Result<bool, StoreError> {
        self.inner.rotate(old, new, now).await
    }
    async fn end(&self, which: Ending<'_>) -> Result<u64, StoreError> {
        if let Ending::Expired { .. } = which {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::Unavailable("database is locked".into()));
            }
        }
        self.inner.end(which).await
    }
    async fn list(&self, whose: Owner, now: i64) -> Result<Vec<Record>, StoreError> {
        self.inner.list(whose, now).await
    }
    async fn flush(&self) -> Result<u64, StoreError> {
        self.inner.flush().await
    }
    async fn invalidate(&self) {
        self.inner.invalidate().await;
    }
    fn backend(&self) -> &dyn Backend {
        self.inner.backend()
    }
}

#[rocket::async_test]
async fn the_purge_task_survives_database_errors_and_stops_on_shutdown() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    seed(&db.writer, 20, 2).await;
    let store = Instrumented::new(&db, 2);
    let calls = store.calls.clone();
    let config = SessionConfig { purge_interval: Duration::from_millis(100), ..SessionConfig::default() };
    let manager = Arc::new(SessionManager::new(store, config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(purge::run(manager, async move {
        let _ = stopped.await;
    }));
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions").fetch_one(&db.reader).await.unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (rows().await != 2 || calls.load(Ordering::SeqCst) < 3) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows().await, 2, "a later round succeeded after two failures");
    assert!(calls.load(Ordering::SeqCst) >= 3);
    stop.send(()).unwrap();
    let rounds = tokio::time::timeout(Duration::from_secs(1), task).await.expect("stops promptly").unwrap();
    assert!(rounds >= 3);
}

#[rocket::async_test]
async fn writes_after_a_concurrent_logout_never_resurrect_the_session() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    let store = SqliteStore::new(db.reader.clone(), db.writer.clone());
    let token = Token::generate();
    let now = session::now();
    let record = live_record(1, now);
    let key =
        SessionKey { id: store.create(&token.hash(), &record, None).await.unwrap(), hash: token.hash() };
    // A request loaded it...
    assert!(store.load(&key, now).await.unwrap().is_some());
    // ...another logged out...
    assert!(end(&store, &key).await);
    // ...and the first one's writes find nothing to write to.
    assert!(!touch(&store, &key, now, now + 60, now).await);
    assert!(!store.save_data(&key, r#"{"a":1}"#, now).await.unwrap());
    assert!(!store.rotate(&key, &Token::generate().hash(), now).await.unwrap());
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&db.reader).await.unwrap();
    assert_eq!(rows, 0);
}

#[rocket::async_test]
async fn concurrent_logins_never_see_database_is_locked() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    // Two stores on separate pools, as two processes would be.
    let other = open_db(&dir.path().join("data")).await;
    let stores = [
        Arc::new(SqliteStore::new(db.reader.clone(), db.writer.clone())),
        Arc::new(SqliteStore::new(other.reader.clone(), other.writer.clone())),
    ];
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut previous: Option<SessionKey> = None;
            for _ in 0..40 {
                let hash = Token::generate().hash();
                let now = session::now();
                let record = live_record(t as i64, now);
                let key = SessionKey { id: store.create(&hash, &record, previous.as_ref()).await?, hash };
                store.load(&key, now).await?;
                previous = Some(key);
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("no store error under contention");
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&db.reader).await.unwrap();
    assert_eq!(rows, 16);
}

#[rocket::async_test]
async fn pragmas_are_set_for_durability_and_concurrency() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&db.writer).await.unwrap();
    assert_eq!(mode, "wal");
    for (pool, name) in [(&db.writer, "writer"), (&db.reader, "reader")] {
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
        assert_eq!(sync, 2, "{name}: synchronous = FULL");
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(pool).await.unwrap();
        assert_eq!(busy, 5000, "{name}");
    }
}

#[rocket::async_test]
async fn healthz_answers_ok_and_503_without_a_database() {
    let app = spawn_app().await;
    let res = app.client.get("/healthz").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.into_string().await.unwrap(), "ok");
    app.client.rocket().state::<sesija::storage::Storage>().unwrap().close().await;
    assert_eq!(app.client.get("/healthz").dispatch().await.status(), Status::ServiceUnavailable);
}

#[rocket::async_test]
async fn a_database_failure_during_a_request_is_a_503_page() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    app.client.rocket().state::<sesija::storage::Storage>().unwrap().close().await;
    let res = app.client.get("/user").dispatch().await;
    assert_eq!(res.status(), Status::ServiceUnavailable);
    let html = res.into_string().await.unwrap();
    assert!(html.contains("Try again") && !html.contains("sqlite") && !html.contains("sesija.db"), "{html}");
}

mod plain_app {
    use rocket::{get, post};
    use sesija::session::{Session, SessionError, Sessions};

    #[get("/free")]
    pub fn free() -> &'static str {
        "free"
    }

    #[get("/mine")]
    pub fn mine(session: Session<'_>) -> String {
        session.user_id().to_string()
    }

    #[get("/twice")]
    pub fn twice(a: Session<'_>, b: Session<'_>) -> String {
        format!("{} {}", a.user_id(), b.user_id())
    }

    #[post("/start")]
    pub async fn start(sessions: Sessions<'_>) -> Result<&'static str, SessionError> {
        let session = sessions.start(7, false, Default::default()).await?;
        session.insert("colour", "green").await?;
        Ok("started")
    }
}

#[rocket::async_test]
async fn the_layer_queries_only_for_handlers_that_ask_and_once_per_request() {
    use rocket::local::asynchronous::Client;
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    let store = Instrumented::new(&db, 0);
    let loads = store.loads.clone();
    let key = random_key(64);
    let figment_with_key =
        || rocket::Config::figment().merge(("secret_key", key.clone())).merge(("log_level", "off"));
    let rocket = rocket::custom(figment_with_key())
        .attach(sesija::session::SessionLayer::new(store, SessionConfig::default()))
        .mount("/", rocket::routes![plain_app::free, plain_app::mine, plain_app::twice, plain_app::start]);
    let client = Client::tracked(rocket).await.unwrap();

    assert_eq!(client.post("/start").dispatch().await.status(), Status::Ok);
    assert_eq!(client.get("/free").dispatch().await.into_string().await.unwrap(), "free");
    assert_eq!(loads.load(Ordering::SeqCst), 0, "no guard, no query");
    assert_eq!(client.get("/mine").dispatch().await.into_string().await.unwrap(), "7");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(client.get("/twice").dispatch().await.into_string().await.unwrap(), "7 7");
    assert_eq!(loads.load(Ordering::SeqCst), 2, "one look-up per request, however many guards");

    // Cookies that do not open cost no query either.
    let mut store = Instrumented::new(&db, 0);
    store.loads = loads.clone();
    let other = Client::untracked(
        rocket::custom(figment_with_key())
            .attach(sesija::session::SessionLayer::new(store, SessionConfig::default()))
            .mount("/", rocket::routes![plain_app::mine]),
    )
    .await
    .unwrap();
    let before = loads.load(Ordering::SeqCst);
    for junk in ["", "garbage", "AAAA"] {
        let res = other.get("/mine").cookie(rocket::http::Cookie::new("sesija", junk)).dispatch().await;
        assert_eq!(res.status(), Status::Unauthorized);
    }
    assert_eq!(loads.load(Ordering::SeqCst), before);
}

#[rocket::async_test]
async fn login_records_the_user_agent_and_client_ip() {
    use rocket::http::Header;
    let app = spawn_app().await;
    app.add_user("alice").await;
    let ua = Header::new("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0");
    let res = login_from(&app.client, "alice", ua, Some("192.0.2.7:5555".parse().unwrap())).await;
    assert_eq!(res.status(), Status::SeeOther);
    let (ua, ip): (String, String) =
        sqlx::query_as("SELECT user_agent, ip FROM sessions").fetch_one(&app.db().await).await.unwrap();
    assert_eq!(ua, "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0");
    assert_eq!(ip, "192.0.2.7");
}

#[rocket::async_test]
async fn undecodable_session_data_is_dropped_not_fatal() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    sqlx::query("UPDATE sessions SET data = 'not json {'").execute(&app.db().await).await.unwrap();
    let res = app.client.get("/user").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    let data: String =
        sqlx::query_scalar("SELECT data FROM sessions").fetch_one(&app.db().await).await.unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&data).is_ok(), "rewritten as valid data: {data}");
}

#[rocket::async_test]
async fn a_token_in_the_url_is_never_a_session() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    let cookie = sealed(&logged_in(&app.client, "alice", false).await);
    let token = app.client.cookies().get_private("sesija").unwrap().value().to_owned();
    let stranger = app.other_browser().await;
    for uri in [format!("/user?sesija={}", urlencode(&cookie)), format!("/user?sesija={token}")] {
        assert_to_login(&stranger.get(uri).dispatch().await);
    }
}

#[rocket::async_test]
async fn database_writes_run_below_page_views() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    sqlx::query("SELECT 1").execute(&db.writer).await.unwrap();
    let found = sesija::niceness::niceness_of_threads_named(sesija::storage::WRITER_THREAD);
    assert!(!found.is_empty(), "the writer's thread is named");
    assert!(found.iter().all(|n| *n == sesija::niceness::BACKGROUND_NICENESS), "{found:?}");
    let readers = sesija::niceness::niceness_of_threads_named("sqlx-sqlite-wor");
    assert!(readers.iter().all(|n| *n == 0), "readers serve page views at normal priority: {readers:?}");
}

/// A database at schema version 2, whose cookies held a bare token, with
/// one live session of alice's; returns the token that version put in her
/// cookie.
async fn version_2_database(data: &std::path::Path) -> Token {
    std::fs::create_dir_all(data).unwrap();
    let migrations = tempfile::TempDir::new().unwrap();
    for file in ["0001_users.sql", "0002_sessions.sql"] {
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite").join(file);
        std::fs::copy(from, migrations.path().join(file)).unwrap();
    }
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("sesija.db")).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(migrations.path()).await.unwrap().run(&pool).await.unwrap();
    let now = session::now();
    let password_hash = sesija::auth::Hasher::default().hash(PASSWORD.into()).await.unwrap();
    sqlx::query("INSERT INTO users (username, password_hash, created_at) VALUES ('alice', ?, ?)")
        .bind(password_hash)
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    let token = Token::generate();
    sqlx::query(
        "INSERT INTO sessions (token_hash, handle, user_id, data, created_at, last_seen_at, expires_at) \
         VALUES (?, 'old-handle', 1, '{\"user\":\"alice\"}', ?, ?, ?)",
    )
    .bind(&token.hash().0[..])
    .bind(now)
    .bind(now)
    .bind(now + 3600)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    token
}

/// Cookies carry the row id since schema 3; the rows from before it were
/// a format no release shipped. The upgrade ends any left: the bare token's
/// cookie opens nothing (and answers no error), the row is gone, a new
/// login works.
#[rocket::async_test]
async fn sessions_from_before_cookies_carried_the_id_end_at_the_upgrade() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let token = version_2_database(&data).await;
    let rocket = sesija::app(figment(&data)).await.unwrap();
    let client = rocket::local::asynchronous::Client::tracked(rocket).await.unwrap();

    let res = client.get("/user").private_cookie(("sesija", token.encode())).dispatch().await;
    assert_to_login(&res);
    drop(res);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE handle = 'old-handle'")
        .fetch_one(&client_db(&data).await)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    logged_in(&client, "alice", false).await;
    assert_eq!(client.get("/user").dispatch().await.status(), Status::Ok);
}

/// A login waiting for its code, stored by the release before sessions had
/// a hard end, ends at the upgrade's default timeout: its row gets the end
/// and a deadline no later than it, so the purge removes it then; other
/// sessions keep theirs.
#[rocket::async_test]
async fn the_upgrade_ends_logins_that_were_waiting_for_their_code() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let migrations = tempfile::TempDir::new().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for file in std::fs::read_dir(&shipped).unwrap().map(|e| e.unwrap().file_name()) {
        if file.to_string_lossy().as_ref() < "0006" {
            std::fs::copy(shipped.join(&file), migrations.path().join(&file)).unwrap();
        }
    }
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("sesija.db")).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(migrations.path()).await.unwrap().run(&pool).await.unwrap();
    let now = session::now();
    sqlx::query("INSERT INTO users (username, password_hash, created_at) VALUES ('alice', 'x', ?)")
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    for (handle, data) in
        [("waiting", r#"{"csrf":"t","auth_at":1,"factor":"pending"}"#), ("in", r#"{"csrf":"t"}"#)]
    {
        sqlx::query(
            "INSERT INTO sessions (token_hash, handle, user_id, data, created_at, last_seen_at, expires_at) \
             VALUES (?, ?, 1, ?, ?, ?, ?)",
        )
        .bind(&Token::generate().hash().0[..])
        .bind(handle)
        .bind(data)
        .bind(now - 100)
        .bind(now - 100)
        .bind(now + 5 * 86_400)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let rocket = sesija::app(figment(&data)).await.unwrap();
    let _client = rocket::local::asynchronous::Client::tracked(rocket).await.unwrap();
    let rows: Vec<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT handle, expires_at, ends_at FROM sessions ORDER BY handle")
            .fetch_all(&client_db(&data).await)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [("in".into(), now + 5 * 86_400, None), ("waiting".into(), now - 100 + 300, Some(now - 100 + 300))]
    );
}

async fn client_db(data: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("sesija.db"));
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}
