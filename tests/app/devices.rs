//! "Your devices": `/sessions`, ending sessions, changing the password.

use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::Client;

use crate::helpers::*;

on_each_engine!(
    the_sessions_page_lists_only_my_live_sessions_newest_first,
    ending_another_session_logs_that_browser_out_at_its_next_request,
    ending_a_session_that_is_not_mine_is_404_like_one_that_does_not_exist,
    log_out_all_other_sessions_keeps_only_this_one,
    every_post_needs_this_sessions_csrf_token_and_changes_nothing_without_it,
    changing_the_password_ends_other_sessions_and_rotates_this_one,
    pages_for_logged_in_people_redirect_anonymous_visitors,
);

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// A browser logged in as `name` with this User-Agent.
async fn device(app: &TestApp, name: &str, user_agent: &str) -> Client {
    let client = app.other_browser().await;
    let res = login_from(&client, name, Header::new("User-Agent", user_agent.to_owned()), None).await;
    assert_eq!(res.status(), Status::SeeOther);
    drop(res);
    client
}

async fn page(client: &Client, uri: &str) -> (Status, String) {
    let res = client.get(uri.to_owned()).dispatch().await;
    (res.status(), res.into_string().await.unwrap_or_default())
}

async fn handles(app: &TestApp, name: &str) -> Vec<String> {
    sql!(
        app,
        fetch_all,
        sqlx::query_scalar(
            "SELECT handle FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = $1) ORDER BY id",
        )
        .bind(name)
    )
}

async fn csrf_of(client: &Client) -> String {
    csrf_in(&page(client, "/sessions").await.1)
}

