//! `/sessions`: where you're logged in, and ending sessions.

use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::request::FlashMessage;
use rocket::response::{Flash, Redirect};
use rocket::{get, post, State};
use std::sync::Arc;

use std::net::IpAddr;

use super::guards::{auth_state, auth_state_of_data, save_auth_state, SignedIn};
use super::metrics::Ended;
use super::{csrf, device, pages, Directory, Metrics, Notice, Portal, Reply, WebError, WebResult};
use crate::auth::state::SUDO_WINDOW;
use crate::auth::Authenticator;
use crate::session::{Ending, Owner, Session};

/// What a password confirmation is for: where its form posts, and what
/// the page says.
pub(super) struct Confirming<'a> {
    /// Where the confirmation form posts.
    pub action: &'a str,
    /// The session to end, for `/sessions/revoke`.
    pub handle: Option<&'a str>,
    /// Where to go after the action, carried through the form.
    pub rd: &'a str,
    /// The action in words, "Ending sessions".
    pub what: &'a str,
    /// The page the form offers to go back to.
    pub back: &'a str,
}

/// What ending sessions, or changing how the account logs in, needs:
/// nothing within [`SUDO_WINDOW`] of the last proved password, else the
/// password in the form (checked and throttled like a login). `Err` is the
/// page to answer with: the confirmation form (403 without a password, 422
/// with a wrong one) or 429.
pub(super) async fn sudo(
    session: &Session<'_>,
    portal: &Portal,
    directory: &Directory,
    auth: &Authenticator,
    ip: Option<IpAddr>,
    password: &str,
    confirming: Confirming<'_>,
) -> WebResult<()> {
    let now = portal.now();
    let mut state = auth_state(session);
    if state.recently_confirmed(now) {
        return Ok(());
    }
    let csrf_token = csrf::of_session(session).await?;
    let form = |error: Option<&str>| {
        let minutes = SUDO_WINDOW / 60;
        pages::render(pages::Confirm {
            notice: None,
            error,
            action: confirming.action,
            handle: confirming.handle,
            rd: confirming.rd,
            what: confirming.what,
            back: confirming.back,
            csrf_token: &csrf_token,
            minutes,
        })
    };
    if password.is_empty() {
        return Err(WebError::page(Status::Forbidden, form(None)));
    }
    let user = directory.account(session.user_id()).await?;
    let wrong = "The password is wrong.";
    super::confirm_password(auth, &user, password, ip, wrong, |message| form(Some(message))).await?;
    state.confirmed_at = now;
    Ok(save_auth_state(session, &state).await?)
}

/// [`Confirming`] for ending sessions from `action`.
fn ending_sessions<'a>(action: &'a str, handle: Option<&'a str>) -> Confirming<'a> {
    Confirming { action, handle, rd: "", what: "Ending sessions", back: "/sessions" }
}

#[get("/sessions")]
pub async fn list(session: SignedIn<'_>, flash: Option<FlashMessage<'_>>) -> WebResult {
    let now = session.manager().now();
    let mut records = session.manager().store().list(Owner::User(session.user_id()), now).await?;
    // The session asking is active now, whatever its stored deadline says.
    if let Some(at) = records.iter().position(|r| r.handle == session.handle()) {
        let current = records.remove(at);
        records.insert(0, current);
    }
    let csrf_token = csrf::of_session(&session).await?;
    let sessions = records
        .iter()
        .map(|r| (r, auth_state_of_data(&r.data, r.created_at)))
        .map(|(r, state)| pages::SessionRow {
            current: r.handle == session.handle(),
            handle: r.handle.clone(),
            device: device::describe(r.user_agent.as_deref()),
            ip: r.ip.clone().unwrap_or_else(|| "unknown".into()),
            signed_in: device::date(r.created_at),
            last_active: device::ago(r.last_seen_at, now),
            remembered: r.persistent,
            second_factor: state.opens() && state.second_factor(),
            pending: !state.opens(),
        })
        .collect();
    let page = pages::Sessions {
        notice: Notice::from_flash(flash),
        sessions,
        csrf_token: &csrf_token,
        needs_password: !session.state().recently_confirmed(now),
    };
    Ok(Reply::page(Status::Ok, pages::render(page)))
}

#[derive(FromForm)]
pub struct RevokeForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    handle: String,
    #[field(default = String::new())]
    password: String,
}

#[post("/sessions/revoke", data = "<form>")]
pub async fn revoke(
    _origin: csrf::SameOrigin,
    session: SignedIn<'_>,
    form: Form<RevokeForm>,
    metrics: &State<Arc<Metrics>>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    auth: &State<Authenticator>,
    ip: Option<IpAddr>,
) -> WebResult {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(WebError::refused(Status::Forbidden, super::BAD_FORM));
    }
    if form.handle == session.handle() {
        // Ending this session is a logout.
        let handle = session.handle().to_owned();
        session.session.destroy().await?;
        log::info!("session {handle} ended by its owner");
        metrics.ended(Ended::Revoke, 1);
        return Ok(Reply::Flash(Flash::success(Redirect::to("/login"), "Session ended")));
    }
    // Ending another session needs a recent password.
    let confirming = ending_sessions("/sessions/revoke", Some(&form.handle));
    sudo(&session, portal, directory, auth, ip, &form.password, confirming).await?;
    let ending = Ending::Handle { handle: &form.handle, owner: Some(session.user_id()) };
    if session.manager().store().end(ending).await? == 0 {
        // Not this user's, or no such session: the same answer.
        return Err(WebError::refused(Status::NotFound, "There is no such session."));
    }
    metrics.ended(Ended::Revoke, 1);
    log::info!(
        "session {} ended by user {} from session {}",
        form.handle,
        session.user_id(),
        session.handle()
    );
    Ok(Reply::Flash(Flash::success(Redirect::to("/sessions"), "Session ended")))
}

#[derive(FromForm)]
pub struct RevokeOthersForm {
    #[field(default = String::new())]
    csrf_token: String,
    #[field(default = String::new())]
    password: String,
}

#[post("/sessions/revoke-others", data = "<form>")]
pub async fn revoke_others(
    _origin: csrf::SameOrigin,
    session: SignedIn<'_>,
    form: Form<RevokeOthersForm>,
    metrics: &State<Arc<Metrics>>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    auth: &State<Authenticator>,
    ip: Option<IpAddr>,
) -> WebResult {
    if !csrf::session_ok(&session, &form.csrf_token) {
        return Err(WebError::refused(Status::Forbidden, super::BAD_FORM));
    }
    sudo(
        &session,
        portal,
        directory,
        auth,
        ip,
        &form.password,
        ending_sessions("/sessions/revoke-others", None),
    )
    .await?;
    let ending = Ending::OwnedBy { user_id: session.user_id(), keep: Some(session.handle()) };
    let n = session.manager().store().end(ending).await?;
    metrics.ended(Ended::Revoke, n);
    log::info!("user {} ended {n} other sessions from session {}", session.user_id(), session.handle());
    let message = format!("Logged out of {n} other session{}", if n == 1 { "" } else { "s" });
    Ok(Reply::Flash(Flash::success(Redirect::to("/sessions"), message)))
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

/// This area's routes.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![list, list_anonymous, revoke, revoke_others, revoke_anonymous, revoke_others_anonymous,]
}
