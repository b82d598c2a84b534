//! The Rocket side of the layer: the fairing, the request guards and the cookie.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::{CookieJar, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{async_trait, Build, Orbit, Rocket};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use super::manager::Live;
use super::store::{Ending, Record, SessionStore, StoreError};
use super::token::{new_handle, SessionKey, Token};
use super::{purge, SessionConfig, SessionManager};

/// What a session operation can fail with.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant says what it is in its message
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session was ended (logout elsewhere, revocation, expiry) while this
    /// request was using it; nothing was written.
    #[error("the session has ended")]
    Ended,
    #[error("session value cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("SessionLayer is not attached")]
    NotAttached,
}

/// A failed session operation answers 503 when the store is unavailable,
/// 401 when the session ended meanwhile, and 500 otherwise.
impl<'r> rocket::response::Responder<'r, 'static> for SessionError {
    fn respond_to(self, _: &'r Request<'_>) -> rocket::response::Result<'static> {
        log::warn!("{self}");
        Err(match self {
            SessionError::Store(_) => Status::ServiceUnavailable,
            SessionError::Ended => Status::Unauthorized,
            SessionError::Encode(_) | SessionError::NotAttached => Status::InternalServerError,
        })
    }
}

/// Fairing that makes sessions available and runs the purge task from
/// liftoff until shutdown.
pub struct SessionLayer {
    manager: Arc<SessionManager>,
    purge: Mutex<Option<JoinHandle<u64>>>,
}

impl SessionLayer {
    /// The layer over `store`, configured by `config`.
    pub fn new(store: impl SessionStore, config: SessionConfig) -> SessionLayer {
        SessionLayer::from_manager(Arc::new(SessionManager::new(store, config)))
    }

    /// The layer over a manager built elsewhere (with fallback keys, a clock).
    pub fn from_manager(manager: Arc<SessionManager>) -> SessionLayer {
        SessionLayer { manager, purge: Mutex::new(None) }
    }
}

#[async_trait]
impl Fairing for SessionLayer {
    fn info(&self) -> Info {
        Info { name: "sessions", kind: Kind::Ignite | Kind::Liftoff | Kind::Shutdown }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        Ok(rocket.manage(self.manager.clone()))
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        let task = tokio::spawn(purge::run(self.manager.clone(), rocket.shutdown()));
        *self.purge.lock().unwrap() = Some(task);
    }

    async fn on_shutdown(&self, _: &Rocket<Orbit>) {
        let task = self.purge.lock().unwrap().take();
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                log::warn!("session purge did not stop within 5 s");
            }
        }
    }
}

/// The result of the (at most one) session look-up of a request.
struct Loaded(Result<Option<Arc<Live>>, String>);

fn manager<'r>(req: &'r Request<'_>) -> Option<&'r SessionManager> {
    req.rocket().state::<Arc<SessionManager>>().map(|m| &**m)
}

/// The live session of the current request.
///
/// As a guard it costs one read by primary key per request, or none when
/// the session is cached in memory (the result is kept for the rest of
/// the request), forwards with 401 when the request has no live session and
/// fails with 503 when the store is unavailable.
pub struct Session<'r> {
    manager: &'r SessionManager,
    jar: &'r CookieJar<'r>,
    live: Arc<Live>,
}

#[async_trait]
impl<'r> FromRequest<'r> for Session<'r> {
    type Error = SessionError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(manager) = manager(req) else {
            return Outcome::Error((Status::InternalServerError, SessionError::NotAttached));
        };
        let loaded = req
            .local_cache_async(async { Loaded(manager.load(req.cookies()).await.map_err(|e| e.to_string())) })
            .await;
        match &loaded.0 {
            Ok(Some(live)) => Outcome::Success(Session { manager, jar: req.cookies(), live: live.clone() }),
            Ok(None) => Outcome::Forward(Status::Unauthorized),
            Err(e) => {
                log::error!("{e}");
                Outcome::Error((Status::ServiceUnavailable, StoreError::Unavailable(e.clone()).into()))
            }
        }
    }
}

