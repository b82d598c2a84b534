//! `/`, `/login` and `/logout`.

use rocket::form::{Form, FromForm};
use rocket::http::{CookieJar, Status};
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, State};
use std::net::IpAddr;

use super::guards::{new_session_data, SignedIn};
use super::two_factor::{self, SecondFactor};
use super::{csrf, pages, App, Metrics, Notice, Reply, BAD_FORM};
use crate::auth::password::{needs_rehash, MAX_PASSWORD_BYTES};
use crate::auth::state::{AuthState, Stage};
use crate::auth::users::MAX_USERNAME_CHARS;
use crate::auth::{users, HashError, User};
use crate::session::{Session, SessionError, Sessions};

const WRONG_CREDENTIALS: &str = "Wrong user name or password.";

#[get("/")]
pub fn index(_session: SignedIn<'_>) -> Redirect {
    Redirect::to("/user")
}

#[get("/", rank = 2)]
pub fn index_anonymous() -> Redirect {
    Redirect::to("/login")
}

/// Already logged in: straight on to `rd` when it is safe, else `/user`;
/// a login still waiting for its second factor goes on to that.
#[get("/login?<rd>")]
pub async fn login_form(
    session: Session<'_>,
    rd: Option<&str>,
    jar: &CookieJar<'_>,
    app: &State<App>,
    second: &State<SecondFactor>,
    flash: Option<FlashMessage<'_>>,
) -> Reply {
    let rd = app.portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    match two_factor::next_step(session, second, &rd).await {
        Ok(Some(next)) => next,
        Ok(None) => after_login(app, &rd),
        // The waiting session ended: the form again.
        Err(_) => login_page(Status::Ok, jar, app, Notice::from_flash(flash), None, "", &rd),
    }
}

#[get("/login?<rd>", rank = 2)]
pub fn login_form_anonymous(
    jar: &CookieJar<'_>,
    app: &State<App>,
    flash: Option<FlashMessage<'_>>,
    rd: Option<&str>,
) -> Reply {
    let rd = app.portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    login_page(Status::Ok, jar, app, Notice::from_flash(flash), None, "", &rd)
}

/// Where a browser goes once logged in: a safe `rd`, else `/user`.
pub(super) fn after_login(app: &App, rd: &str) -> Reply {
    match app.portal.safe_rd(rd) {
        Some(to) => Reply::see_other(to),
        None => Reply::to("/user"),
    }
}

/// The login form; `rd` (already checked safe, or empty) rides along.
fn login_page(
    status: Status,
    jar: &CookieJar<'_>,
    app: &App,
    notice: Option<Notice>,
    error: Option<&str>,
    username: &str,
    rd: &str,
) -> Reply {
    let csrf_token = csrf::anonymous(jar, &app.settings);
    Reply::page(status, pages::render(pages::Login { notice, error, csrf_token: &csrf_token, username, rd }))
}

#[derive(FromForm)]
pub struct LoginForm {
    #[field(default = String::new())]
    username: String,
    #[field(default = String::new())]
    password: String,
    remember: bool,
    #[field(default = String::new())]
    csrf_token: String,
    /// Where to go afterwards (from `GET /login?rd=`).
    #[field(default = String::new())]
    rd: String,
}

