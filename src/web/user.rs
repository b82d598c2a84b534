//! `/user`: the page a logged-in person lands on.

use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, State};

use super::{csrf, pages, App, Notice, Reply, USER_KEY};
use crate::auth::users;
use crate::session::{Session, Sessions};

#[get("/user")]
pub async fn user(session: Session<'_>, app: &State<App>, flash: Option<FlashMessage<'_>>) -> Reply {
    // The name is kept in the session at login (accounts are never renamed,
    // and removing one ends its sessions), so this page costs one query.
    if let Some(name) = session.get::<String>(USER_KEY) {
        return user_page(&session, &name, flash).await;
    }
    let user = match users::by_id(&app.db.reader, session.user_id()).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            // The account is gone: so is this session.
            let _ = session.destroy().await;
            return Reply::to("/login");
        }
        Err(e) => {
            log::error!("user page: {e}");
            return Reply::unavailable();
        }
    };
    user_page(&session, &user.username, flash).await
}

async fn user_page(session: &Session<'_>, username: &str, flash: Option<FlashMessage<'_>>) -> Reply {
    let Ok(csrf_token) = csrf::of_session(session).await else { return Reply::unavailable() };
    let page = pages::User {
        notice: Notice::from_flash(flash),
        username,
        csrf_token: &csrf_token,
        persistent: session.record().persistent,
    };
    Reply::page(Status::Ok, pages::render(page))
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