async fn the_sessions_page_lists_only_my_live_sessions_newest_first(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    app.add_user("bob").await;
    let laptop = device(&app, "alice", FIREFOX).await;
    let _phone = device(&app, "alice", "<script>alert(1)</script>").await;
    let _old = device(&app, "alice", FIREFOX).await;
    let _bob = device(&app, "bob", FIREFOX).await;
    let alice = handles(&app, "alice").await;
    let bob = handles(&app, "bob").await;
    // The third alice session has expired; the phone was active most recently.
    sql!(app, execute, sqlx::query("UPDATE sessions SET expires_at = 1 WHERE handle = $1").bind(&alice[2]));
    sql!(
        app,
        execute,
        sqlx::query("UPDATE sessions SET last_seen_at = last_seen_at + 5 WHERE handle = $1").bind(&alice[1])
    );

    let (status, user_page) = page(&laptop, "/user").await;
    assert_eq!(status, Status::Ok);
    assert!(user_page.contains(r#"href="/sessions""#));
    let (status, html) = page(&laptop, "/sessions").await;
    assert_eq!(status, Status::Ok);
    let at = |needle: &str| html.find(needle);
    assert!(at("This device").unwrap() < at(&alice[1]).unwrap(), "the session asking comes first");
    assert!(html.contains("active now"));
    assert!(at(&alice[2]).is_none(), "expired sessions never appear");
    assert!(at(&bob[0]).is_none(), "only my sessions");
    assert_eq!(html.matches("This device").count(), 1);
    // The current session has no "End session" button; the other one has.
    assert_eq!(html.matches("End session").count(), 1);
    assert!(html.contains("Firefox on Linux"));
    assert!(!html.contains("<script>alert(1)</script>"));
    for field in ["IP ", "signed in ", "last active just now", "until the browser closes"] {
        assert!(html.contains(field), "{field}");
    }
    // Nothing on the page can log anyone in.
    let hashes: Vec<Vec<u8>> = sql!(app, fetch_all, sqlx::query_scalar("SELECT token_hash FROM sessions"));
    for hash in hashes {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!html.contains(&hex));
    }
    let token = laptop.cookies().get_private("sesija").unwrap().value().to_owned();
    assert!(!html.contains(&token));
    assert!(!html.contains(laptop.cookies().get("sesija").unwrap().value()));
}

async fn ending_another_session_logs_that_browser_out_at_its_next_request(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let laptop = device(&app, "alice", FIREFOX).await;
    let phone = device(&app, "alice", FIREFOX).await;
    let phone_handle = handles(&app, "alice").await[1].clone();
    let csrf = csrf_of(&laptop).await;
    let res = post(&laptop, "/sessions/revoke", &[("csrf_token", &csrf), ("handle", &phone_handle)]).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/sessions"));
    assert!(page(&laptop, "/sessions").await.1.contains("Session ended"));
    assert_to_login(&phone.get("/user").dispatch().await);
    assert_eq!(page(&laptop, "/user").await.0, Status::Ok);
}

async fn ending_a_session_that_is_not_mine_is_404_like_one_that_does_not_exist(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    app.add_user("bob").await;
    let alice = device(&app, "alice", FIREFOX).await;
    let bob = device(&app, "bob", FIREFOX).await;
    let bobs = handles(&app, "bob").await[0].clone();
    let csrf = csrf_of(&alice).await;
    let theirs = post(&alice, "/sessions/revoke", &[("csrf_token", &csrf), ("handle", &bobs)]).await;
    assert_eq!(theirs.status(), Status::NotFound);
    let theirs = theirs.into_string().await.unwrap();
    let missing =
        post(&alice, "/sessions/revoke", &[("csrf_token", &csrf), ("handle", "no-such-handle")]).await;
    assert_eq!(missing.status(), Status::NotFound);
    assert_eq!(theirs, missing.into_string().await.unwrap());
    assert_eq!(page(&bob, "/user").await.0, Status::Ok);
}

async fn log_out_all_other_sessions_keeps_only_this_one(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    app.add_user("bob").await;
    let me = device(&app, "alice", FIREFOX).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(device(&app, "alice", FIREFOX).await);
    }
    let bob = device(&app, "bob", FIREFOX).await;
    let csrf = csrf_of(&me).await;
    let res = post(&me, "/sessions/revoke-others", &[("csrf_token", &csrf)]).await;
    assert_eq!(res.status(), Status::SeeOther);
    assert!(page(&me, "/sessions").await.1.contains("Logged out of 3 other sessions"));
    assert_eq!(handles(&app, "alice").await.len(), 1);
    for other in &others {
        assert_to_login(&other.get("/user").dispatch().await);
    }
    assert_eq!(page(&me, "/user").await.0, Status::Ok);
    assert_eq!(page(&bob, "/user").await.0, Status::Ok);
}

async fn every_post_needs_this_sessions_csrf_token_and_changes_nothing_without_it(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let me = device(&app, "alice", FIREFOX).await;
    let other = device(&app, "alice", FIREFOX).await;
    let other_handle = handles(&app, "alice").await[1].clone();
    let foreign = csrf_of(&other).await;
    let before = app.contents().await;
    // On SQLite, also proof that no write happened at all.
    let mut sqlite = match engine {
        Engine::Sqlite => {
            let mut conn = app.conn().await;
            let version = data_version(&mut conn).await;
            Some((conn, version))
        }
        Engine::Postgres => None,
    };
    for uri in ["/sessions/revoke", "/sessions/revoke-others", "/account/password", "/logout"] {
        for token in ["", "forged", foreign.as_str()] {
            let fields = [
                ("csrf_token", token),
                ("handle", other_handle.as_str()),
                ("current_password", PASSWORD),
                ("new_password", "another password"),
                ("confirm_password", "another password"),
            ];
            let res = post(&me, uri, &fields).await;
            assert_eq!(res.status(), Status::Forbidden, "{uri} with {token:?}");
        }
    }
    assert_eq!(app.contents().await, before, "nothing changed");
    if let Some((conn, version)) = &mut sqlite {
        assert_eq!(data_version(conn).await, *version, "nothing was written");
    }
    assert_eq!(handles(&app, "alice").await.len(), 2);
}

