//! The second factor as the browser sees it: the code prompt after the
//! password (`/login/2fa`) and the set-up page (`/account/2fa`).
//!
//! How far a session's login got is its [`AuthState`] (see
//! [`super::guards`]): a login waiting for its code opens nothing but the
//! code prompt (and logout), and only for `two_factor_pending_timeout`
//! seconds after it began; one that must set up a second factor
//! (`require_2fa`) opens only the set-up page.
//!
//! A right code does not mark the waiting session: it replaces it by a
//! new one (new token, same "remember me"), as a login does.

use std::net::IpAddr;

use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, routes, Route, State};

use super::guards::{auth_state, new_session_data, save_auth_state};
use super::{csrf, pages, App, Metrics, Notice, Reply, BAD_FORM};
use crate::auth::second_factor::{self, Sealer, Verified};
use crate::auth::state::{AuthState, Method, Stage};
use crate::auth::{users, Throttle, User};
use crate::session::{now, Ending, Session, Sessions};

/// Second-factor settings and state, managed beside [`App`].
pub struct SecondFactor {
    pub sealer: Sealer,
    /// Wrong codes, counted per account and per source like passwords.
    pub throttle: Throttle,
    /// Every account must have a second factor (`require_2fa`).
    pub required: bool,
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

/// Where a session that is not all the way in goes next, if anywhere:
/// the code prompt or the set-up page (`rd` rides along). An expired
/// waiting session is ended.
pub async fn next_step(
    session: Session<'_>,
    second: &SecondFactor,
    rd: &str,
) -> Result<Option<Reply>, Reply> {
    match auth_state(&session).stage {
        Stage::SecondFactorPending if expired(&session, second) => {
            let _ = session.destroy().await;
            Err(too_late(rd))
        }
        Stage::SecondFactorPending => Ok(Some(Reply::see_other(with_rd("/login/2fa", rd)))),
        Stage::MustEnrol => Ok(Some(Reply::see_other(with_rd("/account/2fa", rd)))),
        Stage::Complete => Ok(None),
    }
}

fn expired(session: &Session<'_>, second: &SecondFactor) -> bool {
    now() - session.record().created_at >= second.pending_timeout
}

fn too_late(rd: &str) -> Reply {
    Reply::Flash(Flash::warning(
        Redirect::to(with_rd("/login", rd)),
        "The code was not entered in time. Please log in again.",
    ))
}

/// The session's account; gone, the login page.
async fn account(app: &App, session: &Session<'_>) -> Result<User, Reply> {
    match users::by_id(&app.storage, session.user_id()).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(Reply::to("/login")),
        Err(e) => Err(Reply::down("second factor", e)),
    }
}

