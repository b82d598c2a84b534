//! Forward auth: the checks a reverse proxy asks before it passes a request
//! on to an app. `GET|HEAD /api/authz/auth-request` for nginx's
//! `auth_request`, `GET|HEAD /api/authz/forward-auth` for Caddy's
//! `forward_auth` and Traefik's `forwardAuth`.
//!
//! These run on every request of every protected app: a warm session costs
//! the cookie's decryption and two hash-map look-ups (session, identity),
//! no database read and no write (the idle deadline still slides, written
//! at most once per `session_touch_interval` as for page views). They never
//! set a cookie (a proxy drops it, and would hand it to the app), and never
//! answer 200 on an error: a malformed target is 400, the database down 503.

use rocket::http::{ContentType, Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder, Response};
use rocket::{get, State};

use super::{pages, Directory, Portal, WebError, WebResult};
use crate::auth::access::{Verdict, Who};
use crate::auth::identity::Identity;
use crate::session::Session;

/// The request a proxy asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As the browser asked for it: where to come back to after a login.
    pub url: String,
    /// Lower-case, IDNA applied, no port, no trailing dot.
    pub host: String,
    /// Percent-decoded; no dot segments, no encoded slashes or backslashes.
    pub path: String,
    /// Upper-case (`GET`).
    pub method: String,
}

/// Why a check cannot be answered (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTarget(pub &'static str);

impl Target {
    /// From the parts a proxy sends. `uri` is the request target
    /// (`/path?query`), exactly as the browser sent it.
    pub fn parse(scheme: &str, authority: &str, uri: &str, method: &str) -> Result<Target, BadTarget> {
        let scheme = scheme.trim().to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(BadTarget("the target is not an http(s) URL"));
        }
        if authority.is_empty() || authority.contains(['/', '\\', '@', '?', '#']) {
            return Err(BadTarget("the target host is malformed"));
        }
        if !uri.starts_with('/') || uri.starts_with("//") {
            return Err(BadTarget("the target path must start with one /"));
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
            return Err(BadTarget("the target holds whitespace, a control character or a backslash"));
        }
        let raw_path = &uri[..uri.find(['?', '#']).unwrap_or(uri.len())];
        let lower = raw_path.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%3b") {
            return Err(BadTarget("the target path holds an encoded slash, backslash or semicolon"));
        }
        // Servlet containers (Tomcat, Jetty) and the apps built on them drop
        // each segment's `;parameters` and merge repeated slashes before
        // they route: `/admin;x` is `/admin`, `/public/..;/admin` is
        // `/admin`, `/api//admin` is `/api/admin`. The rules see the path
        // as they do, so `..` is then refused and `/admin;x` is `/admin`.
        let stripped = normalise_segments(raw_path);
        let raw_path = stripped.as_ref();
        let path = percent_encoding::percent_decode_str(raw_path)
            .decode_utf8()
            .map_err(|_| BadTarget("the target path is not UTF-8"))?;
        if raw_path
            .split('%')
            .skip(1)
            .any(|h| h.len() < 2 || !h.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit))
        {
            return Err(BadTarget("the target path has a malformed percent escape"));
        }
        if path.chars().any(|c| c.is_control() || c == '\\') {
            return Err(BadTarget("the target path decodes to a control character or a backslash"));
        }
        if path.split('/').any(|segment| segment == "." || segment == "..") {
            return Err(BadTarget("the target path has dot segments"));
        }
        let method = method.trim();
        if method.is_empty() || method.len() > 32 || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(BadTarget("the method is malformed"));
        }
        let url = format!("{scheme}://{authority}{uri}");
        let host = match plain_host(authority) {
            Some(host) => host,
            // Anything else (IDNA, IPv6, escapes) is the URL parser's to normalise.
            None => {
                let parsed = url::Url::parse(&url).map_err(|_| BadTarget("the target is not a valid URL"))?;
                match parsed.host() {
                    Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_owned(),
                    Some(_) => parsed.host_str().unwrap_or_default().to_owned(),
                    None => return Err(BadTarget("the target has no host")),
                }
            }
        };
        Ok(Target { url, host, path: path.into_owned(), method: method.to_ascii_uppercase() })
    }

    /// From an absolute URL (nginx's `X-Original-URL`).
    pub fn from_url(url: &str, method: &str) -> Result<Target, BadTarget> {
        let (scheme, rest) = url.split_once("://").ok_or(BadTarget("the target is not an absolute URL"))?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, uri) = rest.split_at(end);
        let uri = match uri {
            "" => "/".to_owned(),
            u if u.starts_with('/') => u.to_owned(),
            u => format!("/{u}"),
        };
        Target::parse(scheme, authority, &uri, method)
    }
}

