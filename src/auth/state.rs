//! The state of a login: the one typed value a session keeps about how it
//! was opened. Which methods proved who this is (OpenID Connect's `amr`),
//! when the login happened (`auth_time`), how far it got (complete,
//! waiting for a second factor, or made to set one up first), when the
//! password was last confirmed (the "sudo" window of sensitive actions),
//! and a second factor being set up.
//!
//! Knows nothing of sessions, cookies or HTTP: the web layer stores it in
//! the session's data; an OpenID Connect provider reads `auth_at` and
//! [`AuthState::amr`] from it, and a new way to prove who one is adds a
//! [`Method`].

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// How long a confirmed password lets a session take sensitive actions
/// (end other sessions, set up a second factor) without asking again
/// (ASVS 3.3.4).
pub const SUDO_WINDOW: i64 = 600;

/// A way of proving who one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The account's password.
    Password,
    /// A code from an authenticator app (RFC 6238).
    Totp,
    /// A single-use recovery code, in place of the authenticator.
    RecoveryCode,
}

impl Method {
    /// The method's value in OpenID Connect's `amr` claim (RFC 8176).
    pub fn amr(self) -> &'static str {
        match self {
            Method::Password => "pwd",
            Method::Totp | Method::RecoveryCode => "otp",
        }
    }

    /// Whether this is a second factor.
    pub fn is_second_factor(self) -> bool {
        !matches!(self, Method::Password)
    }
}

/// How far a login got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Every factor the account needs was given: the session opens the
    /// portal and the apps.
    Complete,
    /// The password was right; the second factor is awaited. Opens nothing
    /// but the code prompt.
    SecondFactorPending,
    /// The password was right, but a second factor is required and the
    /// account has none: opens only the set-up.
    MustEnrol,
}

impl Stage {
    /// Where a login stands once the password is right, for an account
    /// with (`two_factor`) or without a second factor, where one is
    /// `required` or not.
    pub fn after_password(two_factor: bool, required: bool) -> Stage {
        match (two_factor, required) {
            (true, _) => Stage::SecondFactorPending,
            (false, true) => Stage::MustEnrol,
            (false, false) => Stage::Complete,
        }
    }
}

/// The state of a session's login.
///
/// Stored as one short string, `STAGE METHODS AUTH_AT CONFIRMED_AT
/// [ENROLLING]` (`complete password,totp 1765000000 1765000000`): every
/// request reads it (forward-auth checks included), and a string costs the
/// session's JSON parse far less than a nested object would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthState {
    /// How far the login got.
    pub stage: Stage,
    /// The methods that passed, in order.
    pub methods: Vec<Method>,
    /// When the login happened (unix seconds).
    pub auth_at: i64,
    /// When the password was last given, at login or confirmed since.
    pub confirmed_at: i64,
    /// A second factor being set up: its secret, sealed, base64.
    pub enrolling: Option<String>,
}

impl AuthState {
    /// A login whose password was right at `now`, at `stage`.
    pub fn after_password(stage: Stage, now: i64) -> AuthState {
        AuthState { stage, methods: vec![Method::Password], auth_at: now, confirmed_at: now, enrolling: None }
    }

    /// A login completed at `now` by the password and then `method`.
    pub fn after_second_factor(method: Method, now: i64) -> AuthState {
        AuthState {
            stage: Stage::Complete,
            methods: vec![Method::Password, method],
            auth_at: now,
            confirmed_at: now,
            enrolling: None,
        }
    }

    /// Whether the session opens the portal and the apps.
    pub fn opens(&self) -> bool {
        self.stage == Stage::Complete
    }

    /// Whether a second factor passed (what `policy = "two_factor"` asks).
    pub fn second_factor(&self) -> bool {
        self.methods.iter().any(|m| m.is_second_factor())
    }

    /// Whether the password was given within [`SUDO_WINDOW`] before `now`.
    pub fn recently_confirmed(&self, now: i64) -> bool {
        self.confirmed_at <= now && now - self.confirmed_at < SUDO_WINDOW
    }

