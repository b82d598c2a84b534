//! The portal's place among the apps it guards: its public address, the
//! cookie domain, the access rules, and which URLs it will send a browser
//! to after a login or a logout (`rd`).

use std::sync::Arc;

use crate::auth::access::Rules;
use crate::config::{in_domain, PublicUrl};
use crate::session::Clock;

/// What forward auth and `rd` are decided by, checked at start-up.
pub struct Portal {
    /// The public address and its origin.
    pub public: PublicUrl,
    /// The domain the session cookie is shared with, if any.
    pub cookie_domain: Option<String>,
    /// The access rules.
    pub rules: Rules,
    /// Cookies are Secure (`cookie_secure`).
    pub cookie_secure: bool,
    /// The time pages judge sessions, codes and forms by (the session
    /// layer's clock).
    pub clock: Arc<dyn Clock>,
}

impl Portal {
    /// Now, in unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Where a browser goes once logged in: a safe `rd`, else `/user`.
    pub(super) fn after_login(&self, rd: &str) -> super::Reply {
        match self.safe_rd(rd) {
            Some(to) => super::Reply::see_other(to),
            None => super::Reply::to("/user"),
        }
    }

    /// Whether `host` (lower-case, no port, no trailing dot) is the portal's
    /// own or under the cookie domain: the only hosts whose browsers carry
    /// the session cookie, so the only ones forward auth can answer for.
    pub fn covers(&self, host: &str) -> bool {
        host == self.public.host || self.cookie_domain.as_deref().is_some_and(|d| in_domain(host, d))
    }

    /// `PUBLIC_URL` + `page` (`/login`, `/login/2fa`) + `?rd=TARGET`, the
    /// target percent-encoded.
    pub fn login_url(&self, page: &str, target: &str) -> String {
        let rd = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
        format!("{}{page}?rd={rd}", self.public.origin)
    }

    /// `rd` if it is safe to send a browser to, normalised; else `None`
    /// (logged at info). Safe: no whitespace, control character or
    /// backslash anywhere (browsers drop tabs and newlines and read `\` as
    /// `/`), and either a path on the portal starting with exactly one `/`,
    /// or an absolute URL without user info whose scheme is https (or http
    /// while `public_url` is http) and whose host, IDNA applied, is the
    /// portal's or under `cookie_domain` at a dot boundary.
    pub fn safe_rd(&self, rd: &str) -> Option<String> {
        let safe = self.check_rd(rd);
        if safe.is_none() && !rd.is_empty() {
            log::info!("redirect target refused: {rd:?}");
        }
        safe
    }

    fn check_rd(&self, rd: &str) -> Option<String> {
        if rd.is_empty() || rd.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
            return None;
        }
        if rd.starts_with('/') {
            return (!rd.starts_with("//")).then(|| rd.to_owned());
        }
        let url = url::Url::parse(rd).ok()?;
        let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && !self.public.https);
        if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?.trim_end_matches('.');
        self.covers(host).then(|| url.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::access::DefaultPolicy;

    pub fn portal(origin: &str, domain: Option<&str>) -> Portal {
        let https = origin.starts_with("https");
        let host = url::Url::parse(origin).unwrap().host_str().unwrap().to_owned();
        Portal {
            public: PublicUrl { origin: origin.into(), https, host },
            cookie_domain: domain.map(str::to_owned),
            rules: Rules::new(vec![], DefaultPolicy::Allow).unwrap(),
            cookie_secure: https,
            clock: Arc::new(crate::session::SystemClock),
        }
    }

    #[test]
    fn hostile_redirect_targets_are_never_followed() {
        let p = portal("https://auth.example.com", Some("example.com"));
        for rd in [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "https://example.com.evil.com",
            "https://evil.com/?x=.example.com",
            "https://evil.com#.example.com",
            "https://example.com@evil.com",
            "https://user:pw@app.example.com/",
            "https://evil.com\\@example.com",
            "https://evil.com\\.example.com",
            "javascript:alert(1)",
            "JavaScript:alert(1)//.example.com",
            "data:text/html,<script>alert(1)</script>",
            "http:evil.com",
            "https:evil.com",
            "http://app.example.com/",
            "/\t/evil.com",
            "/\n/evil.com",
            "https://app.example.com/\t",
            "/ /evil.com",
            "https://evilexample.com",
            "https://example.com%2eevil.com",
            "https://evil.com%2fexample.com",
            "https://example.com\u{3002}evil.com",
            "https://evil\u{ff0e}com",
            "ftp://app.example.com/",
            "https://[::1]/",
            "https://127.0.0.1/",
            "https://com/",
            "//example.com",
            "/\u{0}/evil.com",
            "https://app.example.com\u{2028}/",
        ] {
            assert_eq!(p.safe_rd(rd), None, "{rd:?}");
        }
    }

    #[test]
    fn safe_redirect_targets_are_followed() {
        let p = portal("https://auth.example.com", Some("example.com"));
        for (rd, to) in [
            ("/user", "/user"),
            ("/sessions?x=1", "/sessions?x=1"),
            ("https://auth.example.com/user", "https://auth.example.com/user"),
            ("https://example.com/", "https://example.com/"),
            (
                "https://grafana.example.com/d/abc?orgId=1#top",
                "https://grafana.example.com/d/abc?orgId=1#top",
            ),
            ("https://a.b.example.com:8443/x", "https://a.b.example.com:8443/x"),
            ("https://APP.Example.COM./x", "https://app.example.com./x"),
            ("https://app\u{3002}example.com/", "https://app.example.com/"),
        ] {
            assert_eq!(p.safe_rd(rd).as_deref(), Some(to), "{rd:?}");
        }
        // Without a cookie domain only the portal's own host; http only
        // while the portal itself is http.
        let lan = portal("http://auth.lan:8000", None);
        assert_eq!(lan.safe_rd("http://auth.lan:8000/user").as_deref(), Some("http://auth.lan:8000/user"));
        assert_eq!(lan.safe_rd("http://app.lan/"), None);
    }
}
