//! `/`, `/login` and `/user`.

use rocket::http::{ContentType, Header, Status};

use crate::helpers::*;

on_each_engine!(
    start_page_redirects_by_login_state,
    login_form_has_the_pinned_fields_and_creates_no_row,
    login_without_a_valid_csrf_token_is_403_and_logs_nobody_in,
    wrong_password_and_unknown_user_get_the_same_401,
    login_sets_a_browser_session_cookie_with_safe_attributes,
    remember_me_sets_max_age_up_to_the_absolute_deadline,
    secure_cookies_use_the_host_prefix,
    user_page_escapes_the_name,
    login_rotates_and_ends_the_session_held_before,
    repeated_failures_are_throttled_with_retry_after,
    twenty_simultaneous_logins_all_succeed,
    the_user_page_finds_the_name_without_keeping_it_in_the_session,
);

async fn start_page_redirects_by_login_state(engine: Engine) {
    let app = spawn_app_on(engine).await;
    assert_to_login(&app.client.get("/").dispatch().await);
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let res = app.client.get("/").dispatch().await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/user"));
    let res = app.client.get("/login").dispatch().await;
    assert_eq!(res.headers().get_one("Location"), Some("/user"));
}

async fn login_form_has_the_pinned_fields_and_creates_no_row(engine: Engine) {
    let app = spawn_app_on(engine).await;
    let res = app.client.get("/login").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.content_type(), Some(ContentType::HTML));
    let csrf = set_cookie(&res, "sesija_csrf").expect("anonymous csrf cookie");
    assert!(csrf.contains("HttpOnly") && csrf.contains("SameSite=Lax"), "{csrf}");
    let html = res.into_string().await.unwrap();
    for field in [
        r#"action="/login""#,
        r#"name="username""#,
        r#"name="password""#,
        r#"name="remember""#,
        r#"type="checkbox""#,
    ] {
        assert!(html.contains(field), "missing {field}");
    }
    assert_eq!(csrf_in(&html).len(), 43);
    // Two tabs: the first form still works after a second GET.
    let second = login_token(&app.client).await;
    assert_eq!(second, csrf_in(&html));
    assert_eq!(app.session_rows().await, 0, "anonymous visits create no rows");
}

async fn login_without_a_valid_csrf_token_is_403_and_logs_nobody_in(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let token = login_token(&app.client).await;
    for body in [
        form(&[("username", "alice"), ("password", PASSWORD)]),
        form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", "x")]),
        form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token[..42])]),
    ] {
        let res = app.client.post("/login").header(ContentType::Form).body(body).dispatch().await;
        assert_eq!(res.status(), Status::Forbidden);
        assert!(set_cookie(&res, "sesija").is_none());
    }
    // The right token without its cookie (another browser) is refused too.
    let other = app.other_browser().await;
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token)]);
    let res = other.post("/login").header(ContentType::Form).body(body).dispatch().await;
    assert_eq!(res.status(), Status::Forbidden);
    assert_eq!(app.session_rows().await, 0);
}

async fn wrong_password_and_unknown_user_get_the_same_401(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let wrong = login(&app.client, "alice", "not the password", false).await;
    assert_eq!(wrong.status(), Status::Unauthorized);
    let wrong = wrong.into_string().await.unwrap();
    let unknown = login(&app.client, "mallory", "not the password", false).await;
    assert_eq!(unknown.status(), Status::Unauthorized);
    let unknown = unknown.into_string().await.unwrap();
    assert!(wrong.contains("Wrong user name or password."));
    let strip = |html: &str, name: &str| html.replace(&csrf_in(html), "").replace(name, "");
    assert_eq!(strip(&wrong, "alice"), strip(&unknown, "mallory"));
    assert_eq!(app.session_rows().await, 0);
}

