//! The real binary behind a real nginx and a real Caddy, running the very
//! configurations in `deploy/`, in front of a tiny app that echoes the
//! identity headers it receives.
//!
//! The test command installs Debian's `nginx` and `caddy` when they are
//! missing; without them these tests fail (set `SESIJA_SKIP_PROXIES=1` to
//! skip them knowingly).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::helpers::{csrf_in, form, urlencode, PASSWORD};
use crate::http::{free_port, run_cli, Response, Server};

/// The app behind the proxy: answers every request 200 with the identity
/// headers it received, one `name: value` line each, lower-case names.
pub struct EchoApp {
    pub port: u16,
}

impl EchoApp {
    pub fn start() -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = echo(stream);
                });
            }
        });
        EchoApp { port }
    }
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("remote-") || lower.starts_with("remote_") {
            seen.push_str(lower.trim_end());
            seen.push('\n');
        }
    }
    let body = format!("app page\n{seen}");
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

/// A proxy process, stopped on drop.
pub struct Proxy {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Proxy {
    /// The processes the proxy's main process started (nginx's workers).
    fn children(&self) -> Vec<u32> {
        children_of(self.child.id())
    }
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so count from its ')'.
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
            after.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM: nginx's master stops its workers and waits for them
        // (SIGKILL would orphan them, listening sockets and all); Caddy
        // shuts down. SIGKILL only if it does not exit in time.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `deploy/FILE` with its example names (under `domain`) and ports
/// replaced by the test's; sesija is at `sesija_at` (an address, or the
/// name of an upstream block).
fn deployed(
    file: &str,
    domain: &str,
    proxy_port: u16,
    sesija_at: &str,
    app_port: u16,
    http_prefix: bool,
) -> String {
    let text = std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (app, auth) = if http_prefix {
        (format!("http://app.{domain}:{proxy_port}"), format!("http://auth.{domain}:{proxy_port}"))
    } else {
        (format!("app.{domain}"), format!("auth.{domain}"))
    };
    text.replace("app.example.com", &app)
        .replace("auth.example.com", &auth)
        .replace("127.0.0.1:8000", sesija_at)
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{app_port}"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{proxy_port};"))
        .replace("listen 80 default_server;", &format!("listen 127.0.0.1:{proxy_port} default_server;"))
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn nginx(sesija_port: u16, app_port: u16) -> Proxy {
    nginx_for("sesija.test", sesija_port, app_port)
}

/// nginx for `app.DOMAIN` and `auth.DOMAIN`.
pub fn nginx_for(domain: &str, sesija_port: u16, app_port: u16) -> Proxy {
    nginx_conf(domain, &format!("127.0.0.1:{sesija_port}"), "", app_port)
}

/// nginx in front of several instances of sesija, with the upstream block
/// docs/several-instances.md shows for that (its addresses replaced by
/// `instances`' ports).
pub fn nginx_upstream(instances: &[u16], app_port: u16) -> Proxy {
    let path = format!("{}/docs/several-instances.md", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme.find("upstream sesija {").expect("the docs show an upstream block");
    let end = start + readme[start..].find("\n}\n").unwrap() + 3;
    let mut block = readme[start..end].to_owned();
    let shown = ["10.0.0.11:8000", "10.0.0.12:8000"];
    assert_eq!(instances.len(), shown.len());
    for (address, port) in shown.iter().zip(instances) {
        assert!(block.contains(address), "{block}");
        block = block.replace(address, &format!("127.0.0.1:{port}"));
    }
    nginx_conf("sesija.test", "sesija", &block, app_port)
}

/// nginx running `deploy/nginx-forward-auth.conf` for `domain`, with
/// sesija at `sesija_at` and `extra` in its `http` block.
fn nginx_conf(domain: &str, sesija_at: &str, extra: &str, app_port: u16) -> Proxy {
    let dir = TempDir::new().unwrap();
    let port = free_port();
    let prefix = dir.path();
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let servers =
        extra.to_owned() + &deployed("nginx-forward-auth.conf", domain, port, sesija_at, app_port, false);
    let conf = format!(
        "worker_processes 1;\nerror_log {p}/logs/error.log;\npid {p}/nginx.pid;\nuser root;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log {p}/logs/access.log;\n client_body_temp_path {p}/body;\n\
         proxy_temp_path {p}/proxy;\n fastcgi_temp_path {p}/fastcgi;\n uwsgi_temp_path {p}/uwsgi;\n\
         scgi_temp_path {p}/scgi;\n{servers}\n}}\n",
        p = prefix.display()
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let mut child = Command::new("nginx")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(prefix.join("stderr.log")).unwrap()))
        .spawn()
        .expect("nginx starts (scripts/test installs it)");
    wait_for_port(port, &mut child, "nginx", &prefix.join("stderr.log"));
    Proxy { child, port, _dir: dir }
}

pub fn caddy(sesija_port: u16, app_port: u16) -> Proxy {
    let dir = TempDir::new().unwrap();
    let port = free_port();
    let sites =
        deployed("Caddyfile", "sesija.test", port, &format!("127.0.0.1:{sesija_port}"), app_port, true);
    let global = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}\n}}\n\n",
        dir.path().join("storage").display()
    );
    std::fs::write(dir.path().join("Caddyfile"), global + &sites).unwrap();
    let log = dir.path().join("caddy.log");
    let mut child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.path().join("Caddyfile"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("caddy starts (scripts/test installs it)");
    wait_for_port(port, &mut child, "caddy", &log);
    Proxy { child, port, _dir: dir }
}

