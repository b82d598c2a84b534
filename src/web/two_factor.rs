//! The second factor as the browser sees it: the code prompt after the
//! password (`/login/2fa`) and the set-up page (`/account/2fa`).
//!
//! How far a session's login got is its [`AuthState`] (see
//! `web::guards`): a login waiting for its code opens nothing but the
//! code prompt (and logout), and only for `two_factor_pending_timeout`
//! seconds after it began; one that must set up a second factor
//! (`require_2fa`) opens only the set-up page.
//!
//! A right code does not mark the waiting session: it replaces it by a
//! new one (new token, same "remember me"), as a login does.

use std::net::IpAddr;
use std::sync::Arc;

use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, routes, Route, State};

use super::guards::{auth_state, new_session_data, save_auth_state};
use super::metrics::{Ended, Login};
use super::{csrf, pages, Directory, Metrics, Notice, Portal, Reply, WebError, WebResult, BAD_FORM};
use crate::auth::factors;
use crate::auth::state::{AuthState, Method, Stage};
use crate::auth::throttle::Refused;
use crate::auth::{Authenticator, User, Verdict};
use crate::session::{Session, Sessions};

/// How long a login may wait for its second factor (state of its own).
pub struct SecondFactor {
    /// Seconds a password-only login may wait for its code.
    pub pending_timeout: i64,
}

/// `path`, with `?rd=` when there is somewhere to return to.
pub fn with_rd(path: &str, rd: &str) -> String {
    match rd.is_empty() {
        true => path.to_owned(),
        false => {
            let rd = percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC);
            format!("{path}?rd={rd}")
        }
    }
}

/// Where a session that is not all the way in stands.
pub enum NextStep {
    /// All the way in.
    Complete,
    /// Not yet: on to the code prompt or the set-up page (this address,
    /// with `rd`).
    Then(String),
    /// Its login waited too long for its code and was ended.
    Expired,
}

/// Where a session goes next: the code prompt, the set-up page, nowhere.
/// An expired waiting session is ended.
pub async fn next_step(session: Session<'_>, second: &SecondFactor, rd: &str) -> NextStep {
    match auth_state(&session).stage {
        Stage::SecondFactorPending if expired(&session, second) => {
            let _ = session.destroy().await;
            NextStep::Expired
        }
        Stage::SecondFactorPending => NextStep::Then(with_rd("/login/2fa", rd)),
        Stage::MustEnrol => NextStep::Then(with_rd("/account/2fa", rd)),
        Stage::Complete => NextStep::Complete,
    }
}

fn expired(session: &Session<'_>, second: &SecondFactor) -> bool {
    session.manager().now() - session.record().created_at >= second.pending_timeout
}

fn too_late(rd: &str) -> Reply {
    Reply::Flash(Flash::warning(
        Redirect::to(with_rd("/login", rd)),
        "The code was not entered in time. Please log in again.",
    ))
}

/// The code prompt, for a session waiting for its code, or for a
/// password-only session of an account with a second factor that an app's
/// `two_factor` rule sent here.
#[get("/login/2fa?<rd>")]
pub async fn code_form(
    session: Session<'_>,
    rd: Option<&str>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    second: &State<SecondFactor>,
) -> WebResult {
    let rd = portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    let state = auth_state(&session);
    match state.stage {
        Stage::SecondFactorPending if expired(&session, second) => {
            let _ = session.destroy().await;
            return Ok(too_late(&rd));
        }
        Stage::SecondFactorPending => {}
        Stage::MustEnrol => return Ok(Reply::see_other(with_rd("/account/2fa", &rd))),
        Stage::Complete if state.second_factor() => return Ok(portal.after_login(&rd)),
        Stage::Complete if directory.account(session.user_id()).await?.two_factor => {}
        Stage::Complete => return Ok(Reply::see_other(with_rd("/account/2fa", &rd))),
    }
    let csrf_token = csrf::of_session(&session).await?;
    Ok(code_page(Status::Ok, &csrf_token, &rd, None))
}

#[get("/login/2fa", rank = 2)]
pub fn code_form_anonymous() -> Redirect {
    Redirect::to("/login")
}

fn code_page(status: Status, csrf_token: &str, rd: &str, error: Option<&str>) -> Reply {
    Reply::page(status, code_html(csrf_token, rd, error))
}

