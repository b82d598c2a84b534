//! Anti-CSRF: tokens, and the origin of state-changing requests.
//!
//! Anonymous forms (login, setup) carry a token that also sits in a private,
//! HttpOnly cookie beside the time it was issued: anonymous visitors get no
//! database row, and the token is refused after [`ANONYMOUS_TOKEN_LIFETIME`].
//! Logged-in forms carry a token kept in the session's data, so it dies with
//! the session and a login replaces it.
//!
//! Every POST handler also takes [`SameOrigin`]: a request whose `Origin`
//! (or, without one, `Referer`) names another origin than the portal's
//! (`public_url`, or the host the request was sent to) is refused with 403
//! before its token is even looked at.

use rocket::http::{CookieJar, Status};
use rocket::request::{FromRequest, Outcome, Request};

use crate::session::{constant_time_eq, cookies, Session, Token};

const SESSION_KEY: &str = "csrf";

/// An anonymous form's token is accepted this long after it was issued.
pub const ANONYMOUS_TOKEN_LIFETIME: i64 = 86_400;

/// The token of an anonymous CSRF cookie (`ISSUED.TOKEN`) still in its lifetime.
fn live_anonymous(value: &str, now: i64) -> Option<&str> {
    let (issued, token) = value.split_once('.')?;
    let issued: i64 = issued.parse().ok()?;
    let age = now - issued;
    // A minute of leeway for a clock stepped back.
    ((-60..ANONYMOUS_TOKEN_LIFETIME).contains(&age) && Token::decode(token).is_some()).then_some(token)
}

/// The anonymous token of this browser, set as a cookie if it has none yet
/// (or only an expired one), at `now`.
pub fn anonymous(jar: &CookieJar<'_>, secure: bool, now: i64) -> String {
    let name = cookies::csrf_cookie_name(secure);
    if let Some(cookie) = jar.get_private(name) {
        if let Some(token) = live_anonymous(cookie.value(), now) {
            return token.to_owned();
        }
    }
    let token = Token::generate().encode();
    jar.add_private(cookies::csrf(format!("{now}.{token}"), secure));
    token
}

/// Drops the anonymous token once its browser is logged in: forms then use
/// the session's, and every later request is one cookie lighter.
pub fn forget_anonymous(jar: &CookieJar<'_>, secure: bool) {
    if jar.get(cookies::csrf_cookie_name(secure)).is_some() {
        jar.remove_private(cookies::csrf_removal(secure));
    }
}

pub fn anonymous_ok(jar: &CookieJar<'_>, secure: bool, submitted: &str, now: i64) -> bool {
    jar.get_private(cookies::csrf_cookie_name(secure)).is_some_and(|c| {
        live_anonymous(c.value(), now).is_some_and(|token| {
            !submitted.is_empty() && constant_time_eq(token.as_bytes(), submitted.as_bytes())
        })
    })
}

/// A request guard for every state-changing route: fails with 403 when the
/// request's `Origin`, or without one its `Referer`, names an origin other
/// than the portal's own (the request's `Host`). `Origin: null` (a sandboxed
/// frame, a redirect across origins) is foreign. A request with neither
/// header passes (older clients, privacy settings): its CSRF token decides.
pub struct SameOrigin;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SameOrigin {
    type Error = &'static str;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let headers = req.headers();
        let claimed = headers.get_one("Origin").or_else(|| headers.get_one("Referer"));
        let Some(claimed) = claimed else { return Outcome::Success(SameOrigin) };
        let theirs = origin_of(claimed);
        // The portal's own origin is `public_url`'s (scheme, host and port
        // exactly), or whatever host the browser addressed (a cross-site
        // form cannot choose the `Host` its request is sent with, only the
        // `Origin` gives it away).
        let public =
            req.rocket().state::<super::Portal>().and_then(|portal| origin_of(&portal.public.origin));
        let host = headers.get_one("Host").and_then(host_of);
        let same = theirs.as_ref().is_some_and(|theirs| {
            Some(theirs) == public.as_ref() || host.as_ref().is_some_and(|host| host.addresses(theirs))
        });
        if same {
            return Outcome::Success(SameOrigin);
        }
        log::warn!("cross-origin POST refused: origin {claimed:?}, host {:?}", headers.get_one("Host"));
        Outcome::Error((Status::Forbidden, "cross-origin request"))
    }
}

/// An origin: scheme, lower-case host, port (the scheme's default when
/// none is written).
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// A `Host` header: lower-case host and the port, if written.
#[derive(Debug, PartialEq, Eq)]
struct HostHeader {
    host: String,
    port: Option<u16>,
}

impl HostHeader {
    /// Whether a browser at `origin` sent its request to this host: same
    /// host, and the same port (no port written is the origin scheme's
    /// default; behind a proxy the scheme of the request itself is not
    /// known here).
    fn addresses(&self, origin: &Origin) -> bool {
        self.host == origin.host && self.port.unwrap_or(default_port(&origin.scheme)) == origin.port
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// The origin of an `Origin` or `Referer` value (`scheme://host[:port][/...]`).
fn origin_of(url: &str) -> Option<Origin> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let HostHeader { host, port } = host_of(&rest[..end])?;
    let port = port.unwrap_or(default_port(&scheme));
    Some(Origin { scheme, host, port })
}

/// `host[:port]`; user info is refused.
fn host_of(text: &str) -> Option<HostHeader> {
    if text.is_empty() || text.contains('@') {
        return None;
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port.parse::<u16>().ok()?)),
        _ => (text, None),
    };
    Some(HostHeader { host: host.to_ascii_lowercase(), port })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_by_scheme_host_and_port() {
        let origin = |o: &str| origin_of(o).unwrap();
        assert_eq!(origin("https://Login.Example.org"), origin("https://login.example.org:443/login?x=1"));
        assert_ne!(origin("http://login.example.org"), origin("https://login.example.org"), "scheme");
        assert_ne!(origin("http://login.example.org:443"), origin("https://login.example.org"));
        assert_ne!(origin("http://127.0.0.1:8001"), origin("http://127.0.0.1:8000"));
        let host = |h: &str| host_of(h).unwrap();
        assert!(host("127.0.0.1:8000").addresses(&origin("http://127.0.0.1:8000")));
        assert!(host("login.example.org").addresses(&origin("https://login.example.org")));
        assert!(host("login.example.org").addresses(&origin("http://login.example.org")));
        assert!(!host("login.example.org").addresses(&origin("http://login.example.org:443")));
        assert!(!host("login.example.org:8443").addresses(&origin("https://login.example.org")));
        assert!(!host("login.example.org").addresses(&origin("https://evil.example")));
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("https://a@login.example.org"), None);
        assert_eq!(origin_of("ftp://login.example.org"), None);
    }
}
