//! Typed settings read through Rocket's own configuration: `Rocket.toml`
//! profiles plus `ROCKET_*` environment variables, flat keys only.

use std::path::PathBuf;
use std::time::Duration;

use rocket::figment::providers::{Env, Format, Serialized, Toml};
use rocket::figment::{Figment, Profile};
use serde::{Deserialize, Serialize};

use crate::auth::access::{DefaultPolicy, Rule, Rules};
use crate::session::SessionConfig;

use crate::session::cookies::COOKIE_NAMES;

/// Upper bound of `session_cache_capacity` (about 2 GiB of entries at most).
pub const MAX_CACHE_CAPACITY: i64 = 10_000_000;

/// sesija's own keys, with the seed tutorial's 5-day idle lifetime as default.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// Holds `sesija.db` and `secret.key`.
    pub data_dir: PathBuf,
    /// `postgres://USER@HOST:PORT/DB`: accounts and sessions in PostgreSQL,
    /// shared by every instance; unset, SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Seconds an unused session lives (sliding).
    pub session_idle_timeout: i64,
    /// Seconds a session lives at most, whatever its use.
    pub session_absolute_timeout: i64,
    /// Least seconds between two writes of a session's deadline.
    pub session_touch_interval: i64,
    /// Seconds between two runs of the purge.
    pub session_purge_interval: i64,
    /// Most sessions kept in memory in front of SQLite; 0 turns the cache off.
    pub session_cache_capacity: i64,
    /// Cookies are Secure (and `__Host-`/`__Secure-` named): behind HTTPS.
    pub cookie_secure: bool,
    /// Wrong passwords per name and address before a lockout.
    pub login_max_failures: i64,
    /// Seconds the lockout lasts.
    pub login_lockout: i64,
    /// Failed logins from one address (IPv6: one /64) over all user names
    /// within an hour, then 429 for every name.
    pub login_max_failures_per_ip: i64,
    /// Every account must set up a second factor at its next login.
    pub require_2fa: bool,
    /// Seconds a login may wait for its second-factor code.
    pub two_factor_pending_timeout: i64,
    /// Serve `/metrics` (OpenMetrics text format).
    pub metrics: bool,
    /// The portal's address as browsers reach it; default `http://ADDRESS:PORT`.
    pub public_url: Option<String>,
    /// The session cookie's `Domain`: every subdomain shares the session.
    pub cookie_domain: Option<String>,
    /// Forward-auth rules, first match wins.
    pub access: Vec<Rule>,
    /// What hosts no `access` rule matches get.
    pub access_default: DefaultPolicy,
}

/// `public_url`, parsed: what login links handed to proxies are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://auth.example.com` (no trailing slash, no path).
    pub origin: String,
    /// Whether it is https.
    pub https: bool,
    /// Lower-case, IDNA applied, no trailing dot.
    pub host: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: "data".into(),
            database_url: None,
            session_idle_timeout: 432_000,
            session_absolute_timeout: 2_592_000,
            session_touch_interval: 60,
            session_purge_interval: 300,
            session_cache_capacity: 10_000,
            cookie_secure: false,
            login_max_failures: 5,
            login_lockout: 900,
            login_max_failures_per_ip: 100,
            require_2fa: false,
            two_factor_pending_timeout: 300,
            metrics: false,
            public_url: None,
            cookie_domain: None,
            access: Vec::new(),
            access_default: DefaultPolicy::Allow,
        }
    }
}

/// Whether `host` is `domain` or one of its subdomains (a real dot
/// boundary: `evilexample.com` is not in `example.com`). Both lower-case.
pub fn in_domain(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
}

/// A configuration value that cannot be used, naming its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Rocket's figment with sesija's defaults beneath it. Unlike Rocket's own
/// default, the client IP comes from the socket unless the operator names a
/// proxy header (`ip_header`), so nobody dodges the login throttle with a
/// forged `X-Real-IP`; and answers carry no `Server` header (`ident`): it
/// tells a scanner what runs here, and costs every answer, the proxies'
/// checks included, a header.
pub fn figment() -> Figment {
    Figment::from(rocket::Config::default())
        .merge(Serialized::defaults(Settings::default()))
        .merge(("ip_header", false))
        .merge(("ident", false))
        .merge(Toml::file(Env::var_or("ROCKET_CONFIG", "Rocket.toml")).nested())
        .merge(Env::prefixed("ROCKET_").ignore(&["PROFILE"]).global())
        .select(Profile::from_env_or("ROCKET_PROFILE", rocket::Config::DEFAULT_PROFILE))
}

