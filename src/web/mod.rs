//! The web app: pages, forms and their rules. Everything a browser sees.

mod account;
mod authz;
mod csrf;
mod device;
mod error;
mod guards;
mod health;
mod login;
mod metrics;
mod pages;
mod portal;
mod sessions;
mod setup;
mod two_factor;
mod user;

use std::net::IpAddr;
use std::sync::Arc;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::{Header, Status};
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect, Responder};
use rocket::{catch, catchers, routes, Build, Request, Rocket, Route};

use crate::auth::accounts::{Accounts, Caches};
use crate::auth::identity::Identities;
use crate::auth::throttle::Refused;
use crate::auth::users::User;
use crate::auth::{Authenticator, Verdict};
use crate::config::Settings;
use crate::storage::Storage;

pub use authz::{BadTarget, Target};
pub use error::WebError;
pub use metrics::Metrics;
pub use portal::Portal;
pub use setup::SetupToken;
pub use two_factor::SecondFactor;

/// The accounts as the pages reach them: the database, and who each
/// account is (cached for forward auth and `/user`).
pub struct Directory {
    /// The database.
    pub storage: Storage,
    /// Who each account is.
    pub identities: Arc<Identities>,
}

impl Directory {
    /// Account changes made from a page: sessions ended through `sessions`
    /// (the server's store), announced to this server's caches.
    fn accounts<'a>(
        &'a self,
        auth: &'a Authenticator,
        sessions: &'a dyn crate::session::SessionStore,
    ) -> Accounts<'a, Caches<'a>> {
        Accounts::new(
            &self.storage,
            auth.hasher(),
            sessions,
            Caches { sessions, identities: &self.identities },
        )
    }

    /// The account a session belongs to; gone (removed meanwhile), the
    /// login page.
    async fn account(&self, user_id: i64) -> WebResult<User> {
        crate::auth::users::by_id(&self.storage, user_id).await?.ok_or(WebError::LoggedOut)
    }
}

/// The signed-in account's password asked for again (before ending other
/// sessions, changing the password or setting up a second factor). `Err`
/// is the answer: the form again (`page`) when throttled or with `wrong`
/// (422), or 503.
async fn confirm_password(
    auth: &Authenticator,
    user: &User,
    password: &str,
    ip: Option<IpAddr>,
    wrong: &str,
    page: impl Fn(&str) -> String,
) -> WebResult<()> {
    match auth.confirm_password(user, password, ip).await? {
        Verdict::Right(()) => Ok(()),
        Verdict::Wrong => {
            log::warn!("password confirmation failed: user {:?}, ip {ip:?}", user.username);
            Err(WebError::page(Status::UnprocessableEntity, page(wrong)))
        }
        Verdict::Throttled(wait) => Err(WebError::throttled(Refused::Wait(wait), page)),
    }
}

/// Every page and endpoint: each area's own routes.
pub fn routes() -> Vec<Route> {
    [
        authz::routes(),
        login::routes(),
        user::routes(),
        sessions::routes(),
        account::routes(),
        two_factor::routes(),
        setup::routes(),
        health::routes(),
    ]
    .concat()
}

/// Mounts the app on `rocket`: routes, error pages and response headers.
pub fn stage(rocket: Rocket<Build>) -> Rocket<Build> {
    let secure = rocket.state::<Portal>().is_some_and(|p| p.cookie_secure);
    let portal = rocket.state::<Portal>().map(|p| (p.public.https, p.cookie_domain.clone()));
    let metrics = match rocket.state::<Settings>().is_some_and(|s| s.metrics) {
        true => rocket.state::<Arc<Metrics>>().cloned(),
        false => None,
    };
    let rocket = match metrics {
        Some(metrics) => rocket.mount("/", routes![metrics::metrics]).attach(metrics::RequestTimer(metrics)),
        None => rocket,
    };
    rocket
        .mount("/", routes())
        .register("/", catchers![default_catcher])
        // Ours replaces Rocket's default Shield: one fairing owns every
        // security header, each set once.
        .attach(rocket::shield::Shield::new())
        .attach(setup::HideSetupToken)
        .attach(SecurityHeaders {
            hsts: secure,
            policy: Box::leak(content_security_policy(portal.as_ref()).into_boxed_str()),
        })
}

/// Headers on every response: nothing is cached (pages show who is logged
/// in), no framing, no sniffing, no referrer to other sites (the setup link
/// holds a token; `same-origin` rather than `no-referrer`, under which
/// browsers send `Origin: null` with every form and the origin check of
/// `csrf::SameOrigin` could not tell the portal's own forms from others),
/// a strict content policy, and HSTS when cookies are Secure.
struct SecurityHeaders {
    hsts: bool,
    /// Built once per app (and kept for its life) rather than copied into
    /// every response.
    policy: &'static str,
}

