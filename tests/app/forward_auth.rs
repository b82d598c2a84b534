//! Forward auth through Rocket's local client: every answer of both
//! endpoints, every kind of rule, header defaults, HEAD, XHR against
//! navigation, and coherence: a logout, revocation, password change, group
//! change or removal counts from the very next check.

use rocket::figment::Figment;
use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};

use crate::helpers::*;

on_each_engine!(
    anonymous_navigation_is_sent_to_the_portal_and_other_clients_get_401,
    a_logged_in_user_gets_200_with_identity_headers_and_no_cookie,
    identity_headers_are_always_present_for_a_logged_in_user,
    every_kind_of_rule_decides,
    access_default_deny_refuses_hosts_no_rule_names,
    checks_see_every_change_at_once,
    checks_alone_keep_a_session_alive_and_a_kept_copy_of_an_ended_one_opens_nothing,
    login_keeps_a_safe_rd_through_every_answer_and_goes_there,
    the_rd_survives_a_throttled_login_and_hostile_ones_are_never_followed,
    the_user_page_lists_the_apps_this_user_may_open,
    the_cookie_carries_the_domain_and_secure_domains_use_the_secure_prefix,
    a_post_from_the_public_url_is_the_portals_own_whatever_the_host,
);

const PORTAL: &str = "http://auth.sesija.test";

/// An app behind the proxy on `*.sesija.test`, with rules for each kind.
fn portal(f: Figment) -> Figment {
    f.merge(("public_url", PORTAL)).merge(("cookie_domain", "sesija.test")).merge((
        "access",
        serde_json::json!([
            {"host": "public.sesija.test", "policy": "bypass"},
            {"host": "wiki.sesija.test", "paths": ["/public"], "policy": "bypass"},
            {"host": "wiki.sesija.test", "paths": ["/admin"], "groups": ["admins"]},
            {"host": "closed.sesija.test", "policy": "deny"},
            {"host": "grafana.sesija.test", "groups": ["admins"], "name": "Grafana", "url": "http://grafana.sesija.test/"},
            {"host": "*.bob.sesija.test", "users": ["bob"]},
            {"host": "wiki.sesija.test", "name": "Wiki", "url": "http://wiki.sesija.test/"},
        ]),
    ))
}

async fn portal_app(engine: Engine) -> TestApp {
    spawn_app_on_with(engine, portal).await
}

/// Another browser of the same portal (an app of its own on the same data
/// directory and configuration).
async fn browser(app: &TestApp) -> Client {
    app.browser(portal(app.figment())).await
}

/// nginx's check of `url`; `accept` and the extra headers as a browser
/// (or a script) would send them through the proxy.
async fn auth_request<'c>(
    client: &'c Client,
    url: &str,
    extra: &[(&'static str, &'static str)],
) -> LocalResponse<'c> {
    let mut req = client.get("/api/authz/auth-request").header(Header::new("X-Original-URL", url.to_owned()));
    for (k, v) in extra {
        req = req.header(Header::new(*k, *v));
    }
    req.dispatch().await
}

const NAVIGATION: &[(&str, &str)] = &[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")];

async fn forward_auth<'c>(
    client: &'c Client,
    (proto, host, uri): (&'static str, &'static str, &'static str),
    extra: &[(&'static str, &'static str)],
) -> LocalResponse<'c> {
    let mut req = client
        .get("/api/authz/forward-auth")
        .header(Header::new("X-Forwarded-Proto", proto))
        .header(Header::new("X-Forwarded-Host", host))
        .header(Header::new("X-Forwarded-Uri", uri));
    for (k, v) in extra {
        req = req.header(Header::new(*k, *v));
    }
    req.dispatch().await
}

fn header<'a>(res: &'a LocalResponse<'_>, name: &str) -> Option<&'a str> {
    res.headers().get_one(name)
}

fn assert_no_identity(res: &LocalResponse<'_>) {
    for name in ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"] {
        assert!(header(res, name).is_none(), "{name}");
    }
}

