//! The one way a handler fails: [`WebError`], a Responder, so handlers
//! return `Result<_, WebError>` and use `?` on every store, database,
//! hashing, second-factor and session error.
//!
//! It owns the answer to each kind of failure: 503 when something below is
//! unavailable (logged where it happened), the login page when the session
//! ended meanwhile, 429 with `Retry-After` when throttled, and a refused
//! request's status with its page. Pages get HTML; routes under `/api/`
//! (the proxies' checks now, the provider's endpoints next) get JSON.

use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Redirect, Responder, Response};

use super::pages;
use crate::auth::accounts::AccountError;
use crate::auth::factors::FactorError;
use crate::auth::throttle::Refused;
use crate::auth::{HashError, LoginError, UserError};
use crate::session::{SessionError, StoreError};

/// What the browser is told when something below is unavailable.
pub const UNAVAILABLE: &str = "sesija cannot reach its database right now. Try again in a moment.";

/// Why a handler did not do what was asked.
#[derive(Debug)]
pub enum WebError {
    /// The database, the session store or the hasher is unavailable: 503.
    Unavailable(&'static str),
    /// The session ended meanwhile, or its account is gone: to `/login`.
    LoggedOut,
    /// Too many attempts: 429 with `Retry-After` and the form again.
    Throttled {
        /// Seconds to wait.
        wait: u64,
        /// The refused form, with the message.
        page: String,
    },
    /// Refused with `status` and a page saying why (a form from another
    /// site, a wrong password, an unknown session).
    Refused(Status, String),
    /// A malformed request: 400 with the reason (a proxy's check without
    /// its headers, a target that is no URL).
    Invalid(&'static str),
}

impl WebError {
    /// 503, logged with what was being done.
    pub fn down(what: &str, e: impl std::fmt::Display) -> WebError {
        log::error!("{what}: {e}");
        WebError::Unavailable(UNAVAILABLE)
    }

    /// Refused with `status` and the error page's `message`.
    pub fn refused(status: Status, message: &str) -> WebError {
        WebError::Refused(status, pages::error(status, message, None))
    }

    /// Refused with `status` and a whole page.
    pub fn page(status: Status, html: String) -> WebError {
        WebError::Refused(status, html)
    }

    /// An attempt the throttle refused: 429 with the form (`page` renders
    /// it around the message) while a limit holds, 503 when the counts
    /// could not be read.
    pub fn throttled(refused: Refused, page: impl FnOnce(&str) -> String) -> WebError {
        match refused {
            Refused::Wait(wait) => {
                let message = format!("Too many failed attempts. Try again in {wait} seconds.");
                WebError::Throttled { wait, page: page(&message) }
            }
            Refused::Unavailable => WebError::Unavailable(UNAVAILABLE),
        }
    }

    fn status(&self) -> Status {
        match self {
            WebError::Unavailable(_) => Status::ServiceUnavailable,
            WebError::LoggedOut => Status::SeeOther,
            WebError::Throttled { .. } => Status::TooManyRequests,
            WebError::Refused(status, _) => *status,
            WebError::Invalid(_) => Status::BadRequest,
        }
    }
}

impl From<SessionError> for WebError {
    fn from(e: SessionError) -> WebError {
        match e {
            SessionError::Ended => WebError::LoggedOut,
            e => WebError::down("session", e),
        }
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> WebError {
        WebError::down("session store", e)
    }
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> WebError {
        WebError::down("database", e)
    }
}

impl From<UserError> for WebError {
    fn from(e: UserError) -> WebError {
        WebError::down("accounts", e)
    }
}

impl From<FactorError> for WebError {
    fn from(e: FactorError) -> WebError {
        WebError::down("second factor", e)
    }
}

impl From<HashError> for WebError {
    fn from(e: HashError) -> WebError {
        match e {
            // Not an outage: every hashing slot is taken for a moment.
            HashError::Busy => {
                log::warn!("{e}");
                WebError::Unavailable("Too many logins at once; try again in a moment.")
            }
            e => WebError::down("password hashing", e),
        }
    }
}

impl From<AccountError> for WebError {
    fn from(e: AccountError) -> WebError {
        match e {
            AccountError::Hash(e) => e.into(),
            e => WebError::down("account change", e),
        }
    }
}

impl From<LoginError> for WebError {
    fn from(e: LoginError) -> WebError {
        match e {
            LoginError::Hash(e) => e.into(),
            LoginError::Throttle => WebError::Unavailable(UNAVAILABLE),
            e => WebError::down("login", e),
        }
    }
}

impl<'r> Responder<'r, 'static> for WebError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let status = self.status();
        if req.uri().path().starts_with("/api/") {
            // In OAuth's shape (RFC 6749 5.2), which the provider's
            // endpoints will answer with too.
            let (error, description) = match &self {
                WebError::Unavailable(why) => ("temporarily_unavailable", *why),
                WebError::LoggedOut => ("login_required", "login required"),
                WebError::Throttled { .. } => ("slow_down", "too many attempts"),
                WebError::Refused(..) => ("access_denied", "refused"),
                WebError::Invalid(why) => ("invalid_request", *why),
            };
            let body = serde_json::json!({ "error": error, "error_description": description }).to_string();
            return Response::build()
                .status(if status == Status::SeeOther { Status::Unauthorized } else { status })
                .header(ContentType::JSON)
                .sized_body(body.len(), std::io::Cursor::new(body))
                .ok();
        }
        let html = match self {
            WebError::LoggedOut => return Redirect::to("/login").respond_to(req),
            WebError::Unavailable(message) => pages::error(status, message, None),
            WebError::Throttled { wait, page } => {
                return Response::build()
                    .status(status)
                    .header(ContentType::HTML)
                    .header(Header::new("Retry-After", wait.to_string()))
                    .sized_body(page.len(), std::io::Cursor::new(page))
                    .ok();
            }
            WebError::Refused(_, page) => page,
            WebError::Invalid(why) => pages::error(status, why, None),
        };
        super::Page { status, html }.respond_to(req)
    }
}
