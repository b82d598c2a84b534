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
        if lower.starts_with("remote-") {
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

impl Drop for Proxy {
    fn drop(&mut self) {
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
/// the README shows for that (its addresses replaced by `instances`' ports).
pub fn nginx_upstream(instances: &[u16], app_port: u16) -> Proxy {
    let readme = std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = readme.find("upstream sesija {").expect("the README shows an upstream block");
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
    crate::http::parse_response(&raw)
        .unwrap_or_else(|| panic!("a response: {}", String::from_utf8_lossy(&raw)))
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
    let page = via(proxy, "GET", "auth.sesija.test", &format!("/login?rd={}", urlencode(rd)), &[HTML], None);
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf: Vec<String> = cookies_of(&page).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let body = form(&[
        ("username", "alice"),
        ("password", PASSWORD),
        ("csrf_token", &csrf_in(&page.body)),
        ("rd", rd),
    ]);
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
fn the_readme_shows_the_very_configurations_the_tests_run() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for file in ["nginx-forward-auth.conf", "Caddyfile"] {
        let text = std::fs::read_to_string(format!("{root}/deploy/{file}")).unwrap();
        assert!(readme.contains(text.trim_end()), "README.md must show deploy/{file} as it is");
    }
}
