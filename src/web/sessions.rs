//! `/sessions`: where you're logged in, and ending sessions.

use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, State};

use super::{csrf, device, pages, App, Metrics, Notice, Reply};
use crate::session::{now, Session, SessionError};

#[get("/sessions")]
pub async fn list(session: Session<'_>, flash: Option<FlashMessage<'_>>) -> Reply {
    let now = now();
    let records = match session.manager().store().list_for_user(session.user_id(), now).await {
        Ok(records) => records,
        Err(e) => {
            log::error!("sessions page: {e}");
            return Reply::unavailable();
        }
    };
    let Ok(csrf_token) = csrf::of_session(&session).await else { return Reply::unavailable() };
    let sessions = records
        .iter()
        .map(|r| pages::SessionRow {
            current: r.handle == session.handle(),
            handle: r.handle.clone(),
            device: device::describe(r.user_agent.as_deref()),
            ip: r.ip.clone().unwrap_or_else(|| "unknown".into()),
            signed_in: device::date(r.created_at),
            last_active: device::ago(r.last_seen_at, now),
            remembered: r.persistent,
        })
        .collect();
    let page = pages::Sessions { notice: Notice::from_flash(flash), sessions, csrf_token: &csrf_token };
    Reply::page(Status::Ok, pages::render(page))
}

#[derive(FromForm)]
pub struct RevokeForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    handle: String,
}

#[post("/sessions/revoke", data = "<form>")]
pub async fn revoke(session: Session<'_>, form: Form<RevokeForm>, app: &State<App>) -> Reply {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Reply::error(Status::Forbidden, super::BAD_FORM);
    }
    if form.handle == session.handle() {
        let handle = session.handle().to_owned();
        return match session.destroy().await {
            Ok(()) => {
                log::info!("session {handle} ended by its owner");
                Metrics::count(&app.metrics.ended_revoke, 1);
                Reply::Flash(Flash::success(Redirect::to("/login"), "Session ended"))
            }
            Err(_) => Reply::unavailable(),
        };
    }
    match session.manager().store().delete_handle(&form.handle, Some(session.user_id())).await {
        Ok(true) => {
            Metrics::count(&app.metrics.ended_revoke, 1);
            log::info!(
                "session {} ended by user {} from session {}",
                form.handle,
                session.user_id(),
                session.handle()
            );
            Reply::Flash(Flash::success(Redirect::to("/sessions"), "Session ended"))
        }
        // Not this user's, or no such session: the same answer.
        Ok(false) => Reply::error(Status::NotFound, "There is no such session."),
        Err(e) => {
            log::error!("revoke: {e}");
            Reply::unavailable()
        }
    }
}

#[derive(FromForm)]
pub struct CsrfOnly {
    #[field(default = String::new())]
    csrf_token: String,
}

#[post("/sessions/revoke-others", data = "<form>")]
pub async fn revoke_others(session: Session<'_>, form: Form<CsrfOnly>, app: &State<App>) -> Reply {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Reply::error(Status::Forbidden, super::BAD_FORM);
    }
    match session.manager().store().delete_for_user(session.user_id(), Some(session.handle())).await {
        Ok(n) => {
            Metrics::count(&app.metrics.ended_revoke, n);
            log::info!(
                "user {} ended {n} other sessions from session {}",
                session.user_id(),
                session.handle()
            );
            let message = format!("Logged out of {n} other session{}", if n == 1 { "" } else { "s" });
            Reply::Flash(Flash::success(Redirect::to("/sessions"), message))
        }
        Err(e) => {
            log::error!("revoke others: {e}");
            Reply::unavailable()
        }
    }
}

/// Maps a failed session operation to the page a person should see.
pub fn session_failure(e: SessionError) -> Reply {
    match e {
        SessionError::Ended => Reply::to("/login"),
        e => {
            log::error!("{e}");
            Reply::unavailable()
        }
    }
}

#[get("/sessions", rank = 2)]
pub fn list_anonymous() -> Redirect {
    Redirect::to("/login")
}

#[post("/sessions/revoke", rank = 2)]
pub fn revoke_anonymous() -> Redirect {
    Redirect::to("/login")
}

#[post("/sessions/revoke-others", rank = 2)]
pub fn revoke_others_anonymous() -> Redirect {
    Redirect::to("/login")
}
