//! The session cache: what it saves, and every way a change still counts on
//! the very next request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rocket::http::Status;
use tokio::sync::Semaphore;

use sesija::session::{
    self, CachingStore, Ending, Record, SessionKey, SessionStore, SqliteStore, Token, Touch, FLUSH_MARGIN,
};

use crate::conformance::{end, touch};
use crate::helpers::live_record;
use crate::helpers::*;
use crate::layer::Instrumented;

async fn temp_db() -> (tempfile::TempDir, sesija::storage::Db) {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    (dir, db)
}

fn cached(db: &sesija::storage::Db, capacity: usize) -> CachingStore<SqliteStore> {
    CachingStore::new(SqliteStore::new(db.reader.clone(), db.writer.clone()), capacity)
}

/// Creates a session with a fresh token; returns its key.
async fn create(store: &dyn SessionStore, record: &Record, replaces: Option<&SessionKey>) -> SessionKey {
    let hash = Token::generate().hash();
    SessionKey { id: store.create(&hash, record, replaces).await.unwrap(), hash }
}

/// A key nobody holds: a real row's id with a token that is not its.
fn stranger(key: &SessionKey) -> SessionKey {
    SessionKey { id: key.id, hash: Token::generate().hash() }
}

async fn stored_expiry(db: &sesija::storage::Db, key: &SessionKey) -> Option<i64> {
    sqlx::query_scalar("SELECT expires_at FROM sessions WHERE id = ? AND token_hash = ?")
        .bind(key.id)
        .bind(&key.hash.0[..])
        .fetch_optional(&db.reader)
        .await
        .unwrap()
}

