//! Forward auth: the checks a reverse proxy asks before it passes a request
//! on to an app. `GET|HEAD /api/authz/auth-request` for nginx's
//! `auth_request`, `GET|HEAD /api/authz/forward-auth` for Caddy's
//! `forward_auth` and Traefik's `forwardAuth`.
//!
//! These run on every request of every protected app: a warm session costs
//! three hash-map look-ups (the cookie opened before, the session, the
//! identity), no decryption, no database read and no write (the idle
//! deadline still slides, written at most once per `session_touch_interval`
//! as for page views). They never
//! set a cookie (a proxy drops it, and would hand it to the app), and never
//! answer 200 on an error: a malformed target is 400, the database down 503.

use std::borrow::Cow;

use rocket::get;
use rocket::http::{ContentType, Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder, Response};

use super::{pages, Directory, Portal, WebError, WebResult};
use crate::auth::access::{Verdict, Who};
use crate::auth::identity::Identity;
use crate::session::Session;

/// The request a proxy asks about. Borrowed from the proxy's headers
/// where it can be: the common target (a plain host name, a path without
/// escapes or parameters) is read without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'r> {
    /// `http` or `https`.
    scheme: &'static str,
    /// `host[:port]` as the browser wrote it.
    authority: &'r str,
    /// The request target (`/path?query`) as the browser wrote it (from an
    /// absolute URL, `?query` or nothing when the path was left out).
    uri: &'r str,
    /// Lower-case, IDNA applied, no port, no trailing dot.
    pub host: Cow<'r, str>,
    /// Percent-decoded; no dot segments, no encoded slashes or backslashes.
    pub path: Cow<'r, str>,
    /// Upper-case (`GET`).
    pub method: Cow<'r, str>,
}

/// Why a check cannot be answered (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTarget(pub &'static str);

impl<'r> Target<'r> {
    /// From the parts a proxy sends. `uri` is the request target
    /// (`/path?query`), exactly as the browser sent it.
    pub fn parse(
        scheme: &str,
        authority: &'r str,
        uri: &'r str,
        method: &'r str,
    ) -> Result<Target<'r>, BadTarget> {
        let scheme = match scheme.trim() {
            s if s.eq_ignore_ascii_case("https") => "https",
            s if s.eq_ignore_ascii_case("http") => "http",
            _ => return Err(BadTarget("the target is not an http(s) URL")),
        };
        if authority.is_empty() || authority.contains(['/', '\\', '@', '?', '#']) {
            return Err(BadTarget("the target host is malformed"));
        }
        if !uri.starts_with('/') || uri.starts_with("//") {
            return Err(BadTarget("the target path must start with one /"));
        }
        let scan = Scan::of(uri);
        if scan.bad {
            return Err(BadTarget("the target holds whitespace, a control character or a backslash"));
        }
        let raw_path = &uri[..scan.path_end];
        if scan.escaped {
            check_escapes(raw_path)?;
        }
        // Servlet containers (Tomcat, Jetty) and the apps built on them drop
        // each segment's `;parameters` and merge repeated slashes before
        // they route: `/admin;x` is `/admin`, `/public/..;/admin` is
        // `/admin`, `/api//admin` is `/api/admin`. The rules see the path
        // as they do, so `..` is then refused and `/admin;x` is `/admin`.
        let path = match (scan.parameters, scan.escaped) {
            // The common case: the path as written, not copied.
            (false, false) => Cow::Borrowed(raw_path),
            (parameters, _) => {
                let raw = if parameters { normalise_segments(raw_path) } else { raw_path.to_owned() };
                let decoded = percent_encoding::percent_decode_str(&raw)
                    .decode_utf8()
                    .map_err(|_| BadTarget("the target path is not UTF-8"))?;
                if decoded.chars().any(|c| c.is_control() || c == '\\') {
                    return Err(BadTarget("the target path decodes to a control character or a backslash"));
                }
                Cow::Owned(decoded.into_owned())
            }
        };
        // Every segment follows a `/`: without a `/.`, no dot segment.
        let dotted = if let Cow::Borrowed(_) = path { scan.slash_dot } else { path.contains("/.") };
        if dotted && path.split('/').any(|segment| segment == "." || segment == "..") {
            return Err(BadTarget("the target path has dot segments"));
        }
        let method = method.trim();
        if method.is_empty() || method.len() > 32 || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(BadTarget("the method is malformed"));
        }
        let method = match method.bytes().all(|b| b.is_ascii_uppercase()) {
            true => Cow::Borrowed(method),
            false => Cow::Owned(method.to_ascii_uppercase()),
        };
        let host = match plain_host(authority) {
            Some(host) => host,
            // Anything else (IDNA, IPv6, escapes) is the URL parser's to normalise.
            None => {
                let url = format!("{scheme}://{authority}{uri}");
                let parsed = url::Url::parse(&url).map_err(|_| BadTarget("the target is not a valid URL"))?;
                Cow::Owned(match parsed.host() {
                    Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_owned(),
                    Some(_) => parsed.host_str().unwrap_or_default().to_owned(),
                    None => return Err(BadTarget("the target has no host")),
                })
            }
        };
        Ok(Target { scheme, authority, uri, host, path, method })
    }

    /// From an absolute URL (nginx's `X-Original-URL`).
    pub fn from_url(url: &'r str, method: &'r str) -> Result<Target<'r>, BadTarget> {
        let colon = url.find(':').ok_or(BadTarget("the target is not an absolute URL"))?;
        let (scheme, rest) = (&url[..colon], &url[colon + 1..]);
        let rest = rest.strip_prefix("//").ok_or(BadTarget("the target is not an absolute URL"))?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, uri) = rest.split_at(end);
        match uri {
            u if u.starts_with('/') => Target::parse(scheme, authority, u, method),
            // Nothing, or `?query` / `#fragment` straight after the host:
            // the path is `/`.
            u if Scan::of(u).bad => {
                Err(BadTarget("the target holds whitespace, a control character or a backslash"))
            }
            u => Target::parse(scheme, authority, "/", method).map(|t| Target { uri: u, ..t }),
        }
    }

    /// As the browser asked for it: where to come back to after a login.
    pub fn url(&self) -> String {
        let slash = if self.uri.starts_with('/') { "" } else { "/" };
        format!("{}://{}{slash}{}", self.scheme, self.authority, self.uri)
    }
}

