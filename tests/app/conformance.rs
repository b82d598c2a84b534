//! The store conformance suite: every rule the session layer relies on from
//! a [`SessionStore`], run against each implementation (SQLite and
//! PostgreSQL, the cache in front of each, with room and with room for one,
//! the peer server's notifying store, and the whole store of an instance on
//! PostgreSQL). A new backend proves itself by adding one `conformance!`
//! line below.
//!
//! Each rule is a function over `&dyn SessionStore` whose sessions belong
//! to accounts 1, 2 and 3; `conformance!` makes one test per rule and
//! backend, so a failure names both.

use sesija::session::{
    self, CachingStore, Ending, Owner, PgStore, Record, SessionKey, SessionStore, SqliteStore, Token, Touch,
};

use crate::helpers::open_db;

/// A store under test, and whatever must live as long as it (its files).
pub struct Subject {
    pub store: Box<dyn SessionStore>,
    _keep: Box<dyn std::any::Any>,
}

async fn sqlite_db() -> (tempfile::TempDir, sesija::storage::Db) {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open_db(&dir.path().join("data")).await;
    (dir, db)
}

pub async fn sqlite() -> Option<Subject> {
    let (dir, db) = sqlite_db().await;
    Some(Subject { store: Box::new(SqliteStore::new(db.reader, db.writer)), _keep: Box::new(dir) })
}

pub async fn cached_sqlite() -> Option<Subject> {
    let (dir, db) = sqlite_db().await;
    let store = CachingStore::new(SqliteStore::new(db.reader, db.writer), 100);
    Some(Subject { store: Box::new(store), _keep: Box::new(dir) })
}

/// A cache with room for one session: entries make room for others all the time.
pub async fn crowded_cache_sqlite() -> Option<Subject> {
    let (dir, db) = sqlite_db().await;
    let store = CachingStore::new(SqliteStore::new(db.reader, db.writer), 1);
    Some(Subject { store: Box::new(store), _keep: Box::new(dir) })
}

/// A second server's store: writes through, then tells the first (here no
/// server listens, which it must take in its stride).
pub async fn notifying_sqlite() -> Option<Subject> {
    let (dir, db) = sqlite_db().await;
    let socket = dir.path().join("data/control.sock");
    let store = sesija::session::NotifyingStore::new(
        SqliteStore::new(db.reader, db.writer),
        std::sync::Arc::new(sesija::control::OwnerSocket(socket)),
    );
    Some(Subject { store: Box::new(store), _keep: Box::new(dir) })
}

pub async fn postgres() -> Option<Subject> {
    let pool = crate::postgres::open_db(&crate::postgres::cluster()?).await;
    Some(Subject { store: Box::new(PgStore::new(pool)), _keep: Box::new(()) })
}

pub async fn cached_postgres() -> Option<Subject> {
    let pool = crate::postgres::open_db(&crate::postgres::cluster()?).await;
    Some(Subject { store: Box::new(CachingStore::new(PgStore::new(pool), 100)), _keep: Box::new(()) })
}

/// The store an instance on PostgreSQL runs: the cache, trusted only while
/// this instance hears the others' announcements, behind the barrier that
/// makes every change count on every instance before it returns.
pub async fn instance_postgres() -> Option<Subject> {
    let pool = crate::postgres::open_db(&crate::postgres::cluster()?).await;
    let coherence = session::Coherence::start(pool.clone(), &[]).await.unwrap();
    let cache = CachingStore::new(PgStore::new(pool), 100).gated(coherence.trust());
    coherence.forgets(cache.handle());
    let store = sesija::session::NotifyingStore::new(cache, coherence);
    Some(Subject { store: Box::new(store), _keep: Box::new(()) })
}

/// A session of `user_id` created at `now`, ending `expires_in` seconds
/// later, with a user agent and an address (so they round-trip too).
fn record(user_id: i64, now: i64, expires_in: i64) -> Record {
    Record {
        expires_at: now + expires_in,
        user_agent: Some("test agent".into()),
        ip: Some("192.0.2.1".into()),
        ..crate::helpers::live_record(user_id, now)
    }
}

async fn create(store: &dyn SessionStore, record: &Record) -> SessionKey {
    let hash = Token::generate().hash();
    SessionKey { id: store.create(&hash, record, None).await.unwrap(), hash }
}

