//! The web app: pages, forms and their rules. Everything a browser sees.

mod account;
pub mod authz;
mod csrf;
mod device;
mod guards;
mod health;
mod login;
mod metrics;
mod pages;
pub mod portal;
mod sessions;
mod setup;
pub mod two_factor;
mod user;

use std::net::IpAddr;
use std::sync::Arc;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::{Header, Status};
use rocket::request::FlashMessage;
use rocket::response::{content::RawHtml, Flash, Redirect, Responder};
use rocket::{catch, catchers, routes, Build, Request, Rocket, Route};

use crate::auth::identity::Identities;
use crate::auth::password::MAX_PASSWORD_BYTES;
use crate::auth::throttle::Refused;
use crate::auth::users::User;
use crate::auth::{Hasher, Throttle};
use crate::config::Settings;
use crate::db::Storage;

pub use metrics::Metrics;
pub use setup::SetupToken;

/// Shared state of the web app.
pub struct App {
    pub metrics: Arc<Metrics>,
    pub storage: Storage,
    pub settings: Settings,
    pub hasher: Hasher,
    pub throttle: Throttle,
    pub setup: SetupToken,
    /// Public address, cookie domain, access rules.
    pub portal: portal::Portal,
    /// Who each account is, for forward auth and `/user`.
    pub identities: Arc<Identities>,
}

impl App {
    /// The signed-in account's password asked for again (before ending
    /// other sessions, changing the password or the second factor): through
    /// the login throttle, so guessing it here is no faster than at login.
    /// `Err` is the answer: the form again (`page`) when throttled or with
    /// `wrong` (422), or 503.
    async fn confirm_password(
        &self,
        user: &User,
        password: &str,
        ip: Option<IpAddr>,
        wrong: &str,
        page: impl Fn(&str) -> String,
    ) -> Result<(), Reply> {
        let attempt = self.throttle.begin(&user.username, ip).await.map_err(|r| Reply::refused(r, &page))?;
        let password = if password.len() > MAX_PASSWORD_BYTES { String::new() } else { password.to_owned() };
        match self.hasher.verify(password, Some(user.password_hash.clone())).await {
            Ok(true) => {
                attempt.succeeded().await;
                Ok(())
            }
            Ok(false) => {
                attempt.failed().await;
                log::warn!("password confirmation failed: user {:?}, ip {ip:?}", user.username);
                Err(Reply::page(Status::UnprocessableEntity, page(wrong)))
            }
            Err(_) => Err(Reply::unavailable()),
        }
    }
}

pub fn routes() -> Vec<Route> {
    let mut all = routes![
        login::index,
        login::index_anonymous,
        login::login_form,
        login::login_form_anonymous,
        login::login,
        login::logout_page,
        login::logout_page_anonymous,
        login::logout,
        login::logout_anonymous,
        user::user,
        user::user_anonymous,
        sessions::list,
        sessions::list_anonymous,
        sessions::revoke,
        sessions::revoke_others,
        sessions::revoke_anonymous,
        sessions::revoke_others_anonymous,
        account::password_form,
        account::password_form_anonymous,
        account::change_password,
        account::change_password_anonymous,
        setup::setup_form,
        setup::setup,
        health::healthz,
        health::stylesheet,
        authz::auth_request,
        authz::forward_auth,
    ];
    all.extend(two_factor::routes());
    all
}

/// Mounts the app on `rocket`: routes, error pages and response headers.
pub fn stage(rocket: Rocket<Build>) -> Rocket<Build> {
    let secure = rocket.state::<App>().is_some_and(|a| a.settings.cookie_secure);
    let portal = rocket.state::<App>().map(|a| (a.portal.public.https, a.portal.cookie_domain.clone()));
    let metrics = rocket.state::<App>().filter(|a| a.settings.metrics).map(|a| a.metrics.clone());
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

/// Every kind of answer a handler gives.
#[derive(Responder)]
pub enum Reply {
    Page((Status, RawHtml<String>)),
    Redirect(Redirect),
    Flash(Flash<Redirect>),
    Throttled(Throttled),
    SeeOther(SeeOther),
}

/// 303 to a URL checked safe (`rd`): `Location` as given, never re-parsed.
#[derive(Responder)]
#[response(status = 303)]
pub struct SeeOther {
    body: &'static str,
    location: Header<'static>,
}

/// 429 with the seconds to wait.
#[derive(Responder)]
#[response(status = 429)]
pub struct Throttled {
    page: RawHtml<String>,
    retry_after: Header<'static>,
}

impl Reply {
    pub fn page(status: Status, html: String) -> Reply {
        Reply::Page((status, RawHtml(html)))
    }

    /// 429 with `Retry-After`; `page` renders the refused form around the
    /// message it is given.
    pub fn throttled(wait: u64, page: impl FnOnce(&str) -> String) -> Reply {
        let message = format!("Too many failed attempts. Try again in {wait} seconds.");
        Reply::Throttled(Throttled {
            page: RawHtml(page(&message)),
            retry_after: Header::new("Retry-After", wait.to_string()),
        })
    }

    /// A refused attempt: 429 with the form ([`Reply::throttled`]) while a
    /// limit holds, 503 when the counts could not be read.
    pub fn refused(refused: Refused, page: impl FnOnce(&str) -> String) -> Reply {
        match refused {
            Refused::Wait(wait) => Reply::throttled(wait, page),
            Refused::Unavailable => Reply::unavailable(),
        }
    }

    pub fn see_other(location: String) -> Reply {
        Reply::SeeOther(SeeOther { body: "", location: Header::new("Location", location) })
    }

    pub fn to(uri: &'static str) -> Reply {
        Reply::Redirect(Redirect::to(uri))
    }

    pub fn error(status: Status, message: &str) -> Reply {
        Reply::page(status, pages::error(status, message, None))
    }

    pub fn unavailable() -> Reply {
        Reply::error(Status::ServiceUnavailable, UNAVAILABLE)
    }
}

/// A session operation that failed ends a handler: a session ended
/// meanwhile sends the browser to the login page, anything else is 503.
/// Handlers returning `Result<Reply, Reply>` use `?` on it.
impl From<crate::session::SessionError> for Reply {
    fn from(e: crate::session::SessionError) -> Reply {
        match e {
            crate::session::SessionError::Ended => Reply::to("/login"),
            e => {
                log::error!("{e}");
                Reply::unavailable()
            }
        }
    }
}

impl Reply {
    /// 503 for a store or database failure, logged with `what` was asked.
    pub fn down(what: &str, e: impl std::fmt::Display) -> Reply {
        log::error!("{what}: {e}");
        Reply::unavailable()
    }
}

const BAD_FORM: &str = "This form has expired or came from another site. Please try again.";
const UNAVAILABLE: &str = "sesija cannot reach its database right now. Try again in a moment.";

/// A flash message as the templates show it.
pub struct Notice {
    pub kind: String,
    pub message: String,
}

impl Notice {
    pub fn from_flash(flash: Option<FlashMessage<'_>>) -> Option<Notice> {
        flash.map(|f| Notice { kind: f.kind().to_owned(), message: f.message().to_owned() })
    }
}

#[catch(default)]
fn default_catcher(status: Status, _: &Request<'_>) -> (Status, RawHtml<String>) {
    let message = match status.code {
        400 | 422 => "The request could not be understood.",
        403 => "This request is not allowed.",
        404 => "There is nothing here.",
        413 => "The request is too large.",
        503 => UNAVAILABLE,
        _ => "Something went wrong on our side.",
    };
    (status, RawHtml(pages::error(status, message, None)))
}