fn code_html(csrf_token: &str, rd: &str, error: Option<&str>) -> String {
    pages::render(pages::LoginCode { notice: None, error, csrf_token, rd })
}

#[derive(FromForm)]
pub struct CodeForm {
    #[field(default = String::new())]
    code: String,
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    rd: String,
    /// With `disable` and `recovery`: the current password.
    #[field(default = String::new())]
    password: String,
}

const WRONG_CODE: &str = "That code is not right. Enter the current code from your app, or a recovery code.";

/// Checks `code` for `user`, throttled: the method it proved. `Err` is the
/// answer: `wrong` with the form (`render` draws it around a message), 429
/// or 503.
async fn check_code(
    portal: &Portal,
    metrics: &Metrics,
    auth: &Authenticator,
    user: &User,
    code: &str,
    ip: Option<IpAddr>,
    wrong: Status,
    render: impl FnOnce(&str) -> String,
) -> WebResult<Method> {
    match auth.second_factor(user, code, ip, portal.now()).await? {
        Verdict::Right(method) => {
            if method == Method::RecoveryCode {
                log::info!("recovery code used: user {:?}, ip {ip:?}", user.username);
            }
            Ok(method)
        }
        Verdict::Wrong => {
            log::warn!("second factor failed: user {:?}, ip {ip:?}", user.username);
            metrics.login(Login::Failed);
            Err(WebError::page(wrong, render(WRONG_CODE)))
        }
        Verdict::Throttled(wait) => {
            log::warn!(
                "second factor refused by the throttle: user {:?}, ip {ip:?}: {wait} s",
                user.username
            );
            metrics.login(Login::Throttled);
            Err(WebError::throttled(Refused::Wait(wait), render))
        }
    }
}

#[post("/login/2fa", data = "<form>")]
pub async fn verify_code(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    sessions: Sessions<'_>,
    form: Form<CodeForm>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    metrics: &State<Arc<Metrics>>,
    auth: &State<Authenticator>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> WebResult {
    let rd = portal.safe_rd(&form.rd).unwrap_or_default();
    let state = auth_state(&session);
    match state.stage {
        Stage::SecondFactorPending if expired(&session, second) => {
            let _ = session.destroy().await;
            return Ok(too_late(&rd));
        }
        Stage::MustEnrol => return Ok(Reply::see_other(with_rd("/account/2fa", &rd))),
        Stage::Complete if state.second_factor() => return Ok(portal.after_login(&rd)),
        Stage::SecondFactorPending | Stage::Complete => {}
    }
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Ok(code_page(Status::Forbidden, &form.csrf_token, &rd, Some(BAD_FORM)));
    }
    let user = directory.account(session.user_id()).await?;
    if !user.two_factor {
        // Turned off meanwhile (an operator's reset ends the sessions too).
        let _ = session.destroy().await;
        return Err(WebError::LoggedOut);
    }
    let render = |message: &str| code_html(&form.csrf_token, &rd, Some(message));
    let method =
        check_code(portal, metrics, auth, &user, &form.code, ip, Status::Unauthorized, render).await?;
    // A new session replaces the waiting one (a fresh token after the
    // login completes), keeping "remember me".
    let persistent = session.record().persistent;
    let state = AuthState::after_second_factor(method, portal.now());
    let started = sessions.start(user.id, persistent, new_session_data(&state)).await?;
    // As at the password step: a password change, a removal or a reset
    // committed meanwhile must win.
    match auth.still_current(&user, &user.password_hash).await {
        Ok(true) => {}
        Ok(false) => {
            log::warn!("second factor of {:?} raced an account change: session ended", user.username);
            let _ = started.destroy().await;
            return Err(WebError::LoggedOut);
        }
        Err(e) => {
            let _ = started.destroy().await;
            return Err(e.into());
        }
    }
    log::info!("login with second factor: user {:?}, ip {ip:?}, session {}", user.username, started.handle());
    metrics.login(Login::Succeeded);
    Ok(portal.after_login(&rd))
}

#[post("/login/2fa", rank = 2)]
pub fn verify_code_anonymous() -> Redirect {
    Redirect::to("/login")
}

/// A session still waiting for its code has no settings page: on to the
/// code prompt.
fn waiting_for_code(session: &Session<'_>, rd: &str) -> Option<Reply> {
    (auth_state(session).stage == Stage::SecondFactorPending)
        .then(|| Reply::see_other(with_rd("/login/2fa", rd)))
}

