//! The second factor through Rocket's local client: set-up, the code after
//! the password, replay, skew, recovery codes, throttling, expiry of a
//! waiting login, turning it off, the operator's reset, `require_2fa` and
//! `policy = "two_factor"` rules. Codes are computed here from the secret
//! the set-up page shows.

use rocket::figment::Figment;
use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};

use crate::helpers::*;
use sesija::session::Clock;

on_each_engine!(
    enabling_needs_a_right_code_and_shows_ten_recovery_codes,
    a_password_alone_opens_nothing_and_the_right_code_opens_everything,
    wrong_replayed_and_skewed_codes_are_refused,
    two_browsers_racing_one_code_let_one_in,
    a_recovery_code_works_once,
    wrong_codes_are_throttled_even_in_a_burst,
    a_login_waiting_for_its_code_expires,
    turning_it_on_or_off_ends_every_other_session,
    new_recovery_codes_need_password_and_code_and_retire_the_old,
    the_operator_resets_a_lost_device,
    with_require_2fa_nothing_opens_before_the_set_up,
    a_two_factor_rule_sends_a_password_only_session_to_set_up_and_back,
    a_login_waiting_for_its_code_ends_for_good,
    turning_it_on_asks_for_the_password_unless_proved_recently,
    sessions_stored_by_the_earlier_release_keep_their_standing,
);

/// Logs in with the password: the 303 to the code prompt.
pub async fn password_step(client: &Client, name: &str, remember: bool) {
    let res = login(client, name, PASSWORD, remember).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/login/2fa"));
}

pub async fn send_code<'c>(client: &'c Client, code: &str) -> LocalResponse<'c> {
    let token = token_of(client, "/login/2fa").await;
    post(client, "/login/2fa", &[("code", code), ("csrf_token", &token)]).await
}

pub async fn user_status(client: &Client) -> Status {
    client.get("/user").dispatch().await.status()
}

/// Another browser of `app`, configured as it is.
async fn browser_with(app: &TestApp, configure: impl FnOnce(Figment) -> Figment) -> Client {
    app.browser(configure(app.figment())).await
}

/// An app with alice, logged in, with 2FA set up.
async fn enrolled(engine: Engine) -> (TestApp, Vec<u8>, Vec<String>) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let (secret, codes) = enrol(&app.client).await;
    (app, secret, codes)
}

async fn enabling_needs_a_right_code_and_shows_ten_recovery_codes(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let html = body(app.client.get("/account/2fa").dispatch().await).await;
    assert!(html.contains("is <strong>off</strong>"));

    early_in_step().await;
    let (secret, token, _) = start_setup(&app.client, "").await;
    let wrong = format!("{:06}", (code(&secret, 0).parse::<u32>().unwrap() + 1) % 1_000_000);
    for bad in [wrong.as_str(), &code(&secret, 2), "", "abcdef"] {
        let res = post(&app.client, "/account/2fa/enable", &[("code", bad), ("csrf_token", &token)]).await;
        assert_eq!(res.status(), Status::UnprocessableEntity, "{bad:?}");
        // The same secret, still waiting for its code.
        assert!(body(res).await.contains(&totp_rs::Secret::from(secret.clone()).to_base32()[..4]));
    }
    let html = body(app.client.get("/account/2fa").dispatch().await).await;
    assert!(html.contains("is <strong>off</strong>"), "a wrong code switches nothing on");
    // Without the session's token: refused.
    let res =
        post(&app.client, "/account/2fa/enable", &[("code", &code(&secret, 0)), ("csrf_token", "x")]).await;
    assert_eq!(res.status(), Status::Forbidden);

    let res =
        post(&app.client, "/account/2fa/enable", &[("code", &code(&secret, 0)), ("csrf_token", &token)])
            .await;
    assert_eq!(res.status(), Status::Ok);
    let html = body(res).await;
    let codes = html.matches("<li><code>").count();
    assert_eq!(codes, 10);
    let html = body(app.client.get("/account/2fa").dispatch().await).await;
    assert!(html.contains("is <strong>on</strong>") && html.contains("10 recovery codes left"), "{html}");
    assert!(!html.contains("<li><code>"), "the codes are shown once");

    // At rest: the secret sealed, the codes hashed.
    let sealed: Vec<u8> = sql!(app, fetch_one, sqlx::query_scalar("SELECT totp_secret FROM users"));
    assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_slice()));
    let text = totp_rs::Secret::from(secret.clone()).to_base32();
    assert!(!sealed.windows(text.len()).any(|w| w == text.as_bytes()));
    let hashes: Vec<String> = sql!(app, fetch_all, sqlx::query_scalar("SELECT hash FROM recovery_codes"));
    assert_eq!(hashes.len(), 10);
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$")));
    // This session passed the new factor: the devices page says so.
    let html = body(app.client.get("/sessions").dispatch().await).await;
    assert!(html.contains("password and code"), "{html}");
}