impl<'r> Session<'r> {
    /// The request's session for a route whose only session guard this is
    /// (a proxy's check): loaded like the guard's, without keeping it for
    /// other guards of the request, which costs the keeping. `Ok(None)`:
    /// no live session.
    ///
    /// # Errors
    /// [`SessionError::NotAttached`] without the layer; a store error when
    /// the store is unavailable.
    pub async fn load_alone(req: &'r Request<'_>) -> Result<Option<Session<'r>>, SessionError> {
        let manager = manager(req).ok_or(SessionError::NotAttached)?;
        let live = manager.load(req.cookies()).await?;
        Ok(live.map(|live| Session { manager, jar: req.cookies(), live }))
    }

    /// The session's owner.
    pub fn user_id(&self) -> i64 {
        self.live.record.user_id
    }

    /// Public id of this session (safe to show; never a credential).
    pub fn handle(&self) -> &str {
        &self.live.record.handle
    }

    /// The stored row as loaded (deadlines as moved by this request).
    pub fn record(&self) -> &Record {
        &self.live.record
    }

    /// A value, if present and of type `T`. A value of another shape is `None`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.live.get(key)
    }

    /// What `read` makes of all the session's values at once (read in
    /// place, nothing copied).
    pub fn with_values<R>(&self, read: impl FnOnce(&Map<String, Value>) -> R) -> R {
        self.live.with_values(|values| read(values))
    }

    /// Stores a value; written at once, and only if it changed.
    ///
    /// # Errors
    /// [`SessionError::Ended`] when the session was ended meanwhile.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value)?;
        let text = self.live.with_values(|data| {
            if data.get(key) == Some(&value) {
                return Ok(None);
            }
            data.insert(key.to_owned(), value);
            serde_json::to_string(&*data).map(Some)
        })?;
        self.save_changed(text).await
    }

    /// Changes the values at once with `change`; written once, and only if
    /// something changed.
    ///
    /// # Errors
    /// [`SessionError::Ended`] when the session was ended meanwhile.
    pub async fn update(&self, change: impl FnOnce(&mut Map<String, Value>)) -> Result<(), SessionError> {
        let text = self.live.with_values(|data| {
            let before = data.clone();
            change(data);
            match *data == before {
                true => Ok(None),
                false => serde_json::to_string(&*data).map(Some),
            }
        })?;
        self.save_changed(text).await
    }

    /// Removes a value and returns it; writes only if it was there.
    pub async fn remove(&self, key: &str) -> Result<Option<Value>, SessionError> {
        let removed = self.live.with_values(|data| {
            let Some(old) = data.remove(key) else { return Ok(None) };
            serde_json::to_string(&*data).map(|text| Some((old, text)))
        })?;
        let Some((old, text)) = removed else { return Ok(None) };
        self.save(&text).await?;
        Ok(Some(old))
    }

    /// Writes the values' new text, if there is one (`None`: nothing changed).
    async fn save_changed(&self, text: Option<String>) -> Result<(), SessionError> {
        match text {
            Some(text) => self.save(&text).await,
            None => Ok(()),
        }
    }

    async fn save(&self, text: &str) -> Result<(), SessionError> {
        let key = *self.live.key.lock().unwrap();
        match self.manager.store.save_data(&key, text, self.manager.now()).await? {
            true => Ok(()),
            false => Err(SessionError::Ended),
        }
    }

    /// Gives this session a new token (and the client a new cookie); the old
    /// token stops working at once. Data and deadlines are kept.
    pub async fn rotate(&self) -> Result<(), SessionError> {
        let old = *self.live.key.lock().unwrap();
        let token = Token::generate();
        let now = self.manager.now();
        if !self.manager.store.rotate(&old, &token.hash(), now).await? {
            return Err(SessionError::Ended);
        }
        *self.live.key.lock().unwrap() = SessionKey { id: old.id, hash: token.hash() };
        let r = &self.live.record;
        self.jar.add_private(self.manager.cookie(old.id, &token, r.persistent, r.created_at, now));
        Ok(())
    }

    /// Ends this session: deletes the row and expires the cookie.
    pub async fn destroy(self) -> Result<(), SessionError> {
        let key = *self.live.key.lock().unwrap();
        self.manager.store.end(Ending::Session(&key)).await?;
        self.manager.stats.destroyed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.jar.remove_private(self.manager.removal());
        Ok(())
    }

    /// The session layer this session belongs to.
    pub fn manager(&self) -> &'r SessionManager {
        self.manager
    }
}

