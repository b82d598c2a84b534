//! Wiring: configuration, secret key, database, sessions and the web app
//! into one Rocket instance. Used by `sesija serve` and by the tests.

use std::sync::Arc;
use std::time::Duration;

use rocket::fairing::AdHoc;
use rocket::figment::Figment;
use rocket::{Build, Rocket};

use crate::auth::factors::{self, Sealer};
use crate::auth::identity::Identities;
use crate::auth::throttle::MemoryThrottle;
use crate::auth::throttle::{Kind, SharedThrottle};
use crate::auth::{users, Authenticator, Hasher, Throttle};
use crate::config::Settings;
use crate::control::{self, Claim, OwnerSocket};
use crate::keys::{self, KeySource};
use crate::session::{
    CachingStore, Clock, Coherence, NotifyingStore, PgStore, SessionLayer, SessionManager, SqliteStore,
    SystemClock,
};
use crate::storage::{Db, Storage};

/// Where PostgreSQL announces changes to accounts and their groups (see
/// `migrations/postgres/`).
const ACCOUNTS_CHANNEL: &str = "sesija_accounts";
use crate::web::{self, Directory, Metrics, Portal, SecondFactor, SetupToken};

/// Why sesija cannot start: one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Reads the settings in `figment` and opens the database they name:
/// PostgreSQL at `database_url`, else SQLite in `data_dir`.
pub async fn open(figment: &Figment) -> Result<(Settings, Storage), StartupError> {
    let settings = Settings::from_figment(figment).map_err(|e| StartupError(e.to_string()))?;
    let storage = open_storage(&settings).await?;
    Ok((settings, storage))
}

/// The database `settings` name, opened and brought up to date.
async fn open_storage(settings: &Settings) -> Result<Storage, StartupError> {
    let failed = |e: crate::storage::DbError| StartupError(e.to_string());
    Ok(match &settings.database_url {
        Some(url) => Storage::Postgres(crate::storage::open_postgres(url).await.map_err(failed)?),
        None => Storage::Sqlite(Db::open(&settings.data_dir).await.map_err(failed)?),
    })
}

/// With PostgreSQL every instance must seal cookies (and second-factor
/// secrets) with the same key, which a key file on one machine is not.
pub fn check_shared_key(settings: &Settings, figment: &Figment) -> Result<(), StartupError> {
    if settings.database_url.is_some() && !keys::check_configured(figment).map_err(StartupError)? {
        return Err(StartupError(
            "`secret_key` must be configured when `database_url` is set: every instance must use the same \
             key (generate one with `openssl rand -base64 64`)"
                .into(),
        ));
    }
    Ok(())
}

/// After Rocket has stopped serving (`launch()` returned, every request in
/// flight answered): writes out what the session store holds back and
/// closes the database. Not an on-shutdown fairing: Rocket runs those at the
/// start of its grace period, while requests are still being served, and a
/// login whose body was still arriving would find the database closed.
pub async fn close(rocket: &Rocket<rocket::Ignite>) {
    if let Some(manager) = rocket.state::<Arc<SessionManager>>() {
        if let Err(e) = manager.store().flush().await {
            log::warn!("session deadline flush at exit failed: {e}");
        }
    }
    if let Some(storage) = rocket.state::<Storage>() {
        storage.close().await;
    }
}

/// Rocket's `debug` log level writes every request as it arrived, raw
/// headers and query included: session cookies (each a credential for as
/// long as its session lives) and the one-time setup token. sesija runs
/// Rocket at `normal` instead, and says so.
fn cap_log_level(figment: Figment) -> Figment {
    match figment.extract_inner::<rocket::config::LogLevel>("log_level") {
        Ok(rocket::config::LogLevel::Debug) => {
            println!(
                "sesija: log_level = debug would write session cookies and the setup token to the log; \
                 logging at normal instead"
            );
            figment.merge(("log_level", rocket::config::LogLevel::Normal))
        }
        _ => figment,
    }
}

