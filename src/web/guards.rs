//! A session's login state as the pages see it: where it is kept in the
//! session's data, and [`SignedIn`], the guard of every page of someone
//! logged in all the way.
//!
//! The state itself ([`AuthState`]) is the login core's (`auth::state`);
//! this module owns only its place in the session. Sessions stored by the
//! earlier release kept loose values instead (`factor`, `auth_at`,
//! `totp_setup`): they are read once, and replaced by the typed value at
//! the first change, so nobody is logged out by the upgrade.

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::state::{AuthState, Stage};
use crate::session::{Session, SessionError};

/// Session value: the login's [`AuthState`].
const AUTH_KEY: &str = "auth";
/// What sessions of the earlier release kept instead, in
/// [`AuthState::from_earlier_release`]'s order.
const EARLIER_KEYS: [&str; 3] = ["factor", "auth_at", "totp_setup"];

/// The login state held in a session's `values`.
fn read(values: &Map<String, Value>, created_at: i64) -> AuthState {
    match values.get(AUTH_KEY) {
        // Unreadable (another release's shape, a hand edit): opens nothing.
        Some(value) => AuthState::deserialize(value).unwrap_or(AuthState {
            stage: Stage::SecondFactorPending,
            methods: Vec::new(),
            auth_at: created_at,
            confirmed_at: 0,
            enrolling: None,
        }),
        None => {
            let [factor, auth_at, setup] = EARLIER_KEYS.map(|key| values.get(key));
            AuthState::from_earlier_release(
                factor.and_then(Value::as_str),
                auth_at.and_then(Value::as_i64),
                setup.and_then(Value::as_str).map(str::to_owned),
                created_at,
            )
        }
    }
}

/// The login state of `session`: the one value picked out of the stored
/// data (every forward-auth check reads it), all of them only when it is
/// not there or unreadable.
pub fn auth_state(session: &Session<'_>) -> AuthState {
    if let Some(state) = session.get::<AuthState>(AUTH_KEY) {
        return state;
    }
    let created_at = session.record().created_at;
    session.with_values(|values| read(values, created_at))
}

/// The login state of a stored session's data (JSON text), for listings.
pub fn auth_state_of_data(data: &str, created_at: i64) -> AuthState {
    read(&serde_json::from_str(data).unwrap_or_default(), created_at)
}

/// Stores `state` as `session`'s login state (one write, dropping the
/// earlier release's loose values).
pub async fn save_auth_state(session: &Session<'_>, state: &AuthState) -> Result<(), SessionError> {
    let value = serde_json::to_value(state)?;
    session
        .update(|data| {
            data.insert(AUTH_KEY.to_owned(), value);
            for key in EARLIER_KEYS {
                data.remove(key);
            }
        })
        .await
}

/// What a new session starts with: its CSRF token and its login state.
pub fn new_session_data(state: &AuthState) -> Map<String, Value> {
    let mut data = super::csrf::new_session_token();
    if let Ok(value) = serde_json::to_value(state) {
        data.insert(AUTH_KEY.to_owned(), value);
    }
    data
}

/// The session of someone logged in all the way: every factor the account
/// needs is done. Forwards (401) otherwise, so the `rank = 2` route of a
/// page sends the browser on to `/login`, which knows where it stands.
pub struct SignedIn<'r> {
    /// The session.
    pub session: Session<'r>,
    state: AuthState,
}

impl SignedIn<'_> {
    /// How the session got in, as the guard read it.
    pub fn state(&self) -> &AuthState {
        &self.state
    }
}

impl<'r> std::ops::Deref for SignedIn<'r> {
    type Target = Session<'r>;
    fn deref(&self) -> &Session<'r> {
        &self.session
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SignedIn<'r> {
    type Error = SessionError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        match Session::from_request(req).await {
            Outcome::Success(session) => {
                let state = auth_state(&session);
                match state.opens() {
                    true => Outcome::Success(SignedIn { session, state }),
                    false => Outcome::Forward(Status::Unauthorized),
                }
            }
            Outcome::Forward(status) => Outcome::Forward(status),
            Outcome::Error(e) => Outcome::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::state::Method;

    #[test]
    fn stored_states_are_read_whatever_release_wrote_them() {
        let now = AuthState::after_second_factor(Method::Totp, 9);
        let data = serde_json::to_string(&new_session_data(&now)).unwrap();
        assert_eq!(auth_state_of_data(&data, 1), now);
        let earlier = auth_state_of_data(r#"{"csrf":"x","auth_at":5,"factor":"passed"}"#, 3);
        assert_eq!(earlier, AuthState::from_earlier_release(Some("passed"), Some(5), None, 3));
        assert!(auth_state_of_data(r#"{"csrf":"x","auth_at":5}"#, 3).opens());
        assert!(!auth_state_of_data(r#"{"auth":{"stage":"complete"}}"#, 3).opens(), "unreadable: closed");
        assert!(!auth_state_of_data(r#"{"auth":"complete password"}"#, 3).opens(), "unreadable: closed");
        assert!(!auth_state_of_data(r#"{"auth":7,"factor":null}"#, 3).opens());
    }
}