/// The status page: on or off, and the forms that go with each.
struct StatusPage<'a> {
    enrolment: Option<factors::Enrolment>,
    csrf_token: &'a str,
    rd: &'a str,
    state: AuthState,
    now: i64,
}

impl<'a> StatusPage<'a> {
    async fn load(
        portal: &Portal,
        directory: &Directory,
        user: &User,
        csrf_token: &'a str,
        rd: &'a str,
        session: &Session<'_>,
    ) -> WebResult<Self> {
        let enrolment = factors::status(&directory.storage, user.id).await?;
        Ok(StatusPage { enrolment, csrf_token, rd, state: auth_state(session), now: portal.now() })
    }

    fn html(&self, error: Option<&str>, notice: Option<Notice>) -> String {
        pages::render(pages::TwoFactor {
            notice,
            error,
            csrf_token: self.csrf_token,
            rd: self.rd,
            enabled_since: self.enrolment.as_ref().map(|e| super::device::date(e.enabled_at)),
            codes_left: self.enrolment.as_ref().map(|e| e.codes_left).unwrap_or_default(),
            required: self.state.stage == Stage::MustEnrol,
            needs_password: !self.state.recently_confirmed(self.now),
        })
    }
}

#[get("/account/2fa?<rd>")]
pub async fn status(
    session: Session<'_>,
    rd: Option<&str>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    flash: Option<FlashMessage<'_>>,
) -> WebResult {
    let rd = portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    if let Some(next) = waiting_for_code(&session, &rd) {
        return Ok(next);
    }
    let user = directory.account(session.user_id()).await?;
    let csrf_token = csrf::of_session(&session).await?;
    let page = StatusPage::load(portal, directory, &user, &csrf_token, &rd, &session).await?;
    Ok(Reply::page(Status::Ok, page.html(None, Notice::from_flash(flash))))
}

#[get("/account/2fa", rank = 2)]
pub fn status_anonymous() -> Redirect {
    Redirect::to("/login")
}

/// The set-up page: the secret as a QR code and as text, and the form that
/// confirms it with one code.
fn setup_page(
    status: Status,
    user: &User,
    secret: &[u8],
    csrf_token: &str,
    rd: &str,
    error: Option<&str>,
) -> Reply {
    Reply::page(status, setup_html(user, secret, csrf_token, rd, error))
}

fn setup_html(user: &User, secret: &[u8], csrf_token: &str, rd: &str, error: Option<&str>) -> String {
    let uri = factors::otpauth_uri(secret, &user.username);
    let qr = match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => {
            code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).quiet_zone(true).build()
        }
        Err(e) => {
            log::error!("QR code: {e}");
            String::new()
        }
    };
    // Inline SVG: no script, no request anywhere. The XML prolog has no
    // place inside HTML.
    let qr = match qr.find("<svg") {
        Some(at) => qr[at..].to_owned(),
        None => qr,
    };
    let page = pages::TwoFactorSetup {
        notice: None,
        error,
        csrf_token,
        rd,
        qr_svg: &qr,
        secret: &factors::secret_text(secret),
        uri: &uri,
    };
    pages::render(page)
}

#[derive(FromForm)]
pub struct SetupForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    rd: String,
    /// Unless this session proved its password in the sudo window.
    #[field(default = String::new())]
    password: String,
}

/// Turning the second factor on ends every other session and changes how
/// the account logs in: like ending sessions, it needs a password proved
/// within the sudo window, asked for at the set-up (`password`). A stolen
/// cookie alone cannot lock its owner out behind a factor of the thief's.
async fn sudo_for_setup(
    session: &Session<'_>,
    portal: &Portal,
    directory: &Directory,
    auth: &Authenticator,
    ip: Option<IpAddr>,
    password: &str,
    rd: &str,
) -> WebResult<()> {
    let confirming = super::sessions::Confirming {
        action: "/account/2fa/setup",
        handle: None,
        rd,
        what: "Setting up two-factor authentication",
        back: "/account/2fa",
    };
    super::sessions::sudo(session, portal, directory, auth, ip, password, confirming).await
}