/// The throttle of one kind of attempt (passwords, codes): in memory with
/// SQLite, shared by every instance with PostgreSQL.
fn throttle(settings: &Settings, storage: &Storage, kind: Kind, clock: &Arc<dyn Clock>) -> Throttle {
    let max_failures = settings.login_max_failures.try_into().unwrap_or(u32::MAX);
    let lockout = Duration::from_secs(settings.login_lockout as u64);
    let per_source = settings.login_max_failures_per_ip.try_into().unwrap_or(u32::MAX);
    match storage {
        Storage::Sqlite(_) => {
            Throttle::Memory(MemoryThrottle::new(max_failures, lockout, per_source).with_clock(clock.clone()))
        }
        Storage::Postgres(pool) => {
            Throttle::Shared(SharedThrottle::new(pool.clone(), kind, max_failures, lockout, per_source))
        }
    }
}

/// Builds the whole app from a configuration (see [`crate::config::figment`]).
pub async fn app(figment: Figment) -> Result<Rocket<Build>, StartupError> {
    app_with_clock(figment, Arc::new(SystemClock)).await
}

/// [`app`], judging sessions, codes and forms by `clock` (a test's
/// [`crate::session::ShiftedClock`]) instead of the system's.
pub async fn app_with_clock(figment: Figment, clock: Arc<dyn Clock>) -> Result<Rocket<Build>, StartupError> {
    let settings = Settings::from_figment(&figment).map_err(|e| StartupError(e.to_string()))?;
    // Before connecting: a key missing is the first thing to say.
    check_shared_key(&settings, &figment)?;
    let storage = open_storage(&settings).await?;
    let fallbacks = keys::fallbacks(&figment, &settings.key_path()).map_err(StartupError)?;
    let (figment, source) = keys::provide(figment, &settings.key_path()).map_err(StartupError)?;
    let figment = cap_log_level(figment);
    if source == KeySource::Generated {
        println!("sesija: generated a new secret key at {}", settings.key_path().display());
    }
    let key = keys::current(&figment).map_err(StartupError)?;
    let sealer = Sealer::new(&key, &fallbacks);
    reseal_second_factors(&storage, &sealer).await?;
    let auth = Authenticator::new(
        storage.clone(),
        Hasher::default(),
        throttle(&settings, &storage, Kind::Login, &clock),
        throttle(&settings, &storage, Kind::Code, &clock),
        sealer,
        settings.require_2fa,
    );
    let second = SecondFactor { pending_timeout: settings.two_factor_pending_timeout };
    let setup = match users::count(&storage).await {
        Ok(0) => SetupToken::new(),
        Ok(_) => SetupToken::default(),
        Err(e) => return Err(StartupError(format!("cannot read {}: {e}", storage.describe()))),
    };

    let Sessions { manager, control, coherence } = sessions(&settings, &storage).await?;
    let manager = Arc::new(manager.with_fallback_keys(fallbacks).with_clock(clock.clone()));
    // A server that hears of no outside change (a peer) keeps no
    // identities either; on PostgreSQL, only while it hears them.
    let identities = match &coherence {
        Some(coherent) => {
            let identities = Arc::new(Identities::new(storage.clone(), true).gated(coherent.trust()));
            let forget = identities.clone();
            coherent.on(ACCOUNTS_CHANNEL, Arc::new(move || forget.forget()));
            identities
        }
        None => Arc::new(Identities::new(storage.clone(), control.is_some())),
    };
    let forget = identities.clone();
    let control = control.map(|c| c.serving(manager.clone()).forgetting(Arc::new(move || forget.forget())));
    let portal = Portal {
        public: settings.public().map_err(|e| StartupError(e.to_string()))?,
        cookie_domain: settings.cookie_domain().map_err(|e| StartupError(e.to_string()))?,
        rules: settings.rules().map_err(|e| StartupError(e.to_string()))?,
        cookie_secure: settings.cookie_secure,
        clock,
    };
    let directory = Directory { storage: storage.clone(), identities };

    // Each concern's state on its own: handlers take what they use.
    let rocket = rocket::custom(figment)
        .manage(portal)
        .manage(directory)
        .manage(storage)
        .manage(settings)
        .manage(Arc::new(Metrics::default()))
        .manage(auth)
        .manage(second)
        .manage(setup)
        .attach(SessionLayer::from_manager(manager))
        .attach(AdHoc::on_liftoff("setup link", |rocket| Box::pin(print_setup_link(rocket))));
    let rocket = match control {
        Some(control) => rocket.attach(control),
        None => rocket,
    };
    Ok(web::stage(rocket))
}