#[post("/login", data = "<form>")]
pub async fn login(
    _origin: csrf::SameOrigin,
    form: Form<LoginForm>,
    jar: &CookieJar<'_>,
    sessions: Sessions<'_>,
    app: &State<App>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> Reply {
    let rd = app.portal.safe_rd(&form.rd).unwrap_or_default();
    if !csrf::anonymous_ok(jar, &app.settings, &form.csrf_token) {
        log::warn!("login refused: bad csrf token (user {:?}, ip {ip:?})", form.username);
        return login_page(Status::Forbidden, jar, app, None, Some(BAD_FORM), &form.username, &rd);
    }
    // Counted as in flight before the password is checked, and settled by
    // its verdict, so a burst of simultaneous attempts cannot pass the limit.
    let attempt = match app.throttle.begin(&form.username, ip).await {
        Ok(attempt) => attempt,
        Err(refused) => {
            log::warn!("login refused by the throttle: user {:?}, ip {ip:?}: {refused:?}", form.username);
            Metrics::count(&app.metrics.logins_throttled, 1);
            let csrf_token = csrf::anonymous(jar, &app.settings);
            return Reply::refused(refused, |message| {
                let page = pages::Login {
                    notice: None,
                    error: Some(message),
                    csrf_token: &csrf_token,
                    username: &form.username,
                    rd: &rd,
                };
                pages::render(page)
            });
        }
    };

    // A name no account can have is not looked up; like an unknown one, it
    // is checked against the dummy hash, so the answer takes the usual time.
    let user = match form.username.chars().count() <= MAX_USERNAME_CHARS {
        true => match users::by_name(&app.storage, &form.username).await {
            Ok(user) => user,
            Err(e) => {
                log::error!("login: {e}");
                attempt.refund().await;
                return Reply::unavailable();
            }
        },
        false => None,
    };
    // An over-long password cannot match; it is still verified (against the
    // dummy hash) so the answer takes the usual time.
    let password =
        if form.password.len() > MAX_PASSWORD_BYTES { String::new() } else { form.password.clone() };
    let hash =
        user.as_ref().filter(|_| form.password.len() <= MAX_PASSWORD_BYTES).map(|u| u.password_hash.clone());
    // A password never checked (no hashing slot in time) does not count.
    let ok = match app.hasher.verify(password.clone(), hash).await {
        Ok(ok) => ok,
        Err(HashError::Busy) => {
            attempt.refund().await;
            return Reply::error(Status::ServiceUnavailable, &HashError::Busy.to_string());
        }
        Err(e) => {
            log::error!("login: {e}");
            attempt.refund().await;
            return Reply::unavailable();
        }
    };
    let wrong = || {
        Metrics::count(&app.metrics.logins_failed, 1);
        log::warn!("login failed: user {:?}, ip {ip:?}", form.username);
        login_page(Status::Unauthorized, jar, app, None, Some(WRONG_CREDENTIALS), &form.username, &rd)
    };
    let Some(user) = user.filter(|_| ok) else {
        attempt.failed().await;
        return wrong();
    };
    attempt.succeeded().await;
    let verified = stronger_hash(app, &user, password).await;

    // With a second factor, the session waits for its code and opens
    // nothing meanwhile; where one is required, it opens only the set-up.
    let stage = Stage::after_password(user.two_factor, second.required);
    let data = new_session_data(&AuthState::after_password(stage, crate::session::now()));
    // A login waiting for its code ends after `two_factor_pending_timeout`,
    // however often its page is reloaded: the purge removes it then, and
    // no list shows it as live.
    let started = match stage {
        Stage::SecondFactorPending => {
            sessions.start_brief(user.id, form.remember, data, second.pending_timeout).await
        }
        Stage::Complete | Stage::MustEnrol => sessions.start(user.id, form.remember, data).await,
    };
    let session = match started {
        Ok(session) => session,
        Err(e) => {
            // The account may have gone meanwhile (its sessions cannot be
            // inserted any more): that is a wrong login, not an outage.
            return match users::has_password(&app.storage, user.id, &verified).await {
                Ok(None) => wrong(),
                _ => {
                    log::error!("login: {e}");
                    Reply::unavailable()
                }
            };
        }
    };
    // The password was checked against the account as it was read, tens of
    // milliseconds ago. A password change or removal committed since then
    // must win: it ended every session that existed when it committed, and
    // one committed after this session's insert is seen here. Either way no
    // session minted from the old password survives.
    // A second factor turned on meanwhile counts as such a change too.
    match users::has_password(&app.storage, user.id, &verified).await {
        Ok(Some(two_factor)) if two_factor == user.two_factor => {}
        Ok(_) => {
            log::warn!("login of {:?} raced a password change or removal: session ended", user.username);
            let _ = session.destroy().await;
            return wrong();
        }
        Err(e) => {
            log::error!("login: {e}");
            let _ = session.destroy().await;
            return Reply::unavailable();
        }
    }
    csrf::forget_anonymous(jar, &app.settings);
    match stage {
        Stage::SecondFactorPending => {
            log::info!(
                "login: user {:?}, ip {ip:?}, session {}: code awaited",
                user.username,
                session.handle()
            );
            return Reply::see_other(two_factor::with_rd("/login/2fa", &rd));
        }
        Stage::MustEnrol => {
            log::info!(
                "login: user {:?}, ip {ip:?}, session {}: must set up 2FA",
                user.username,
                session.handle()
            );
            return Reply::see_other(two_factor::with_rd("/account/2fa", &rd));
        }
        Stage::Complete => {}
    }
    log::info!("login: user {:?}, ip {ip:?}, session {}", user.username, session.handle());
    Metrics::count(&app.metrics.logins_succeeded, 1);
    after_login(app, &rd)
}

/// After a login proved `password`: if the stored hash was made with weaker
/// settings than new ones get, stores a new hash (unless the password
/// changed meanwhile). Returns the hash the account holds for it now.
async fn stronger_hash(app: &App, user: &User, password: String) -> String {
    if !needs_rehash(&user.password_hash) {
        return user.password_hash.clone();
    }
    let Ok(new) = app.hasher.hash(password).await else { return user.password_hash.clone() };
    match users::upgrade_hash(&app.storage, user.id, &user.password_hash, &new).await {
        Ok(true) => {
            log::info!("login: stored a stronger password hash for user {:?}", user.username);
            new
        }
        Ok(false) => user.password_hash.clone(),
        Err(e) => {
            log::warn!("login: could not store a stronger password hash: {e}");
            user.password_hash.clone()
        }
    }
}

#[get("/logout")]
pub async fn logout_page(session: Session<'_>, app: &State<App>) -> Reply {
    let (user, csrf_token) =
        match (users::by_id(&app.storage, session.user_id()).await, csrf::of_session(&session).await) {
            (Ok(Some(user)), Ok(token)) => (user, token),
            (Ok(None), _) => return Reply::to("/login"),
            _ => return Reply::unavailable(),
        };
    Reply::page(
        Status::Ok,
        pages::render(pages::Logout { notice: None, username: &user.username, csrf_token: &csrf_token }),
    )
}

#[get("/logout", rank = 2)]
pub fn logout_page_anonymous() -> Redirect {
    Redirect::to("/login")
}

#[derive(FromForm)]
pub struct LogoutForm {
    #[field(default = String::new())]
    pub csrf_token: String,
    /// Where to go afterwards, when safe (else `/login`).
    #[field(default = String::new())]
    pub rd: String,
}

#[post("/logout", data = "<form>")]
pub async fn logout(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<LogoutForm>,
    app: &State<App>,
) -> Reply {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Reply::error(Status::Forbidden, BAD_FORM);
    }
    let handle = session.handle().to_owned();
    match session.destroy().await {
        Ok(()) => {
            log::info!("logout: session {handle}");
            Metrics::count(&app.metrics.ended_logout, 1);
            match app.portal.safe_rd(&form.rd) {
                Some(to) => Reply::see_other(to),
                None => Reply::Flash(Flash::success(Redirect::to("/login"), "You have been logged out.")),
            }
        }
        Err(SessionError::Store(e)) => {
            log::error!("logout: {e}");
            Reply::unavailable()
        }
        Err(e) => {
            log::error!("logout: {e}");
            Reply::to("/login")
        }
    }
}

#[post("/logout", rank = 2)]
pub fn logout_anonymous() -> Redirect {
    Redirect::to("/login")
}
