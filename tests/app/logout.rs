//! `/logout`: a POST with a token, never a GET side effect.

use rocket::http::{ContentType, Status};

use crate::helpers::*;

on_each_engine!(
    get_logout_shows_a_form_and_changes_nothing,
    logout_without_the_session_token_is_403_and_keeps_the_session,
    logout_deletes_the_row_and_the_old_cookie_is_dead,
    logout_when_not_logged_in_goes_to_login,
);

async fn get_logout_shows_a_form_and_changes_nothing(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    logged_in(&app.client, "alice", false).await;
    let res = app.client.get("/logout").dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    let html = res.into_string().await.unwrap();
    assert!(html.contains(r#"<form method="post" action="/logout">"#));
    assert_eq!(csrf_in(&html).len(), 43);
    assert_eq!(app.session_rows().await, 1);
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok);
}

async fn logout_without_the_session_token_is_403_and_keeps_the_session(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    // The anonymous login-form token is no good once logged in.
    let anonymous = login_token(&app.client).await;
    logged_in(&app.client, "alice", false).await;
    for body in [String::new(), form(&[("csrf_token", "nope")]), form(&[("csrf_token", &anonymous)])] {
        let res = app.client.post("/logout").header(ContentType::Form).body(body).dispatch().await;
        assert_eq!(res.status(), Status::Forbidden);
        assert!(set_cookie(&res, "sesija").is_none());
    }
    assert_eq!(app.session_rows().await, 1);
    assert_eq!(app.client.get("/user").dispatch().await.status(), Status::Ok);
}

async fn logout_deletes_the_row_and_the_old_cookie_is_dead(engine: Engine) {
    let app = spawn_app_on(engine).await;
    app.add_user("alice").await;
    let cookie = sealed(&logged_in(&app.client, "alice", true).await);
    let res = log_out(&app.client).await;
    assert_to_login(&res);
    assert_eq!(res.headers().get_one("Cache-Control"), Some("no-store"));
    let removal = set_cookie(&res, "sesija").expect("removal cookie");
    assert!(removal.contains("Max-Age=0") && removal.contains("Path=/"), "{removal}");
    assert_eq!(app.session_rows().await, 0);

    let flash = app.client.get("/login").dispatch().await.into_string().await.unwrap();
    assert!(flash.contains("You have been logged out."));
    // Replaying the old cookie from anywhere fails.
    let other = app.other_browser().await;
    assert_to_login(&user_page_with(&other, &cookie).await);
}

async fn logout_when_not_logged_in_goes_to_login(engine: Engine) {
    let app = spawn_app_on(engine).await;
    assert_to_login(&app.client.post("/logout").header(ContentType::Form).body("").dispatch().await);
    assert_to_login(&app.client.get("/logout").dispatch().await);
}
