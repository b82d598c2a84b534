//! `/user`: the page a logged-in person lands on.

use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, State};

use super::guards::SignedIn;
use super::{csrf, pages, Directory, Notice, Portal, Reply, WebError, WebResult};
use crate::auth::access::Who;
use crate::session::Sessions;

#[get("/user")]
pub async fn user(
    session: SignedIn<'_>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    flash: Option<FlashMessage<'_>>,
) -> WebResult {
    // Who this is comes from the identity cache (no query once warm); it
    // also holds the groups that decide which apps to list.
    let Some(identity) = directory.identities.get(session.user_id()).await? else {
        // The account is gone: so is this session.
        let _ = session.session.destroy().await;
        return Err(WebError::LoggedOut);
    };
    let csrf_token = csrf::of_session(&session).await?;
    let second_factor = session.state().second_factor();
    let who = Who { username: &identity.username, groups: &identity.groups, second_factor };
    let page = pages::User {
        notice: Notice::from_flash(flash),
        username: &identity.username,
        csrf_token: &csrf_token,
        persistent: session.record().persistent,
        apps: portal.rules.apps_for(&who),
    };
    Ok(Reply::page(Status::Ok, pages::render(page)))
}

/// Not logged in. A session cookie that no longer opens a live session means
/// the session expired (or was ended elsewhere): say so.
#[get("/user", rank = 2)]
pub fn user_anonymous(sessions: Sessions<'_>) -> Reply {
    if sessions.cookie_sent() {
        Reply::Flash(Flash::warning(Redirect::to("/login"), "Your session has expired. Please log in again."))
    } else {
        Reply::to("/login")
    }
}

/// This area's routes.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![user, user_anonymous,]
}
