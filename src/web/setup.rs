//! `/setup`: the first account, reachable only through a one-time link
//! printed at start-up while no account exists.

use std::sync::Mutex;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::form::{Form, FromForm};
use rocket::http::uri::Origin;
use rocket::http::{CookieJar, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::{get, post, State};
use rocket::{Data, Request};

use super::{csrf, pages, Directory, Portal, Reply, WebError, WebResult};
use crate::auth::password::check_new_password;
use crate::auth::users::{self, check_username};
use crate::auth::Authenticator;
use crate::session::{constant_time_eq, Sessions, Token};

/// The one-time setup token; `None` once an account exists.
#[derive(Default)]
pub struct SetupToken(Mutex<Option<String>>);

impl SetupToken {
    /// A fresh token: no account exists yet.
    pub fn new() -> SetupToken {
        SetupToken(Mutex::new(Some(Token::generate().encode())))
    }

    /// The token, while the setup page is open.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }

    fn matches(&self, submitted: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), submitted.as_bytes()))
    }

    fn clear(&self) {
        *self.0.lock().unwrap() = None;
    }
}

/// What `/setup` answers once it is closed, or to a wrong token.
fn closed() -> WebError {
    WebError::refused(Status::NotFound, "There is nothing here.")
}

/// The setup page is open only with the right token and while no user exists.
async fn open(directory: &Directory, link: &SetupToken, token: &str) -> WebResult<()> {
    if !link.matches(token) {
        return Err(closed());
    }
    if users::count(&directory.storage).await? > 0 {
        link.clear();
        return Err(closed());
    }
    Ok(())
}

fn form_page(
    status: Status,
    jar: &CookieJar<'_>,
    portal: &Portal,
    token: &str,
    username: &str,
    error: Option<&str>,
) -> Reply {
    let csrf_token = csrf::anonymous(jar, portal.cookie_secure, portal.now());
    let page = pages::Setup { notice: None, error, csrf_token: &csrf_token, token, username };
    Reply::page(status, pages::render(page))
}

/// The `token` of a `GET /setup?token=...` link, moved out of the URI
/// before Rocket logs the request ([`HideSetupToken`]).
#[derive(Clone)]
pub struct LinkToken(Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for LinkToken {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(req.local_cache(|| LinkToken(None)).clone())
    }
}

/// Takes the query off `GET /setup` before the request is logged (Rocket
/// logs each request's URI, query included, at the `normal` level), keeping
/// its token for [`setup_form`]: the one-time token reaches no log.
pub struct HideSetupToken;

#[rocket::async_trait]
impl Fairing for HideSetupToken {
    fn info(&self) -> Info {
        Info { name: "setup token out of the request log", kind: Kind::Request }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        if req.uri().path() != "/setup" || req.uri().query().is_none() {
            return;
        }
        let token = req
            .uri()
            .query()
            .and_then(|q| q.segments().find(|(name, _)| *name == "token").map(|(_, value)| value.to_owned()));
        req.local_cache(|| LinkToken(token));
        req.set_uri(Origin::parse("/setup").expect("a valid path"));
    }
}

#[get("/setup")]
pub async fn setup_form(
    link: LinkToken,
    jar: &CookieJar<'_>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    setup: &State<SetupToken>,
) -> WebResult {
    let token = link.0.unwrap_or_default();
    open(directory, setup, &token).await?;
    Ok(form_page(Status::Ok, jar, portal, &token, "", None))
}

#[derive(FromForm)]
pub struct SetupForm {
    #[field(default = String::new())]
    token: String,
    #[field(default = String::new())]
    username: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = String::new())]
    csrf_token: String,
}

#[post("/setup", data = "<form>")]
pub async fn setup(
    _origin: csrf::SameOrigin,
    form: Form<SetupForm>,
    jar: &CookieJar<'_>,
    sessions: Sessions<'_>,
    portal: &State<Portal>,
    directory: &State<Directory>,
    auth: &State<Authenticator>,
    link: &State<SetupToken>,
) -> WebResult {
    open(directory, link, &form.token).await?;
    if !csrf::anonymous_ok(jar, portal.cookie_secure, &form.csrf_token, portal.now()) {
        let error = Some("This form has expired. Please try again.");
        return Ok(form_page(Status::Forbidden, jar, portal, &form.token, &form.username, error));
    }
    if let Err(error) =
        check_username(&form.username).and_then(|_| check_new_password(&form.username, &form.password))
    {
        return Ok(form_page(
            Status::UnprocessableEntity,
            jar,
            portal,
            &form.token,
            &form.username,
            Some(error),
        ));
    }
    let accounts = directory.accounts(auth, sessions.manager().store());
    let Some(id) = accounts.add_first(&form.username, form.password.clone()).await? else {
        link.clear();
        return Err(closed());
    };
    link.clear();
    println!("sesija: created the first account, {:?}", form.username);
    use crate::auth::state::{AuthState, Stage};
    let stage = Stage::after_password(false, auth.second_factor_required());
    let data = super::guards::new_session_data(&AuthState::after_password(stage, portal.now()));
    let session = sessions.start(id, false, data).await?;
    log::info!("setup: user {:?}, session {}", form.username, session.handle());
    csrf::forget_anonymous(jar, portal.cookie_secure);
    Ok(match stage {
        Stage::MustEnrol => Reply::to("/account/2fa"),
        Stage::Complete | Stage::SecondFactorPending => Reply::to("/user"),
    })
}

/// This area's routes.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![setup_form, setup,]
}
