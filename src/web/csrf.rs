//! Anti-CSRF tokens.
//!
//! Anonymous forms (login, setup) carry a token that also sits in a private,
//! HttpOnly cookie: anonymous visitors get no database row. Logged-in forms
//! carry a token kept in the session's data, so it dies with the session and
//! a login replaces it.

use rocket::http::{Cookie, CookieJar, SameSite};

use crate::config::Settings;
use crate::session::{constant_time_eq, Session, Token};

const SESSION_KEY: &str = "csrf";

/// The anonymous token of this browser, set as a cookie if it has none yet.
pub fn anonymous(jar: &CookieJar<'_>, settings: &Settings) -> String {
    let name = settings.csrf_cookie_name();
    if let Some(token) = jar.get_private(name).filter(|c| Token::decode(c.value()).is_some()) {
        return token.value().to_owned();
    }
    let token = Token::generate().encode();
    jar.add_private(
        Cookie::build((name, token.clone()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(settings.cookie_secure)
            .expires(None),
    );
    token
}

/// Drops the anonymous token once its browser is logged in: forms then use
/// the session's, and every later request is one cookie lighter.
pub fn forget_anonymous(jar: &CookieJar<'_>, settings: &Settings) {
    let name = settings.csrf_cookie_name();
    if jar.get(name).is_some() {
        jar.remove_private(Cookie::build(name).path("/").secure(settings.cookie_secure));
    }
}

pub fn anonymous_ok(jar: &CookieJar<'_>, settings: &Settings, submitted: &str) -> bool {
    jar.get_private(settings.csrf_cookie_name()).is_some_and(|c| {
        !submitted.is_empty() && constant_time_eq(c.value().as_bytes(), submitted.as_bytes())
    })
}

/// A fresh token for a new session's data.
pub fn new_session_token() -> serde_json::Map<String, serde_json::Value> {
    let mut data = serde_json::Map::new();
    data.insert(SESSION_KEY.into(), Token::generate().encode().into());
    data
}

/// The session's token (one is created for a session that lacks it).
pub async fn of_session(session: &Session<'_>) -> Result<String, crate::session::SessionError> {
    if let Some(token) = session.get::<String>(SESSION_KEY) {
        return Ok(token);
    }
    let token = Token::generate().encode();
    session.insert(SESSION_KEY, &token).await?;
    Ok(token)
}

pub fn session_ok(session: &Session<'_>, submitted: &str) -> bool {
    session
        .get::<String>(SESSION_KEY)
        .is_some_and(|t| !submitted.is_empty() && constant_time_eq(t.as_bytes(), submitted.as_bytes()))
}
