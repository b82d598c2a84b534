//! `/account/password`: change the password, end every other session.

use std::net::IpAddr;

use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, State};

use super::guards::SignedIn;
use super::{csrf, pages, App, Metrics, Notice, Reply};
use crate::auth::password::check_new_password;
use crate::auth::users;

fn form_page(status: Status, csrf_token: &str, notice: Option<Notice>, error: Option<&str>) -> Reply {
    Reply::page(status, pages::render(pages::Password { notice, error, csrf_token }))
}

#[get("/account/password")]
pub async fn password_form(session: SignedIn<'_>, flash: Option<FlashMessage<'_>>) -> Reply {
    match csrf::of_session(&session).await {
        Ok(token) => form_page(Status::Ok, &token, Notice::from_flash(flash), None),
        Err(e) => Reply::from(e),
    }
}

#[get("/account/password", rank = 2)]
pub fn password_form_anonymous() -> Redirect {
    Redirect::to("/login")
}

#[derive(FromForm)]
pub struct PasswordForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    current_password: String,
    #[field(default = String::new())]
    new_password: String,
    #[field(default = String::new())]
    confirm_password: String,
}

#[post("/account/password", data = "<form>")]
pub async fn change_password(
    _origin: csrf::SameOrigin,
    session: SignedIn<'_>,
    form: Form<PasswordForm>,
    app: &State<App>,
    ip: Option<IpAddr>,
) -> Reply {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Reply::error(Status::Forbidden, super::BAD_FORM);
    }
    let token = form.csrf_token.clone();
    let refuse = |error: &str| form_page(Status::UnprocessableEntity, &token, None, Some(error));
    let user = match users::by_id(&app.storage, session.user_id()).await {
        Ok(Some(user)) => user,
        Ok(None) => return Reply::to("/login"),
        Err(_) => return Reply::unavailable(),
    };
    let page =
        |error: &str| pages::render(pages::Password { notice: None, error: Some(error), csrf_token: &token });
    let wrong = "The current password is wrong.";
    if let Err(reply) = app.confirm_password(&user, &form.current_password, ip, wrong, page).await {
        return reply;
    }
    if form.new_password != form.confirm_password {
        return refuse("The new passwords do not match.");
    }
    if let Err(why) = check_new_password(&user.username, &form.new_password) {
        return refuse(why);
    }
    let Ok(hash) = app.hasher.hash(form.new_password.clone()).await else { return Reply::unavailable() };
    let ended = match users::set_password(&app.storage, &user.username, &hash, Some(session.handle())).await {
        Ok(ended) => ended,
        Err(e) => {
            log::error!("password change: {e}");
            return Reply::unavailable();
        }
    };
    // The sessions ended in that transaction went behind the store's back.
    session.manager().store().invalidate().await;
    if let Err(e) = session.rotate().await {
        return Reply::from(e);
    }
    // The password was just proved.
    let mut state = super::guards::auth_state(&session);
    state.confirmed_at = crate::session::now();
    if let Err(e) = super::guards::save_auth_state(&session, &state).await {
        return Reply::from(e);
    }
    log::info!("password changed: user {:?}, ended {ended} other sessions", user.username);
    Metrics::count(&app.metrics.ended_revoke, ended);
    Reply::Flash(Flash::success(Redirect::to("/user"), "Password changed"))
}

#[post("/account/password", rank = 2)]
pub fn change_password_anonymous() -> Redirect {
    Redirect::to("/login")
}