/// The content policy. Browsers hold `form-action` to the redirects a form
/// submission follows too, so the login form, which sends the browser on to
/// the app it came from (`rd`), may also go to every host under the cookie
/// domain (any port), with the portal's scheme.
fn content_security_policy(portal: Option<&(bool, Option<String>)>) -> String {
    let mut form_action = "'self'".to_owned();
    if let Some((https, Some(domain))) = portal {
        let scheme = if *https { "https" } else { "http" };
        form_action.push_str(&format!(" {scheme}://{domain}:* {scheme}://*.{domain}:*"));
    }
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

#[rocket::async_trait]
impl Fairing for SecurityHeaders {
    fn info(&self) -> Info {
        Info { name: "security headers", kind: Kind::Response }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut rocket::Response<'r>) {
        // A proxy's check never sets a cookie: the proxy drops it or hands
        // it to the app. (The session guard may have re-sealed or removed
        // one; the browser gets that at its next visit to the portal.)
        if req.uri().path().starts_with("/api/authz/") {
            res.remove_header("Set-Cookie");
            // An allowed check goes to the proxy only, which never shows it
            // to a browser: the page headers would cost every proxied
            // request their time for nothing. Every other answer (a
            // redirect, the 401 hint, the 403 page) may reach the browser
            // and carries them all.
            if res.status() == Status::Ok {
                return;
            }
        }
        // The stylesheet alone may be cached, and says so itself.
        if !res.headers().contains("Cache-Control") {
            res.set_header(Header::new("Cache-Control", "no-store"));
        }
        res.set_header(Header::new("Content-Security-Policy", self.policy));
        res.set_header(Header::new("Referrer-Policy", "same-origin"));
        res.set_header(Header::new("X-Content-Type-Options", "nosniff"));
        res.set_header(Header::new("X-Frame-Options", "DENY"));
        if self.hsts {
            res.set_header(Header::new("Strict-Transport-Security", "max-age=31536000"));
        }
    }
}

/// Every kind of answer a handler gives when it does what was asked (its
/// failures are [`WebError`]s).
#[derive(Responder)]
pub enum Reply {
    /// A page with its status.
    Page(Page),
    /// A redirect to one of our own pages.
    Redirect(Redirect),
    /// A redirect with a message for the next page.
    Flash(Flash<Redirect>),
    /// 303 to an address checked safe.
    SeeOther(SeeOther),
}

/// An HTML page with its status. Its own responder: Rocket's `RawHtml`
/// over a `String` sets the content type twice (plain text, then HTML), and
/// each header costs every page view a hashed insert.
pub struct Page {
    /// The status.
    pub status: Status,
    /// The page.
    pub html: String,
}

impl<'r> Responder<'r, 'static> for Page {
    fn respond_to(self, _: &'r Request<'_>) -> rocket::response::Result<'static> {
        rocket::Response::build()
            .status(self.status)
            .header(rocket::http::ContentType::HTML)
            .sized_body(self.html.len(), std::io::Cursor::new(self.html))
            .ok()
    }
}

/// 303 to a URL checked safe (`rd`): `Location` as given, never re-parsed.
#[derive(Responder)]
#[response(status = 303)]
pub struct SeeOther {
    body: &'static str,
    location: Header<'static>,
}

impl Reply {
    /// A page with `status`.
    pub fn page(status: Status, html: String) -> Reply {
        Reply::Page(Page { status, html })
    }

    /// 303 to `location` (checked safe by the caller).
    pub fn see_other(location: String) -> Reply {
        Reply::SeeOther(SeeOther { body: "", location: Header::new("Location", location) })
    }

    /// A redirect to our own `uri`.
    pub fn to(uri: &'static str) -> Reply {
        Reply::Redirect(Redirect::to(uri))
    }
}

/// What a handler returns: its answer, or why not.
pub type WebResult<T = Reply> = Result<T, WebError>;

const BAD_FORM: &str = "This form has expired or came from another site. Please try again.";

/// A flash message as the templates show it.
pub struct Notice {
    /// `success`, `warning` or `error`.
    pub kind: String,
    /// What it says.
    pub message: String,
}

impl Notice {
    /// The flash message of the request's cookie, if any.
    pub fn from_flash(flash: Option<FlashMessage<'_>>) -> Option<Notice> {
        flash.map(|f| Notice { kind: f.kind().to_owned(), message: f.message().to_owned() })
    }
}

#[catch(default)]
fn default_catcher(status: Status, _: &Request<'_>) -> Page {
    let message = match status.code {
        400 | 422 => "The request could not be understood.",
        403 => "This request is not allowed.",
        404 => "There is nothing here.",
        413 => "The request is too large.",
        503 => error::UNAVAILABLE,
        _ => "Something went wrong on our side.",
    };
    Page { status, html: pages::error(status, message, None) }
}