async fn a_password_alone_opens_nothing_and_the_right_code_opens_everything(engine: Engine) {
    let (app, secret, _) = enrolled(engine).await;
    let laptop = app.other_browser().await;
    password_step(&laptop, "alice", false).await;
    // Waiting for the code: not logged in anywhere.
    for path in ["/user", "/sessions", "/account/password", "/"] {
        let res = laptop.get(path).dispatch().await;
        assert_eq!(res.status(), Status::SeeOther, "{path}");
        assert_ne!(res.headers().get_one("Location"), Some("/user"), "{path}");
    }
    let res = laptop.get("/login").dispatch().await;
    assert_eq!(res.headers().get_one("Location"), Some("/login/2fa"), "the login page sends on to the code");
    let res = laptop.get("/account/2fa").dispatch().await;
    assert_eq!(res.headers().get_one("Location"), Some("/login/2fa"), "no set-up page either");
    let check = laptop
        .get("/api/authz/auth-request")
        .header(Header::new("X-Original-URL", "http://127.0.0.1:8000/app"))
        .dispatch()
        .await;
    assert_eq!(check.status(), Status::Unauthorized, "forward auth: not logged in");
    assert!(check.headers().get_one("Remote-User").is_none());
    // The device list of alice's real session shows the unfinished login.
    let html = body(app.client.get("/sessions").dispatch().await).await;
    assert!(html.contains("password only, not finished"), "{html}");

    let res = send_code(&laptop, &code(&secret, 1)).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/user"));
    assert_eq!(user_status(&laptop).await, Status::Ok);
    let check = laptop
        .get("/api/authz/auth-request")
        .header(Header::new("X-Original-URL", "http://127.0.0.1:8000/app"))
        .dispatch()
        .await;
    assert_eq!(check.status(), Status::Ok);
    assert_eq!(check.headers().get_one("Remote-User"), Some("alice"));
    assert_eq!(app.session_rows().await, 2, "the waiting session was replaced, not kept");
}

async fn wrong_replayed_and_skewed_codes_are_refused(engine: Engine) {
    let (app, secret, _) = enrolled(engine).await;
    let laptop = app.other_browser().await;
    password_step(&laptop, "alice", false).await;
    // The code that turned 2FA on was this step's: it never works again.
    assert_eq!(send_code(&laptop, &code(&secret, 0)).await.status(), Status::Unauthorized, "replayed");
    assert_eq!(send_code(&laptop, &code(&secret, 2)).await.status(), Status::Unauthorized, "+2 steps");
    assert_eq!(send_code(&laptop, &code(&secret, -2)).await.status(), Status::Unauthorized, "-2 steps");
    assert_eq!(send_code(&laptop, "000000x").await.status(), Status::Unauthorized);
    assert_eq!(user_status(&laptop).await, Status::SeeOther);
    let next = code(&secret, 1);
    assert_eq!(send_code(&laptop, &next).await.status(), Status::SeeOther, "+1 step");
    assert_eq!(user_status(&laptop).await, Status::Ok);

    // The same code again, still within its window, in another browser.
    let phone = app.other_browser().await;
    password_step(&phone, "alice", false).await;
    assert_eq!(send_code(&phone, &next).await.status(), Status::Unauthorized, "a code works once");
    assert_eq!(user_status(&phone).await, Status::SeeOther);

    // One step behind is accepted too (replay aside).
    sql!(app, execute, sqlx::query("UPDATE users SET totp_last_step = 0"));
    early_in_step().await;
    assert_eq!(send_code(&phone, &code(&secret, -1)).await.status(), Status::SeeOther, "-1 step");
    assert_eq!(user_status(&phone).await, Status::Ok);
}