#[post("/account/2fa/setup", data = "<form>")]
pub async fn setup(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<SetupForm>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    auth: &State<Authenticator>,
    ip: Option<IpAddr>,
) -> WebResult {
    let rd = portal.safe_rd(&form.rd).unwrap_or_default();
    if let Some(next) = waiting_for_code(&session, &rd) {
        return Ok(next);
    }
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(WebError::refused(Status::Forbidden, BAD_FORM));
    }
    let user = directory.account(session.user_id()).await?;
    if user.two_factor {
        return Ok(Reply::see_other(with_rd("/account/2fa", &rd)));
    }
    sudo_for_setup(&session, portal, directory, auth, ip, &form.password, &rd).await?;
    // A new secret each time: the last one shown is the one to confirm.
    let secret = factors::new_secret();
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD.encode(auth.sealer().seal(&secret));
    let mut state = auth_state(&session);
    state.enrolling = Some(sealed);
    save_auth_state(&session, &state).await?;
    Ok(setup_page(Status::Ok, &user, &secret, &form.csrf_token, &rd, None))
}

#[post("/account/2fa/setup", rank = 2)]
pub fn setup_anonymous() -> Redirect {
    Redirect::to("/login")
}

/// The secret being set up in this session, if any.
fn pending_secret(session: &Session<'_>, auth: &Authenticator) -> Option<Vec<u8>> {
    use base64::Engine;
    let sealed = auth_state(session).enrolling?;
    let sealed = base64::engine::general_purpose::STANDARD.decode(sealed).ok()?;
    auth.sealer().open(&sealed).map(|(secret, _)| secret)
}

#[post("/account/2fa/enable", data = "<form>")]
pub async fn enable(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<CodeForm>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    metrics: &State<Arc<Metrics>>,
    auth: &State<Authenticator>,
    ip: Option<IpAddr>,
) -> WebResult {
    let rd = portal.safe_rd(&form.rd).unwrap_or_default();
    if let Some(next) = waiting_for_code(&session, &rd) {
        return Ok(next);
    }
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(WebError::refused(Status::Forbidden, BAD_FORM));
    }
    let user = directory.account(session.user_id()).await?;
    if user.two_factor {
        return Ok(Reply::see_other(with_rd("/account/2fa", &rd)));
    }
    // The password proved at the set-up must still be recent: else the
    // confirmation form, which starts the set-up again.
    sudo_for_setup(&session, portal, directory, auth, ip, "", &rd).await?;
    let Some(secret) = pending_secret(&session, auth) else {
        return Ok(Reply::Flash(Flash::warning(
            Redirect::to(with_rd("/account/2fa", &rd)),
            "Start the set-up again: no new secret was waiting for a code.",
        )));
    };
    let now = portal.now();
    let step = match auth.first_code(&user, &secret, &form.code, ip, now).await? {
        Verdict::Right(step) => step,
        Verdict::Wrong => {
            log::warn!("second factor set-up: wrong code, user {:?}, ip {ip:?}", user.username);
            let message = "That code is not right. Enter the 6-digit code your app shows now.";
            let html = setup_html(&user, &secret, &form.csrf_token, &rd, Some(message));
            return Err(WebError::page(Status::UnprocessableEntity, html));
        }
        Verdict::Throttled(wait) => {
            let render = |message: &str| setup_html(&user, &secret, &form.csrf_token, &rd, Some(message));
            return Err(WebError::throttled(Refused::Wait(wait), render));
        }
    };
    let codes = factors::new_recovery_codes();
    let hashes = auth.hasher().hash_secrets(codes.clone()).await?;
    let sealed = auth.sealer().seal(&secret);
    // This session just proved the new factor; every other one (a session
    // opened with the password alone, perhaps not by this person) ends.
    let accounts = directory.accounts(auth, session.manager().store());
    let Some(ended) =
        accounts.second_factor_on(user.id, &sealed, step, &hashes, now, session.handle()).await?
    else {
        return Ok(Reply::see_other(with_rd("/account/2fa", &rd)));
    };
    metrics.ended(Ended::Revoke, ended);
    let mut state = auth_state(&session);
    state.enrolled(Method::Totp);
    save_auth_state(&session, &state).await?;
    session.rotate().await?;
    log::info!("second factor on: user {:?}, ended {ended} other sessions", user.username);
    Ok(codes_page(&codes, &rd))
}

#[post("/account/2fa/enable", rank = 2)]
pub fn enable_anonymous() -> Redirect {
    Redirect::to("/login")
}