    /// The `amr` values of the methods that passed, each once.
    pub fn amr(&self) -> Vec<&'static str> {
        let mut values: Vec<&'static str> = Vec::new();
        for value in self.methods.iter().map(|m| m.amr()) {
            if !values.contains(&value) {
                values.push(value);
            }
        }
        values
    }

    /// A second factor set up on this session: the login is complete and
    /// counts it as passed (the set-up proved a code of it).
    pub fn enrolled(&mut self, method: Method) {
        self.stage = Stage::Complete;
        self.enrolling = None;
        if !self.methods.contains(&method) {
            self.methods.push(method);
        }
    }

    /// The second factor turned off: what remains is the password, and the
    /// set-up where a second factor is `required`.
    pub fn factor_removed(&mut self, required: bool) {
        self.methods.retain(|m| !m.is_second_factor());
        self.stage = if required { Stage::MustEnrol } else { Stage::Complete };
        self.enrolling = None;
    }

    /// The state of a session stored before this value existed, from the
    /// loose values it kept: its `factor` mark (none: a password login;
    /// `passed`; `enrol`; anything else waits for its code), `auth_at` (when
    /// the password was last given; absent, never recently) and the
    /// secret being set up. `created_at` stands in for the login's time.
    pub fn from_earlier_release(
        factor: Option<&str>,
        confirmed_at: Option<i64>,
        enrolling: Option<String>,
        created_at: i64,
    ) -> AuthState {
        let (stage, methods) = match factor {
            None => (Stage::Complete, vec![Method::Password]),
            Some("passed") => (Stage::Complete, vec![Method::Password, Method::Totp]),
            Some("enrol") => (Stage::MustEnrol, vec![Method::Password]),
            Some(_) => (Stage::SecondFactorPending, vec![Method::Password]),
        };
        AuthState { stage, methods, auth_at: created_at, confirmed_at: confirmed_at.unwrap_or(0), enrolling }
    }
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Totp => "totp",
            Method::RecoveryCode => "recovery_code",
        }
    }

    fn named(name: &str) -> Option<Method> {
        [Method::Password, Method::Totp, Method::RecoveryCode].into_iter().find(|m| m.name() == name)
    }
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Complete => "complete",
            Stage::SecondFactorPending => "second_factor_pending",
            Stage::MustEnrol => "must_enrol",
        }
    }

    fn named(name: &str) -> Option<Stage> {
        [Stage::Complete, Stage::SecondFactorPending, Stage::MustEnrol].into_iter().find(|s| s.name() == name)
    }
}

impl AuthState {
    /// The stored form (see the type's docs).
    fn encode(&self) -> String {
        let methods: Vec<&str> = self.methods.iter().map(|m| m.name()).collect();
        let methods = if methods.is_empty() { "-".to_owned() } else { methods.join(",") };
        let mut text = format!("{} {methods} {} {}", self.stage.name(), self.auth_at, self.confirmed_at);
        if let Some(enrolling) = &self.enrolling {
            text.push(' ');
            text.push_str(enrolling);
        }
        text
    }

    /// The state of a stored form; `None` for anything else. Read byte by
    /// byte: every forward-auth check reads it, and on strings this short
    /// the general splitting and searching cost more than the reading.
    fn decode(text: &str) -> Option<AuthState> {
        let ([stage, methods, auth_at, confirmed_at, enrolling], count) = fields::<5>(text, b' ')?;
        if count < 4 {
            return None;
        }
        let stage = Stage::named(stage)?;
        let methods = match methods {
            "-" => Vec::new(),
            names => {
                let (names, count) = fields::<8>(names, b',')?;
                names[..count].iter().map(|name| Method::named(name)).collect::<Option<Vec<_>>>()?
            }
        };
        let enrolling = (count == 5).then(|| enrolling.to_owned());
        Some(AuthState {
            stage,
            methods,
            auth_at: auth_at.parse().ok()?,
            confirmed_at: confirmed_at.parse().ok()?,
            enrolling,
        })
    }
}

/// `text` split at each `separator` into at most `N` fields, and how many
/// there are; `None` when there are more.
fn fields<const N: usize>(text: &str, separator: u8) -> Option<([&str; N], usize)> {
    let mut fields = [""; N];
    let (mut count, mut start) = (0, 0);
    for (i, b) in text.bytes().enumerate() {
        if b == separator {
            *fields.get_mut(count)? = &text[start..i];
            count += 1;
            start = i + 1;
        }
    }
    *fields.get_mut(count)? = &text[start..];
    Some((fields, count + 1))
}