/// Ends one session, as a logout does; whether it was there.
pub async fn end(store: &dyn SessionStore, key: &SessionKey) -> bool {
    store.end(Ending::Session(key)).await.unwrap() == 1
}

/// One deadline move, as a request makes it; whether the session was live.
pub async fn touch(
    store: &dyn SessionStore,
    key: &SessionKey,
    last_seen_at: i64,
    expires_at: i64,
    now: i64,
) -> bool {
    store.touch(&[Touch { key: *key, last_seen_at, expires_at }], now).await.unwrap() == 1
}

fn other_token(key: &SessionKey) -> SessionKey {
    SessionKey { id: key.id, hash: Token::generate().hash() }
}

pub mod rules {
    use super::*;

    /// A created session loads as stored, by its id and token hash only.
    pub async fn create_and_load(store: &dyn SessionStore) {
        let now = session::now();
        let mut r = record(1, now, 60);
        r.persistent = true;
        r.data = r#"{"theme":"dark"}"#.into();
        let key = create(store, &r).await;
        assert!(key.id > 0);
        assert_eq!(store.load(&key, now).await.unwrap(), Some(r.clone()));
        assert_eq!(store.load(&other_token(&key), now).await.unwrap(), None, "the id alone opens nothing");
        let unknown = SessionKey { id: key.id + 1000, hash: key.hash };
        assert_eq!(store.load(&unknown, now).await.unwrap(), None);
        let second = create(store, &record(1, now, 60)).await;
        assert_ne!(second.id, key.id, "ids are distinct");
    }

    /// A row at or past its deadline is never returned, purged or not.
    pub async fn deadlines_hold(store: &dyn SessionStore) {
        let now = session::now();
        let key = create(store, &record(1, now, 10)).await;
        assert!(store.load(&key, now + 9).await.unwrap().is_some());
        assert_eq!(store.load(&key, now + 10).await.unwrap(), None, "expires_at is exclusive");
        assert_eq!(store.load(&key, now + 11).await.unwrap(), None);
        let past = create(store, &record(1, now, -1)).await;
        assert_eq!(store.load(&past, now).await.unwrap(), None);
    }

    /// A login deletes the session the client held before, in the same operation.
    pub async fn create_replaces_the_previous_session(store: &dyn SessionStore) {
        let now = session::now();
        let old = create(store, &record(1, now, 60)).await;
        let hash = Token::generate().hash();
        let id = store.create(&hash, &record(1, now, 60), Some(&old)).await.unwrap();
        assert_eq!(store.load(&old, now).await.unwrap(), None);
        assert!(store.load(&SessionKey { id, hash }, now).await.unwrap().is_some());
        // Replacing with a wrong token deletes nothing.
        let kept = create(store, &record(1, now, 60)).await;
        store
            .create(&Token::generate().hash(), &record(1, now, 60), Some(&other_token(&kept)))
            .await
            .unwrap();
        assert!(store.load(&kept, now).await.unwrap().is_some());
    }

