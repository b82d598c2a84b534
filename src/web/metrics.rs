//! `/metrics` in the Prometheus text format (only with `metrics = true`).
//!
//! Counters are this process's since it started; sessions ended from the
//! command line (another process) show in `sesija_sessions_active` but not in
//! the ended counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::ContentType;
use rocket::{async_trait, get, Data, Request, Response, State};

use super::App;
use crate::session::SessionManager;

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
pub struct Metrics {
    pub logins_succeeded: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_throttled: AtomicU64,
    pub ended_logout: AtomicU64,
    pub ended_revoke: AtomicU64,
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().unwrap();
        let h = requests.entry((method.to_owned(), route.to_owned(), status)).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }
}

/// Times every request and files it under its route's path.
pub struct RequestTimer(pub Arc<Metrics>);

struct Started(Instant);

#[async_trait]
impl Fairing for RequestTimer {
    fn info(&self) -> Info {
        Info { name: "request metrics", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| Started(Instant::now()));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let started = req.local_cache(|| Started(Instant::now())).0;
        let route = req.route().map(|r| r.uri.path().to_string()).unwrap_or_else(|| "unmatched".into());
        self.0.observe(req.method().as_str(), &route, res.status().code, started.elapsed().as_secs_f64());
    }
}

fn line(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[get("/metrics")]
pub async fn metrics(app: &State<App>, sessions: &State<Arc<SessionManager>>) -> (ContentType, String) {
    let m = &app.metrics;
    let stats = sessions.stats();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();

    line(&mut out, "sesija_sessions_active", "Sessions whose deadline has not passed.", "gauge");
    let active = match sessions.store().backend().count_live(sessions.now()).await {
        Ok(live) => live.to_string(),
        Err(_) => "-1".into(),
    };
    let _ = writeln!(out, "sesija_sessions_active {active}");

    line(&mut out, "sesija_sessions_created_total", "Sessions started (logins).", "counter");
    let _ = writeln!(out, "sesija_sessions_created_total {}", get(&stats.created));
    line(&mut out, "sesija_sessions_ended_total", "Sessions ended, by reason.", "counter");
    let _ = writeln!(out, "sesija_sessions_ended_total{{reason=\"logout\"}} {}", get(&m.ended_logout));
    let _ = writeln!(out, "sesija_sessions_ended_total{{reason=\"revoke\"}} {}", get(&m.ended_revoke));
    let _ = writeln!(out, "sesija_sessions_ended_total{{reason=\"expiry\"}} {}", get(&stats.purged));

    line(&mut out, "sesija_logins_total", "Login attempts, by result.", "counter");
    let _ = writeln!(out, "sesija_logins_total{{result=\"succeeded\"}} {}", get(&m.logins_succeeded));
    let _ = writeln!(out, "sesija_logins_total{{result=\"failed\"}} {}", get(&m.logins_failed));
    let _ = writeln!(out, "sesija_logins_total{{result=\"throttled\"}} {}", get(&m.logins_throttled));

    line(&mut out, "sesija_purge_runs_total", "Runs of the expired-session purge.", "counter");
    let _ = writeln!(out, "sesija_purge_runs_total {}", get(&stats.purge_runs));
    line(&mut out, "sesija_purge_rows_total", "Expired sessions the purge removed.", "counter");
    let _ = writeln!(out, "sesija_purge_rows_total {}", get(&stats.purged));

    line(&mut out, "sesija_database_size_bytes", "Size of the database (SQLite: pages in use).", "gauge");
    let size = app.storage.size_bytes().await.unwrap_or(-1);
    let _ = writeln!(out, "sesija_database_size_bytes {size}");

    let requests = m.requests.lock().unwrap().clone();
    line(&mut out, "sesija_http_requests_total", "HTTP requests, by method, route and status.", "counter");
    for ((method, route, status), h) in &requests {
        let _ = writeln!(
            out,
            "sesija_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
            h.count
        );
    }
    line(
        &mut out,
        "sesija_http_request_duration_seconds",
        "Time to answer, by method and route.",
        "histogram",
    );
    let mut by_route: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    for ((method, route, _), h) in requests {
        let total = by_route.entry((method, route)).or_default();
        for (i, c) in h.counts.iter().enumerate() {
            total.counts[i] += c;
        }
        total.count += h.count;
        total.sum += h.sum;
    }
    for ((method, route), h) in by_route {
        let labels = format!("method=\"{method}\",route=\"{route}\"");
        for (le, c) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "sesija_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {c}");
        }
        let _ =
            writeln!(out, "sesija_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "sesija_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(out, "sesija_http_request_duration_seconds_count{{{labels}}} {}", h.count);
    }
    (ContentType::new("text", "plain").with_params([("version", "0.0.4"), ("charset", "utf-8")]), out)
}