async fn anonymous_navigation_is_sent_to_the_portal_and_other_clients_get_401(engine: Engine) {
    let app = portal_app(engine).await;
    let target = "http://wiki.sesija.test/page?q=a%20b&x=1";
    let login = format!("{PORTAL}/login?rd=http%3A%2F%2Fwiki%2Esesija%2Etest%2Fpage%3Fq%3Da%2520b%26x%3D1");

    // nginx: never a 3xx; 401 with the login link in Location.
    let res = auth_request(&app.client, target, NAVIGATION).await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(header(&res, "Location"), Some(login.as_str()));
    assert!(header(&res, "WWW-Authenticate").is_none(), "never a Basic dialog");
    assert!(res.headers().get("Set-Cookie").next().is_none());

    // Caddy / Traefik: a navigation is redirected, 302 for GET-like methods, 303 otherwise.
    let res = forward_auth(&app.client, ("http", "wiki.sesija.test", "/page?q=a%20b&x=1"), NAVIGATION).await;
    assert_eq!(res.status(), Status::Found);
    assert_eq!(header(&res, "Location"), Some(login.as_str()));
    let mut extra = NAVIGATION.to_vec();
    extra.push(("X-Forwarded-Method", "POST"));
    let res = forward_auth(&app.client, ("http", "wiki.sesija.test", "/page?q=a%20b&x=1"), &extra).await;
    assert_eq!(res.status(), Status::SeeOther);
    extra.pop();
    extra.push(("X-Forwarded-Method", "OPTIONS"));
    let res = forward_auth(&app.client, ("http", "wiki.sesija.test", "/page?q=a%20b&x=1"), &extra).await;
    assert_eq!(res.status(), Status::Found);

    // XHR, JSON clients, scripts: 401 with a hint, from both endpoints.
    for extra in [
        &[("Accept", "text/html"), ("X-Requested-With", "XMLHttpRequest")][..],
        &[("Accept", "application/json")][..],
        &[][..],
    ] {
        for res in [
            auth_request(&app.client, target, extra).await,
            forward_auth(&app.client, ("http", "wiki.sesija.test", "/page?q=a%20b&x=1"), extra).await,
        ] {
            assert_eq!(res.status(), Status::Unauthorized, "{extra:?}");
            assert_eq!(header(&res, "Location"), Some(login.as_str()));
            assert!(header(&res, "WWW-Authenticate").is_none());
            assert_eq!(res.content_type(), Some(ContentType::JSON));
            let body: serde_json::Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
            assert_eq!(body["login"], login.as_str());
        }
    }
}

async fn a_logged_in_user_gets_200_with_identity_headers_and_no_cookie(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;
    sesija::auth::users::set_profile(
        &app.storage(),
        "alice",
        Some("alice@sesija.test"),
        Some("Alice Liddell"),
    )
    .await
    .unwrap();
    sesija::auth::users::set_groups(&app.storage(), "alice", &["admins".into(), "staff".into()])
        .await
        .unwrap();
    logged_in(&app.client, "alice", true).await;
    for res in [
        auth_request(&app.client, "http://wiki.sesija.test/", NAVIGATION).await,
        forward_auth(&app.client, ("http", "wiki.sesija.test", "/"), &[]).await,
        auth_request(&app.client, "http://grafana.sesija.test/d/1", &[]).await,
    ] {
        assert_eq!(res.status(), Status::Ok);
        assert_eq!(header(&res, "Remote-User"), Some("alice"));
        assert_eq!(header(&res, "Remote-Groups"), Some("admins,staff"));
        assert_eq!(header(&res, "Remote-Name"), Some("Alice Liddell"));
        assert_eq!(header(&res, "Remote-Email"), Some("alice@sesija.test"));
        assert!(res.headers().get("Set-Cookie").next().is_none(), "no cookie from a check");
        assert!(
            header(&res, "Content-Security-Policy").is_none(),
            "no page headers on an answer only the proxy reads"
        );
        assert_eq!(res.into_string().await.unwrap_or_default(), "", "empty body");
    }
    // HEAD is answered like GET, without a body.
    let res = app
        .client
        .head("/api/authz/auth-request")
        .header(Header::new("X-Original-URL", "http://wiki.sesija.test/"))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(header(&res, "Remote-User"), Some("alice"));
}

