//! `/setup`: the first account through a one-time link.

use rocket::http::{ContentType, Status};

use crate::helpers::*;

on_each_engine!(
    setup_creates_the_first_account_and_logs_it_in_once,
    setup_is_404_when_an_account_already_exists,
);

fn setup_token(app: &TestApp) -> String {
    app.client
        .rocket()
        .state::<sesija::web::SetupToken>()
        .unwrap()
        .get()
        .expect("a setup token while no user exists")
}

async fn setup_creates_the_first_account_and_logs_it_in_once(engine: Engine) {
    let app = spawn_app_on(engine).await;
    let token = setup_token(&app);
    for uri in ["/setup".to_owned(), "/setup?token=wrong".to_owned(), format!("/setup?token={}", &token[1..])]
    {
        assert_eq!(app.client.get(uri).dispatch().await.status(), Status::NotFound);
    }
    let page = app.client.get(format!("/setup?token={token}")).dispatch().await;
    assert_eq!(page.status(), Status::Ok);
    assert_eq!(page.headers().get_one("Referrer-Policy"), Some("same-origin"));
    let html = page.into_string().await.unwrap();
    for field in [r#"name="username""#, r#"name="password""#, r#"name="csrf_token""#] {
        assert!(html.contains(field), "{field}");
    }
    let csrf = csrf_in(&html);
    let post = |body: String| app.client.post("/setup").header(ContentType::Form).body(body).dispatch();

    let res =
        post(form(&[("token", &token), ("username", "admin"), ("password", PASSWORD), ("csrf_token", "x")]))
            .await;
    assert_eq!(res.status(), Status::Forbidden);
    let res =
        post(form(&[("token", &token), ("username", "admin"), ("password", "short"), ("csrf_token", &csrf)]))
            .await;
    assert_eq!(res.status(), Status::UnprocessableEntity);
    assert!(res.into_string().await.unwrap().contains("at least 8 characters"));
    let res = post(form(&[
        ("token", "nope"),
        ("username", "admin"),
        ("password", PASSWORD),
        ("csrf_token", &csrf),
    ]))
    .await;
    assert_eq!(res.status(), Status::NotFound);
    assert_eq!(sql!(app, fetch_one, sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")), 0);

    let res = post(form(&[
        ("token", &token),
        ("username", "admin"),
        ("password", PASSWORD),
        ("csrf_token", &csrf),
    ]))
    .await;
    assert_eq!(res.status(), Status::SeeOther);
    assert_eq!(res.headers().get_one("Location"), Some("/user"));
    assert!(set_cookie(&res, "sesija").is_some());
    let user = app.client.get("/user").dispatch().await;
    assert!(user.into_string().await.unwrap().contains("Hello, admin!"));

    // Once an account exists, setup is gone, with or without the old token.
    assert_eq!(app.client.get(format!("/setup?token={token}")).dispatch().await.status(), Status::NotFound);
    let res =
        post(form(&[("token", &token), ("username", "eve"), ("password", PASSWORD), ("csrf_token", &csrf)]))
            .await;
    assert_eq!(res.status(), Status::NotFound);
}

async fn setup_is_404_when_an_account_already_exists(engine: Engine) {
    let app = spawn_app_on(engine).await;
    let token = setup_token(&app);
    app.add_user("alice").await;
    assert_eq!(app.client.get(format!("/setup?token={token}")).dispatch().await.status(), Status::NotFound);
    let later = app.other_browser().await;
    assert!(later.rocket().state::<sesija::web::SetupToken>().unwrap().get().is_none());
}