/// What one pass over a request target's bytes finds.
struct Scan {
    /// Whitespace, a control character or a backslash somewhere.
    bad: bool,
    /// Where the path ends (at `?`, `#` or the end).
    path_end: usize,
    /// The path has a `%`.
    escaped: bool,
    /// The path has a `;` or a `//` (see [`normalise_segments`]).
    parameters: bool,
    /// The path has a `/.` (so perhaps a dot segment).
    slash_dot: bool,
}

impl Scan {
    fn of(uri: &str) -> Scan {
        let mut scan =
            Scan { bad: false, path_end: uri.len(), escaped: false, parameters: false, slash_dot: false };
        let (mut in_path, mut previous, mut ascii) = (true, 0u8, true);
        for (i, b) in uri.bytes().enumerate() {
            scan.bad |= b <= b' ' || b == 0x7f || b == b'\\';
            ascii &= b.is_ascii();
            if in_path {
                match b {
                    b'?' | b'#' => {
                        in_path = false;
                        scan.path_end = i;
                    }
                    b'%' => scan.escaped = true,
                    b';' => scan.parameters = true,
                    b'/' if previous == b'/' => scan.parameters = true,
                    b'.' if previous == b'/' => scan.slash_dot = true,
                    _ => {}
                }
                previous = b;
            }
        }
        // Beyond ASCII, whitespace and control characters are Unicode's.
        if !ascii {
            scan.bad |= uri.chars().any(|c| c.is_whitespace() || c.is_control());
        }
        scan
    }
}

/// Refuses a malformed percent escape and an encoded slash, backslash or
/// semicolon.
fn check_escapes(raw_path: &str) -> Result<(), BadTarget> {
    for escape in raw_path.split('%').skip(1) {
        let hex = escape.as_bytes().get(..2).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let Some(hex) = hex else {
            return Err(BadTarget("the target path has a malformed percent escape"));
        };
        if [b"2f", b"5c", b"3b"].iter().any(|bad| hex.eq_ignore_ascii_case(*bad)) {
            return Err(BadTarget("the target path holds an encoded slash, backslash or semicolon"));
        }
    }
    Ok(())
}