impl Serialize for AuthState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for AuthState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AuthState, D::Error> {
        struct Stored;
        impl de::Visitor<'_> for Stored {
            type Value = AuthState;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a login state")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<AuthState, E> {
                AuthState::decode(text).ok_or_else(|| E::custom("not a login state"))
            }
        }
        deserializer.deserialize_str(Stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_by_password_and_code_opens_and_names_its_methods() {
        let pending = AuthState::after_password(Stage::after_password(true, false), 100);
        assert!(!pending.opens() && !pending.second_factor());
        let done = AuthState::after_second_factor(Method::RecoveryCode, 130);
        assert!(done.opens() && done.second_factor());
        assert_eq!(done.amr(), ["pwd", "otp"]);
        assert_eq!(AuthState::after_password(Stage::Complete, 1).amr(), ["pwd"]);
        assert_eq!(Stage::after_password(false, true), Stage::MustEnrol);
        assert_eq!(Stage::after_password(false, false), Stage::Complete);
    }

    #[test]
    fn the_sudo_window_runs_from_the_last_confirmation() {
        let state = AuthState::after_password(Stage::Complete, 1000);
        assert!(state.recently_confirmed(1000));
        assert!(state.recently_confirmed(1000 + SUDO_WINDOW - 1));
        assert!(!state.recently_confirmed(1000 + SUDO_WINDOW));
        assert!(!state.recently_confirmed(999), "a confirmation from the future counts for nothing");
    }

    #[test]
    fn enrolling_and_removing_a_factor_move_the_stage() {
        let mut state = AuthState::after_password(Stage::MustEnrol, 5);
        state.enrolling = Some("sealed".into());
        state.enrolled(Method::Totp);
        assert!(state.opens() && state.second_factor() && state.enrolling.is_none());
        state.factor_removed(true);
        assert_eq!((state.stage, state.methods.as_slice()), (Stage::MustEnrol, &[Method::Password][..]));
        state.factor_removed(false);
        assert!(state.opens() && !state.second_factor());
    }

    #[test]
    fn sessions_of_the_earlier_release_keep_their_standing() {
        let state = AuthState::from_earlier_release(None, Some(50), None, 40);
        assert_eq!((state.stage, state.auth_at, state.confirmed_at), (Stage::Complete, 40, 50));
        assert!(!state.second_factor());
        let state = AuthState::from_earlier_release(Some("passed"), None, None, 40);
        assert!(state.opens() && state.second_factor() && !state.recently_confirmed(10_000));
        assert_eq!(AuthState::from_earlier_release(Some("enrol"), None, None, 0).stage, Stage::MustEnrol);
        let state = AuthState::from_earlier_release(Some("pending"), None, Some("s".into()), 0);
        assert_eq!((state.stage, state.enrolling.as_deref()), (Stage::SecondFactorPending, Some("s")));
        let odd = AuthState::from_earlier_release(Some("something else"), None, None, 0);
        assert!(!odd.opens(), "an unknown mark opens nothing");
    }

    #[test]
    fn the_stored_form_round_trips() {
        let mut state = AuthState::after_second_factor(Method::Totp, 7);
        state.enrolling = Some("x".into());
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<AuthState>(&text).unwrap(), state);
        assert_eq!(text, r#""complete password,totp 7 7 x""#);
        let none =
            AuthState { methods: Vec::new(), ..AuthState::after_password(Stage::SecondFactorPending, 3) };
        assert_eq!(serde_json::from_str::<AuthState>(&serde_json::to_string(&none).unwrap()).unwrap(), none);
        let once = AuthState::after_password(Stage::Complete, 5);
        assert_eq!(serde_json::from_str::<AuthState>(r#""complete password 5 5""#).unwrap(), once);
        for bad in [
            r#""complete password 7""#,
            r#""done password 7 7""#,
            r#""complete pin 7 7""#,
            r#""complete password 7 7 x y""#,
            r#""complete password,totp,totp,totp,totp,totp,totp,totp,totp 7 7""#,
            r#""complete password, 7 7""#,
            r#""complete password x 7""#,
            r#""complete  password 7 7""#,
            r#""""#,
            "{}",
            "7",
        ] {
            assert!(serde_json::from_str::<AuthState>(bad).is_err(), "{bad}");
        }
    }
}