/// `raw_path` with each segment's `;parameters` dropped and runs of `/`
/// merged into one (a trailing `/` is kept); as it is when it has neither
/// (the common case: no copy on the proxies' hot path).
fn normalise_segments(raw_path: &str) -> std::borrow::Cow<'_, str> {
    if !raw_path.contains(';') && !raw_path.contains("//") {
        return std::borrow::Cow::Borrowed(raw_path);
    }
    let segments: Vec<&str> =
        raw_path.split('/').skip(1).map(|segment| segment.split(';').next().unwrap_or_default()).collect();
    let last = segments.len().saturating_sub(1);
    let mut path = String::with_capacity(raw_path.len());
    for (i, segment) in segments.into_iter().enumerate() {
        if segment.is_empty() && i != last {
            continue;
        }
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() {
        path.push('/');
    }
    std::borrow::Cow::Owned(path)
}

/// The host of `host[:port]` when it is a plain ASCII name (letters,
/// digits, `-`, dots; not all digits and dots, so never an IPv4 address to
/// normalise, nor `xn--` punycode): lower-cased, trailing dot and port
/// dropped. The common case, without a URL parse on every proxied request.
fn plain_host(authority: &str) -> Option<String> {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let plain = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && host.bytes().any(|b| b.is_ascii_alphabetic())
        && !host.split('.').any(|label| {
            label.is_empty()
                || label.len() > 63
                || label.starts_with("xn--")
                || label.starts_with('-')
                || label.ends_with('-')
        });
    plain.then(|| host.to_ascii_lowercase())
}

/// Which endpoint answers: they differ only in how they redirect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// nginx: never 3xx (nginx turns it into a 500); 401 with `Location`.
    AuthRequest,
    /// Caddy, Traefik: 302 for GET/HEAD/OPTIONS, 303 otherwise.
    ForwardAuth,
}

/// What the proxy's request tells of the browser's.
pub struct Ask {
    target: Result<Target, BadTarget>,
    /// A browser navigating (it will follow a redirect to a login page).
    navigation: bool,
}

fn header<'r>(req: &'r Request<'_>, name: &str) -> Result<&'r str, BadTarget> {
    let mut values = req.headers().get(name);
    let value = values.next().ok_or(BadTarget("a required header is missing"))?;
    // Two values for one of these headers is an attempt to confuse: refused.
    if values.next().is_some() {
        return Err(BadTarget("a header is repeated"));
    }
    Ok(value)
}

fn navigation(req: &Request<'_>) -> bool {
    let html = req.headers().get("Accept").any(|a| a.to_ascii_lowercase().contains("text/html"));
    let xhr = req.headers().get("X-Requested-With").any(|v| v.eq_ignore_ascii_case("XMLHttpRequest"));
    html && !xhr
}

fn method_of<'r>(req: &'r Request<'_>, name: &str) -> Result<&'r str, BadTarget> {
    match req.headers().get(name).count() {
        0 => Ok("GET"),
        1 => Ok(req.headers().get_one(name).unwrap_or("GET")),
        _ => Err(BadTarget("a header is repeated")),
    }
}

/// nginx's view of the request.
pub struct OriginalRequest(Ask);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for OriginalRequest {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let target = header(req, "X-Original-URL")
            .and_then(|url| Target::from_url(url, method_of(req, "X-Original-Method")?));
        Outcome::Success(OriginalRequest(Ask { target, navigation: navigation(req) }))
    }
}

/// Caddy's and Traefik's view of the request.
pub struct ForwardedRequest(Ask);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ForwardedRequest {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let target = (|| {
            let (proto, host, uri) = (
                header(req, "X-Forwarded-Proto")?,
                header(req, "X-Forwarded-Host")?,
                header(req, "X-Forwarded-Uri")?,
            );
            Target::parse(proto, host, uri, method_of(req, "X-Forwarded-Method")?)
        })();
        Outcome::Success(ForwardedRequest(Ask { target, navigation: navigation(req) }))
    }
}