async fn identity_headers_are_always_present_for_a_logged_in_user(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("bob").await;
    logged_in(&app.client, "bob", false).await;
    let res = auth_request(&app.client, "http://x.bob.sesija.test/", &[]).await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(header(&res, "Remote-User"), Some("bob"));
    assert_eq!(header(&res, "Remote-Groups"), Some(""));
    assert_eq!(header(&res, "Remote-Name"), Some("bob"), "the user name stands in for a display name");
    assert_eq!(header(&res, "Remote-Email"), Some(""));
}

async fn every_kind_of_rule_decides(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;
    app.add_user("bob").await;
    sesija::auth::users::set_groups(&app.storage(), "alice", &["admins".into()]).await.unwrap();
    let bob = browser(&app).await;
    logged_in(&app.client, "alice", false).await;
    logged_in(&bob, "bob", false).await;
    let anonymous = browser(&app).await;
    let status = |res: &LocalResponse<'_>| res.status();

    // Bypass: anyone; an anonymous visitor carries no identity, a logged-in one does.
    let res = auth_request(&anonymous, "http://public.sesija.test/x", NAVIGATION).await;
    assert_eq!(status(&res), Status::Ok);
    assert_no_identity(&res);
    let res = auth_request(&app.client, "http://public.sesija.test/x", &[]).await;
    assert_eq!(header(&res, "Remote-User"), Some("alice"));
    let res = auth_request(&anonymous, "http://wiki.sesija.test/public/page", &[]).await;
    assert_eq!(status(&res), Status::Ok, "a bypassed path prefix");
    let res = auth_request(&anonymous, "http://wiki.sesija.test/publicity", &[]).await;
    assert_eq!(status(&res), Status::Unauthorized, "prefixes match whole segments");
    let res = auth_request(&anonymous, "http://wiki.sesija.test/public/page?/admin", &[]).await;
    assert_eq!(status(&res), Status::Ok, "the query is never matched");

    // Deny: nobody, logged in or not.
    for client in [&anonymous, &app.client] {
        assert_eq!(status(&auth_request(client, "http://closed.sesija.test/", &[]).await), Status::Forbidden);
    }

    // Groups and users.
    assert_eq!(status(&auth_request(&app.client, "http://wiki.sesija.test/admin/x", &[]).await), Status::Ok);
    let res = auth_request(&bob, "http://wiki.sesija.test/admin/x", NAVIGATION).await;
    assert_eq!(res.status(), Status::Forbidden, "logged in but not allowed: 403, not 401 (no login loop)");
    assert!(header(&res, "Content-Security-Policy").is_some(), "a page a browser may see keeps its headers");
    let page = res.into_string().await.unwrap();
    assert!(
        page.contains("bob") && page.contains(&format!("{PORTAL}/logout")),
        "names the user, offers a logout"
    );
    assert_eq!(status(&auth_request(&bob, "http://a.bob.sesija.test/", &[]).await), Status::Ok);
    assert_eq!(status(&auth_request(&app.client, "http://a.bob.sesija.test/", &[]).await), Status::Forbidden);
    assert_eq!(status(&auth_request(&bob, "http://grafana.sesija.test/", &[]).await), Status::Forbidden);
    // A host no rule names: any logged-in user (access_default = "allow").
    assert_eq!(status(&auth_request(&bob, "http://other.sesija.test/", &[]).await), Status::Ok);
    // Host names compare without case or trailing dot.
    assert_eq!(status(&auth_request(&bob, "http://WIKI.sesija.TEST./admin", &[]).await), Status::Forbidden);
}

async fn access_default_deny_refuses_hosts_no_rule_names(engine: Engine) {
    let app = spawn_app_on_with(engine, |f| portal(f).merge(("access_default", "deny"))).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    assert_eq!(auth_request(&app.client, "http://other.sesija.test/", &[]).await.status(), Status::Forbidden);
    assert_eq!(auth_request(&app.client, "http://wiki.sesija.test/", &[]).await.status(), Status::Ok);
}