impl Settings {
    /// Reads and checks the settings. Any unusable value is an error that
    /// names its key.
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(|e| {
            let e = e.into_iter().next().expect("figment errors are never empty");
            // A nested value (an `access` rule) is named by its key.
            match (e.path.first(), e.path.last()) {
                (Some(key), Some(last)) if key != last => {
                    ConfigError(format!("`{key}`: `{last}`: {}", e.kind))
                }
                (Some(key), _) => ConfigError(format!("`{key}`: {}", e.kind)),
                (None, _) => ConfigError(e.to_string()),
            }
        })?;
        settings.validate()?;
        let mut settings = settings;
        if settings.public_url.is_none() {
            let rocket: rocket::Config = figment.extract().unwrap_or_default();
            let host = match rocket.address {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            settings.public_url = Some(format!("http://{host}:{}", rocket.port));
        }
        settings.public()?;
        settings.rules()?;
        Ok(settings)
    }

    /// `public_url` parsed, and checked against `cookie_domain`.
    pub fn public(&self) -> Result<PublicUrl, ConfigError> {
        let text = self.public_url.as_deref().unwrap_or("http://127.0.0.1:8000");
        let bad = |why: &str| ConfigError(format!("`public_url` {why} (got {text:?})"));
        let url = url::Url::parse(text).map_err(|_| bad("must be an absolute http(s) URL"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("must start with http:// or https://")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not hold a user name or password"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must be an origin only, with no path, query or fragment"));
        }
        let host = url.host_str().ok_or_else(|| bad("must name a host"))?.trim_end_matches('.').to_owned();
        if let Some(domain) = self.cookie_domain()? {
            if !in_domain(&host, &domain) {
                return Err(ConfigError(format!(
                    "`public_url` host {host} is outside `cookie_domain` {domain}: the portal would not see its own cookie"
                )));
            }
        }
        let origin = url.origin().ascii_serialization();
        Ok(PublicUrl { origin, https, host })
    }

    /// `cookie_domain`, lower-cased, without a leading dot; refused when it
    /// is an IP address or a public suffix (`com`, `co.uk`), where a
    /// browser would not set it or every site under it would get it.
    pub fn cookie_domain(&self) -> Result<Option<String>, ConfigError> {
        let Some(text) = self.cookie_domain.as_deref() else { return Ok(None) };
        let domain = text.trim().trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
        let bad = |why: &str| ConfigError(format!("`cookie_domain` {why} (got {text:?})"));
        if domain.is_empty() {
            return Err(bad("must not be empty"));
        }
        if domain.parse::<std::net::IpAddr>().is_ok() || domain.starts_with('[') {
            return Err(bad("must be a domain name, not an IP address"));
        }
        if !domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(bad("must be a plain (ASCII or punycode) domain name"));
        }
        match psl::suffix(domain.as_bytes()) {
            Some(suffix) if suffix.as_bytes() == domain.as_bytes() => {
                Err(bad("is a public suffix: every site under it would receive the session cookie"))
            }
            _ if !domain.contains('.') => Err(bad("must have at least two labels")),
            _ => Ok(Some(domain)),
        }
    }

    /// The `access` rules with `access_default`.
    pub fn rules(&self) -> Result<Rules, ConfigError> {
        Rules::new(self.access.clone(), self.access_default)
            .map_err(|e| ConfigError(format!("`access`: {e}")))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("session_idle_timeout", self.session_idle_timeout),
            ("session_absolute_timeout", self.session_absolute_timeout),
            ("session_purge_interval", self.session_purge_interval),
            ("login_max_failures", self.login_max_failures),
            ("login_lockout", self.login_lockout),
            ("login_max_failures_per_ip", self.login_max_failures_per_ip),
            ("two_factor_pending_timeout", self.two_factor_pending_timeout),
        ];
        for (key, value) in positive {
            if value <= 0 {
                return Err(ConfigError(format!("`{key}` must be greater than 0 (got {value})")));
            }
        }
        if self.session_touch_interval < 0 {
            return Err(ConfigError(format!(
                "`session_touch_interval` must not be negative (got {})",
                self.session_touch_interval
            )));
        }
        if !(0..=MAX_CACHE_CAPACITY).contains(&self.session_cache_capacity) {
            return Err(ConfigError(format!(
                "`session_cache_capacity` must be between 0 and {MAX_CACHE_CAPACITY} (got {})",
                self.session_cache_capacity
            )));
        }
        if self.session_idle_timeout > self.session_absolute_timeout {
            return Err(ConfigError(format!(
                "`session_idle_timeout` ({}) must not exceed `session_absolute_timeout` ({})",
                self.session_idle_timeout, self.session_absolute_timeout
            )));
        }
        if self.session_touch_interval >= self.session_idle_timeout {
            return Err(ConfigError(format!(
                "`session_touch_interval` ({}) must be shorter than `session_idle_timeout` ({})",
                self.session_touch_interval, self.session_idle_timeout
            )));
        }
        if let Some(url) = &self.database_url {
            // Never echo the URL: it may hold a password.
            let shown = crate::storage::redacted(url);
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {}
                Ok(_) => {
                    return Err(ConfigError(format!(
                        "`database_url` must be a postgres:// URL (got {shown}); leave it unset for SQLite"
                    )))
                }
                Err(e) => return Err(ConfigError(format!("`database_url` is not a URL: {e}"))),
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("`data_dir` must not be empty".into()));
        }
        Ok(())
    }

    /// The SQLite database in `data_dir`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("sesija.db")
    }

    /// The cookie key file in `data_dir`.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }

    /// `session_cache_capacity` as a size (validated: never negative).
    pub fn cache_capacity(&self) -> usize {
        usize::try_from(self.session_cache_capacity).unwrap_or(0)
    }

    /// Index in [`COOKIE_NAMES`] of the session cookie's name: `sesija`,
    /// `__Host-sesija` with `cookie_secure`, `__Secure-sesija` with
    /// `cookie_secure` and a `cookie_domain`.
    pub fn cookie_name_index(&self) -> usize {
        match (self.cookie_secure, self.cookie_domain.is_some()) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        }
    }

    /// The session layer's settings. `switched_at`: when the server first
    /// ran with the current cookie name (see [`crate::storage::Storage::setting_since`]).
    pub fn session_config(&self, switched_at: i64) -> SessionConfig {
        // The name is part of what a private cookie authenticates, so a
        // cookie issued before the name changed is read under its old name
        // and re-issued under the new one; only for sessions from before
        // the switch, so a cookie planted under an old name later (a plain
        // cookie beside a `__Host-` one) logs nobody in.
        let current = self.cookie_name_index();
        let others =
            COOKIE_NAMES.iter().enumerate().filter(|(i, _)| *i != current).map(|(_, n)| n.to_string());
        SessionConfig {
            cookie_name: COOKIE_NAMES[current].into(),
            accept_names: others.collect(),
            accept_names_created_until: switched_at,
            cookie_domain: self.cookie_domain().ok().flatten(),
            idle_timeout: self.session_idle_timeout,
            absolute_timeout: self.session_absolute_timeout,
            touch_interval: self.session_touch_interval,
            purge_interval: Duration::from_secs(self.session_purge_interval as u64),
            secure: self.cookie_secure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(key: &str, value: impl Serialize) -> Result<Settings, ConfigError> {
        Settings::from_figment(&Figment::from(Serialized::defaults(Settings::default())).merge((key, value)))
    }

    #[test]
    fn defaults_are_the_seed_lifetime() {
        let s = Settings::from_figment(&Figment::new()).unwrap();
        assert_eq!(s.session_idle_timeout, 5 * 24 * 3600);
        assert_eq!(s.data_dir, PathBuf::from("data"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("session_idle_timeout", -1),
            ("session_idle_timeout", 0),
            ("session_absolute_timeout", 0),
            ("session_purge_interval", 0),
            ("session_touch_interval", -5),
            ("login_max_failures", 0),
            ("login_lockout", -3),
            ("login_max_failures_per_ip", 0),
            ("two_factor_pending_timeout", 0),
            ("session_cache_capacity", -1),
            ("session_cache_capacity", 10_000_001),
        ] {
            let err = with(key, value).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = with("session_idle_timeout", 3_000_000).unwrap_err().to_string();
        assert!(err.contains("session_idle_timeout") && err.contains("session_absolute_timeout"), "{err}");
        let err = with("session_touch_interval", "soon").unwrap_err().to_string();
        assert!(err.contains("session_touch_interval"), "{err}");
        let err = with("cookie_secure", "maybe").unwrap_err().to_string();
        assert!(err.contains("cookie_secure"), "{err}");
    }
}
