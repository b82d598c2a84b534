//! `/metrics` in the OpenMetrics text format (only with `metrics = true`),
//! through `prometheus-client`: the counters the pages keep, the session
//! layer's own counts read at each scrape, and every request's route,
//! status and time.
//!
//! Counters are this process's since it started; sessions ended from the
//! command line (another process) show in `sesija_sessions_active` but not in
//! the ended counters.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::ContentType;
use rocket::{async_trait, get, Data, Request, Response, State};

use super::Directory;
use crate::session::SessionManager;

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How a login attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Login {
    Succeeded,
    Failed,
    Throttled,
}

/// Why sessions ended (the purge's expiries are the session layer's count).
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    Logout,
    Revoke,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The metrics of this process.
pub struct Metrics {
    registry: Registry,
    logins: Family<ResultLabel, Counter>,
    ended: Family<ReasonLabel, Counter>,
    sessions_active: Gauge,
    sessions_created: Counter,
    purge_runs: Counter,
    purge_rows: Counter,
    database_size: Gauge,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Held while a scrape brings the session layer's counts in.
    scraping: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let logins = Family::<ResultLabel, Counter>::default();
        let ended = Family::<ReasonLabel, Counter>::default();
        let (sessions_active, database_size) = (Gauge::default(), Gauge::default());
        let (sessions_created, purge_runs, purge_rows) =
            (Counter::default(), Counter::default(), Counter::default());
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "sesija_sessions_active",
            "Sessions whose deadline has not passed",
            sessions_active.clone(),
        );
        registry.register("sesija_sessions_created", "Sessions started (logins)", sessions_created.clone());
        registry.register("sesija_sessions_ended", "Sessions ended, by reason", ended.clone());
        registry.register("sesija_logins", "Login attempts, by result", logins.clone());
        registry.register("sesija_purge_runs", "Runs of the expired-session purge", purge_runs.clone());
        registry.register("sesija_purge_rows", "Expired sessions the purge removed", purge_rows.clone());
        registry.register(
            "sesija_database_size_bytes",
            "Size of the database (SQLite: pages in use)",
            database_size.clone(),
        );
        registry.register(
            "sesija_http_requests",
            "HTTP requests, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "sesija_http_request_duration_seconds",
            "Time to answer, by method and route",
            durations.clone(),
        );
        Metrics {
            registry,
            logins,
            ended,
            sessions_active,
            sessions_created,
            purge_runs,
            purge_rows,
            database_size,
            requests,
            durations,
            scraping: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// A login attempt ended with `result`.
    pub fn login(&self, result: Login) {
        let result = match result {
            Login::Succeeded => "succeeded",
            Login::Failed => "failed",
            Login::Throttled => "throttled",
        };
        self.logins.get_or_create(&ResultLabel { result }).inc();
    }

    /// `n` sessions ended for `reason`.
    pub fn ended(&self, reason: Ended, n: u64) {
        let reason = match reason {
            Ended::Logout => "logout",
            Ended::Revoke => "revoke",
        };
        self.ended.get_or_create(&ReasonLabel { reason }).inc_by(n);
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let (method, route) = (method.to_owned(), route.to_owned());
        let labels =
            RequestLabels { method: method.clone(), route: route.clone(), status: status.to_string() };
        self.requests.get_or_create(&labels).inc();
        self.durations.get_or_create(&RouteLabels { method, route }).observe(seconds);
    }

    /// The session layer's counts, brought up to what `manager` counted.
    fn catch_up(&self, manager: &SessionManager) {
        let _one_scrape = self.scraping.lock().unwrap();
        let stats = manager.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        for (counter, now) in [
            (&self.sessions_created, load(&stats.created)),
            (&self.purge_runs, load(&stats.purge_runs)),
            (&self.purge_rows, load(&stats.purged)),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let expired = self.ended.get_or_create(&ReasonLabel { reason: "expiry" });
        expired.inc_by(load(&stats.purged).saturating_sub(expired.get()));
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
        let route = req.route().map_or_else(|| "unmatched".into(), |r| r.uri.path().to_string());
        self.0.observe(req.method().as_str(), &route, res.status().code, started.elapsed().as_secs_f64());
    }
}

#[get("/metrics")]
pub async fn metrics(
    directory: &State<Directory>,
    m: &State<Arc<Metrics>>,
    sessions: &State<Arc<SessionManager>>,
) -> (ContentType, String) {
    let active = sessions.store().backend().count_live(sessions.now()).await.map_or(-1, |n| n as i64);
    m.sessions_active.set(active);
    m.database_size.set(directory.storage.size_bytes().await.unwrap_or(-1));
    m.catch_up(sessions);
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        log::error!("metrics: {e}");
    }
    let kind = ContentType::new("application", "openmetrics-text")
        .with_params([("version", "1.0.0"), ("charset", "utf-8")]);
    (kind, out)
}