/// The code prompt, for a session waiting for its code, or for a
/// password-only session of an account with a second factor that an app's
/// `two_factor` rule sent here.
#[get("/login/2fa?<rd>")]
pub async fn code_form(
    session: Session<'_>,
    rd: Option<&str>,
    app: &State<App>,
    second: &State<SecondFactor>,
) -> Result<Reply, Reply> {
    let rd = app.portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    let state = auth_state(&session);
    match state.stage {
        Stage::SecondFactorPending if expired(&session, second) => {
            let _ = session.destroy().await;
            return Ok(too_late(&rd));
        }
        Stage::SecondFactorPending => {}
        Stage::MustEnrol => return Ok(Reply::see_other(with_rd("/account/2fa", &rd))),
        Stage::Complete if state.second_factor() => return Ok(super::login::after_login(app, &rd)),
        Stage::Complete if account(app, &session).await?.two_factor => {}
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

/// Checks `code` for `user`, throttled; `Err` is the answer: `wrong` with
/// the form (`render` draws it around a message), or 429.
async fn check_code(
    app: &App,
    second: &SecondFactor,
    user: &User,
    code: &str,
    ip: Option<IpAddr>,
    wrong: Status,
    render: impl FnOnce(&str) -> String,
) -> Result<Verified, Reply> {
    let attempt = match second.throttle.begin(&user.username, ip).await {
        Ok(attempt) => attempt,
        Err(refused) => {
            log::warn!(
                "second factor refused by the throttle: user {:?}, ip {ip:?}: {refused:?}",
                user.username
            );
            Metrics::count(&app.metrics.logins_throttled, 1);
            return Err(Reply::refused(refused, render));
        }
    };
    match second_factor::verify(&app.storage, &app.hasher, &second.sealer, user.id, code, now()).await {
        Ok(Verified::Wrong) => {
            attempt.failed().await;
            log::warn!("second factor failed: user {:?}, ip {ip:?}", user.username);
            Metrics::count(&app.metrics.logins_failed, 1);
            Err(Reply::page(wrong, render(WRONG_CODE)))
        }
        Ok(verified) => {
            attempt.succeeded().await;
            if verified == Verified::RecoveryCode {
                log::info!("recovery code used: user {:?}, ip {ip:?}", user.username);
            }
            Ok(verified)
        }
        Err(e) => {
            log::error!("second factor: {e}");
            attempt.refund().await;
            Err(Reply::unavailable())
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[post("/login/2fa", data = "<form>")]
pub async fn verify_code(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    sessions: Sessions<'_>,
    form: Form<CodeForm>,
    app: &State<App>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> Result<Reply, Reply> {
    let rd = app.portal.safe_rd(&form.rd).unwrap_or_default();
    let state = auth_state(&session);
    match state.stage {
        Stage::SecondFactorPending if expired(&session, second) => {
            let _ = session.destroy().await;
            return Ok(too_late(&rd));
        }
        Stage::MustEnrol => return Ok(Reply::see_other(with_rd("/account/2fa", &rd))),
        Stage::Complete if state.second_factor() => return Ok(super::login::after_login(app, &rd)),
        Stage::SecondFactorPending | Stage::Complete => {}
    }
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Ok(code_page(Status::Forbidden, &form.csrf_token, &rd, Some(BAD_FORM)));
    }
    let user = account(app, &session).await?;
    if !user.two_factor {
        // Turned off meanwhile (an operator's reset ends the sessions too).
        let _ = session.destroy().await;
        return Ok(Reply::to("/login"));
    }
    let render = |message: &str| code_html(&form.csrf_token, &rd, Some(message));
    let verified = check_code(app, second, &user, &form.code, ip, Status::Unauthorized, render).await?;
    let method = if verified == Verified::RecoveryCode { Method::RecoveryCode } else { Method::Totp };
    // A new session replaces the waiting one (a fresh token after the
    // login completes), keeping "remember me".
    let persistent = session.record().persistent;
    let state = AuthState::after_second_factor(method, now());
    let started = sessions.start(user.id, persistent, new_session_data(&state)).await?;
    // As at the password step: a password change, a removal or a reset
    // committed meanwhile must win.
    match users::has_password(&app.storage, user.id, &user.password_hash).await {
        Ok(Some(true)) => {}
        Ok(_) => {
            log::warn!("second factor of {:?} raced an account change: session ended", user.username);
            let _ = started.destroy().await;
            return Ok(Reply::to("/login"));
        }
        Err(e) => {
            let _ = started.destroy().await;
            return Err(Reply::down("second factor", e));
        }
    }
    log::info!("login with second factor: user {:?}, ip {ip:?}, session {}", user.username, started.handle());
    Metrics::count(&app.metrics.logins_succeeded, 1);
    Ok(super::login::after_login(app, &rd))
}

#[post("/login/2fa", rank = 2)]
pub fn verify_code_anonymous() -> Redirect {
    Redirect::to("/login")
}

/// A session that may use the set-up page: not one still waiting for its code.
// The error is a whole page, as every handler's answer is; handlers are
// not a hot path for its size.
#[allow(clippy::result_large_err)]
fn settings_session<'r>(session: Session<'r>, rd: &str) -> Result<Session<'r>, Reply> {
    match auth_state(&session).stage {
        Stage::SecondFactorPending => Err(Reply::see_other(with_rd("/login/2fa", rd))),
        Stage::Complete | Stage::MustEnrol => Ok(session),
    }
}

/// The status page: on or off, and the forms that go with each.
struct StatusPage<'a> {
    enrolment: Option<second_factor::Enrolment>,
    csrf_token: &'a str,
    rd: &'a str,
    state: AuthState,
}

impl<'a> StatusPage<'a> {
    async fn load(
        app: &App,
        user: &User,
        csrf_token: &'a str,
        rd: &'a str,
        session: &Session<'_>,
    ) -> Result<Self, Reply> {
        let enrolment = second_factor::status(&app.storage, user.id)
            .await
            .map_err(|e| Reply::down("second factor", e))?;
        Ok(StatusPage { enrolment, csrf_token, rd, state: auth_state(session) })
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
            needs_password: !self.state.recently_confirmed(now()),
        })
    }
}