/// `raw_path` with each segment's `;parameters` dropped and runs of `/`
/// merged into one (a trailing `/` is kept).
fn normalise_segments(raw_path: &str) -> String {
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
    path
}

/// The host of `host[:port]` when it is a plain ASCII name (letters,
/// digits, `-`, dots; not all digits and dots, so never an IPv4 address to
/// normalise, nor `xn--` punycode): lower-cased, trailing dot and port
/// dropped. The common case, without a URL parse on every proxied request
/// (and without a copy when it is lower-case already).
fn plain_host(authority: &str) -> Option<Cow<'_, str>> {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &[u8]| {
        !label.is_empty()
            && label.len() <= 63
            && label[0] != b'-'
            && label[label.len() - 1] != b'-'
            && !label.get(..4).is_some_and(|start| start.eq_ignore_ascii_case(b"xn--"))
    };
    let (mut letters, mut upper, mut start) = (false, false, 0);
    let bytes = host.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' => letters = true,
            b'A'..=b'Z' => (letters, upper) = (true, true),
            b'0'..=b'9' | b'-' => {}
            b'.' if label_ok(&bytes[start..i]) => start = i + 1,
            _ => return None,
        }
    }
    if !letters || !label_ok(&bytes[start..]) {
        return None;
    }
    Some(match upper {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    })
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
pub struct Ask<'r> {
    target: Result<Target<'r>, BadTarget>,
    /// A browser navigating (it will follow a redirect to a login page).
    navigation: bool,
}

/// What a header the check reads holds.
#[derive(Clone, Copy)]
enum Found<'r> {
    Missing,
    One(&'r str),
    /// Two values for one of these headers is an attempt to confuse:
    /// refused.
    Repeated,
}

impl<'r> Found<'r> {
    fn required(self) -> Result<&'r str, BadTarget> {
        match self {
            Found::One(value) => Ok(value),
            Found::Missing => Err(BadTarget("a required header is missing")),
            Found::Repeated => Err(BadTarget("a header is repeated")),
        }
    }

    /// A method header: `GET` when there is none.
    fn method(self) -> Result<&'r str, BadTarget> {
        match self {
            Found::Missing => Ok("GET"),
            found => found.required(),
        }
    }
}

/// The proxy's headers named in `names`, and whether the browser is
/// navigating (an `Accept` with `text/html`, not an XHR), read in one pass
/// over the request's headers: a look-up by name hashes the name each time,
/// and a check runs on every proxied request.
fn read_headers<'r, const N: usize>(req: &'r Request<'_>, names: [&str; N]) -> ([Found<'r>; N], bool) {
    let mut found = [Found::Missing; N];
    let (mut html, mut xhr) = (false, false);
    for header in req.headers().iter() {
        // Rocket lends every value from the request; an owned one (never
        // seen) could not outlive this loop, and is refused as unreadable.
        let Cow::Borrowed(value) = header.value else {
            return ([Found::Repeated; N], false);
        };
        let name = header.name.as_str();
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            found[i] = match found[i] {
                Found::Missing => Found::One(value),
                _ => Found::Repeated,
            };
        } else if name.eq_ignore_ascii_case("Accept") {
            html |= value.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html"));
        } else if name.eq_ignore_ascii_case("X-Requested-With") {
            xhr |= value.eq_ignore_ascii_case("XMLHttpRequest");
        }
    }
    (found, html && !xhr)
}

/// A proxy's check, gathered by one request guard: what it asks about,
/// the session it carries (or the store's failure: unlike
/// `Option<Session>`, an unreachable database is not "logged out") and
/// what answers it. One guard rather than one per part: each guard costs
/// every check a future of its own, and a check runs on every proxied
/// request.
pub struct Check<'r> {
    ask: Ask<'r>,
    session: Result<Option<Session<'r>>, ()>,
    portal: &'r Portal,
    directory: &'r Directory,
}

