//! `/`, `/login` and `/logout`.

use rocket::form::{Form, FromForm};
use rocket::http::{CookieJar, Status};
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, State};
use std::net::IpAddr;

use super::{csrf, pages, App, Metrics, Notice, Reply, BAD_FORM};
use crate::auth::password::MAX_PASSWORD_BYTES;
use crate::auth::{users, HashError};
use crate::session::{Session, SessionError, Sessions};

const WRONG_CREDENTIALS: &str = "Wrong user name or password.";

#[get("/")]
pub fn index(_session: Session<'_>) -> Redirect {
    Redirect::to("/user")
}

#[get("/", rank = 2)]
pub fn index_anonymous() -> Redirect {
    Redirect::to("/login")
}

#[get("/login")]
pub fn login_form(_session: Session<'_>) -> Redirect {
    Redirect::to("/user")
}

#[get("/login", rank = 2)]
pub fn login_form_anonymous(jar: &CookieJar<'_>, app: &State<App>, flash: Option<FlashMessage<'_>>) -> Reply {
    login_page(Status::Ok, jar, app, Notice::from_flash(flash), None, "")
}

fn login_page(
    status: Status,
    jar: &CookieJar<'_>,
    app: &App,
    notice: Option<Notice>,
    error: Option<&str>,
    username: &str,
) -> Reply {
    let csrf_token = csrf::anonymous(jar, &app.settings);
    Reply::page(status, pages::render(pages::Login { notice, error, csrf_token: &csrf_token, username }))
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
}

#[post("/login", data = "<form>")]
pub async fn login(
    form: Form<LoginForm>,
    jar: &CookieJar<'_>,
    sessions: Sessions<'_>,
    app: &State<App>,
    ip: Option<IpAddr>,
) -> Reply {
    if !csrf::anonymous_ok(jar, &app.settings, &form.csrf_token) {
        log::warn!("login refused: bad csrf token (user {:?}, ip {ip:?})", form.username);
        return login_page(Status::Forbidden, jar, app, None, Some(BAD_FORM), &form.username);
    }
    if let Some(wait) = app.throttle.check(&form.username, ip) {
        log::warn!("login throttled: user {:?}, ip {ip:?}, retry in {wait} s", form.username);
        Metrics::count(&app.metrics.logins_throttled, 1);
        let csrf_token = csrf::anonymous(jar, &app.settings);
        return Reply::throttled(wait, |message| {
            let page = pages::Login {
                notice: None,
                error: Some(message),
                csrf_token: &csrf_token,
                username: &form.username,
            };
            pages::render(page)
        });
    }

    let user = match users::by_name(&app.db.reader, &form.username).await {
        Ok(user) => user,
        Err(e) => {
            log::error!("login: {e}");
            return Reply::unavailable();
        }
    };
    // An over-long password cannot match; it is still verified (against the
    // dummy hash) so the answer takes the usual time.
    let password =
        if form.password.len() > MAX_PASSWORD_BYTES { String::new() } else { form.password.clone() };
    let hash =
        user.as_ref().filter(|_| form.password.len() <= MAX_PASSWORD_BYTES).map(|u| u.password_hash.clone());
    let ok = match app.hasher.verify(password, hash).await {
        Ok(ok) => ok,
        Err(HashError::Busy) => {
            return Reply::error(Status::ServiceUnavailable, &HashError::Busy.to_string())
        }
        Err(e) => {
            log::error!("login: {e}");
            return Reply::unavailable();
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        app.throttle.failed(&form.username, ip);
        Metrics::count(&app.metrics.logins_failed, 1);
        log::warn!("login failed: user {:?}, ip {ip:?}", form.username);
        return login_page(Status::Unauthorized, jar, app, None, Some(WRONG_CREDENTIALS), &form.username);
    };

    app.throttle.succeeded(&form.username, ip);
    match sessions.start(user.id, form.remember, super::new_session_data(&user.username)).await {
        Ok(session) => {
            log::info!("login: user {:?}, ip {ip:?}, session {}", user.username, session.handle());
            Metrics::count(&app.metrics.logins_succeeded, 1);
            csrf::forget_anonymous(jar, &app.settings);
            Reply::to("/user")
        }
        Err(e) => {
            log::error!("login: {e}");
            Reply::unavailable()
        }
    }
}

#[get("/logout")]
pub async fn logout_page(session: Session<'_>, app: &State<App>) -> Reply {
    let (user, csrf_token) =
        match (users::by_id(&app.db.reader, session.user_id()).await, csrf::of_session(&session).await) {
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
pub struct CsrfForm {
    #[field(default = String::new())]
    pub csrf_token: String,
}

#[post("/logout", data = "<form>")]
pub async fn logout(session: Session<'_>, form: Form<CsrfForm>, app: &State<App>) -> Reply {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Reply::error(Status::Forbidden, BAD_FORM);
    }
    let handle = session.handle().to_owned();
    match session.destroy().await {
        Ok(()) => {
            log::info!("logout: session {handle}");
            Metrics::count(&app.metrics.ended_logout, 1);
            Reply::Flash(Flash::success(Redirect::to("/login"), "You have been logged out."))
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