async fn two_browsers_racing_one_code_let_one_in(engine: Engine) {
    let (app, secret, _) = enrolled(engine).await;
    let (a, b) = (app.other_browser().await, app.other_browser().await);
    password_step(&a, "alice", false).await;
    password_step(&b, "alice", false).await;
    let (ta, tb) = (token_of(&a, "/login/2fa").await, token_of(&b, "/login/2fa").await);
    let next = code(&secret, 1);
    let body_a = form(&[("code", &next), ("csrf_token", &ta)]);
    let body_b = form(&[("code", &next), ("csrf_token", &tb)]);
    let (ra, rb) = tokio::join!(
        a.post("/login/2fa").header(ContentType::Form).body(body_a).dispatch(),
        b.post("/login/2fa").header(ContentType::Form).body(body_b).dispatch(),
    );
    let mut statuses = [ra.status(), rb.status()];
    statuses.sort_by_key(|s| s.code);
    assert_eq!(statuses, [Status::SeeOther, Status::Unauthorized]);
}

async fn a_recovery_code_works_once(engine: Engine) {
    let (app, _, codes) = enrolled(engine).await;
    let laptop = app.other_browser().await;
    password_step(&laptop, "alice", true).await;
    // Typed in capitals with a space: forgiven.
    let typed = codes[3].to_uppercase().replace('-', " ");
    let res = send_code(&laptop, &typed).await;
    assert_eq!(res.status(), Status::SeeOther);
    // Remember-me carried through the code step.
    let cookie = set_cookie(&res, "sesija").unwrap();
    assert!(cookie.contains("Max-Age="), "{cookie}");
    assert_eq!(user_status(&laptop).await, Status::Ok);

    let phone = app.other_browser().await;
    password_step(&phone, "alice", false).await;
    assert_eq!(send_code(&phone, &codes[3]).await.status(), Status::Unauthorized, "used");
    assert_eq!(send_code(&phone, "aaaaa-aaaaa").await.status(), Status::Unauthorized, "not one");
    let res = send_code(&phone, &codes[4]).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert!(!set_cookie(&res, "sesija").unwrap().contains("Max-Age="), "no remember-me asked");
    let html = body(phone.get("/account/2fa").dispatch().await).await;
    assert!(html.contains("8 recovery codes left"), "{html}");
}

async fn wrong_codes_are_throttled_even_in_a_burst(engine: Engine) {
    let configure = |f: Figment| f.merge(("login_max_failures", 3));
    let app = spawn_app_on_with(engine, configure).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let (secret, _) = enrol(&app.client).await;
    let laptop = browser_with(&app, configure).await;
    password_step(&laptop, "alice", false).await;
    let token = token_of(&laptop, "/login/2fa").await;
    let right = code(&secret, 1);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 7) % 1_000_000);
    let guess = form(&[("code", &wrong), ("csrf_token", &token)]);
    let burst =
        (0..20).map(|_| laptop.post("/login/2fa").header(ContentType::Form).body(guess.clone()).dispatch());
    let answers: Vec<Status> = rocket::futures::future::join_all(burst)
        .await
        .iter()
        .map(rocket::local::asynchronous::LocalResponse::status)
        .collect();
    let refused = answers.iter().filter(|s| **s == Status::Unauthorized).count();
    let throttled = answers.iter().filter(|s| **s == Status::TooManyRequests).count();
    assert_eq!((refused, throttled), (3, 17), "{answers:?}");
    // Now even the right code waits.
    let res = post(&laptop, "/login/2fa", &[("code", &right), ("csrf_token", &token)]).await;
    assert_eq!(res.status(), Status::TooManyRequests);
    assert!(res.headers().get_one("Retry-After").is_some_and(|s| s.parse::<u64>().unwrap() > 0));
    assert!(body(res).await.contains("Too many failed attempts"));
    assert_eq!(user_status(&laptop).await, Status::SeeOther);
}