impl<'r> Check<'r> {
    async fn gather(req: &'r Request<'_>, ask: Ask<'r>) -> Outcome<Check<'r>, &'static str> {
        let rocket = req.rocket();
        let (Some(portal), Some(directory)) = (rocket.state::<Portal>(), rocket.state::<Directory>()) else {
            return Outcome::Error((Status::InternalServerError, "the portal's state is not managed"));
        };
        let session = Session::load_alone(req).await.map_err(|e| log::error!("{e}"));
        Outcome::Success(Check { ask, session, portal, directory })
    }
}

/// nginx's check: the request as `X-Original-URL` and `X-Original-Method`
/// tell it.
pub struct OriginalRequest<'r>(Check<'r>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for OriginalRequest<'r> {
    type Error = &'static str;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let ([url, method], navigation) = read_headers(req, ["X-Original-URL", "X-Original-Method"]);
        let target = url.required().and_then(|url| Target::from_url(url, method.method()?));
        Check::gather(req, Ask { target, navigation }).await.map(OriginalRequest)
    }
}

/// Caddy's and Traefik's check: the request as the `X-Forwarded-*`
/// headers tell it.
pub struct ForwardedRequest<'r>(Check<'r>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ForwardedRequest<'r> {
    type Error = &'static str;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let ([proto, host, uri, method], navigation) = read_headers(
            req,
            ["X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri", "X-Forwarded-Method"],
        );
        let target =
            (|| Target::parse(proto.required()?, host.required()?, uri.required()?, method.method()?))();
        Check::gather(req, Ask { target, navigation }).await.map(ForwardedRequest)
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
pub async fn auth_request(check: OriginalRequest<'_>) -> WebResult<Answer> {
    decide(check.0, Flavour::AuthRequest).await
}

#[get("/api/authz/forward-auth")]
pub async fn forward_auth(check: ForwardedRequest<'_>) -> WebResult<Answer> {
    decide(check.0, Flavour::ForwardAuth).await
}

async fn decide(check: Check<'_>, flavour: Flavour) -> WebResult<Answer> {
    let Check { ask, session, portal, directory } = check;
    let target = ask.target.map_err(|BadTarget(why)| WebError::Invalid(why))?;
    if !portal.covers(&target.host) {
        return Err(WebError::Invalid("the target host is neither the portal's nor under cookie_domain"));
    }
    let session = session.map_err(|()| WebError::Unavailable("the session store is unavailable"))?;
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
    let login = portal.login_url(page, &target.url());
    let location = Header::new("Location", login.clone());
    if navigation && flavour == Flavour::ForwardAuth {
        let status = match &*target.method {
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

/// This area's routes, ranked before every other: Rocket tries a method's
/// routes by rank (the lowest a route gets by default is -12, and a route
/// with a query comes before one without), matching each against the
/// path, and the checks are most of the requests.
pub fn routes() -> Vec<rocket::Route> {
    let mut routes = rocket::routes![auth_request, forward_auth];
    for route in &mut routes {
        route.rank = -20;
    }
    routes
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
        assert_eq!(t.url(), "https://App.Example.COM./a%20b/c?x=../y");
        assert_eq!(Target::from_url("http://app.example.com", "GET").unwrap().path, "/");
        let bare = Target::from_url("http://app.example.com?x=1", "get").unwrap();
        assert_eq!(
            (&*bare.path, &*bare.method, bare.url()),
            ("/", "GET", "http://app.example.com/?x=1".into())
        );
        assert_eq!(
            Target::from_url("HTTP://app.example.com#top", "GET").unwrap().url(),
            "http://app.example.com/#top"
        );
        assert!(Target::from_url("http://app.example.com?x=a b", "GET").is_err());
        assert_eq!(
            Target::parse("https", "app.example.com:8443", "/x", "GET").unwrap().host,
            "app.example.com"
        );
    }

    #[test]
    fn path_parameters_and_repeated_slashes_are_seen_as_servlet_containers_see_them() {
        let path =
            |uri: &str| Target::parse("https", "app.example.com", uri, "GET").unwrap().path.into_owned();
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
            "https://app.example.com/a%2Fb",
            "https://app.example.com/a%5c",
            "https://app.example.com/a%",
            "https://app.example.com/a%4",
            "https://app.example.com/a\u{a0}b",
            "https://app.example.com/a\u{85}b",
            "https://app.example.com/a%C2%85b",
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