/// Second-factor secrets sealed under a key that is now a fallback are
/// sealed under the current one, so retiring the old key later locks
/// nobody out; secrets no key opens are counted and said.
async fn reseal_second_factors(storage: &Storage, sealer: &Sealer) -> Result<(), StartupError> {
    match factors::reseal_all(storage, sealer).await {
        Ok((resealed, lost)) => {
            if resealed > 0 {
                log::info!("sealed {resealed} second-factor secret(s) under the current key");
            }
            if lost > 0 {
                println!(
                    "sesija: {lost} account(s) have a second-factor secret sealed under a key no longer \
                     configured; they cannot log in until `sesija user 2fa-reset NAME`"
                );
            }
            Ok(())
        }
        Err(e) => Err(StartupError(format!("cannot write {}: {e}", storage.describe()))),
    }
}

/// The session layer of this server, and who else it keeps coherent with.
struct Sessions {
    manager: SessionManager,
    /// The control socket, for the server that owns an SQLite data directory.
    control: Option<control::Control>,
    /// The announcements, for an instance on PostgreSQL.
    coherence: Option<Arc<Coherence>>,
}

/// The session store for `storage`: on PostgreSQL, the cache kept coherent
/// with every instance (each change waits until each applied it, see
/// `session::Coherence`); on SQLite, the cache and the control socket of
/// the data directory's owner, or, for a second server on the same
/// directory, no cache and every change told to the owner.
async fn sessions(settings: &Settings, storage: &Storage) -> Result<Sessions, StartupError> {
    let switched_at = storage
        .setting_since("session_cookie", settings.cookie_name_index() as i64)
        .await
        .map_err(|e| StartupError(format!("cannot write {}: {e}", storage.describe())))?;
    let config = settings.session_config(switched_at);
    match storage {
        Storage::Postgres(pool) => {
            let coherent = Coherence::start(pool.clone(), &[ACCOUNTS_CHANNEL])
                .await
                .map_err(|e| StartupError(format!("cannot listen on {}: {e}", storage.describe())))?;
            let store = PgStore::new(pool.clone());
            let manager = match settings.cache_capacity() {
                0 => SessionManager::new(NotifyingStore::new(store, coherent.clone()), config),
                n => {
                    let cache = CachingStore::new(store, n).gated(coherent.trust());
                    coherent.forgets(cache.handle());
                    SessionManager::new(NotifyingStore::new(cache, coherent.clone()), config)
                }
            };
            Ok(Sessions { manager, control: None, coherence: Some(coherent) })
        }
        Storage::Sqlite(db) => {
            let store = SqliteStore::new(db.reader.clone(), db.writer.clone());
            let (manager, control) = match control::claim(&settings.data_dir).map_err(StartupError)? {
                Claim::Owner(control) => match settings.cache_capacity() {
                    0 => (SessionManager::new(store, config), Some(control)),
                    n => (SessionManager::new(CachingStore::new(store, n), config), Some(control)),
                },
                Claim::Peer(socket) => {
                    log::warn!(
                        "another sesija server runs on {}: this one caches no sessions and tells that one of each change",
                        settings.data_dir.display()
                    );
                    let peers = Arc::new(OwnerSocket(socket));
                    (SessionManager::new(NotifyingStore::new(store, peers), config), None)
                }
            };
            Ok(Sessions { manager, control, coherence: None })
        }
    }
}

/// While no account exists, the one-time link to create the first.
async fn print_setup_link(rocket: &Rocket<rocket::Orbit>) {
    let (Some(portal), Some(setup)) = (rocket.state::<Portal>(), rocket.state::<SetupToken>()) else {
        return;
    };
    if let Some(token) = setup.get() {
        println!(
            "sesija: no account exists yet; create the first one at {}/setup?token={token}",
            portal.public.origin
        );
    }
}