fn codes_page(codes: &[String], rd: &str) -> Reply {
    let next = if rd.is_empty() { "/user" } else { rd };
    Reply::page(Status::Ok, pages::render(pages::RecoveryCodes { notice: None, codes, next }))
}

/// Password and code, both right, for turning the factor off or making
/// new recovery codes: the account, or where the browser goes instead (the
/// code prompt for a login still waiting for it, the status page when the
/// factor is off).
async fn confirm_both(
    session: &Session<'_>,
    form: &CodeForm,
    portal: &Portal,
    directory: &Directory,
    metrics: &Metrics,
    auth: &Authenticator,
    ip: Option<IpAddr>,
    rd: &str,
) -> WebResult<Result<User, Reply>> {
    if let Some(next) = waiting_for_code(session, rd) {
        return Ok(Err(next));
    }
    if !csrf::session_ok(session, &form.csrf_token) {
        return Err(WebError::refused(Status::Forbidden, BAD_FORM));
    }
    let user = directory.account(session.user_id()).await?;
    if !user.two_factor {
        return Ok(Err(Reply::see_other(with_rd("/account/2fa", rd))));
    }
    let page = StatusPage::load(portal, directory, &user, &form.csrf_token, rd, session).await?;
    let render = |message: &str| page.html(Some(message), None);
    super::confirm_password(auth, &user, &form.password, ip, "The password is wrong.", render).await?;
    check_code(portal, metrics, auth, &user, &form.code, ip, Status::UnprocessableEntity, render).await?;
    Ok(Ok(user))
}

#[post("/account/2fa/disable", data = "<form>")]
pub async fn disable(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<CodeForm>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    metrics: &State<Arc<Metrics>>,
    auth: &State<Authenticator>,
    ip: Option<IpAddr>,
) -> WebResult {
    let rd = portal.safe_rd(&form.rd).unwrap_or_default();
    let user = match confirm_both(&session, &form, portal, directory, metrics, auth, ip, &rd).await? {
        Ok(user) => user,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let accounts = directory.accounts(auth, session.manager().store());
    let ended = accounts.second_factor_off(user.id, session.handle()).await?;
    metrics.ended(Ended::Revoke, ended);
    // Where 2FA is required, this session must set it up again before
    // anything else opens.
    let mut state = auth_state(&session);
    state.factor_removed(auth.second_factor_required());
    save_auth_state(&session, &state).await?;
    session.rotate().await?;
    log::info!("second factor off: user {:?}, ended {ended} other sessions", user.username);
    Ok(Reply::Flash(Flash::success(
        Redirect::to(with_rd("/account/2fa", &rd)),
        "Two-factor authentication is off. Your other sessions were ended.",
    )))
}

#[post("/account/2fa/disable", rank = 2)]
pub fn disable_anonymous() -> Redirect {
    Redirect::to("/login")
}

#[post("/account/2fa/recovery-codes", data = "<form>")]
pub async fn recovery_codes(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<CodeForm>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    metrics: &State<Arc<Metrics>>,
    auth: &State<Authenticator>,
    ip: Option<IpAddr>,
) -> WebResult {
    let rd = portal.safe_rd(&form.rd).unwrap_or_default();
    let user = match confirm_both(&session, &form, portal, directory, metrics, auth, ip, &rd).await? {
        Ok(user) => user,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let codes = factors::new_recovery_codes();
    let hashes = auth.hasher().hash_secrets(codes.clone()).await?;
    let accounts = directory.accounts(auth, session.manager().store());
    if !accounts.new_recovery_codes(user.id, &hashes).await? {
        return Ok(Reply::see_other(with_rd("/account/2fa", &rd)));
    }
    log::info!("new recovery codes: user {:?}", user.username);
    Ok(codes_page(&codes, &rd))
}

#[post("/account/2fa/recovery-codes", rank = 2)]
pub fn recovery_codes_anonymous() -> Redirect {
    Redirect::to("/login")
}

pub fn routes() -> Vec<Route> {
    routes![
        code_form,
        code_form_anonymous,
        verify_code,
        verify_code_anonymous,
        status,
        status_anonymous,
        setup,
        setup_anonymous,
        enable,
        enable_anonymous,
        disable,
        disable_anonymous,
        recovery_codes,
        recovery_codes_anonymous,
    ]
}
