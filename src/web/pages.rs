//! Page templates, compiled into the binary.

use askama::Template;
use rocket::http::Status;

use super::Notice;

#[derive(Template)]
#[template(path = "login.html")]
pub struct Login<'a> {
    pub notice: Option<Notice>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
    pub username: &'a str,
    /// Where to go after the login (already checked safe), or empty.
    pub rd: &'a str,
}

#[derive(Template)]
#[template(path = "setup.html")]
pub struct Setup<'a> {
    pub notice: Option<Notice>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
    pub token: &'a str,
    pub username: &'a str,
}

#[derive(Template)]
#[template(path = "user.html")]
pub struct User<'a> {
    pub notice: Option<Notice>,
    pub username: &'a str,
    pub csrf_token: &'a str,
    pub persistent: bool,
    /// (name, url) of the apps behind the proxy this user may open.
    pub apps: Vec<(&'a str, &'a str)>,
}

/// 403 from forward auth: logged in, but not allowed here.
#[derive(Template)]
#[template(path = "forbidden.html")]
pub struct Forbidden<'a> {
    pub notice: Option<Notice>,
    pub username: Option<&'a str>,
    /// The portal's origin, where to log out.
    pub portal: &'a str,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct Logout<'a> {
    pub notice: Option<Notice>,
    pub username: &'a str,
    pub csrf_token: &'a str,
}

pub struct SessionRow {
    pub handle: String,
    pub device: String,
    pub ip: String,
    pub signed_in: String,
    pub last_active: String,
    pub remembered: bool,
    pub current: bool,
    /// Opened with password and second factor.
    pub second_factor: bool,
    /// Password right, waiting for its code (opens nothing).
    pub pending: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
pub struct Sessions<'a> {
    pub notice: Option<Notice>,
    pub sessions: Vec<SessionRow>,
    pub csrf_token: &'a str,
    /// Ending sessions asks for the password (no recent one on this session).
    pub needs_password: bool,
}

/// "Confirm your password" before ending sessions or changing how the
/// account logs in (sudo mode).
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct Confirm<'a> {
    pub notice: Option<Notice>,
    pub error: Option<&'a str>,
    pub action: &'a str,
    pub handle: Option<&'a str>,
    pub rd: &'a str,
    /// What is being confirmed ("Ending sessions").
    pub what: &'a str,
    /// The page to go back to.
    pub back: &'a str,
    pub csrf_token: &'a str,
    pub minutes: i64,
}

#[derive(Template)]
#[template(path = "password.html")]
pub struct Password<'a> {
    pub notice: Option<Notice>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
}

/// The code prompt after the password.
#[derive(Template)]
#[template(path = "login_code.html")]
pub struct LoginCode<'a> {
    pub notice: Option<Notice>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
    pub rd: &'a str,
}

/// `/account/2fa`: on (since when, codes left) or off.
#[derive(Template)]
#[template(path = "two_factor.html")]
pub struct TwoFactor<'a> {
    pub notice: Option<Notice>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
    pub rd: &'a str,
    pub enabled_since: Option<String>,
    pub codes_left: i64,
    /// `require_2fa`: nothing else opens until it is set up.
    pub required: bool,
    /// Setting it up asks for the password (no recent one on this session).
    pub needs_password: bool,
}

/// A new secret to confirm with one code.
#[derive(Template)]
#[template(path = "two_factor_setup.html")]
pub struct TwoFactorSetup<'a> {
    pub notice: Option<Notice>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
    pub rd: &'a str,
    /// An inline `<svg>` made here (not user input).
    pub qr_svg: &'a str,
    /// Base32, in groups of four.
    pub secret: &'a str,
    pub uri: &'a str,
}

/// New recovery codes, shown this once.
#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodes<'a> {
    pub notice: Option<Notice>,
    pub codes: &'a [String],
    /// Where "Continue" goes.
    pub next: &'a str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct Error<'a> {
    notice: Option<Notice>,
    code: u16,
    reason: &'a str,
    message: &'a str,
}

pub const STYLESHEET: &str = include_str!("../../templates/style.css");

/// Renders a page; a template that fails to render is a bug, shown as text.
pub fn render(page: impl Template) -> String {
    page.render().unwrap_or_else(|e| {
        log::error!("template failed: {e}");
        "<!doctype html><title>sesija</title><p>This page could not be shown.</p>".into()
    })
}

pub fn error(status: Status, message: &str, notice: Option<Notice>) -> String {
    render(Error { notice, code: status.code, reason: status.reason().unwrap_or(""), message })
}
