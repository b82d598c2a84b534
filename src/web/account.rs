//! `/account/password`: change the password, end every other session.

use std::net::IpAddr;
use std::sync::Arc;

use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, State};

use super::guards::SignedIn;
use super::metrics::Ended;
use super::{csrf, pages, Directory, Metrics, Notice, Portal, Reply, WebError, WebResult};
use crate::auth::password::check_new_password;
use crate::auth::Authenticator;

fn form_page(status: Status, csrf_token: &str, notice: Option<Notice>, error: Option<&str>) -> Reply {
    Reply::page(status, pages::render(pages::Password { notice, error, csrf_token }))
}

#[get("/account/password")]
pub async fn password_form(session: SignedIn<'_>, flash: Option<FlashMessage<'_>>) -> WebResult {
    let token = csrf::of_session(&session).await?;
    Ok(form_page(Status::Ok, &token, Notice::from_flash(flash), None))
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
    portal: &State<Portal>,
    directory: &State<Directory>,
    metrics: &State<Arc<Metrics>>,
    auth: &State<Authenticator>,
    ip: Option<IpAddr>,
) -> WebResult {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(WebError::refused(Status::Forbidden, super::BAD_FORM));
    }
    let token = form.csrf_token.clone();
    let refuse = |error: &str| form_page(Status::UnprocessableEntity, &token, None, Some(error));
    let user = directory.account(session.user_id()).await?;
    let page =
        |error: &str| pages::render(pages::Password { notice: None, error: Some(error), csrf_token: &token });
    let wrong = "The current password is wrong.";
    super::confirm_password(auth, &user, &form.current_password, ip, wrong, page).await?;
    if form.new_password != form.confirm_password {
        return Ok(refuse("The new passwords do not match."));
    }
    if let Err(why) = check_new_password(&user.username, &form.new_password) {
        return Ok(refuse(why));
    }
    let accounts = directory.accounts(auth, session.manager().store());
    let ended =
        accounts.set_password(&user.username, form.new_password.clone(), Some(session.handle())).await?;
    session.rotate().await?;
    // The password was just proved.
    let mut state = super::guards::auth_state(&session);
    state.confirmed_at = portal.now();
    super::guards::save_auth_state(&session, &state).await?;
    log::info!("password changed: user {:?}, ended {ended} other sessions", user.username);
    metrics.ended(Ended::Revoke, ended);
    Ok(Reply::Flash(Flash::success(Redirect::to("/user"), "Password changed")))
}

#[post("/account/password", rank = 2)]
pub fn change_password_anonymous() -> Redirect {
    Redirect::to("/login")
}

/// This area's routes.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![password_form, password_form_anonymous, change_password, change_password_anonymous,]
}
