//! Micro-benchmarks of the session layer on a real SQLite file: what one
//! store operation costs, with and without the cache.
//!
//! ```sh
//! cargo bench --bench session
//! ```

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sesija::session::{
    self, CachingStore, Ending, Record, SessionKey, SessionStore, SqliteStore, Token, Touch,
};

fn record(now: i64, expires_at: i64) -> Record {
    Record {
        handle: session::new_handle(),
        user_id: 1,
        data: r#"{"user":"alice","csrf":"0123456789abcdef0123456789abcdef0123456789a"}"#.into(),
        created_at: now,
        last_seen_at: now,
        expires_at,
        ends_at: None,
        persistent: false,
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
        ip: Some("192.0.2.7".into()),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let db = rt.block_on(sesija::storage::Db::open(&dir.path().join("data"))).unwrap();
    // The sessions' owner (every session belongs to an account).
    rt.block_on(
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (1, 'alice', 'x', 0)",
        )
        .execute(&db.writer),
    )
    .unwrap();
    let sqlite = SqliteStore::new(db.reader.clone(), db.writer.clone());
    let cached = CachingStore::new(sqlite.clone(), 10_000);
    let now = session::now();
    let known: Vec<SessionKey> = rt.block_on(async {
        let mut known = Vec::new();
        for _ in 0..1000 {
            let hash = Token::generate().hash();
            let key =
                SessionKey { id: cached.create(&hash, &record(now, now + 3600), None).await.unwrap(), hash };
            cached.load(&key, now).await.unwrap();
            known.push(key);
        }
        known
    });
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % known.len();
        known[i]
    };

    let (sqlite, cached) = (&sqlite, &cached);
    c.bench_function("create (one committed transaction)", |b| {
        b.to_async(&rt).iter(|| async move {
            sqlite.create(&Token::generate().hash(), &record(now, now + 3600), None).await.unwrap()
        });
    });
    c.bench_function("load hit (cache)", |b| {
        b.to_async(&rt).iter(|| {
            let key = next();
            async move { cached.load(&key, now).await.unwrap() }
        });
    });
    c.bench_function("load miss (SQLite)", |b| {
        b.to_async(&rt).iter(|| {
            let key = next();
            async move { sqlite.load(&key, now).await.unwrap() }
        });
    });
    c.bench_function("load of an unknown token", |b| {
        b.to_async(&rt).iter(|| {
            let key = SessionKey { id: next().id, hash: Token::generate().hash() };
            async move { cached.load(&key, now).await.unwrap() }
        });
    });
    c.bench_function("touch (written at once)", |b| {
        b.to_async(&rt).iter(|| {
            let key = next();
            async move {
                sqlite.touch(&[Touch { key, last_seen_at: now, expires_at: now + 3600 }], now).await.unwrap()
            }
        });
    });
    c.bench_function("touch (cached, batched)", |b| {
        b.to_async(&rt).iter(|| {
            let key = next();
            async move {
                cached.touch(&[Touch { key, last_seen_at: now, expires_at: now + 3600 }], now).await.unwrap()
            }
        });
    });
    // Rows to delete are made first, outside the measured time.
    c.bench_function("delete", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut keys = Vec::new();
            for _ in 0..iters {
                let hash = Token::generate().hash();
                let id = sqlite.create(&hash, &record(now, now + 3600), None).await.unwrap();
                keys.push(SessionKey { id, hash });
            }
            let started = Instant::now();
            for key in &keys {
                sqlite.end(Ending::Session(key)).await.unwrap();
            }
            started.elapsed()
        });
    });
    let mut purge = c.benchmark_group("purge");
    purge.sample_size(10);
    purge.bench_function(format!("batch of {} expired rows", session::PURGE_BATCH), |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..session::PURGE_BATCH {
                    let expired = record(now - 7200, now - 3600);
                    sqlite.create(&Token::generate().hash(), &expired, None).await.unwrap();
                }
                let started = Instant::now();
                let batch = u64::from(session::PURGE_BATCH);
                assert_eq!(
                    sqlite.end(Ending::Expired { now, limit: session::PURGE_BATCH }).await.unwrap(),
                    batch
                );
                took += started.elapsed();
            }
            took
        });
    });
    purge.finish();
}

criterion_group!(session_layer, benches);
criterion_main!(session_layer);
