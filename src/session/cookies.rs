//! Every cookie sesija sets, in one place: the names (pinned: operators'
//! checks look for them) and the attributes, of the session cookie and of
//! the anonymous forms' CSRF cookie, and the cookies that remove them.
//!
//! Both are private (sealed by Rocket with AES-256-GCM), HttpOnly,
//! SameSite=Lax, Path=/, Secure when `cookie_secure` is on; a removal
//! carries the same attributes as what it removes.

use rocket::http::{Cookie, SameSite};
use rocket::time::{Duration, OffsetDateTime};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "sesija";
/// Its name when `cookie_secure` is on: the `__Host-` prefix makes browsers
/// insist on Secure, Path=/ and no Domain.
pub const SECURE_COOKIE_NAME: &str = "__Host-sesija";
/// Its name with `cookie_secure` and a `cookie_domain`: `__Secure-` insists
/// on Secure and allows a Domain (`__Host-` forbids one).
pub const SECURE_DOMAIN_COOKIE_NAME: &str = "__Secure-sesija";
/// Every name the session cookie has had, in the order of their index in
/// the database's `server_state` (`session_cookie`).
pub const COOKIE_NAMES: [&str; 3] = [COOKIE_NAME, SECURE_COOKIE_NAME, SECURE_DOMAIN_COOKIE_NAME];
/// Name of the anonymous forms' CSRF cookie.
pub const CSRF_COOKIE_NAME: &str = "sesija_csrf";
/// Its name when `cookie_secure` is on.
pub const SECURE_CSRF_COOKIE_NAME: &str = "__Host-sesija_csrf";

/// The CSRF cookie's name with `cookie_secure` (or without).
pub fn csrf_cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_CSRF_COOKIE_NAME
    } else {
        CSRF_COOKIE_NAME
    }
}

/// Whether a cookie named `name` must be Secure whatever the setting.
fn prefixed(name: &str) -> bool {
    name.starts_with("__Host-") || name.starts_with("__Secure-")
}

/// The attributes every cookie of sesija has.
fn base(name: String, value: String, secure: bool) -> ::cookie::CookieBuilder<'static> {
    let secure = secure || prefixed(&name);
    Cookie::build((name, value)).path("/").http_only(true).same_site(SameSite::Lax).secure(secure)
}

/// The session cookie named `name` holding `value`, for `domain` (or the
/// host that set it). With `lasts`, it outlives the browser for that long
/// ("remember me"); without, it ends with the browser.
pub fn session(
    name: &str,
    value: String,
    secure: bool,
    domain: Option<&str>,
    lasts: Option<i64>,
) -> Cookie<'static> {
    let mut builder = base(name.to_owned(), value, secure);
    if let Some(domain) = domain.filter(|_| !name.starts_with("__Host-")) {
        builder = builder.domain(domain.to_owned());
    }
    match lasts {
        Some(seconds) => {
            let left = Duration::seconds(seconds.max(0));
            builder.max_age(left).expires(OffsetDateTime::now_utc() + left).build()
        }
        None => builder.expires(None).build(),
    }
}

/// What removes the session cookie named `name`: removed under the Domain
/// it was set with (none for `__Host-`, which forbids one).
pub fn session_removal(name: &str, secure: bool, domain: Option<&str>) -> Cookie<'static> {
    let mut builder = base(name.to_owned(), String::new(), secure);
    if let Some(domain) = domain.filter(|_| !name.starts_with("__Host-")) {
        builder = builder.domain(domain.to_owned());
    }
    builder.build()
}

/// The anonymous CSRF cookie holding `value`: for the portal's host only,
/// until the browser closes.
pub fn csrf(value: String, secure: bool) -> Cookie<'static> {
    base(csrf_cookie_name(secure).to_owned(), value, secure).expires(None).build()
}

/// What removes the anonymous CSRF cookie.
pub fn csrf_removal(secure: bool) -> Cookie<'static> {
    base(csrf_cookie_name(secure).to_owned(), String::new(), secure).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cookie_and_its_removal_carry_the_same_attributes() {
        let cookies = [
            session(COOKIE_NAME, "v".into(), false, Some("example.com"), Some(60)),
            session_removal(COOKIE_NAME, false, Some("example.com")),
            session(SECURE_COOKIE_NAME, "v".into(), true, Some("example.com"), None),
            session_removal(SECURE_COOKIE_NAME, true, Some("example.com")),
            csrf("v".into(), false),
            csrf_removal(false),
            csrf("v".into(), true),
            csrf_removal(true),
        ];
        for cookie in &cookies {
            assert_eq!(cookie.path(), Some("/"), "{cookie}");
            assert_eq!(cookie.http_only(), Some(true), "{cookie}");
            assert_eq!(cookie.same_site(), Some(SameSite::Lax), "{cookie}");
            if prefixed(cookie.name()) {
                assert_eq!(cookie.secure(), Some(true), "{cookie}");
            }
            if cookie.name().starts_with("__Host-") {
                assert_eq!(cookie.domain(), None, "{cookie}");
            }
        }
        assert_eq!(cookies[0].domain(), Some("example.com"));
        assert_eq!(cookies[1].domain(), Some("example.com"), "removed under the domain it was set with");
        assert_eq!(cookies[6].name(), SECURE_CSRF_COOKIE_NAME);
    }
}