/// One request through the proxy to `host`, with cookies and headers.
pub fn via(
    proxy: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let (raw, response) = via_raw(proxy, method, host, path, headers, body);
    response.unwrap_or_else(|| panic!("a response: {}", String::from_utf8_lossy(&raw)))
}

/// [`via`], with what came back: the bytes, and the response if they
/// hold one (a proxy may close the connection without a word).
fn via_raw(
    proxy: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (Vec<u8>, Option<Response>) {
    let mut stream = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{proxy}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let response = crate::http::parse_response(&raw);
    (raw, response)
}

/// `name=value` of every cookie a response sets (value as sent).
fn cookies_of(res: &Response) -> Vec<(String, String)> {
    res.set_cookies()
        .filter(|c| !c.contains("Max-Age=0"))
        .filter_map(|c| c.split(';').next()?.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

pub const HTML: (&str, &str) = ("Accept", "text/html,application/xhtml+xml");

/// Logs alice in through the proxy's portal host with `rd`; returns the
/// Cookie header value holding the session.
pub fn log_in_through(proxy: u16, rd: &str) -> (String, Response) {
    log_in_as_through(proxy, "alice", rd)
}

/// [`log_in_through`] as `name`.
pub fn log_in_as_through(proxy: u16, name: &str, rd: &str) -> (String, Response) {
    let page = via(proxy, "GET", "auth.sesija.test", &format!("/login?rd={}", urlencode(rd)), &[HTML], None);
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf: Vec<String> = cookies_of(&page).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let body =
        form(&[("username", name), ("password", PASSWORD), ("csrf_token", &csrf_in(&page.body)), ("rd", rd)]);
    let res = via(proxy, "POST", "auth.sesija.test", "/login", &[("Cookie", &csrf.join("; "))], Some(&body));
    assert_eq!(res.status, 303, "{}", res.body);
    let set = res.set_cookies().find(|c| c.starts_with("sesija=")).expect("session cookie").to_owned();
    assert!(set.contains("Domain=sesija.test"), "{set}");
    let (name, value) = cookies_of(&res).into_iter().find(|(k, _)| k == "sesija").unwrap();
    (format!("{name}={value}"), res)
}

pub fn skip() -> bool {
    if std::env::var_os("SESIJA_SKIP_PROXIES").is_some() {
        eprintln!("SESIJA_SKIP_PROXIES is set: proxy test skipped");
        return true;
    }
    false
}

/// Everything the issue asks of one proxy.
fn journey(start_proxy: fn(u16, u16) -> Proxy) {
    let work = TempDir::new().unwrap();
    let add = run_cli(
        work.path(),
        &["user", "add", "alice", "--password-stdin", "--group", "staff"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let app = EchoApp::start();
    let sesija_port = free_port();
    let proxy = start_proxy(sesija_port, app.port);
    let public = format!("http://auth.sesija.test:{}", proxy.port);
    let access = r#"[{host="app.sesija.test", paths=["/public"], policy="bypass"}]"#;
    let envs = [
        ("ROCKET_PUBLIC_URL", public.as_str()),
        ("ROCKET_COOKIE_DOMAIN", "sesija.test"),
        ("ROCKET_ACCESS", access),
    ];
    let server = Server::start(work.path(), sesija_port, &envs);
    let p = proxy.port;
    let target = format!("http://app.sesija.test:{p}/page?x=1");
    let login = format!("{public}/login?rd={}", urlencode(&target).replace('.', "%2E"));

    // Anonymous: a navigation goes to the portal, a script gets 401.
    let res = via(p, "GET", "app.sesija.test", "/page?x=1", &[HTML], None);
    assert_eq!(res.status, 302, "{}", res.body);
    assert_eq!(res.header("Location"), Some(login.as_str()));
    let res =
        via(p, "GET", "app.sesija.test", "/page?x=1", &[HTML, ("X-Requested-With", "XMLHttpRequest")], None);
    assert_eq!(res.status, 401);
    assert!(!res.body.contains("app page"));
    // A forged identity never reaches the app, logged in or not.
    let res = via(
        p,
        "GET",
        "app.sesija.test",
        "/public/x",
        &[("Remote-User", "admin"), ("Remote-Groups", "admins")],
        None,
    );
    assert_eq!(res.status, 200);
    assert!(res.body.contains("app page") && !res.body.contains("remote-user"), "{}", res.body);

    // Log in on the portal, come back to the target, reach the app as alice.
    let (cookie, res) = log_in_through(p, &target);
    assert_eq!(res.header("Location"), Some(target.as_str()));
    let res = via(
        p,
        "GET",
        "app.sesija.test",
        "/page?x=1",
        &[HTML, ("Cookie", &cookie), ("Remote-User", "admin")],
        None,
    );
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body.contains("remote-user: alice"), "{}", res.body);
    assert!(res.body.contains("remote-groups: staff"), "{}", res.body);
    assert!(!res.body.contains("admin"), "the forged header was replaced: {}", res.body);
    assert!(res.set_cookies().next().is_none(), "no cookie from a check");

    // A restart keeps everyone in.
    let (code, out) = server.terminate();
    assert_eq!(code, Some(0), "{out}");
    let server = Server::start(work.path(), sesija_port, &envs);
    let res = via(p, "GET", "app.sesija.test", "/page", &[("Cookie", &cookie)], None);
    assert!(res.body.contains("remote-user: alice"), "still in after a restart: {}", res.body);

    // A revoked session is refused on its next request.
    let out = run_cli(work.path(), &["sessions", "revoke", "--user", "alice"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let res = via(p, "GET", "app.sesija.test", "/page", &[HTML, ("Cookie", &cookie)], None);
    assert_eq!(res.status, 302, "revoked: {}", res.body);
    drop(server);
}

#[test]
fn nginx_auth_request_guards_an_app() {
    if !skip() {
        journey(nginx);
    }
}

#[test]
fn caddy_forward_auth_guards_an_app() {
    if !skip() {
        journey(caddy);
    }
}

#[test]
fn the_docs_show_the_very_configurations_the_tests_run() {
    let root = env!("CARGO_MANIFEST_DIR");
    let docs = std::fs::read_to_string(format!("{root}/docs/protecting-apps.md")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for file in ["nginx-forward-auth.conf", "Caddyfile"] {
        let text = std::fs::read_to_string(format!("{root}/deploy/{file}")).unwrap();
        assert!(docs.contains(text.trim_end()), "docs/protecting-apps.md must show deploy/{file} as it is");
        assert!(readme.contains(&format!("(deploy/{file})")), "the README's quick start links deploy/{file}");
    }
}

/// Every document the README links to exists, and every file in docs/ is
/// linked from the README.
#[test]
fn the_readme_links_every_document() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for entry in std::fs::read_dir(format!("{root}/docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(readme.contains(&format!("(docs/{name})")), "README.md links docs/{name}");
    }
    for link in readme.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
        if !link.starts_with("http") && !link.starts_with('#') {
            assert!(Path::new(&format!("{root}/{link}")).exists(), "README.md links {link}, which exists");
        }
    }
}

#[test]
fn a_stopped_proxy_leaves_no_process_behind() {
    if skip() {
        return;
    }
    let app = EchoApp::start();
    for start in [nginx as fn(u16, u16) -> Proxy, caddy] {
        let proxy = start(free_port(), app.port);
        let main = proxy.child.id();
        let workers = proxy.children();
        let port = proxy.port;
        drop(proxy);
        assert!(!alive(main), "the main process ended");
        for worker in workers {
            assert!(!alive(worker), "worker {worker} outlived its proxy");
        }
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens on {port} any more");
    }
}

/// The users and rules the attacks below are tried against: alice in
/// `admins`, bob in no group; `/public` on the app open to anyone, `/admin`
/// to admins only; `open.sesija.test`, a host no proxy serves, open to
/// anyone.
struct Guarded {
    /// The proxy's port.
    port: u16,
    /// Bob's session, as a Cookie header value.
    bob: String,
    _keep: (TempDir, EchoApp, Proxy, Server),
}

fn guarded(start_proxy: fn(u16, u16) -> Proxy) -> Guarded {
    let work = TempDir::new().unwrap();
    for (name, groups) in [("alice", &["--group", "admins"][..]), ("bob", &[][..])] {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        args.extend_from_slice(groups);
        let add = run_cli(work.path(), &args, Some(&format!("{PASSWORD}\n")));
        assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    }
    let app = EchoApp::start();
    let sesija_port = free_port();
    let proxy = start_proxy(sesija_port, app.port);
    let public = format!("http://auth.sesija.test:{}", proxy.port);
    let access = r#"[{host="app.sesija.test", paths=["/public"], policy="bypass"},
        {host="app.sesija.test", paths=["/admin"], groups=["admins"]},
        {host="open.sesija.test", policy="bypass"}]"#;
    let envs = [
        ("ROCKET_PUBLIC_URL", public.as_str()),
        ("ROCKET_COOKIE_DOMAIN", "sesija.test"),
        ("ROCKET_ACCESS", access),
    ];
    let server = Server::start(work.path(), sesija_port, &envs);
    let port = proxy.port;
    let (bob, _) = log_in_as_through(port, "bob", &format!("http://app.sesija.test:{port}/"));
    Guarded { port, bob, _keep: (work, app, proxy, server) }
}

/// Whether the app answered (its page came back).
fn reached_app(res: &Option<Response>) -> bool {
    res.as_ref().is_some_and(|r| r.body.contains("app page"))
}

/// Host confusion: nginx's check must be about the host nginx serves, not
/// about whatever the client's Host header says.
fn asks_about_the_host_it_serves_never_the_client_s_host_header(start_proxy: fn(u16, u16) -> Proxy) {
    let guarded = guarded(start_proxy);
    let (p, bob) = (guarded.port, guarded.bob.clone());

    // An absolute-form request line for the app, with the portal's Host:
    // the check is about /admin of the app, which bob may not open.
    let absolute = format!("http://app.sesija.test:{p}/admin/users");
    let (_, res) = via_raw(p, "GET", "auth.sesija.test", &absolute, &[HTML, ("Cookie", &bob)], None);
    assert!(!reached_app(&res), "bob reached /admin through an absolute-form request: {res:?}");
    // The same for a host no server serves, anonymous: no app behind it.
    let absolute = format!("http://app.sesija.test:{p}/admin");
    let (_, res) = via_raw(p, "GET", "open.sesija.test", &absolute, &[], None);
    assert!(!reached_app(&res), "anonymous reached /admin: {res:?}");
    // A Host that no server names never reaches an app's block.
    for host in ["open.sesija.test", "elsewhere.example"] {
        let (_, res) = via_raw(p, "GET", host, "/admin", &[], None);
        assert!(!reached_app(&res), "Host {host} reached the app: {res:?}");
        let (_, res) = via_raw(p, "GET", host, "/admin", &[("Cookie", &bob)], None);
        assert!(!reached_app(&res), "Host {host} reached the app for bob: {res:?}");
    }
    // The ordinary request still works, and bob's own pages are his.
    let res = via(p, "GET", "app.sesija.test", "/page", &[HTML, ("Cookie", &bob)], None);
    assert!(res.body.contains("remote-user: bob"), "{}", res.body);
    let res = via(p, "GET", "app.sesija.test", "/admin", &[HTML, ("Cookie", &bob)], None);
    assert_eq!(res.status, 403, "{}", res.body);
}

/// `;` path parameters, as servlet containers read them, and forged
/// identity headers in the underscore spelling CGI-style servers read.
fn refuses_path_parameters_and_forged_underscore_headers(start_proxy: fn(u16, u16) -> Proxy) {
    let guarded = guarded(start_proxy);
    let (p, bob) = (guarded.port, guarded.bob.clone());
    let (alice, _) = log_in_as_through(p, "alice", &format!("http://app.sesija.test:{p}/"));

    for path in
        ["/public/..;/admin", "/public/..;x=1/admin/users", "/public/%2e%2e;/admin", "/public;/../admin"]
    {
        let (_, res) = via_raw(p, "GET", "app.sesija.test", path, &[], None);
        assert!(!reached_app(&res), "anonymous reached {path}: {res:?}");
        let (_, res) = via_raw(p, "GET", "app.sesija.test", path, &[("Cookie", &bob)], None);
        assert!(!reached_app(&res), "bob reached {path}: {res:?}");
    }
    for path in ["/admin;jsessionid=1/users", "/admin;x", "//admin", "/;/admin", "/x/..;/admin"] {
        let (_, res) = via_raw(p, "GET", "app.sesija.test", path, &[HTML, ("Cookie", &bob)], None);
        assert!(!reached_app(&res), "bob reached {path}: {res:?}");
    }
    let res = via(p, "GET", "app.sesija.test", "/admin;jsessionid=1/users", &[("Cookie", &alice)], None);
    assert!(res.body.contains("remote-user: alice"), "an admin still gets in: {}", res.body);
    let res = via(p, "GET", "app.sesija.test", "/public;v=1/x", &[], None);
    assert!(res.body.contains("app page"), "a public page with a parameter stays public: {}", res.body);

    // Forged identities in every spelling, anonymous and logged in.
    let forged = [
        ("Remote_User", "mallory"),
        ("Remote_Groups", "admins"),
        ("Remote_Name", "Mallory"),
        ("Remote_Email", "m@example.com"),
        ("remote_user", "mallory"),
    ];
    let res = via(p, "GET", "app.sesija.test", "/public/x", &forged, None);
    assert!(res.body.contains("app page"), "{}", res.body);
    assert!(!res.body.contains("remote"), "a forged header reached the app: {}", res.body);
    let mut headers = forged.to_vec();
    headers.push(("Cookie", &bob));
    let res = via(p, "GET", "app.sesija.test", "/page", &headers, None);
    assert!(res.body.contains("remote-user: bob"), "{}", res.body);
    assert!(!res.body.contains("mallory") && !res.body.contains("remote_"), "{}", res.body);
}

/// A user a rule refuses sees sesija's 403 page (naming them, with a way
/// to log in as someone else), not the proxy's bare one.
fn shows_sesija_s_forbidden_page(start_proxy: fn(u16, u16) -> Proxy) {
    let guarded = guarded(start_proxy);
    let (p, bob) = (guarded.port, guarded.bob.clone());
    for method in ["GET", "POST"] {
        let body = (method == "POST").then_some("a=1");
        let res = via(p, method, "app.sesija.test", "/admin/users", &[HTML, ("Cookie", &bob)], body);
        assert_eq!(res.status, 403, "{method}: {}", res.body);
        assert!(res.body.contains("<strong>bob</strong>"), "{method}: the page names the user: {}", res.body);
        assert!(res.body.contains(&format!("http://auth.sesija.test:{p}/logout")), "{}", res.body);
        assert!(!res.body.contains("app page"));
        assert!(res.set_cookies().next().is_none(), "no cookie from a check");
    }
}

/// One test per proxy for each function named: `name::nginx` and
/// `name::caddy` run `name` against that proxy (skipped only when
/// `SESIJA_SKIP_PROXIES` is set).
macro_rules! on_each_proxy {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn nginx() {
                if !super::skip() {
                    super::$name(super::nginx);
                }
            }

            #[test]
            fn caddy() {
                if !super::skip() {
                    super::$name(super::caddy);
                }
            }
        }
    )*};
}

on_each_proxy!(
    asks_about_the_host_it_serves_never_the_client_s_host_header,
    refuses_path_parameters_and_forged_underscore_headers,
    shows_sesija_s_forbidden_page,
);