async fn login_sets_a_browser_session_cookie_with_safe_attributes(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let res = login(&app.client, "alice", PASSWORD, false).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/user"));
    assert_eq!(res.headers().get_one("Cache-Control"), Some("no-store"));
    let cookie = set_cookie(&res, "sesija").unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    for attr in ["Domain=", "Max-Age=", "Expires=", "Secure"] {
        assert!(!cookie.contains(attr), "{attr} present: {cookie}");
    }
    assert!(cookie.len() < 4096);
    let csrf = set_cookie(&res, "sesija_csrf").expect("the anonymous csrf cookie is dropped");
    for attr in ["Max-Age=0", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(csrf.contains(attr), "the removal carries the cookie's attributes, {attr}: {csrf}");
    }
    assert!(app.client.cookies().get("sesija_csrf").is_none());

    let page = app.client.get("/user").dispatch().await;
    assert_eq!(page.status(), Status::Ok);
    assert_eq!(page.headers().get_one("Cache-Control"), Some("no-store"));
    let html = page.into_string().await.unwrap();
    assert!(html.contains("Hello, alice!"));
    assert!(html.contains(r#"action="/logout""#), "logout reachable from the user page");
}

async fn remember_me_sets_max_age_up_to_the_absolute_deadline(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let res = login(&app.client, "alice", PASSWORD, true).await;
    let cookie = set_cookie(&res, "sesija").unwrap();
    let max_age: i64 = cookie.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    // The absolute deadline (30 days): forward-auth checks keep a session
    // alive without being able to re-send its cookie; the server's idle
    // deadline (5 days) still ends it earlier.
    assert!((2_592_000 - 2..=2_592_000).contains(&max_age), "{cookie}");
    assert!(cookie.contains("Expires="), "{cookie}");
    let (expires_at, created_at): (i64, i64) =
        sql!(app, fetch_one, sqlx::query_as("SELECT expires_at, created_at FROM sessions"));
    assert_eq!(expires_at - created_at, 432_000);
    let persistent: bool = sql!(app, fetch_one, sqlx::query_scalar("SELECT persistent FROM sessions"));
    assert!(persistent);
}

async fn secure_cookies_use_the_host_prefix(engine: Engine) {
    let app = spawn_app_on_with(engine, |f| f.merge(("cookie_secure", true))).await;
    app.add_user("alice").await;
    let page = app.client.get("/login").dispatch().await;
    let csrf = set_cookie(&page, "__Host-sesija_csrf").expect("prefixed csrf cookie");
    assert!(csrf.contains("Secure") && csrf.contains("Path=/") && !csrf.contains("Domain="), "{csrf}");
    drop(page);
    let res = login(&app.client, "alice", PASSWORD, false).await;
    assert!(set_cookie(&res, "sesija").is_none());
    let cookie = set_cookie(&res, "__Host-sesija").expect("prefixed session cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr}: {cookie}");
    }
    assert!(!cookie.contains("Domain="));
    assert!(res
        .headers()
        .get_one("Strict-Transport-Security")
        .is_some_and(|h| h.contains("max-age=31536000")));
    drop(res);
    // The removal cookie at logout is Secure and HttpOnly too.
    let res = log_out(&app.client).await;
    assert_to_login(&res);
    let removal = set_cookie(&res, "__Host-sesija").unwrap();
    for attr in ["Max-Age=0", "Secure", "HttpOnly", "Path=/"] {
        assert!(removal.contains(attr), "{attr}: {removal}");
    }
}

async fn user_page_escapes_the_name(engine: Engine) {
    let app = spawn_app_on(engine).await;
    let hash = sesija::auth::Hasher::default().hash(PASSWORD.into()).await.unwrap();
    sql!(
        app,
        execute,
        sqlx::query("INSERT INTO users (username, password_hash, created_at) VALUES ('<b>x</b>', $1, 0)")
            .bind(&hash)
    );
    logged_in(&app.client, "<b>x</b>", false).await;
    let html = app.client.get("/user").dispatch().await.into_string().await.unwrap();
    assert!(
        html.contains("Hello, &#60;b&#62;x&#60;/b&#62;!") || html.contains("Hello, &lt;b&gt;x&lt;/b&gt;!")
    );
    assert!(!html.contains("<b>x</b>"));
}

#[rocket::async_test]
async fn anonymous_user_page_redirects_to_login() {
    let app = spawn_app().await;
    let res = app.client.get("/user").dispatch().await;
    assert_to_login(&res);
    assert!(set_cookie(&res, "sesija").is_none());
}

async fn login_rotates_and_ends_the_session_held_before(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    app.add_user("bob").await;
    let first = sealed(&logged_in(&app.client, "alice", false).await);
    // A failed login leaves the current session alone.
    assert_eq!(login(&app.client, "bob", "wrong password", false).await.status(), Status::Unauthorized);
    let other = app.other_browser().await;
    assert_eq!(user_page_with(&other, &first).await.status(), Status::Ok);

    let second = sealed(&logged_in(&app.client, "bob", false).await);
    assert_ne!(first, second);
    assert_to_login(&user_page_with(&other, &first).await);
    assert_eq!(user_page_with(&other, &second).await.status(), Status::Ok);
    // Logging in again as the same user rotates too.
    let third = sealed(&logged_in(&app.client, "bob", false).await);
    assert_to_login(&user_page_with(&other, &second).await);
    assert_eq!(user_page_with(&other, &third).await.status(), Status::Ok);
    assert_eq!(app.session_rows().await, 1);
}

async fn repeated_failures_are_throttled_with_retry_after(engine: Engine) {
    // On PostgreSQL the lockout runs on the database's clock, which no test
    // moves: long enough that a loaded machine cannot outlast it mid-test.
    let lockout: u64 = if engine == Engine::Postgres { 6 } else { 2 };
    let app =
        spawn_app_on_with(engine, |f| f.merge(("login_max_failures", 3)).merge(("login_lockout", lockout)))
            .await;
    app.add_user("alice").await;
    for _ in 0..3 {
        assert_eq!(login(&app.client, "alice", "wrong password", false).await.status(), Status::Unauthorized);
    }
    let res = login(&app.client, "alice", PASSWORD, false).await;
    assert_eq!(res.status(), Status::TooManyRequests, "even the right password waits");
    let wait: u64 = res.headers().get_one("Retry-After").unwrap().parse().unwrap();
    assert!((1..=lockout).contains(&wait), "{wait}");
    assert!(set_cookie(&res, "sesija").is_none());

    // A forged proxy header does not make a new source.
    let res = login_from(&app.client, "alice", Header::new("X-Real-IP", "203.0.113.9"), None).await;
    assert_eq!(res.status(), Status::TooManyRequests);

    // Unknown names are throttled the same way.
    for _ in 0..3 {
        login(&app.client, "nobody", "wrong password", false).await;
    }
    assert_eq!(login(&app.client, "nobody", "x", false).await.status(), Status::TooManyRequests);

    app.advance(2);
    if engine == Engine::Postgres {
        // The shared throttle counts by the database's clock, which no
        // test moves: wait (a poll with a deadline) for the lockout to pass.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while login(&app.client, "nobody", "x", false).await.status() == Status::TooManyRequests {
            assert!(std::time::Instant::now() < deadline, "the lockout passes");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    logged_in(&app.client, "alice", false).await;
}

async fn twenty_simultaneous_logins_all_succeed(engine: Engine) {
    let app = spawn_app_on(engine).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        app.add_user(&format!("user{i}")).await;
        let client = app.other_browser().await;
        let token = login_token(&client).await;
        clients.push((client, token));
    }
    let logins = clients.iter().enumerate().map(|(i, (client, token))| async move {
        let name = format!("user{i}");
        let body = form(&[("username", &name), ("password", PASSWORD), ("csrf_token", token)]);
        client.post("/login").header(ContentType::Form).body(body).dispatch().await.status()
    });
    let statuses = rocket::futures::future::join_all(logins).await;
    assert!(statuses.iter().all(|s| *s == Status::SeeOther), "{statuses:?}");
    assert_eq!(app.session_rows().await, 20);
}

#[rocket::async_test]
async fn oversized_and_garbled_forms_get_4xx() {
    let app = spawn_app().await;
    let token = login_token(&app.client).await;
    let big = "a".repeat(40 * 1024);
    let body = form(&[("username", "alice"), ("password", &big), ("csrf_token", &token)]);
    let res = app.client.post("/login").header(ContentType::Form).body(body).dispatch().await;
    assert_eq!(res.status(), Status::PayloadTooLarge);
    let res = app
        .client
        .post("/login")
        .header(ContentType::Form)
        .body(b"\xff\xfe=\xff".as_slice())
        .dispatch()
        .await;
    assert!(res.status().code >= 400 && res.status().code < 500, "{}", res.status());
}

async fn the_user_page_finds_the_name_without_keeping_it_in_the_session(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let data: String = sql!(app, fetch_one, sqlx::query_scalar("SELECT data FROM sessions"));
    assert!(!data.contains("alice"), "the name comes from the account, not the session: {data}");
    let html = app.client.get("/user").dispatch().await.into_string().await.unwrap();
    assert!(html.contains("Hello, alice!"));
}

#[rocket::async_test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    for (path, cache) in
        [("/user", "no-store"), ("/login", "no-store"), ("/nowhere", "no-store"), ("/style.css", "public")]
    {
        let res = app.client.get(path).dispatch().await;
        let header = |name| res.headers().get_one(name).unwrap_or_default().to_owned();
        assert!(header("Cache-Control").starts_with(cache), "{path}");
        assert!(header("Content-Security-Policy").contains("frame-ancestors 'none'"), "{path}");
        assert_eq!(header("Referrer-Policy"), "same-origin", "{path}");
        assert_eq!(header("X-Content-Type-Options"), "nosniff", "{path}");
        assert_eq!(header("X-Frame-Options"), "DENY", "{path}");
        assert_eq!(res.headers().get("X-Frame-Options").count(), 1, "set once: {path}");
        assert!(res.headers().get_one("Strict-Transport-Security").is_none(), "only with cookie_secure");
        assert_eq!(res.headers().get_one("Server"), None, "no software named: {path}");
        if res.status() != Status::SeeOther {
            let kinds: Vec<_> = res.headers().get("Content-Type").collect();
            let kind = if path == "/style.css" { "text/css" } else { "text/html" };
            assert!(kinds.len() == 1 && kinds[0].starts_with(kind), "{path}: {kinds:?}");
        }
    }
}