    /// Writes after a session ended (logout elsewhere, expiry) find nothing
    /// and bring nothing back.
    pub async fn no_resurrection(store: &dyn SessionStore) {
        let now = session::now();
        let key = create(store, &record(1, now, 60)).await;
        assert!(store.load(&key, now).await.unwrap().is_some());
        assert!(end(store, &key).await);
        assert!(!end(store, &key).await, "nothing left to end");
        assert!(!touch(store, &key, now, now + 600, now).await);
        assert!(!store.save_data(&key, r#"{"a":1}"#, now).await.unwrap());
        assert!(!store.rotate(&key, &Token::generate().hash(), now).await.unwrap());
        assert_eq!(
            store.touch(&[Touch { key, last_seen_at: now, expires_at: now + 600 }], now).await.unwrap(),
            0
        );
        store.flush().await.unwrap();
        assert_eq!(store.load(&key, now).await.unwrap(), None);
        assert_eq!(store.backend().count_live(now).await.unwrap(), 0);

        // Expired: the same writes are refused, so the row stays expired.
        let short = create(store, &record(1, now, 5)).await;
        let later = now + 5;
        assert!(!touch(store, &short, later, later + 600, later).await);
        assert!(!store.save_data(&short, r#"{"a":1}"#, later).await.unwrap());
        assert!(!store.rotate(&short, &Token::generate().hash(), later).await.unwrap());
        store.flush().await.unwrap();
        assert_eq!(store.load(&short, now + 1).await.unwrap().unwrap().expires_at, now + 5);
        // Only the holder of the token can end it.
        assert!(!end(store, &other_token(&short)).await);
    }

    /// A session with a hard end keeps it: no move, single or batched, takes
    /// its deadline past it, and it is gone from loads, lists and counts after.
    pub async fn hard_ends_hold(store: &dyn SessionStore) {
        let now = session::now();
        let brief = Record { ends_at: Some(now + 30), ..record(7, now, 30) };
        let key = create(store, &brief).await;
        assert_eq!(store.load(&key, now).await.unwrap(), Some(brief.clone()), "round-trips");
        assert!(touch(store, &key, now + 10, now + 600, now + 10).await);
        let other = create(store, &record(7, now, 30)).await;
        let batch = [
            Touch { key, last_seen_at: now + 20, expires_at: now + 900 },
            Touch { key: other, last_seen_at: now + 20, expires_at: now + 900 },
        ];
        assert_eq!(store.touch(&batch, now + 20).await.unwrap(), 2);
        store.flush().await.unwrap();
        let r = store.load(&key, now + 20).await.unwrap().unwrap();
        assert_eq!((r.last_seen_at, r.expires_at), (now + 20, now + 30), "capped at its end");
        assert_eq!(store.load(&other, now + 20).await.unwrap().unwrap().expires_at, now + 900);
        assert_eq!(store.load(&key, now + 30).await.unwrap(), None);
        let listed = store.list(Owner::User(7), now + 30).await.unwrap();
        assert_eq!(listed.len(), 1, "only the ordinary one: {listed:?}");
        assert_eq!(store.backend().count_live(now + 30).await.unwrap(), 1);
    }

    /// Deadlines move forward; a late batch never moves one back.
    pub async fn touches_move_deadlines_forward_only(store: &dyn SessionStore) {
        let now = session::now();
        let key = create(store, &record(1, now, 60)).await;
        assert!(touch(store, &key, now + 10, now + 120, now).await);
        store.flush().await.unwrap();
        let r = store.load(&key, now).await.unwrap().unwrap();
        assert_eq!((r.last_seen_at, r.expires_at), (now + 10, now + 120));
        // A batch written after that single move, with older values.
        let stale = Touch { key, last_seen_at: now + 5, expires_at: now + 90 };
        let other = create(store, &record(2, now, 60)).await;
        let fresh = Touch { key: other, last_seen_at: now + 20, expires_at: now + 200 };
        let gone = create(store, &record(2, now, 60)).await;
        end(store, &gone).await;
        let missing = Touch { key: gone, last_seen_at: now, expires_at: now + 200 };
        assert_eq!(store.touch(&[stale, fresh, missing], now).await.unwrap(), 2, "live ones counted");
        store.flush().await.unwrap();
        let r = store.load(&key, now).await.unwrap().unwrap();
        assert_eq!((r.last_seen_at, r.expires_at), (now + 10, now + 120), "never moved back");
        let r = store.load(&other, now).await.unwrap().unwrap();
        assert_eq!((r.last_seen_at, r.expires_at), (now + 20, now + 200));
        assert_eq!(store.load(&gone, now).await.unwrap(), None);
        assert_eq!(store.touch(&[], now).await.unwrap(), 0);
    }

    /// Data is replaced whole; a new token keeps the id and retires the old.
    pub async fn data_and_rotation(store: &dyn SessionStore) {
        let now = session::now();
        let key = create(store, &record(1, now, 60)).await;
        assert!(store.save_data(&key, r#"{"theme":"light"}"#, now).await.unwrap());
        assert_eq!(store.load(&key, now).await.unwrap().unwrap().data, r#"{"theme":"light"}"#);
        let hash = Token::generate().hash();
        assert!(store.rotate(&key, &hash, now).await.unwrap());
        let rotated = SessionKey { id: key.id, hash };
        assert_eq!(store.load(&key, now).await.unwrap(), None, "the old token opens nothing");
        let r = store.load(&rotated, now).await.unwrap().unwrap();
        assert_eq!(r.data, r#"{"theme":"light"}"#);
        // A held-back deadline move (a cache holds back moves of sessions it
        // holds) follows the session to its new token.
        store.load(&rotated, now).await.unwrap().unwrap();
        assert!(touch(store, &rotated, now + 3, now + 300, now).await);
        let newer = Token::generate().hash();
        assert!(store.rotate(&rotated, &newer, now).await.unwrap());
        store.flush().await.unwrap();
        let r = store.load(&SessionKey { id: key.id, hash: newer }, now).await.unwrap().unwrap();
        assert_eq!(r.expires_at, now + 300);
        assert!(end(store, &SessionKey { id: key.id, hash: newer }).await);
    }

    /// The purge removes expired rows only, at most `limit` per call.
    pub async fn purge_in_batches(store: &dyn SessionStore) {
        let now = session::now();
        for _ in 0..7 {
            create(store, &record(1, now - 100, 50)).await;
        }
        let live = create(store, &record(1, now, 60)).await;
        // Extended after it was created short: not expired any more.
        let extended = create(store, &record(2, now, 5)).await;
        assert!(touch(store, &extended, now + 1, now + 100, now).await);
        store.flush().await.unwrap();
        assert_eq!(store.end(Ending::Expired { now: now + 10, limit: 3 }).await.unwrap(), 3);
        assert_eq!(store.end(Ending::Expired { now: now + 10, limit: 3 }).await.unwrap(), 3);
        assert_eq!(store.end(Ending::Expired { now: now + 10, limit: 3 }).await.unwrap(), 1);
        assert_eq!(store.end(Ending::Expired { now: now + 10, limit: 3 }).await.unwrap(), 0);
        assert!(store.load(&live, now).await.unwrap().is_some());
        assert!(store.load(&extended, now + 10).await.unwrap().is_some());
        assert_eq!(store.backend().count_live(now).await.unwrap(), 2);
        let report = session::purge_expired(store, now + 1000).await.unwrap();
        assert_eq!(report.removed, 2);
        assert_eq!(store.backend().count_live(now).await.unwrap(), 0);
    }

    /// An owner's live sessions, most recently active first.
    pub async fn listings(store: &dyn SessionStore) {
        let now = session::now();
        let mut older = record(1, now - 50, 100);
        older.last_seen_at = now - 40;
        let older = create(store, &older).await;
        let newest = create(store, &record(1, now, 60)).await;
        let mut middle = record(1, now - 30, 100);
        middle.last_seen_at = now - 20;
        let middle = create(store, &middle).await;
        let _expired = create(store, &record(1, now - 100, 50)).await;
        let theirs = create(store, &record(2, now - 1, 60)).await;
        let handle = |key: SessionKey| async move { store.load(&key, now).await.unwrap().unwrap().handle };
        let mine: Vec<String> =
            store.list(Owner::User(1), now).await.unwrap().into_iter().map(|r| r.handle).collect();
        assert_eq!(mine, vec![handle(newest).await, handle(middle).await, handle(older).await]);
        // A deadline move the store holds back counts in the listing.
        store.load(&older, now).await.unwrap().unwrap();
        assert!(touch(store, &older, now + 5, now + 100, now).await);
        let mine: Vec<String> =
            store.list(Owner::User(1), now).await.unwrap().into_iter().map(|r| r.handle).collect();
        assert_eq!(mine[0], handle(older).await, "{mine:?}");
        let all: Vec<String> =
            store.list(Owner::Anyone, now).await.unwrap().into_iter().map(|r| r.handle).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], handle(older).await);
        assert_eq!(all[2], handle(theirs).await);
        assert_eq!(store.backend().count_live(now).await.unwrap(), 4);
        assert!(store.list(Owner::User(3), now).await.unwrap().is_empty());
    }

    /// Ending sessions by owner (but one), by public handle, and all.
    pub async fn ending_by_owner_handle_and_all(store: &dyn SessionStore) {
        let now = session::now();
        let a = create(store, &record(1, now, 60)).await;
        let b = create(store, &record(1, now, 60)).await;
        let c = create(store, &record(1, now, 60)).await;
        let theirs = create(store, &record(2, now, 60)).await;
        for key in [&a, &b, &c, &theirs] {
            store.load(key, now).await.unwrap().unwrap();
        }
        let keep = store.load(&b, now).await.unwrap().unwrap().handle;
        assert_eq!(store.end(Ending::OwnedBy { user_id: 1, keep: Some(&keep) }).await.unwrap(), 2);
        assert_eq!(store.load(&a, now).await.unwrap(), None);
        assert_eq!(store.load(&c, now).await.unwrap(), None);
        assert!(store.load(&b, now).await.unwrap().is_some());
        assert!(store.load(&theirs, now).await.unwrap().is_some());

        let their_handle = store.load(&theirs, now).await.unwrap().unwrap().handle;
        assert_eq!(
            store.end(Ending::Handle { handle: &their_handle, owner: Some(1) }).await.unwrap(),
            0,
            "another owner's"
        );
        assert!(store.load(&theirs, now).await.unwrap().is_some());
        assert_eq!(store.end(Ending::Handle { handle: "no-such-handle", owner: None }).await.unwrap(), 0);
        assert_eq!(store.end(Ending::Handle { handle: &their_handle, owner: Some(2) }).await.unwrap(), 1);
        assert_eq!(store.load(&theirs, now).await.unwrap(), None);
        assert_eq!(store.end(Ending::Handle { handle: &keep, owner: None }).await.unwrap(), 1, "any owner");
        assert_eq!(store.load(&b, now).await.unwrap(), None);

        let d = create(store, &record(3, now, 60)).await;
        create(store, &record(2, now, 60)).await;
        store.load(&d, now).await.unwrap().unwrap();
        assert_eq!(store.end(Ending::OwnedBy { user_id: 3, keep: None }).await.unwrap(), 1);
        assert_eq!(store.load(&d, now).await.unwrap(), None);
        create(store, &record(1, now, 60)).await;
        assert_eq!(store.end(Ending::All).await.unwrap(), 2);
        assert_eq!(store.backend().count_live(now).await.unwrap(), 0);
        assert!(store.list(Owner::Anyone, now).await.unwrap().is_empty());
    }

    /// Many requests at once: every login gets its own row, every write is
    /// seen, nothing fails.
    pub async fn concurrent_use(store: &dyn SessionStore) {
        let now = session::now();
        let keys = rocket::futures::future::join_all((0..20).map(|i| async move {
            let key = create(store, &record(1 + i % 3, now, 60)).await;
            assert!(store.save_data(&key, &format!(r#"{{"n":{i}}}"#), now).await.unwrap());
            assert!(touch(store, &key, now + 1, now + 100, now).await);
            key
        }))
        .await;
        let ids: std::collections::HashSet<i64> = keys.iter().map(|k| k.id).collect();
        assert_eq!(ids.len(), 20);
        store.flush().await.unwrap();
        for (i, key) in keys.iter().enumerate() {
            let r = store.load(key, now).await.unwrap().unwrap();
            assert_eq!(r.data, format!(r#"{{"n":{i}}}"#));
            assert_eq!(r.expires_at, now + 100);
        }
        let ended = rocket::futures::future::join_all(keys.iter().map(|k| end(store, k))).await;
        assert!(ended.into_iter().all(|e| e));
        assert_eq!(store.backend().count_live(now).await.unwrap(), 0);
    }
}

/// One test per rule for one backend.
macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            macro_rules! rule {
                ($rule:ident) => {
                    #[rocket::async_test]
                    async fn $rule() {
                        let Some(subject) = super::$backend().await else { return };
                        super::rules::$rule(&*subject.store).await;
                    }
                };
            }
            rule!(create_and_load);
            rule!(deadlines_hold);
            rule!(hard_ends_hold);
            rule!(create_replaces_the_previous_session);
            rule!(no_resurrection);
            rule!(touches_move_deadlines_forward_only);
            rule!(data_and_rotation);
            rule!(purge_in_batches);
            rule!(listings);
            rule!(ending_by_owner_handle_and_all);
            rule!(concurrent_use);
        }
    };
}

conformance!(sqlite);
conformance!(cached_sqlite);
conformance!(crowded_cache_sqlite);
conformance!(notifying_sqlite);
conformance!(postgres);
conformance!(cached_postgres);
conformance!(instance_postgres);