#[rocket::async_test]
async fn malformed_checks_are_400_never_200() {
    let app = portal_app(Engine::Sqlite).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    for url in [
        "wiki.sesija.test/",
        "/relative",
        "ftp://wiki.sesija.test/",
        "http://evil.example/",
        "http://sesija.test.evil.example/",
        "http://evilsesija.test/",
        "http://wiki.sesija.test/a/../admin",
        "http://wiki.sesija.test/public/../admin",
        "http://wiki.sesija.test/public/%2e%2e/admin",
        "http://wiki.sesija.test/public%2F..%2Fadmin",
        "http://wiki.sesija.test/public\\..\\admin",
        "http://wiki.sesija.test/%zz",
        "http://user@wiki.sesija.test/",
    ] {
        let res = auth_request(&app.client, url, &[]).await;
        assert_eq!(res.status(), Status::BadRequest, "{url}");
        assert_no_identity(&res);
    }
    // Missing headers, repeated headers, a bad method. The reason comes as
    // JSON in OAuth's error shape, as every /api/ failure does.
    let res = app.client.get("/api/authz/auth-request").dispatch().await;
    assert_eq!(res.status(), Status::BadRequest);
    assert_eq!(res.content_type(), Some(ContentType::JSON));
    let body: serde_json::Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_description"], "a required header is missing");
    let res = app
        .client
        .get("/api/authz/auth-request")
        .header(Header::new("X-Original-URL", "http://wiki.sesija.test/"))
        .header(Header::new("X-Original-URL", "http://public.sesija.test/"))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::BadRequest);
    let res = auth_request(&app.client, "http://wiki.sesija.test/", &[("X-Original-Method", "GE T")]).await;
    assert_eq!(res.status(), Status::BadRequest);
    for missing in ["X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri"] {
        let mut req = app.client.get("/api/authz/forward-auth");
        for (k, v) in [
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "wiki.sesija.test"),
            ("X-Forwarded-Uri", "/"),
        ] {
            if k != missing {
                req = req.header(Header::new(k, v));
            }
        }
        assert_eq!(req.dispatch().await.status(), Status::BadRequest, "without {missing}");
    }
    let res = forward_auth(&app.client, ("javascript", "wiki.sesija.test", "/"), &[]).await;
    assert_eq!(res.status(), Status::BadRequest);
    let res = forward_auth(&app.client, ("http", "wiki.sesija.test", "//evil.example/"), &[]).await;
    assert_eq!(res.status(), Status::BadRequest);
}

#[rocket::async_test]
async fn the_database_down_is_503_never_200_or_500() {
    let app = spawn_app_with(|f| portal(f).merge(("session_cache_capacity", 0))).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let storage = app.client.rocket().state::<sesija::storage::Storage>().unwrap();
    storage.sqlite().unwrap().reader.close().await;
    let res = auth_request(&app.client, "http://wiki.sesija.test/", &[]).await;
    assert_eq!(res.status(), Status::ServiceUnavailable);
    assert_no_identity(&res);
}