/// The session of the request, if any, or the store's failure: unlike
/// `Option<Session>`, an unreachable database is not "logged out".
pub struct Check<'r>(Result<Option<Session<'r>>, ()>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Check<'r> {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(Check(match Session::from_request(req).await {
            Outcome::Success(session) => Ok(Some(session)),
            Outcome::Forward(_) => Ok(None),
            Outcome::Error(_) => Err(()),
        }))
    }
}

/// An answer to a proxy.
pub struct Answer {
    status: Status,
    headers: Vec<Header<'static>>,
    body: Option<(ContentType, String)>,
}

impl<'r> Responder<'r, 'static> for Answer {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let mut res = Response::build();
        res.status(self.status);
        for h in self.headers {
            res.header(h);
        }
        if let Some((kind, body)) = self.body {
            res.header(kind).sized_body(body.len(), std::io::Cursor::new(body));
        }
        Ok(res.finalize())
    }
}

impl Answer {
    fn allowed(identity: Option<&Identity>) -> Answer {
        let headers = match identity {
            None => Vec::new(),
            Some(who) => vec![
                Header::new("Remote-User", who.username.clone()),
                Header::new("Remote-Groups", who.groups.join(",")),
                Header::new("Remote-Name", who.display_name.clone().unwrap_or_else(|| who.username.clone())),
                Header::new("Remote-Email", who.email.clone().unwrap_or_default()),
            ],
        };
        Answer { status: Status::Ok, headers, body: None }
    }
}

#[get("/api/authz/auth-request")]
pub async fn auth_request(
    ask: OriginalRequest,
    check: Check<'_>,
    portal: &State<Portal>,
    directory: &State<Directory>,
) -> WebResult<Answer> {
    decide(ask.0, check, portal, directory, Flavour::AuthRequest).await
}

#[get("/api/authz/forward-auth")]
pub async fn forward_auth(
    ask: ForwardedRequest,
    check: Check<'_>,
    portal: &State<Portal>,
    directory: &State<Directory>,
) -> WebResult<Answer> {
    decide(ask.0, check, portal, directory, Flavour::ForwardAuth).await
}

async fn decide(
    ask: Ask,
    check: Check<'_>,
    portal: &Portal,
    directory: &Directory,
    flavour: Flavour,
) -> WebResult<Answer> {
    let target = ask.target.map_err(|BadTarget(why)| WebError::Invalid(why))?;
    if !portal.covers(&target.host) {
        return Err(WebError::Invalid("the target host is neither the portal's nor under cookie_domain"));
    }
    let session = check.0.map_err(|()| WebError::Unavailable("the session store is unavailable"))?;
    // A login still waiting for its code (or for a set-up) is no login.
    let state = session.as_ref().map(super::guards::auth_state);
    let session = session.filter(|_| state.as_ref().is_some_and(super::super::auth::state::AuthState::opens));
    let second_factor = state.is_some_and(|s| s.opens() && s.second_factor());
    let identity = match &session {
        None => None,
        // The account gone: so is this session.
        Some(session) => directory.identities.get(session.user_id()).await?,
    };
    let who = identity.as_ref().map(|i| Who { username: &i.username, groups: &i.groups, second_factor });
    Ok(match portal.rules.decide(&target.host, &target.path, who.as_ref()) {
        Verdict::Public => Answer::allowed(identity.as_deref()),
        Verdict::Allowed => Answer::allowed(identity.as_deref()),
        Verdict::LoginRequired => login_required(portal, &target, ask.navigation, flavour, "/login"),
        // The code prompt, or the set-up page for an account without a
        // second factor: then back to the app.
        Verdict::SecondFactorRequired => {
            login_required(portal, &target, ask.navigation, flavour, "/login/2fa")
        }
        Verdict::Forbidden => forbidden(portal, identity.as_deref()),
    })
}

fn login_required(
    portal: &Portal,
    target: &Target,
    navigation: bool,
    flavour: Flavour,
    page: &str,
) -> Answer {
    let login = portal.login_url(page, &target.url);
    let location = Header::new("Location", login.clone());
    if navigation && flavour == Flavour::ForwardAuth {
        let status = match target.method.as_str() {
            "GET" | "HEAD" | "OPTIONS" => Status::Found,
            _ => Status::SeeOther,
        };
        return Answer { status, headers: vec![location], body: None };
    }
    // nginx turns a 401 with Location into the redirect itself
    // (`error_page 401 =302 $login`); other clients get a hint to follow.
    let body = serde_json::json!({ "error": "login required", "login": login }).to_string();
    Answer { status: Status::Unauthorized, headers: vec![location], body: Some((ContentType::JSON, body)) }
}