async fn a_login_waiting_for_its_code_expires(engine: Engine) {
    let configure = |f: Figment| f.merge(("two_factor_pending_timeout", 2));
    let app = spawn_app_on_with(engine, configure).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let (secret, _) = enrol(&app.client).await;
    let laptop = browser_with(&app, configure).await;
    password_step(&laptop, "alice", false).await;
    let token = token_of(&laptop, "/login/2fa").await;
    app.advance(3);
    let res = post(&laptop, "/login/2fa", &[("code", &code(&secret, 1)), ("csrf_token", &token)]).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/login"));
    assert_eq!(user_status(&laptop).await, Status::SeeOther);
    let live: i64 = sql!(
        app,
        fetch_one,
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE expires_at > $1").bind(app.clock.now())
    );
    assert_eq!(live, 1, "the waiting session has ended");
    // The code was not used up by the late attempt (checked on a server
    // that waits the default 5 minutes).
    let phone = app.other_browser().await;
    password_step(&phone, "alice", false).await;
    assert_eq!(send_code(&phone, &code(&secret, 1)).await.status(), Status::SeeOther);
}

async fn turning_it_on_or_off_ends_every_other_session(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let laptop = app.other_browser().await;
    logged_in(&laptop, "alice", false).await;
    logged_in(&app.client, "alice", false).await;
    let (secret, _) = enrol(&app.client).await;
    assert_eq!(user_status(&laptop).await, Status::SeeOther, "a password-only session ended at set-up");
    assert_eq!(user_status(&app.client).await, Status::Ok, "the one that set it up stays");

    password_step(&laptop, "alice", false).await;
    assert_eq!(send_code(&laptop, &code(&secret, 1)).await.status(), Status::SeeOther);
    let token = token_of(&app.client, "/account/2fa").await;
    // Password and code, both needed.
    let fields = |password: &'static str, code: String| {
        vec![("password", password.to_owned()), ("code", code), ("csrf_token", token.clone())]
    };
    for (password, code, why) in [
        ("wrong password", code(&secret, 0), "wrong password"),
        (PASSWORD, "123456".to_owned(), "wrong code"),
        (PASSWORD, String::new(), "no code"),
    ] {
        let pairs = fields(password, code);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = post(&app.client, "/account/2fa/disable", &pairs).await;
        assert_eq!(res.status(), Status::UnprocessableEntity, "{why}");
    }
    assert_eq!(user_status(&laptop).await, Status::Ok, "nothing happened yet");
    // The step after the laptop's is free; a recovery code would do too.
    early_in_step().await;
    let pairs = fields(PASSWORD, code(&secret, 1));
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The laptop used step +1 already: only a later one works.
    let res = post(&app.client, "/account/2fa/disable", &pairs).await;
    assert_eq!(res.status(), Status::UnprocessableEntity, "the laptop's code, replayed");
    sql!(app, execute, sqlx::query("UPDATE users SET totp_last_step = 0"));
    let res = post(&app.client, "/account/2fa/disable", &pairs).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(user_status(&laptop).await, Status::SeeOther, "the other session ended");
    assert_eq!(user_status(&app.client).await, Status::Ok);
    let html = body(app.client.get("/account/2fa").dispatch().await).await;
    assert!(html.contains("is <strong>off</strong>"));
    let left: i64 = sql!(app, fetch_one, sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes"));
    assert_eq!(left, 0);
    // And the next login needs the password only.
    logged_in(&laptop, "alice", false).await;
}

async fn new_recovery_codes_need_password_and_code_and_retire_the_old(engine: Engine) {
    let (app, secret, old) = enrolled(engine).await;
    let token = token_of(&app.client, "/account/2fa").await;
    let res = post(
        &app.client,
        "/account/2fa/recovery-codes",
        &[("password", "nope nope nope"), ("code", &code(&secret, 1)), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), Status::UnprocessableEntity);
    let res = post(
        &app.client,
        "/account/2fa/recovery-codes",
        &[("password", PASSWORD), ("code", &old[0]), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), Status::Ok, "a recovery code serves as the code");
    let html = body(res).await;
    assert_eq!(html.matches("<li><code>").count(), 10);
    let laptop = app.other_browser().await;
    password_step(&laptop, "alice", false).await;
    assert_eq!(send_code(&laptop, &old[1]).await.status(), Status::Unauthorized, "old codes retired");
    let new = between(&html, "<li><code>", "</code>").to_owned();
    assert_eq!(send_code(&laptop, &new).await.status(), Status::SeeOther);
}