#[get("/account/2fa?<rd>")]
pub async fn status(
    session: Session<'_>,
    rd: Option<&str>,
    app: &State<App>,
    flash: Option<FlashMessage<'_>>,
) -> Result<Reply, Reply> {
    let rd = app.portal.safe_rd(rd.unwrap_or_default()).unwrap_or_default();
    let session = settings_session(session, &rd)?;
    let user = account(app, &session).await?;
    let csrf_token = csrf::of_session(&session).await?;
    let page = StatusPage::load(app, &user, &csrf_token, &rd, &session).await?;
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
    let uri = second_factor::otpauth_uri(secret, &user.username);
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
        secret: &second_factor::secret_text(secret),
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
    app: &App,
    ip: Option<IpAddr>,
    password: &str,
    rd: &str,
) -> Result<(), Reply> {
    let confirming = super::sessions::Confirming {
        action: "/account/2fa/setup",
        handle: None,
        rd,
        what: "Setting up two-factor authentication",
        back: "/account/2fa",
    };
    super::sessions::sudo(session, app, ip, password, confirming).await
}

#[allow(clippy::too_many_arguments)]
#[post("/account/2fa/setup", data = "<form>")]
pub async fn setup(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<SetupForm>,
    app: &State<App>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> Result<Reply, Reply> {
    let rd = app.portal.safe_rd(&form.rd).unwrap_or_default();
    let session = settings_session(session, &rd)?;
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(Reply::error(Status::Forbidden, BAD_FORM));
    }
    let user = account(app, &session).await?;
    if user.two_factor {
        return Ok(Reply::see_other(with_rd("/account/2fa", &rd)));
    }
    sudo_for_setup(&session, app, ip, &form.password, &rd).await?;
    // A new secret each time: the last one shown is the one to confirm.
    let secret = second_factor::new_secret();
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD.encode(second.sealer.seal(&secret));
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
fn pending_secret(session: &Session<'_>, second: &SecondFactor) -> Option<Vec<u8>> {
    use base64::Engine;
    let sealed = auth_state(session).enrolling?;
    let sealed = base64::engine::general_purpose::STANDARD.decode(sealed).ok()?;
    second.sealer.open(&sealed).map(|(secret, _)| secret)
}

#[allow(clippy::too_many_arguments)]
#[post("/account/2fa/enable", data = "<form>")]
pub async fn enable(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<CodeForm>,
    app: &State<App>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> Result<Reply, Reply> {
    let rd = app.portal.safe_rd(&form.rd).unwrap_or_default();
    let session = settings_session(session, &rd)?;
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(Reply::error(Status::Forbidden, BAD_FORM));
    }
    let user = account(app, &session).await?;
    if user.two_factor {
        return Ok(Reply::see_other(with_rd("/account/2fa", &rd)));
    }
    // The password proved at the set-up must still be recent: else the
    // confirmation form, which starts the set-up again.
    sudo_for_setup(&session, app, ip, "", &rd).await?;
    let Some(secret) = pending_secret(&session, second) else {
        return Ok(Reply::Flash(Flash::warning(
            Redirect::to(with_rd("/account/2fa", &rd)),
            "Start the set-up again: no new secret was waiting for a code.",
        )));
    };
    let render = |message: &str| setup_html(&user, &secret, &form.csrf_token, &rd, Some(message));
    let attempt =
        second.throttle.begin(&user.username, ip).await.map_err(|refused| Reply::refused(refused, render))?;
    let now = now();
    let Some(step) = second_factor::step_of(&secret, &form.code, now) else {
        attempt.failed().await;
        log::warn!("second factor set-up: wrong code, user {:?}, ip {ip:?}", user.username);
        let message = "That code is not right. Enter the 6-digit code your app shows now.";
        return Ok(setup_page(
            Status::UnprocessableEntity,
            &user,
            &secret,
            &form.csrf_token,
            &rd,
            Some(message),
        ));
    };
    attempt.succeeded().await;
    let codes = second_factor::new_recovery_codes();
    let hashes =
        app.hasher.hash_secrets(codes.clone()).await.map_err(|e| Reply::down("recovery codes", e))?;
    let sealed = second.sealer.seal(&secret);
    let enabled = second_factor::enable(&app.storage, user.id, &sealed, step, &hashes, now)
        .await
        .map_err(|e| Reply::down("second factor set-up", e))?;
    if !enabled {
        return Ok(Reply::see_other(with_rd("/account/2fa", &rd)));
    }
    // This session just proved the new factor; every other one (a session
    // opened with the password alone, perhaps not by this person) ends.
    let mut state = auth_state(&session);
    state.enrolled(Method::Totp);
    save_auth_state(&session, &state).await?;
    session.rotate().await?;
    let ended = end_other_sessions(&session, &user, app).await?;
    log::info!("second factor on: user {:?}, ended {ended} other sessions", user.username);
    Ok(codes_page(&codes, &rd))
}

/// Ends every session of `user` but this one, counted as revocations.
async fn end_other_sessions(session: &Session<'_>, user: &User, app: &App) -> Result<u64, Reply> {
    let ended = session
        .manager()
        .store()
        .end(Ending::OwnedBy { user_id: user.id, keep: Some(session.handle()) })
        .await
        .map_err(|e| Reply::down("other sessions not ended", e))?;
    Metrics::count(&app.metrics.ended_revoke, ended);
    Ok(ended)
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
/// new recovery codes; `Err` is the answer.
async fn confirm_both(
    session: &Session<'_>,
    form: &CodeForm,
    app: &App,
    second: &SecondFactor,
    ip: Option<IpAddr>,
    rd: &str,
) -> Result<User, Reply> {
    if !csrf::session_ok(session, &form.csrf_token) {
        return Err(Reply::error(Status::Forbidden, BAD_FORM));
    }
    let user = account(app, session).await?;
    if !user.two_factor {
        return Err(Reply::see_other(with_rd("/account/2fa", rd)));
    }
    let page = StatusPage::load(app, &user, &form.csrf_token, rd, session).await?;
    let render = |message: &str| page.html(Some(message), None);
    app.confirm_password(&user, &form.password, ip, "The password is wrong.", render).await?;
    check_code(app, second, &user, &form.code, ip, Status::UnprocessableEntity, render).await?;
    Ok(user)
}

#[post("/account/2fa/disable", data = "<form>")]
pub async fn disable(
    _origin: csrf::SameOrigin,
    session: Session<'_>,
    form: Form<CodeForm>,
    app: &State<App>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> Result<Reply, Reply> {
    let rd = app.portal.safe_rd(&form.rd).unwrap_or_default();
    let session = settings_session(session, &rd)?;
    let user = confirm_both(&session, &form, app, second, ip, &rd).await?;
    second_factor::disable(&app.storage, user.id).await.map_err(|e| Reply::down("second factor off", e))?;
    // Where 2FA is required, this session must set it up again before
    // anything else opens.
    let mut state = auth_state(&session);
    state.factor_removed(second.required);
    save_auth_state(&session, &state).await?;
    session.rotate().await?;
    let ended = end_other_sessions(&session, &user, app).await?;
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
    app: &State<App>,
    second: &State<SecondFactor>,
    ip: Option<IpAddr>,
) -> Result<Reply, Reply> {
    let rd = app.portal.safe_rd(&form.rd).unwrap_or_default();
    let session = settings_session(session, &rd)?;
    let user = confirm_both(&session, &form, app, second, ip, &rd).await?;
    let codes = second_factor::new_recovery_codes();
    let hashes =
        app.hasher.hash_secrets(codes.clone()).await.map_err(|e| Reply::down("recovery codes", e))?;
    let replaced = second_factor::replace_codes(&app.storage, user.id, &hashes)
        .await
        .map_err(|e| Reply::down("new recovery codes", e))?;
    if !replaced {
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