fn forbidden(portal: &Portal, identity: Option<&Identity>) -> Answer {
    let page = pages::Forbidden {
        notice: None,
        username: identity.map(|i| i.username.as_str()),
        portal: &portal.public.origin,
    };
    Answer {
        status: Status::Forbidden,
        headers: Vec::new(),
        body: Some((ContentType::HTML, pages::render(page))),
    }
}

/// This area's routes.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![auth_request, forward_auth,]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_normalise() {
        let t = Target::from_url("https://App.Example.COM./a%20b/c?x=../y", "post").unwrap();
        assert_eq!(t.host, "app.example.com");
        assert_eq!(t.path, "/a b/c");
        assert_eq!(t.method, "POST");
        assert_eq!(t.url, "https://App.Example.COM./a%20b/c?x=../y");
        assert_eq!(Target::from_url("http://app.example.com", "GET").unwrap().path, "/");
        assert_eq!(
            Target::parse("https", "app.example.com:8443", "/x", "GET").unwrap().host,
            "app.example.com"
        );
    }

    #[test]
    fn path_parameters_and_repeated_slashes_are_seen_as_servlet_containers_see_them() {
        let path = |uri: &str| Target::parse("https", "app.example.com", uri, "GET").unwrap().path;
        assert_eq!(path("/admin;jsessionid=1/users"), "/admin/users");
        assert_eq!(path("/admin;x"), "/admin");
        assert_eq!(path("/admin;x?y=1;z"), "/admin");
        assert_eq!(path("/;/admin"), "/admin");
        assert_eq!(path("/api//admin/"), "/api/admin/");
        assert_eq!(path("/a;b;c/d;"), "/a/d");
        assert_eq!(path("/"), "/");
        assert_eq!(path("/;x"), "/");
    }

    #[test]
    fn plain_hosts_take_the_short_way_and_agree_with_the_url_parser() {
        for authority in ["app.example.com", "APP.Example.com.", "a-b.example.com:8443", "localhost", "x1.y2"]
        {
            let short = plain_host(authority).expect(authority);
            let parsed = url::Url::parse(&format!("http://{authority}/")).unwrap();
            assert_eq!(short, parsed.host_str().unwrap().trim_end_matches('.'), "{authority}");
        }
        for other in [
            "127.0.0.1",
            "[::1]:80",
            "xn--bcher-kva.example",
            "bücher.example",
            "a..b",
            "-a.example",
            "a:",
            "a:x",
        ] {
            assert_eq!(plain_host(other), None, "{other}");
        }
        assert_eq!(Target::from_url("http://127.000.0.1/", "GET").unwrap().host, "127.0.0.1");
        assert_eq!(
            Target::from_url("http://B\u{fc}cher.example/", "GET").unwrap().host,
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn malformed_targets_are_refused() {
        for url in [
            "app.example.com/x",
            "ftp://app.example.com/",
            "javascript://app.example.com/",
            "https:///x",
            "https://user@app.example.com/",
            "https://app.example.com/a/../admin",
            "https://app.example.com/a/%2e%2e/admin",
            "https://app.example.com/./admin",
            "https://app.example.com/a%2fb",
            "https://app.example.com/a%5Cb",
            "https://app.example.com/a\\b",
            "https://app.example.com/a b",
            "https://app.example.com/%zz",
            "https://app.example.com/%ff",
            "https://app.example.com/a%00",
            "https://app.example.com//evil.com",
            "https://app.example.com/public/..;/admin",
            "https://app.example.com/public/..;x=1/admin",
            "https://app.example.com/public/.;/admin",
            "https://app.example.com/public/%2e%2e;/admin",
            "https://app.example.com/admin%3bx",
            "https://app.example.com/admin%3Bx",
        ] {
            assert!(Target::from_url(url, "GET").is_err(), "{url}");
        }
        assert!(Target::from_url("https://app.example.com/", "GE T").is_err());
        assert!(Target::parse("https", "", "/", "GET").is_err());
        assert!(Target::parse("https", "a.example.com", "x", "GET").is_err());
    }
}