async fn changing_the_password_ends_other_sessions_and_rotates_this_one(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alexandra").await;
    let me = device(&app, "alexandra", FIREFOX).await;
    let other = device(&app, "alexandra", FIREFOX).await;
    let old_cookie = me.cookies().get("sesija").unwrap().value().to_owned();
    let (status, html) = page(&me, "/account/password").await;
    assert_eq!(status, Status::Ok);
    for field in ["current_password", "new_password", "confirm_password", "csrf_token"] {
        assert!(html.contains(&format!(r#"name="{field}""#)), "{field}");
    }
    let csrf = csrf_in(&html);
    let new = "a brand new password";
    let refused = [
        (
            "wrong current password",
            "The current password is wrong.",
            [("current_password", "nope"), ("new_password", new), ("confirm_password", new)],
        ),
        (
            "mismatch",
            "do not match",
            [("current_password", PASSWORD), ("new_password", new), ("confirm_password", "something else")],
        ),
        (
            "too short",
            "at least 8",
            [("current_password", PASSWORD), ("new_password", "short"), ("confirm_password", "short")],
        ),
        (
            "user name",
            "user name",
            [
                ("current_password", PASSWORD),
                ("new_password", "alexandra"),
                ("confirm_password", "alexandra"),
            ],
        ),
    ];
    let long = "x".repeat(1025);
    let too_long = [
        ("current_password", PASSWORD),
        ("new_password", long.as_str()),
        ("confirm_password", long.as_str()),
    ];
    for (what, message, fields) in refused.iter().map(|(w, m, f)| (*w, *m, f.to_vec())).chain([(
        "too long",
        "1024 bytes",
        too_long.to_vec(),
    )]) {
        let mut fields = fields;
        fields.push(("csrf_token", &csrf));
        let res = post(&me, "/account/password", &fields).await;
        assert_eq!(res.status(), Status::UnprocessableEntity, "{what}");
        let body = res.into_string().await.unwrap();
        assert!(body.contains(message) && body.contains(r#"action="/account/password""#), "{what}: {body}");
    }
    assert_eq!(handles(&app, "alexandra").await.len(), 2, "refusals change nothing");
    assert_eq!(page(&other, "/user").await.0, Status::Ok);

    let res = post(
        &me,
        "/account/password",
        &[
            ("csrf_token", &csrf),
            ("current_password", PASSWORD),
            ("new_password", new),
            ("confirm_password", new),
        ],
    )
    .await;
    assert_eq!(res.status(), Status::SeeOther);
    let new_cookie = set_cookie(&res, "sesija").expect("a new cookie");
    assert_ne!(sealed(&new_cookie), old_cookie);
    drop(res);
    let (status, html) = page(&me, "/user").await;
    assert_eq!(status, Status::Ok, "still logged in with the new cookie");
    assert!(html.contains("Password changed"));
    assert_to_login(&other.get("/user").dispatch().await);
    let replay = app.other_browser().await;
    assert_to_login(&user_page_with(&replay, &old_cookie).await);
    assert_eq!(handles(&app, "alexandra").await.len(), 1);

    let fresh = app.other_browser().await;
    assert_eq!(login(&fresh, "alexandra", PASSWORD, false).await.status(), Status::Unauthorized);
    assert_eq!(login(&fresh, "alexandra", new, false).await.status(), Status::SeeOther);
}

async fn pages_for_logged_in_people_redirect_anonymous_visitors(engine: Engine) {
    let app = spawn_app_on(engine).await;
    for uri in ["/sessions", "/account/password"] {
        assert_to_login(&app.client.get(uri).dispatch().await);
    }
    for uri in ["/sessions/revoke", "/sessions/revoke-others", "/account/password"] {
        let res = app.client.post(uri).header(ContentType::Form).body("csrf_token=x").dispatch().await;
        assert_to_login(&res);
    }
}