/// Every change to a session or an account counts from the very next check.
async fn checks_see_every_change_at_once(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;
    app.add_user("bob").await;
    let check = async |client: &Client, host: &str| {
        let res = auth_request(client, &format!("http://{host}/"), &[]).await;
        (res.status(), header(&res, "Remote-Groups").map(str::to_owned))
    };

    // Logout.
    logged_in(&app.client, "alice", false).await;
    assert_eq!(check(&app.client, "wiki.sesija.test").await.0, Status::Ok);
    assert_eq!(log_out(&app.client).await.status(), Status::SeeOther);
    assert_eq!(check(&app.client, "wiki.sesija.test").await.0, Status::Unauthorized);

    // Revocation from another session, and a password change.
    let laptop = browser(&app).await;
    logged_in(&app.client, "alice", false).await;
    logged_in(&laptop, "alice", false).await;
    assert_eq!(check(&laptop, "wiki.sesija.test").await.0, Status::Ok);
    let html = app.client.get("/sessions").dispatch().await.into_string().await.unwrap();
    let res = app
        .client
        .post("/sessions/revoke-others")
        .header(ContentType::Form)
        .body(form(&[("csrf_token", &csrf_in(&html))]))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(check(&laptop, "wiki.sesija.test").await.0, Status::Unauthorized, "revoked");
    logged_in(&laptop, "alice", false).await;
    assert_eq!(check(&laptop, "wiki.sesija.test").await.0, Status::Ok);
    let html = app.client.get("/account/password").dispatch().await.into_string().await.unwrap();
    let body = form(&[
        ("csrf_token", &csrf_in(&html)),
        ("current_password", PASSWORD),
        ("new_password", "another good password"),
        ("confirm_password", "another good password"),
    ]);
    let res = app.client.post("/account/password").header(ContentType::Form).body(body).dispatch().await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(check(&laptop, "wiki.sesija.test").await.0, Status::Unauthorized, "password changed");
    assert_eq!(check(&app.client, "wiki.sesija.test").await.0, Status::Ok, "the session that changed it");

    // Groups and removal, from the command line, while the app runs.
    let bob = browser(&app).await;
    logged_in(&bob, "bob", false).await;
    assert_eq!(check(&app.client, "grafana.sesija.test").await.0, Status::Forbidden);
    let out = app.cli(&["user", "groups", "alice", "admins", "ops"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice: admins,ops");
    assert_eq!(check(&app.client, "grafana.sesija.test").await, (Status::Ok, Some("admins,ops".into())));
    let out = app.cli(&["user", "groups", "alice"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice: no groups");
    assert_eq!(check(&app.client, "grafana.sesija.test").await.0, Status::Forbidden, "groups cleared");
    let out = app.cli(&["user", "remove", "alice"]).await;
    assert!(out.status.success());
    assert_eq!(check(&app.client, "wiki.sesija.test").await.0, Status::Unauthorized, "removed");
    assert_eq!(check(&bob, "wiki.sesija.test").await.0, Status::Ok, "others unaffected");
}

/// A browser that only visits the apps keeps its session through the
/// checks: each slides the idle deadline (without a cookie), and when they
/// stop, the session ends at its deadline. A copy of the cookie kept after
/// the session ended (a stolen one, another device's) opens nothing on a
/// check, though the check opened that very cookie before (what the layer
/// remembers of opened cookies is no credential).
async fn checks_alone_keep_a_session_alive_and_a_kept_copy_of_an_ended_one_opens_nothing(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;

    let cookie = sealed(&logged_in(&app.client, "alice", false).await);
    let copy = browser(&app).await;
    let with_copy = async || {
        copy.get("/api/authz/auth-request")
            .header(Header::new("X-Original-URL", "http://wiki.sesija.test/"))
            .cookie(rocket::http::Cookie::new("sesija", cookie.clone()))
            .dispatch()
            .await
            .status()
    };
    assert_eq!(with_copy().await, Status::Ok, "the copy works while the session lives");
    assert_eq!(with_copy().await, Status::Ok, "and again, opened before");
    assert_eq!(log_out(&app.client).await.status(), Status::SeeOther);
    assert_eq!(with_copy().await, Status::Unauthorized, "the copy after the logout");

    logged_in(&app.client, "alice", false).await;
    let idle = sesija::config::Settings::default().session_idle_timeout;
    for round in 0..4 {
        app.advance(idle - 3600);
        let res = auth_request(&app.client, "http://wiki.sesija.test/", &[]).await;
        assert_eq!(res.status(), Status::Ok, "the checks kept it alive, round {round}");
        assert!(res.headers().get("Set-Cookie").next().is_none());
    }
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok, "4 idle timeouts later");
    app.advance(idle + 1);
    assert_eq!(
        auth_request(&app.client, "http://wiki.sesija.test/", &[]).await.status(),
        Status::Unauthorized,
        "no check for an idle timeout: ended"
    );
}

async fn login_keeps_a_safe_rd_through_every_answer_and_goes_there(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;
    let rd = "http://wiki.sesija.test/page?x=1";
    let page = app.client.get(format!("/login?rd={}", urlencode(rd))).dispatch().await;
    let html = page.into_string().await.unwrap();
    assert!(html.contains(r#"name="rd" value="http://wiki.sesija.test/page?x=1""#), "{html}");
    let token = csrf_in(&html);
    let post = |password: &str, token: &str| {
        let body = form(&[("username", "alice"), ("password", password), ("csrf_token", token), ("rd", rd)]);
        app.client.post("/login").header(ContentType::Form).body(body).dispatch()
    };
    let wrong = post("wrong password", &token).await;
    assert_eq!(wrong.status(), Status::Unauthorized);
    assert!(wrong.into_string().await.unwrap().contains(r#"name="rd""#), "kept through a wrong password");
    let expired = post(PASSWORD, "not the token").await;
    assert_eq!(expired.status(), Status::Forbidden);
    assert!(expired.into_string().await.unwrap().contains(r#"name="rd""#), "kept through an expired form");
    let res = post(PASSWORD, &token).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some(rd));
    // Logged in already: straight there.
    let res = app.client.get(format!("/login?rd={}", urlencode(rd))).dispatch().await;
    assert_eq!(res.headers().get_one("Location"), Some(rd));
    let res = app.client.get("/login?rd=https%3A%2F%2Fevil.example%2F").dispatch().await;
    assert_eq!(res.headers().get_one("Location"), Some("/user"), "an unsafe rd is ignored");
    // Logout with a safe rd goes there; an unsafe one to the login page.
    let html = app.client.get("/user").dispatch().await.into_string().await.unwrap();
    let body = form(&[("csrf_token", &csrf_in(&html)), ("rd", "http://public.sesija.test/")]);
    let res = app.client.post("/logout").header(ContentType::Form).body(body).dispatch().await;
    assert_eq!(res.headers().get_one("Location"), Some("http://public.sesija.test/"));
}

async fn the_rd_survives_a_throttled_login_and_hostile_ones_are_never_followed(engine: Engine) {
    let app = spawn_app_on_with(engine, |f| portal(f).merge(("login_max_failures", 1))).await;
    app.add_user("alice").await;
    let rd = "http://wiki.sesija.test/";
    let token = login_token(&app.client).await;
    let post = |password: &str, rd: &str| {
        let body = form(&[("username", "alice"), ("password", password), ("csrf_token", &token), ("rd", rd)]);
        app.client.post("/login").header(ContentType::Form).body(body).dispatch()
    };
    assert_eq!(post("nope nope", rd).await.status(), Status::Unauthorized);
    let throttled = post(PASSWORD, rd).await;
    assert_eq!(throttled.status(), Status::TooManyRequests);
    assert!(throttled.into_string().await.unwrap().contains(r#"name="rd" value="http://wiki.sesija.test/""#));

    let fresh = portal_app(engine).await;
    fresh.add_user("alice").await;
    for hostile in [
        "//evil.example",
        "https://evil.example",
        "http://sesija.test.evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let token = login_token(&fresh.client).await;
        let body =
            form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token), ("rd", hostile)]);
        let res = fresh.client.post("/login").header(ContentType::Form).body(body).dispatch().await;
        assert_eq!(res.headers().get_one("Location"), Some("/user"), "{hostile}");
        assert_eq!(log_out(&fresh.client).await.status(), Status::SeeOther);
    }
}

async fn the_user_page_lists_the_apps_this_user_may_open(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let html = app.client.get("/user").dispatch().await.into_string().await.unwrap();
    assert!(html.contains(r#"<a href="http://wiki.sesija.test/">Wiki</a>"#), "{html}");
    assert!(!html.contains("Grafana"), "not in admins");
    sesija::auth::users::set_groups(&app.storage(), "alice", &["admins".into()]).await.unwrap();
    app.client.rocket().state::<sesija::web::Directory>().unwrap().identities.forget();
    let html = app.client.get("/user").dispatch().await.into_string().await.unwrap();
    assert!(html.contains("Grafana"));
}

async fn the_cookie_carries_the_domain_and_secure_domains_use_the_secure_prefix(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;
    let cookie = logged_in(&app.client, "alice", false).await;
    assert!(cookie.contains("Domain=sesija.test"), "{cookie}");
    let secure = spawn_app_on_with(engine, |f| {
        portal(f).merge(("cookie_secure", true)).merge(("public_url", "https://auth.sesija.test"))
    })
    .await;
    secure.add_user("alice").await;
    let res = login(&secure.client, "alice", PASSWORD, false).await;
    let cookie = set_cookie(&res, "__Secure-sesija").expect("__Secure- with a domain");
    assert!(cookie.contains("Domain=sesija.test") && cookie.contains("Secure"), "{cookie}");
}

#[rocket::async_test]
async fn bad_portal_settings_stop_start_up_naming_the_key() {
    let start = async |configure: fn(Figment) -> Figment| {
        let dir = tempfile::TempDir::new().unwrap();
        sesija::app(configure(figment(&dir.path().join("data")))).await.err().map(|e| e.to_string())
    };
    type Configure = fn(Figment) -> Figment;
    let cases: [(Configure, &str); 9] = [
        (|f| f.merge(("cookie_domain", "com")), "cookie_domain"),
        (|f| f.merge(("cookie_domain", "co.uk")), "cookie_domain"),
        (|f| f.merge(("cookie_domain", "192.168.1.10")), "cookie_domain"),
        (
            |f| f.merge(("public_url", "https://auth.other.example")).merge(("cookie_domain", "sesija.test")),
            "public_url",
        ),
        (|f| f.merge(("public_url", "auth.sesija.test")), "public_url"),
        (|f| f.merge(("public_url", "https://auth.sesija.test/portal")), "public_url"),
        (|f| f.merge(("access", serde_json::json!([{"host": ""}]))), "access"),
        (
            |f| {
                f.merge(("access", serde_json::json!([{"host": "a.test", "policy": "deny", "users": ["x"]}])))
            },
            "access",
        ),
        (|f| f.merge(("access", serde_json::json!([{"host": "a.test", "polic": "deny"}]))), "access"),
    ];
    for (configure, key) in cases {
        let err = start(configure).await.expect("refused");
        assert!(err.contains(key), "{key}: {err}");
    }
    assert!(start(portal).await.is_none(), "the test portal itself starts");
}

async fn a_post_from_the_public_url_is_the_portals_own_whatever_the_host(engine: Engine) {
    let app = portal_app(engine).await;
    app.add_user("alice").await;
    let token = login_token(&app.client).await;
    let body = form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &token)]);
    // A proxy that passes the upstream's own Host: the Origin is public_url's.
    let res = app
        .client
        .post("/login")
        .header(ContentType::Form)
        .header(Header::new("Host", "127.0.0.1:8000"))
        .header(Header::new("Origin", PORTAL))
        .body(body)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::SeeOther);
}

/// A rule written with a Unicode host decides for that host (targets are
/// compared in IDNA form), and a path written with a trailing `/` covers
/// the bare path too.
#[rocket::async_test]
async fn rules_written_in_unicode_or_with_a_trailing_slash_still_match() {
    let app = spawn_app_with(|f| {
        portal(f).merge((
            "access",
            serde_json::json!([
                {"host": "b\u{fc}cher.sesija.test", "policy": "deny"},
                {"host": "*.\u{f6}l.sesija.test", "policy": "deny"},
                {"host": "wiki.sesija.test", "paths": ["/secret/"], "policy": "deny"},
            ]),
        ))
    })
    .await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    for url in [
        "http://xn--bcher-kva.sesija.test/",
        "http://B\u{fc}cher.sesija.test/x",
        "http://a.xn--l-0ga.sesija.test/",
        "http://wiki.sesija.test/secret",
        "http://wiki.sesija.test/secret/x",
    ] {
        let res = auth_request(&app.client, url, &[]).await;
        assert_eq!(res.status(), Status::Forbidden, "{url}");
    }
    let res = auth_request(&app.client, "http://wiki.sesija.test/secretive", &[]).await;
    assert_eq!(res.status(), Status::Ok);
}