async fn the_operator_resets_a_lost_device(engine: Engine) {
    let (app, _, _) = enrolled(engine).await;
    let out = app.cli(&["user", "2fa", "alice"]).await;
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.starts_with("alice: two-factor authentication on since "), "{said}");
    assert!(said.trim_end().ends_with("10 recovery codes left"), "{said}");
    let out = app.cli(&["user", "list"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("\t2fa on"));

    let out = app.cli(&["user", "2fa-reset", "alice"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "turned off two-factor authentication of alice; ended 1 sessions"
    );
    assert_eq!(user_status(&app.client).await, Status::SeeOther, "the running server honours it at once");
    let out = app.cli(&["user", "2fa", "alice"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice: two-factor authentication off");
    let out = app.cli(&["user", "2fa-reset", "alice"]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already off"));
    let out = app.cli(&["user", "2fa-reset", "nobody"]).await;
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "sesija: no user \"nobody\"");
    // The password alone logs in again.
    logged_in(&app.client, "alice", false).await;
}

async fn with_require_2fa_nothing_opens_before_the_set_up(engine: Engine) {
    let app = spawn_app_on_with(engine, |f| f.merge(("require_2fa", true))).await;
    app.add_user("alice").await;
    let res = login(&app.client, "alice", PASSWORD, false).await;
    assert_eq!(res.headers().get_one("Location"), Some("/account/2fa"));
    for path in ["/user", "/sessions", "/account/password"] {
        assert_eq!(app.client.get(path).dispatch().await.status(), Status::SeeOther, "{path}");
    }
    assert_eq!(app.client.get("/login").dispatch().await.headers().get_one("Location"), Some("/account/2fa"));
    let check = app
        .client
        .get("/api/authz/auth-request")
        .header(Header::new("X-Original-URL", "http://127.0.0.1:8000/app"))
        .dispatch()
        .await;
    assert_eq!(check.status(), Status::Unauthorized);
    let html = body(app.client.get("/account/2fa").dispatch().await).await;
    assert!(html.contains("requires a second factor"));
    let (secret, _) = enrol(&app.client).await;
    assert_eq!(user_status(&app.client).await, Status::Ok, "set up: everything opens");
    // The next login asks for the code.
    let laptop = app.other_browser().await;
    password_step(&laptop, "alice", false).await;
    assert_eq!(send_code(&laptop, &code(&secret, 1)).await.status(), Status::SeeOther);
    assert_eq!(user_status(&laptop).await, Status::Ok);
}

const PORTAL: &str = "http://auth.sesija.test";

fn two_factor_rules(f: Figment) -> Figment {
    f.merge(("public_url", PORTAL)).merge(("cookie_domain", "sesija.test")).merge((
        "access",
        serde_json::json!([
            {"host": "admin.sesija.test", "policy": "two_factor", "name": "Admin", "url": "http://admin.sesija.test/"},
            {"host": "wiki.sesija.test"},
        ]),
    ))
}

async fn check<'c>(client: &'c Client, url: &str, navigation: bool) -> LocalResponse<'c> {
    let mut req = client.get("/api/authz/forward-auth");
    let parsed = url::Url::parse(url).unwrap();
    req = req
        .header(Header::new("X-Forwarded-Proto", parsed.scheme().to_owned()))
        .header(Header::new("X-Forwarded-Host", parsed.host_str().unwrap().to_owned()))
        .header(Header::new("X-Forwarded-Uri", parsed.path().to_owned()));
    if navigation {
        req = req.header(Header::new("Accept", "text/html"));
    }
    req.dispatch().await
}

async fn a_two_factor_rule_sends_a_password_only_session_to_set_up_and_back(engine: Engine) {
    let app = spawn_app_on_with(engine, two_factor_rules).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let target = "http://admin.sesija.test/panel";
    assert_eq!(check(&app.client, "http://wiki.sesija.test/", false).await.status(), Status::Ok);
    let res = check(&app.client, target, true).await;
    assert_eq!(res.status(), Status::Found, "a redirect, not a 403");
    let to = res.headers().get_one("Location").unwrap().to_owned();
    assert_eq!(to, format!("{PORTAL}/login/2fa?rd={}", urlencode(target).replace('.', "%2E")));
    let res = check(&app.client, target, false).await;
    assert_eq!(res.status(), Status::Unauthorized, "a script gets the 401 with the hint");
    assert_eq!(res.headers().get_one("Location"), Some(to.as_str()));
    assert!(res.headers().get_one("Remote-User").is_none());

    // No second factor yet: the code prompt sends on to the set-up.
    let res = app.client.get(to.trim_start_matches(PORTAL).to_owned()).dispatch().await;
    assert_eq!(res.status(), Status::SeeOther);
    let setup = res.headers().get_one("Location").unwrap().to_owned();
    assert!(setup.starts_with("/account/2fa?rd="), "{setup}");
    let html = body(app.client.get(setup).dispatch().await).await;
    let rd = between(&html, r#"name="rd" value=""#, "\"").to_owned();
    assert_eq!(rd, target);
    early_in_step().await;
    let (secret, token, _) = start_setup(&app.client, &rd).await;
    let res = post(
        &app.client,
        "/account/2fa/enable",
        &[("code", &code(&secret, 0)), ("csrf_token", &token), ("rd", &rd)],
    )
    .await;
    let html = body(res).await;
    assert!(html.contains(&format!(r#"<a href="{target}" id="continue">"#)), "back to the app");
    let res = check(&app.client, target, true).await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.headers().get_one("Remote-User"), Some("alice"));

    // A later login: password, then code, then the app.
    let laptop = browser_with(&app, two_factor_rules).await;
    let token = login_token(&laptop).await;
    let res = post(
        &laptop,
        "/login",
        &[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token), ("rd", target)],
    )
    .await;
    let prompt = res.headers().get_one("Location").unwrap().to_owned();
    assert!(prompt.starts_with("/login/2fa?rd="), "{prompt}");
    assert_eq!(check(&laptop, target, false).await.status(), Status::Unauthorized, "pending: no login");
    let html = body(laptop.get(prompt).dispatch().await).await;
    let token = csrf_in(&html);
    let res =
        post(&laptop, "/login/2fa", &[("code", &code(&secret, 1)), ("csrf_token", &token), ("rd", target)])
            .await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some(target));
    assert_eq!(check(&laptop, target, true).await.status(), Status::Ok);
}

#[rocket::async_test]
async fn secrets_follow_the_key_through_a_rotation() {
    let (app, secret, _) = enrolled(Engine::Sqlite).await;
    let sealed = || async {
        let sealed: Vec<u8> =
            sqlx::query_scalar("SELECT totp_secret FROM users").fetch_one(&app.db().await).await.unwrap();
        sealed
    };
    let before = sealed().await;

    // A rotation, then a start: the server seals the secret under the new key.
    assert!(app.cli(&["key", "rotate"]).await.status.success());
    let _restarted = app.other_browser().await;
    let after_start = sealed().await;
    assert_ne!(after_start, before, "sealed again at start-up");

    // Another rotation, and the old key dropped before any start: the
    // command seals the secret under the current key before dropping.
    assert!(app.cli(&["key", "rotate"]).await.status.success());
    let out = app.cli(&["key", "drop-old"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("sealed 1 second-factor secret(s) under the current key"), "{said}");
    assert_ne!(sealed().await, after_start);

    // A server with the new key alone: the code still opens the account.
    let laptop = app.other_browser().await;
    password_step(&laptop, "alice", false).await;
    assert_eq!(send_code(&laptop, &code(&secret, 1)).await.status(), Status::SeeOther);
    assert_eq!(user_status(&laptop).await, Status::Ok);
}

/// Moves every session waiting for its code `seconds` into the past, as if
/// the clock had moved on for them, and makes the running apps forget
/// their caches.
async fn age_waiting_sessions(app: &TestApp, clients: &[&Client], seconds: i64) {
    let aged = sql!(
        app,
        execute,
        sqlx::query(
            "UPDATE sessions SET created_at = created_at - $1, last_seen_at = last_seen_at - $1, \
             expires_at = expires_at - $1, ends_at = ends_at - $1 WHERE data LIKE '%second_factor_pending %'"
        )
        .bind(seconds)
    );
    assert_eq!(aged, 1);
    for client in clients {
        let manager = client.rocket().state::<std::sync::Arc<sesija::session::SessionManager>>().unwrap();
        manager.store().invalidate().await;
    }
}

/// A login waiting for its code lives `two_factor_pending_timeout`, not the
/// idle deadline of a session: after it, no page lists it, the command line
/// does not either, the purge removes it, and reloading the code prompt
/// meanwhile does not extend it.
async fn a_login_waiting_for_its_code_ends_for_good(engine: Engine) {
    let (app, _, _) = enrolled(engine).await;
    let laptop = app.other_browser().await;
    password_step(&laptop, "alice", false).await;
    let (deadline, ends_at): (i64, Option<i64>) = sql!(
        app,
        fetch_one,
        sqlx::query_as("SELECT expires_at, ends_at FROM sessions WHERE ends_at IS NOT NULL")
    );
    assert_eq!(Some(deadline), ends_at);
    assert!(deadline - app.clock.now() <= 300, "the pending timeout, not days: {deadline}");
    let page = body(app.client.get("/sessions").dispatch().await).await;
    assert!(page.contains("not finished"), "listed while it waits: {page}");
    let listed = app.cli(&["sessions", "list", "--user", "alice"]).await;
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 3, "header and two sessions");

    // Ten minutes on, for the waiting login only.
    age_waiting_sessions(&app, &[&app.client, &laptop], 600).await;
    assert_eq!(laptop.get("/login/2fa").dispatch().await.status(), Status::SeeOther, "it opens nothing");
    let page = body(app.client.get("/sessions").dispatch().await).await;
    assert!(!page.contains("not finished"), "no longer listed: {page}");
    let listed = app.cli(&["sessions", "list", "--user", "alice"]).await;
    let out = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(out.lines().count(), 2, "only the session that finished its login: {out}");
    let purged = app.cli(&["sessions", "purge"]).await;
    assert!(purged.status.success(), "{}", String::from_utf8_lossy(&purged.stderr));
    assert_eq!(app.session_rows().await, 1, "the purge removed it");
}

/// Turning the second factor on ends every other session and changes how
/// the account logs in: a session that has not proved its password within
/// the sudo window (a stolen cookie, say) must prove it first, at the
/// set-up and still at the confirmation.
async fn turning_it_on_asks_for_the_password_unless_proved_recently(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let owner = app.other_browser().await;
    logged_in(&owner, "alice", false).await;
    app.advance(sesija::auth::state::SUDO_WINDOW);

    // The set-up: 403 with the confirmation form, 422 for a wrong password.
    let page = body(app.client.get("/account/2fa").dispatch().await).await;
    assert!(page.contains(r#"id="setup-password""#), "the page asks for it up front: {page}");
    let token = csrf_in(&page);
    let res = post(&app.client, "/account/2fa/setup", &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), Status::Forbidden);
    let html = body(res).await;
    assert!(html.contains("Confirm your password") && html.contains(r#"action="/account/2fa/setup""#));
    assert!(!html.contains("otpauth://"), "no secret shown");
    let res =
        post(&app.client, "/account/2fa/setup", &[("csrf_token", &token), ("password", "wrong one")]).await;
    assert_eq!(res.status(), Status::UnprocessableEntity);
    assert!(!body(res).await.contains("otpauth://"));
    assert_eq!(user_status(&owner).await, Status::Ok, "nothing ended");

    // A secret set up while the password was recent cannot be confirmed
    // once the window has passed: the confirmation asks again.
    let res =
        post(&app.client, "/account/2fa/setup", &[("csrf_token", &token), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), Status::Ok);
    let text = between(&body(res).await, r#"<code id="secret">"#, "</code>").replace(' ', "");
    let secret = totp_rs::Secret::try_from_base32(&text).unwrap().as_bytes().to_vec();
    app.advance(sesija::auth::state::SUDO_WINDOW);
    early_in_step().await;
    let res =
        post(&app.client, "/account/2fa/enable", &[("code", &code(&secret, 0)), ("csrf_token", &token)])
            .await;
    assert_eq!(res.status(), Status::Forbidden);
    assert!(body(res).await.contains("Confirm your password"));
    assert_eq!(user_status(&owner).await, Status::Ok, "the owner is still in");
    let status: Option<i64> = sql!(
        app,
        fetch_one,
        sqlx::query_scalar("SELECT totp_enabled_at FROM users WHERE username = 'alice'")
    );
    assert_eq!(status, None, "still off");

    // With the password, the set-up and the confirmation go through.
    let res =
        post(&app.client, "/account/2fa/setup", &[("csrf_token", &token), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), Status::Ok);
    let text = between(&body(res).await, r#"<code id="secret">"#, "</code>").replace(' ', "");
    let secret = totp_rs::Secret::try_from_base32(&text).unwrap().as_bytes().to_vec();
    early_in_step().await;
    let res = post(
        &app.client,
        "/account/2fa/enable",
        &[("code", &code_at(&secret, app.clock.now())), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(user_status(&owner).await, Status::SeeOther, "now the other sessions end");
}

/// Sessions stored by the release before the login state became one typed
/// value kept loose values (`factor`, `auth_at`, `totp_setup`): after the
/// upgrade they open what they opened, keep their second factor and their
/// sudo window, and get the typed value at their first change.
async fn sessions_stored_by_the_earlier_release_keep_their_standing(engine: Engine) {
    let (app, _, _) = enrolled(engine).await;
    let phone = app.other_browser().await;
    app.add_user("bob").await;
    logged_in(&phone, "bob", false).await;
    let rows: Vec<(i64, String)> =
        sql!(app, fetch_all, sqlx::query_as("SELECT user_id, data FROM sessions ORDER BY id"));
    assert_eq!(rows.len(), 2);
    // As the earlier release wrote them: alice with her code, a minute
    // ago; bob by password, long ago.
    for (user_id, data) in rows {
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert!(data.get("auth").is_some(), "{data}");
        let csrf = data["csrf"].as_str().unwrap();
        let earlier = if user_id == 1 {
            serde_json::json!({"csrf": csrf, "auth_at": app.clock.now() - 60, "factor": "passed"})
        } else {
            serde_json::json!({"csrf": csrf, "auth_at": 0})
        };
        sql!(
            app,
            execute,
            sqlx::query("UPDATE sessions SET data = $1 WHERE user_id = $2")
                .bind(earlier.to_string())
                .bind(user_id)
        );
    }
    for client in [&app.client, &phone] {
        let manager = client.rocket().state::<std::sync::Arc<sesija::session::SessionManager>>().unwrap();
        manager.store().invalidate().await;
    }

    assert_eq!(user_status(&app.client).await, Status::Ok);
    assert_eq!(user_status(&phone).await, Status::Ok);
    let page = body(app.client.get("/sessions").dispatch().await).await;
    assert!(page.contains("password and code"), "alice's second factor is still known: {page}");
    // Alice proved her password a minute ago: ending sessions does not ask.
    let token = csrf_in(&page);
    let res = post(&app.client, "/sessions/revoke-others", &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), Status::SeeOther);
    // Bob's proof is old: it asks, and his session gets the typed value.
    let token = csrf_in(&body(phone.get("/sessions").dispatch().await).await);
    let res = post(&phone, "/sessions/revoke-others", &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), Status::Forbidden);
    let res =
        post(&phone, "/sessions/revoke-others", &[("csrf_token", &token), ("password", PASSWORD)]).await;
    assert_eq!(res.status(), Status::SeeOther);
    let data: String =
        sql!(app, fetch_one, sqlx::query_scalar("SELECT data FROM sessions WHERE user_id = $1").bind(2_i64));
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert!(data.get("auth").is_some() && data.get("auth_at").is_none(), "{data}");
    assert_eq!(user_status(&phone).await, Status::Ok);
}