/// Access to the session layer for this request, whether or not it has a
/// session: use it to start one.
pub struct Sessions<'r> {
    manager: &'r SessionManager,
    jar: &'r CookieJar<'r>,
    user_agent: Option<String>,
    ip: Option<String>,
}

#[async_trait]
impl<'r> FromRequest<'r> for Sessions<'r> {
    type Error = SessionError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(manager) = manager(req) else {
            return Outcome::Error((Status::InternalServerError, SessionError::NotAttached));
        };
        let user_agent = req.headers().get_one("User-Agent").map(|ua| ua.chars().take(512).collect());
        Outcome::Success(Sessions {
            manager,
            jar: req.cookies(),
            user_agent,
            ip: req.client_ip().map(|ip| ip.to_string()),
        })
    }
}

impl<'r> Sessions<'r> {
    /// Starts a new session for `user_id` with a fresh token and sets its
    /// cookie. A session the client held before is deleted in the same
    /// transaction, so a login always rotates.
    ///
    /// `persistent` makes the cookie outlive the browser session.
    pub async fn start(
        &self,
        user_id: i64,
        persistent: bool,
        data: Map<String, Value>,
    ) -> Result<Session<'r>, SessionError> {
        self.begin(user_id, persistent, data, None).await
    }

    /// [`Sessions::start`] for a session that ends `lifetime` seconds from
    /// now whatever its activity (a login waiting for a second factor).
    pub async fn start_brief(
        &self,
        user_id: i64,
        persistent: bool,
        data: Map<String, Value>,
        lifetime: i64,
    ) -> Result<Session<'r>, SessionError> {
        self.begin(user_id, persistent, data, Some(lifetime)).await
    }

    async fn begin(
        &self,
        user_id: i64,
        persistent: bool,
        data: Map<String, Value>,
        lifetime: Option<i64>,
    ) -> Result<Session<'r>, SessionError> {
        let now = self.manager.now();
        let ends_at = lifetime.map(|lifetime| now + lifetime);
        let replaces = self.manager.key(self.jar).map(|k| k.key);
        let token = Token::generate();
        let record = Record {
            handle: new_handle(),
            user_id,
            data: serde_json::to_string(&data)?,
            created_at: now,
            last_seen_at: now,
            expires_at: ends_at
                .map_or(self.manager.deadline(now, now), |end| end.min(self.manager.deadline(now, now))),
            ends_at,
            persistent,
            user_agent: self.user_agent.clone(),
            ip: self.ip.clone(),
        };
        let hash = token.hash();
        let id = self.manager.store.create(&hash, &record, replaces.as_ref()).await?;
        self.manager.stats.created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.jar.add_private(self.manager.cookie(id, &token, persistent, record.created_at, now));
        let live = Live { key: Mutex::new(SessionKey { id, hash }), record, data: Mutex::new(Some(data)) };
        Ok(Session { manager: self.manager, jar: self.jar, live: Arc::new(live) })
    }

    /// Whether the request carried a session cookie at all (live or not):
    /// tells "your session expired" apart from "you never logged in".
    pub fn cookie_sent(&self) -> bool {
        let config = &self.manager.config;
        std::iter::once(&config.cookie_name).chain(&config.accept_names).any(|n| self.jar.get(n).is_some())
    }

    /// The session layer.
    pub fn manager(&self) -> &'r SessionManager {
        self.manager
    }
}