#[rocket::async_test]
async fn a_cached_session_is_read_from_the_database_once() {
    let (_dir, db) = temp_db().await;
    let inner = Instrumented::new(&db, 0);
    let loads = inner.loads.clone();
    let store = CachingStore::new(inner, 100);
    let now = session::now();
    let token = create(&store, &live_record(1, now), None).await;
    for _ in 0..10 {
        assert_eq!(store.load(&token, now).await.unwrap().unwrap().user_id, 1);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(store.hit_miss(), (9, 1));
    // A token nobody holds is asked for every time (and never cached).
    for _ in 0..3 {
        assert!(store.load(&stranger(&token), now).await.unwrap().is_none());
    }
    assert_eq!(loads.load(Ordering::SeqCst), 4);
}

#[rocket::async_test]
async fn every_write_through_the_cache_counts_at_once() {
    let (_dir, db) = temp_db().await;
    let store = cached(&db, 100);
    let now = session::now();
    let mut tokens = Vec::new();
    let mut records = Vec::new();
    for i in 0..6 {
        let record = live_record(if i < 3 { 1 } else { 2 }, now);
        let token = create(&store, &record, None).await;
        assert!(store.load(&token, now).await.unwrap().is_some(), "cached");
        tokens.push(token);
        records.push(record);
    }
    let load = |i: usize| store.load(&tokens[i], now);

    assert!(store.save_data(&tokens[0], r#"{"k":1}"#, now).await.unwrap());
    assert_eq!(load(0).await.unwrap().unwrap().data, r#"{"k":1}"#);
    let rotated = SessionKey { id: tokens[0].id, hash: Token::generate().hash() };
    assert!(store.rotate(&tokens[0], &rotated.hash, now).await.unwrap());
    assert!(load(0).await.unwrap().is_none(), "the old token is dead at once");
    assert!(store.load(&rotated, now).await.unwrap().is_some());
    assert!(end(&store, &tokens[1]).await);
    assert!(load(1).await.unwrap().is_none());
    assert_eq!(store.end(Ending::Handle { handle: &records[2].handle, owner: Some(1) }).await.unwrap(), 1);
    assert!(load(2).await.unwrap().is_none());
    assert_eq!(store.end(Ending::OwnedBy { user_id: 2, keep: Some(&records[3].handle) }).await.unwrap(), 2);
    assert!(load(3).await.unwrap().is_some(), "the kept one");
    assert!(load(4).await.unwrap().is_none() && load(5).await.unwrap().is_none());
    let replacement = create(&store, &live_record(2, now), Some(&tokens[3])).await;
    assert!(load(3).await.unwrap().is_none(), "a login replaces the session held before");
    store.end(Ending::All).await.unwrap();
    assert!(store.load(&rotated, now).await.unwrap().is_none());
    assert!(store.load(&replacement, now).await.unwrap().is_none());
}

#[rocket::async_test]
async fn a_cached_session_is_never_honoured_past_its_deadline() {
    let (_dir, db) = temp_db().await;
    let store = cached(&db, 100);
    let now = session::now();
    let token = create(&store, &live_record(1, now), None).await;
    assert!(store.load(&token, now).await.unwrap().is_some());
    assert!(store.load(&token, now + 59).await.unwrap().is_some());
    assert!(store.load(&token, now + 60).await.unwrap().is_none());
}

#[rocket::async_test]
async fn a_look_up_that_read_before_a_logout_cannot_put_the_session_back() {
    let (_dir, db) = temp_db().await;
    let gate = Arc::new(Semaphore::new(0));
    let mut inner = Instrumented::new(&db, 0);
    inner.gate = Some(gate.clone());
    let at_gate = inner.at_gate.clone();
    let store = Arc::new(CachingStore::new(inner, 100));
    let now = session::now();
    let token = create(&*store, &live_record(1, now), None).await;

    // A request reads the row, and is held before it can fill the cache...
    let slow = tokio::spawn({
        let store = store.clone();
        async move { store.load(&token, now).await.unwrap() }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while at_gate.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the look-up reached the gate");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...a logout commits meanwhile...
    assert!(end(&*store, &token).await);
    gate.add_permits(100);
    // ...the slow request still saw its session (it started first)...
    assert!(slow.await.unwrap().is_some());
    // ...but the next request does not.
    assert!(store.load(&token, now).await.unwrap().is_none());
    assert!(store.is_empty());
}

#[rocket::async_test]
async fn the_cache_never_holds_more_than_its_capacity() {
    let (_dir, db) = temp_db().await;
    let store = cached(&db, 10);
    let now = session::now();
    let mut tokens = Vec::new();
    for _ in 0..50 {
        let token = create(&store, &live_record(1, now), None).await;
        assert!(store.load(&token, now).await.unwrap().is_some());
        assert!(store.len() <= 10);
        tokens.push(token);
    }
    assert_eq!(store.len(), 10);
    for token in &tokens {
        assert!(store.load(token, now).await.unwrap().is_some(), "evicted ones are read again");
    }
}

#[rocket::async_test]
async fn deadline_moves_of_cached_sessions_are_written_in_one_batch() {
    let (_dir, db) = temp_db().await;
    let store = cached(&db, 100);
    let now = session::now();
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let token = create(&store, &live_record(1, now), None).await;
        store.load(&token, now).await.unwrap();
        tokens.push(token);
    }
    for token in &tokens {
        assert!(touch(&store, token, now + 1, now + 61, now + 1).await);
        assert_eq!(store.load(token, now + 1).await.unwrap().unwrap().expires_at, now + 61);
    }
    assert_eq!(stored_expiry(&db, &tokens[0]).await, Some(now + 60), "held back");
    assert_eq!(store.flush().await.unwrap(), 20);
    for token in &tokens {
        assert_eq!(stored_expiry(&db, token).await, Some(now + 61));
    }
    assert_eq!(store.flush().await.unwrap(), 0, "nothing left to write");

    // A held-back move never brings back a session ended before the flush.
    touch(&store, &tokens[0], now + 2, now + 62, now + 2).await;
    assert!(end(&store, &tokens[0]).await);
    store.flush().await.unwrap();
    assert_eq!(stored_expiry(&db, &tokens[0]).await, None);
}

#[rocket::async_test]
async fn a_move_close_to_the_stored_deadline_is_written_at_once() {
    let (_dir, db) = temp_db().await;
    let store = cached(&db, 100);
    let now = session::now();
    let token = create(&store, &live_record(1, now), None).await;
    store.load(&token, now).await.unwrap();
    let late = now + 60 - FLUSH_MARGIN;
    assert!(touch(&store, &token, late, late + 60, late).await);
    assert_eq!(stored_expiry(&db, &token).await, Some(late + 60), "no purge can beat the flush");
}

/// A held-back move was made while its session was live: written late (a
/// flush after the stored deadline, a busy or unreachable database), or
/// overtaken by a move due at once, it still counts, and the session it
/// kept alive is not ended by the deadline it pushed back.
#[rocket::async_test]
async fn a_held_back_move_counts_however_late_it_is_written() {
    let (_dir, db) = temp_db().await;
    let store = cached(&db, 100);
    // Stored deadlines already past by the wall clock when the moves are
    // written.
    let base = session::now() - 1_000;
    let late_flush = create(&store, &live_record(1, base), None).await;
    let overtaken = create(&store, &live_record(1, base), None).await;
    for token in [&late_flush, &overtaken] {
        store.load(token, base).await.unwrap();
        assert!(touch(&store, token, base + 1, base + 200, base + 1).await, "held back");
        assert_eq!(stored_expiry(&db, token).await, Some(base + 60));
    }
    // A move due at once (the stored deadline is past), before any flush.
    assert!(touch(&store, &overtaken, base + 100, base + 300, base + 100).await, "still live");
    assert_eq!(stored_expiry(&db, &overtaken).await, Some(base + 300));
    assert_eq!(store.flush().await.unwrap(), 1);
    assert_eq!(stored_expiry(&db, &late_flush).await, Some(base + 200), "written as of when it was made");

    // The database busy when the held move is to go first: it is kept for
    // the next try, not lost (which would leave the stale deadline to end
    // the session at the next move).
    let inner = Instrumented::new(&db, 0);
    let failing = inner.touch_failures.clone();
    let store = CachingStore::new(inner, 100);
    let token = create(&store, &live_record(1, base), None).await;
    store.load(&token, base).await.unwrap();
    assert!(touch(&store, &token, base + 1, base + 200, base + 1).await, "held back");
    failing.store(1, std::sync::atomic::Ordering::SeqCst);
    let due = Touch { key: token, last_seen_at: base + 100, expires_at: base + 300 };
    assert!(store.touch(&[due], base + 100).await.is_err(), "the database is busy");
    let due = Touch { key: token, last_seen_at: base + 101, expires_at: base + 301 };
    assert_eq!(store.touch(&[due], base + 101).await.unwrap(), 1, "still live at the next try");
    assert_eq!(stored_expiry(&db, &token).await, Some(base + 301));
}

#[rocket::async_test]
async fn the_purge_forgets_the_cached_sessions_it_removed() {
    let (_dir, db) = temp_db().await;
    let store = cached(&db, 100);
    let now = session::now();
    let token = create(&store, &live_record(1, now), None).await;
    store.load(&token, now).await.unwrap();
    // A held-back move that never reached the database (its flush failed).
    touch(&store, &token, now + 1, now + 100, now + 1).await;
    assert_eq!(store.end(Ending::Expired { now: now + 60, limit: 1000 }).await.unwrap(), 1);
    assert!(store.load(&token, now + 61).await.unwrap().is_none());
    let touches = [Touch { key: token, last_seen_at: now + 1, expires_at: now + 100 }];
    assert_eq!(store.touch(&touches, now + 61).await.unwrap(), 0, "nothing to bring back");
}

#[rocket::async_test]
async fn changes_from_a_second_server_count_on_the_first_ones_next_request() {
    // `other_browser` is a second server on the same data directory: it runs
    // without a cache and tells the first one of each change.
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    for _ in 0..3 {
        assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok, "cache warm");
    }
    let other = app.other_browser().await;
    logged_in(&other, "alice", false).await;
    let page = other.get("/sessions").dispatch().await.into_string().await.unwrap();
    let token = csrf_in(&page);
    let res = other
        .post("/sessions/revoke-others")
        .header(rocket::http::ContentType::Form)
        .body(form(&[("csrf_token", &token)]))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_to_login(&app.client.get("/user").dispatch().await);
}

#[rocket::async_test]
async fn changes_behind_the_servers_back_count_once_it_is_told_over_the_control_socket() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok);
    sqlx::query("DELETE FROM sessions").execute(&app.db().await).await.unwrap();
    assert_eq!(
        app.client.get("/user").dispatch().await.status(),
        Status::Ok,
        "a raw delete is not seen by the cache until announced"
    );
    let socket = app.data_dir().join(sesija::control::SOCKET_NAME);
    let told = sesija::control::notify(&socket).await.unwrap();
    assert_eq!(told, sesija::control::Notified::Server);
    assert_to_login(&app.client.get("/user").dispatch().await);
}

#[rocket::async_test]
async fn with_the_cache_off_every_request_reads_the_database() {
    let app = spawn_app_with(|f| f.merge(("session_cache_capacity", 0))).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok);
    sqlx::query("DELETE FROM sessions").execute(&app.db().await).await.unwrap();
    assert_to_login(&app.client.get("/user").dispatch().await);
}

#[rocket::async_test]
async fn concurrent_look_ups_each_get_their_own_session() {
    // SqliteStore answers look-ups that arrive together with one query.
    let (_dir, db) = temp_db().await;
    let store = Arc::new(SqliteStore::new(db.reader.clone(), db.writer.clone()));
    let now = session::now();
    let mut cases = Vec::new();
    for i in 0..150 {
        let mut record = live_record(i, now);
        if i % 3 == 0 {
            record.expires_at = now; // not live at `now`
        }
        let token = create(&*store, &record, None).await;
        cases.push((token, (i % 3 != 0).then_some(i)));
    }
    for i in 0..50 {
        cases.push((stranger(&cases[i].0), None));
    }
    let doubled: Vec<_> = cases.iter().chain(cases.iter()).cloned().collect();
    let looked_up = rocket::futures::future::join_all(doubled.iter().map(|(hash, _)| {
        let store = store.clone();
        let hash = *hash;
        async move { store.load(&hash, now).await.unwrap().map(|r| r.user_id) }
    }))
    .await;
    for ((_, expected), got) in doubled.iter().zip(looked_up) {
        assert_eq!(*expected, got);
    }
}

#[rocket::async_test]
async fn held_back_deadline_moves_are_written_at_shutdown() {
    use sesija::session::{purge, SessionConfig, SessionManager};
    let (_dir, db) = temp_db().await;
    let config = SessionConfig { purge_interval: Duration::from_secs(3600), ..SessionConfig::default() };
    let manager = Arc::new(SessionManager::new(cached(&db, 100), config));
    let now = session::now();
    let store = manager.store();
    let token = create(store, &live_record(1, now), None).await;
    store.load(&token, now).await.unwrap();
    assert!(touch(store, &token, now + 1, now + 61, now + 1).await);
    assert_eq!(stored_expiry(&db, &token).await, Some(now + 60), "held back");
    // Shut down before the first one-second flush is due.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(purge::run(manager.clone(), async move {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(stored_expiry(&db, &token).await, Some(now + 61));
}
