//! `/`, `/login` and `/logout`.

use rocket::form::{Form, FromForm};
use rocket::http::{CookieJar, Status};
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, State};
use std::net::IpAddr;
use std::sync::Arc;

use super::guards::{new_session_data, SignedIn};
use super::metrics::{Ended, Login};
use super::two_factor::{self, NextStep, SecondFactor};
use super::{csrf, pages, Directory, Metrics, Notice, Portal, Reply, WebError, WebResult, BAD_FORM};
use crate::auth::login::Proved;
use crate::auth::state::{AuthState, Stage};
use crate::auth::throttle::Refused;
use crate::auth::{Authenticator, Verdict};
use crate::session::{Session, Sessions};

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
    portal: &State<Portal>,
    second: &State<SecondFactor>,
    flash: Option<FlashMessage<'_>>,
) -> Reply {
    let rd = portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    match two_factor::next_step(session, second, &rd).await {
        NextStep::Then(next) => Reply::see_other(next),
        NextStep::Complete => portal.after_login(&rd),
        // The waiting session ended: the form again.
        NextStep::Expired => login_page(Status::Ok, jar, portal, Notice::from_flash(flash), None, "", &rd),
    }
}

#[get("/login?<rd>", rank = 2)]
pub fn login_form_anonymous(
    jar: &CookieJar<'_>,
    portal: &State<Portal>,
    flash: Option<FlashMessage<'_>>,
    rd: Option<&str>,
) -> Reply {
    let rd = portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    login_page(Status::Ok, jar, portal, Notice::from_flash(flash), None, "", &rd)
}

/// The login form; `rd` (already checked safe, or empty) rides along.
fn login_page(
    status: Status,
    jar: &CookieJar<'_>,
    portal: &Portal,
    notice: Option<Notice>,
    error: Option<&str>,
    username: &str,
    rd: &str,
) -> Reply {
    let csrf_token = csrf::anonymous(jar, portal.cookie_secure, portal.now());
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
    portal: &State<Portal>,
    metrics: &State<Arc<Metrics>>,
    auth: &State<Authenticator>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> WebResult {
    let rd = portal.safe_rd(&form.rd).unwrap_or_default();
    let page = |status, error| login_page(status, jar, portal, None, Some(error), &form.username, &rd);
    if !csrf::anonymous_ok(jar, portal.cookie_secure, &form.csrf_token, portal.now()) {
        log::warn!("login refused: bad csrf token (user {:?}, ip {ip:?})", form.username);
        return Ok(page(Status::Forbidden, BAD_FORM));
    }
    let wrong = || {
        metrics.login(Login::Failed);
        log::warn!("login failed: user {:?}, ip {ip:?}", form.username);
        page(Status::Unauthorized, WRONG_CREDENTIALS)
    };
    let proved = match auth.password(&form.username, &form.password, ip).await? {
        Verdict::Right(proved) => proved,
        Verdict::Wrong => return Ok(wrong()),
        Verdict::Throttled(wait) => {
            log::warn!("login refused by the throttle: user {:?}, ip {ip:?}: {wait} s", form.username);
            metrics.login(Login::Throttled);
            let csrf_token = csrf::anonymous(jar, portal.cookie_secure, portal.now());
            return Err(WebError::throttled(Refused::Wait(wait), |message| {
                let page = pages::Login {
                    notice: None,
                    error: Some(message),
                    csrf_token: &csrf_token,
                    username: &form.username,
                    rd: &rd,
                };
                pages::render(page)
            }));
        }
    };
    let Proved { user, hash, stage } = proved;

    // With a second factor, the session waits for its code and opens
    // nothing meanwhile; where one is required, it opens only the set-up.
    let data = new_session_data(&AuthState::after_password(stage, portal.now()));
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
        // The account may have gone meanwhile (its sessions cannot be
        // inserted any more): that is a wrong login, not an outage.
        Err(_) if auth.gone(&user, &hash).await? => return Ok(wrong()),
        Err(e) => return Err(e.into()),
    };
    // A password change, a removal or a second factor turned on since the
    // password was checked wins: no session minted from the old state.
    match auth.still_current(&user, &hash).await {
        Ok(true) => {}
        Ok(false) => {
            log::warn!("login of {:?} raced a password change or removal: session ended", user.username);
            let _ = session.destroy().await;
            return Ok(wrong());
        }
        Err(e) => {
            let _ = session.destroy().await;
            return Err(e.into());
        }
    }
    csrf::forget_anonymous(jar, portal.cookie_secure);
    let (handle, name) = (session.handle(), &user.username);
    match stage {
        Stage::SecondFactorPending => {
            log::info!("login: user {name:?}, ip {ip:?}, session {handle}: code awaited");
            Ok(Reply::see_other(two_factor::with_rd("/login/2fa", &rd)))
        }
        Stage::MustEnrol => {
            log::info!("login: user {name:?}, ip {ip:?}, session {handle}: must set up 2FA");
            Ok(Reply::see_other(two_factor::with_rd("/account/2fa", &rd)))
        }
        Stage::Complete => {
            log::info!("login: user {name:?}, ip {ip:?}, session {handle}");
            metrics.login(Login::Succeeded);
            Ok(portal.after_login(&rd))
        }
    }
}

#[get("/logout")]
pub async fn logout_page(session: Session<'_>, directory: &State<Directory>) -> WebResult {
    let user = directory.account(session.user_id()).await?;
    let csrf_token = csrf::of_session(&session).await?;
    let page = pages::Logout { notice: None, username: &user.username, csrf_token: &csrf_token };
    Ok(Reply::page(Status::Ok, pages::render(page)))
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
    portal: &State<Portal>,
    metrics: &State<Arc<Metrics>>,
) -> WebResult {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(WebError::refused(Status::Forbidden, BAD_FORM));
    }
    let handle = session.handle().to_owned();
    session.destroy().await?;
    log::info!("logout: session {handle}");
    metrics.ended(Ended::Logout, 1);
    Ok(match portal.safe_rd(&form.rd) {
        Some(to) => Reply::see_other(to),
        None => Reply::Flash(Flash::success(Redirect::to("/login"), "You have been logged out.")),
    })
}

#[post("/logout", rank = 2)]
pub fn logout_anonymous() -> Redirect {
    Redirect::to("/login")
}

/// This area's routes.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![
        index,
        index_anonymous,
        login_form,
        login_form_anonymous,
        login,
        logout_page,
        logout_page_anonymous,
        logout,
        logout_anonymous,
    ]
}
