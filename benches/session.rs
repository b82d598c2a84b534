//! Micro-benchmarks of the session layer on a real SQLite file: what one
//! store operation costs, with and without the cache.
//!
//! ```sh
//! cargo bench --bench session
//! ```

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sesija::session::{self, CachingStore, Record, SessionStore, SqliteStore, Token, TokenHash};

fn record(now: i64, expires_at: i64) -> Record {
    Record {
        handle: session::new_handle(),
        user_id: 1,
        data: r#"{"user":"alice","csrf":"0123456789abcdef0123456789abcdef0123456789a"}"#.into(),
        created_at: now,
        last_seen_at: now,
        expires_at,
        persistent: false,
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
        ip: Some("192.0.2.7".into()),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let db = rt.block_on(sesija::db::Db::open(&dir.path().join("data"))).unwrap();
    let sqlite = SqliteStore::new(db.reader.clone(), db.writer.clone());
    let cached = CachingStore::new(sqlite.clone(), 10_000);
    let now = session::now();
    let known: Vec<TokenHash> = (0..1000).map(|_| Token::generate().hash()).collect();
    rt.block_on(async {
        for hash in &known {
            cached.create(hash, &record(now, now + 3600), None).await.unwrap();
            cached.load(hash, now).await.unwrap();
        }
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
        })
    });
    c.bench_function("load hit (cache)", |b| {
        b.to_async(&rt).iter(|| {
            let hash = next();
            async move { cached.load(&hash, now).await.unwrap() }
        })
    });
    c.bench_function("load miss (SQLite)", |b| {
        b.to_async(&rt).iter(|| {
            let hash = next();
            async move { sqlite.load(&hash, now).await.unwrap() }
        })
    });
    c.bench_function("load of an unknown token", |b| {
        b.to_async(&rt).iter(|| async move { cached.load(&Token::generate().hash(), now).await.unwrap() })
    });
    c.bench_function("touch (written at once)", |b| {
        b.to_async(&rt).iter(|| {
            let hash = next();
            async move { sqlite.touch(&hash, now, now + 3600, now).await.unwrap() }
        })
    });
    c.bench_function("touch (cached, batched)", |b| {
        b.to_async(&rt).iter(|| {
            let hash = next();
            async move { cached.touch(&hash, now, now + 3600, now).await.unwrap() }
        })
    });
    // Rows to delete are made first, outside the measured time.
    c.bench_function("delete", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut hashes = Vec::new();
            for _ in 0..iters {
                let hash = Token::generate().hash();
                sqlite.create(&hash, &record(now, now + 3600), None).await.unwrap();
                hashes.push(hash);
            }
            let started = Instant::now();
            for hash in &hashes {
                sqlite.delete(hash).await.unwrap();
            }
            started.elapsed()
        })
    });
    let mut purge = c.benchmark_group("purge");
    purge.sample_size(10);
    purge.bench_function("batch of 1,000 expired rows", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..1000 {
                    let expired = record(now - 7200, now - 3600);
                    sqlite.create(&Token::generate().hash(), &expired, None).await.unwrap();
                }
                let started = Instant::now();
                assert_eq!(sqlite.delete_expired(now, 1000).await.unwrap(), 1000);
                took += started.elapsed();
            }
            took
        })
    });
    purge.finish();
}

criterion_group!(session_layer, benches);
criterion_main!(session_layer);
