//! End to end in a real headless Chromium, driven over WebDriver (and, for
//! the forward-auth journey, through a real nginx):
//! setup, logout, login with "remember me", a server restart, a reload that
//! is still logged in, and logout.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the test script installs
//! them). Set `SESIJA_SKIP_BROWSER=1` to skip it knowingly; without that a
//! missing browser is a failure, not a silent pass.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::PASSWORD;
use crate::http::{free_port, request, Server};
use crate::server::setup_path;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    child: Child,
    port: u16,
    session: String,
}

impl Driver {
    fn start(profile: &std::path::Path) -> Driver {
        Driver::start_with(profile, &[])
    }

    /// With extra Chromium arguments (host resolver rules, say).
    fn start_with(profile: &std::path::Path, extra: &[String]) -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut driver = Driver { child, port, session: String::new() };
        let started = Instant::now();
        while driver.call("GET", "/status", None).is_none() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut args: Vec<String> = vec![
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
            },
        }}});
        let value = driver.call("POST", "/session", Some(caps)).expect("a browser session");
        driver.session = value["sessionId"].as_str().expect("session id").to_owned();
        driver
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let body = body.map(|b| b.to_string());
        let headers = [("Content-Type", "application/json")];
        let res = request(self.port, method, path, &headers, body.as_deref()).ok()?;
        let value: Value = serde_json::from_str(&res.body).ok()?;
        assert!(res.status < 400, "{method} {path}: {}", res.body);
        Some(value["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body).expect("webdriver answers")
    }

    fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.session_call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    /// The URL once it is `expected`, or whatever it is after 15 s: a click
    /// may return before the navigation it starts has finished.
    fn url_when(&self, expected: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.url();
            if url == expected || started.elapsed() > Duration::from_secs(15) {
                return url;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL once it starts with `prefix`, or whatever it is after 15 s.
    fn url_starting(&self, prefix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.url();
            if url.starts_with(prefix) || started.elapsed() > Duration::from_secs(15) {
                return url;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the page comes to contain `needle` within 15 s: a form that
    /// posts back to the page it is on leaves the URL unchanged.
    fn source_when(&self, needle: &str) -> bool {
        let started = Instant::now();
        loop {
            if self.source().contains(needle) {
                return true;
            }
            if started.elapsed() > Duration::from_secs(15) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn source(&self) -> String {
        self.session_call("GET", "/source", None).as_str().unwrap().to_owned()
    }

    fn element(&self, css: &str) -> String {
        let found =
            self.session_call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element").to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })));
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request(self.port, "DELETE", &format!("/session/{}", self.session), &[], None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `true` when the tests were told to skip the browser; otherwise the
/// browser must be installed.
fn skipped() -> bool {
    if std::env::var_os("SESIJA_SKIP_BROWSER").is_some() {
        eprintln!("SESIJA_SKIP_BROWSER is set: browser test skipped");
        return true;
    }
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "install chromium and chromium-driver (scripts/test does), or set SESIJA_SKIP_BROWSER=1"
    );
    false
}

#[test]
fn a_person_sets_up_logs_in_survives_a_restart_and_logs_out_in_a_real_browser() {
    if skipped() {
        return;
    }
    let work = TempDir::new().unwrap();
    let profile = TempDir::new().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server::start(work.path(), port, &[]);
    let browser = Driver::start(profile.path());

    // First run: the printed link creates the account and logs it in.
    browser.goto(&format!("{base}{}", setup_path(&server.output())));
    browser.type_into("#username", "alice");
    browser.type_into("#password", PASSWORD);
    browser.click("button[type=submit]");
    assert_eq!(browser.url_when(&format!("{base}/user")), format!("{base}/user"));
    assert!(browser.source().contains("Hello, alice!"));

    // Log out, then log in again with "remember me".
    browser.click("form[action='/logout'] button");
    assert_eq!(browser.url_when(&format!("{base}/login")), format!("{base}/login"));
    assert!(browser.source().contains("You have been logged out."));
    browser.type_into("#username", "alice");
    browser.type_into("#password", PASSWORD);
    browser.click("#remember");
    browser.click("button[type=submit]");
    assert_eq!(browser.url_when(&format!("{base}/user")), format!("{base}/user"));
    assert!(browser.source().contains("this device is remembered"));

    // Restart the server; a reload is still logged in.
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
    let server = Server::start(work.path(), port, &[]);
    browser.goto(&format!("{base}/user"));
    assert_eq!(browser.url_when(&format!("{base}/user")), format!("{base}/user"));
    assert!(browser.source().contains("Hello, alice!"));

    // Logged in on a second browser too: end that one from the first.
    let profile2 = TempDir::new().unwrap();
    let second = Driver::start(profile2.path());
    second.goto(&format!("{base}/login"));
    second.type_into("#username", "alice");
    second.type_into("#password", PASSWORD);
    second.click("button[type=submit]");
    assert_eq!(second.url_when(&format!("{base}/user")), format!("{base}/user"));
    browser.goto(&format!("{base}/sessions"));
    assert_eq!(browser.source().matches("End session").count(), 1);
    browser.click("form[action='/sessions/revoke'] button");
    assert!(browser.source_when("Session ended"));
    assert_eq!(browser.url(), format!("{base}/sessions"));
    second.click("a[href='/sessions']");
    assert_eq!(
        second.url_when(&format!("{base}/login")),
        format!("{base}/login"),
        "the ended browser is out"
    );
    drop(second);

    // Log out: back at the login page, and /user no longer opens.
    browser.goto(&format!("{base}/user"));
    browser.click("form[action='/logout'] button");
    assert_eq!(browser.url_when(&format!("{base}/login")), format!("{base}/login"));
    browser.goto(&format!("{base}/user"));
    assert_eq!(browser.url_when(&format!("{base}/login")), format!("{base}/login"));
    drop(browser);
    drop(server);
}

/// The secret shown on the set-up page, decoded.
fn shown_secret(html: &str) -> Vec<u8> {
    let start =
        html.find(r#"<code id="secret">"#).expect("the secret is shown") + r#"<code id="secret">"#.len();
    let text = html[start..start + html[start..].find("</code>").unwrap()].replace(' ', "");
    totp_rs::Secret::try_from_base32(&text).unwrap().as_bytes().to_vec()
}

#[test]
fn a_person_turns_on_two_factor_authentication_and_logs_in_with_a_code() {
    if skipped() {
        return;
    }
    let work = TempDir::new().unwrap();
    let profile = TempDir::new().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server::start(work.path(), port, &[]);
    let browser = Driver::start(profile.path());
    browser.goto(&format!("{base}{}", setup_path(&server.output())));
    browser.type_into("#username", "alice");
    browser.type_into("#password", PASSWORD);
    browser.click("button[type=submit]");
    assert_eq!(browser.url_when(&format!("{base}/user")), format!("{base}/user"));

    // Set up: read the key off the page as a person would type it into an
    // app, and type the code the app would show.
    browser.click("a[href='/account/2fa']");
    assert!(browser.source_when("is <strong>off</strong>"));
    crate::helpers::early_in_step_blocking();
    browser.click("#setup");
    assert!(browser.source_when("Set up two-factor authentication"));
    let secret = shown_secret(&browser.source());
    browser.type_into("#code", &crate::helpers::code(&secret, 0));
    browser.click("form[action='/account/2fa/enable'] button");
    assert!(browser.source_when("Your recovery codes"));
    assert_eq!(browser.source().matches("<li><code>").count(), 10);
    browser.click("#continue");
    assert_eq!(browser.url_when(&format!("{base}/user")), format!("{base}/user"));

    // Log out; the password alone now leads to the code prompt only.
    browser.click("form[action='/logout'] button");
    assert_eq!(browser.url_when(&format!("{base}/login")), format!("{base}/login"));
    browser.type_into("#username", "alice");
    browser.type_into("#password", PASSWORD);
    browser.click("button[type=submit]");
    assert_eq!(browser.url_when(&format!("{base}/login/2fa")), format!("{base}/login/2fa"));
    browser.goto(&format!("{base}/user"));
    assert_eq!(browser.url_when(&format!("{base}/login/2fa")), format!("{base}/login/2fa"), "nothing opens");
    // The next step's code (the one that turned it on is used up).
    browser.type_into("#code", &crate::helpers::code(&secret, 1));
    browser.click("form[action='/login/2fa'] button");
    assert_eq!(browser.url_when(&format!("{base}/user")), format!("{base}/user"));
    assert!(browser.source().contains("Hello, alice!"));
    browser.goto(&format!("{base}/sessions"));
    assert!(browser.source().contains("password and code"));
    drop(browser);
    drop(server);
}

/// One login in front of an app: through a real nginx to the app, to the
/// portal and back, a restart, and the session ended from another browser.
#[test]
fn a_person_reaches_an_app_through_nginx_logs_in_once_and_is_logged_out_when_the_session_ends() {
    if skipped() {
        return;
    }
    let work = TempDir::new().unwrap();
    let add = crate::http::run_cli(
        work.path(),
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(add.status.success());
    let app = crate::proxies::EchoApp::start();
    let sesija_port = free_port();
    // app.sesija.test and auth.sesija.test resolve to this machine.
    let proxy = crate::proxies::nginx_for("sesija.test", sesija_port, app.port);
    let portal = format!("http://auth.sesija.test:{}", proxy.port);
    let envs = [("ROCKET_PUBLIC_URL", portal.as_str()), ("ROCKET_COOKIE_DOMAIN", "sesija.test")];
    let server = Server::start(work.path(), sesija_port, &envs);
    let resolve = vec!["--host-resolver-rules=MAP *.sesija.test 127.0.0.1".to_owned()];
    let profile = TempDir::new().unwrap();
    let browser = Driver::start_with(profile.path(), &resolve);
    let page = format!("http://app.sesija.test:{}/page", proxy.port);

    // The app sends the visitor to the portal, and the portal back.
    browser.goto(&page);
    let login = browser.url_starting(&format!("{portal}/login"));
    assert!(login.starts_with(&format!("{portal}/login?rd=")), "{login}");
    browser.type_into("#username", "alice");
    browser.type_into("#password", PASSWORD);
    browser.click("#remember");
    browser.click("button[type=submit]");
    assert_eq!(browser.url_when(&page), page, "back on the app after the login");
    assert!(browser.source_when("remote-user: alice"), "{}", browser.source());

    // A restart of sesija keeps the visitor in.
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
    let server = Server::start(work.path(), sesija_port, &envs);
    browser.goto(&page);
    assert!(browser.source_when("remote-user: alice"), "still in after a restart");

    // From another browser, end that session on the devices page.
    let profile2 = TempDir::new().unwrap();
    let second = Driver::start_with(profile2.path(), &resolve);
    second.goto(&format!("{portal}/login"));
    second.type_into("#username", "alice");
    second.type_into("#password", PASSWORD);
    second.click("button[type=submit]");
    assert_eq!(second.url_when(&format!("{portal}/user")), format!("{portal}/user"));
    second.goto(&format!("{portal}/sessions"));
    assert_eq!(second.source().matches("End session").count(), 1);
    second.click("form[action='/sessions/revoke'] button");
    assert!(second.source_when("Session ended"));

    // The app's next request is sent to the login page again.
    browser.goto(&page);
    let again = browser.url_starting(&format!("{portal}/login"));
    assert!(again.starts_with(&format!("{portal}/login?rd=")), "{again}");
    drop(second);
    drop(browser);
    drop(server);
}
