//! Who may open what: the `access` rules a reverse proxy's forward-auth
//! check is decided by. Knows nothing of HTTP: it takes a host and a
//! normalised path, and a user (or nobody).
//!
//! Rules are tried in order and the first whose host and paths match wins.
//! A host is exact (`grafana.example.com`) or a wildcard (`*.example.com`:
//! any subdomain, never `example.com` itself), compared without case. A
//! path prefix matches whole segments: `/admin` matches `/admin` and
//! `/admin/users`, not `/administrator`. Paths compare case-sensitively,
//! as most apps route them; a trailing `/` in a rule is dropped at
//! start-up (`/secret/` covers `/secret` too), so the rule never misses the
//! bare path. A host written in Unicode (`bücher.example.com`) is mapped to
//! its IDNA form at start-up, the form targets are compared in. Hosts no
//! rule matches follow `access_default`.

use serde::{Deserialize, Serialize};

/// One rule of `access`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The host the rule is for: exact, or `*.domain` for any subdomain.
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Path prefixes it covers (whole segments); none: every path.
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Bypass, deny or two-factor; none: the users or groups below.
    pub policy: Option<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Users it lets in.
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Groups it lets in.
    pub groups: Vec<String>,
    /// Shown on `/user` (with `url`) to those the rule allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where the app lives, listed on `/user` with `name`.
    pub url: Option<String>,
}

/// A rule's policy when it is not "these users or groups".
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Public: no login needed.
    Bypass,
    /// Nobody.
    Deny,
    /// Only sessions that passed a second factor (of the rule's users or
    /// groups, if it names any; else of anyone logged in).
    TwoFactor,
}

/// What happens on a host no rule matches.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPolicy {
    /// Any logged-in user.
    #[default]
    Allow,
    /// Nobody.
    Deny,
}

/// Who asks.
pub struct Who<'a> {
    /// The account name.
    pub username: &'a str,
    /// The account's groups.
    pub groups: &'a [String],
    /// This session passed a second factor.
    pub second_factor: bool,
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Open to anyone, logged in or not.
    Public,
    /// Needs a login; then [`Verdict::Allowed`] or [`Verdict::Forbidden`].
    LoginRequired,
    /// Logged in and let in.
    Allowed,
    /// Logged in, but not let in (or a deny rule).
    Forbidden,
    /// Allowed once this session passes a second factor.
    SecondFactorRequired,
}

impl Rule {
    /// Why this rule is unusable, if it is (a config line names `access`).
    pub fn problem(&self) -> Option<String> {
        let host = self.host.trim();
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty() || bare.contains(['*', '/', ':', ' ']) {
            return Some(format!("host {:?} must be a host name or *.domain", self.host));
        }
        if let Some(p) = self.paths.iter().find(|p| !p.starts_with('/') || p.contains(['?', '#', '\\'])) {
            return Some(format!(
                "path {p:?} (host {:?}) must start with / and hold no ? # or \\",
                self.host
            ));
        }
        let bypass_or_deny = matches!(self.policy, Some(Policy::Bypass | Policy::Deny));
        if bypass_or_deny && !(self.users.is_empty() && self.groups.is_empty()) {
            return Some(format!("host {:?}: a bypass or deny rule names no users or groups", self.host));
        }
        if self.name.is_some() != self.url.is_some() {
            return Some(format!("host {:?}: `name` and `url` go together", self.host));
        }
        None
    }

    /// The rule as it is compared: its host in lower-case IDNA form
    /// without a trailing dot, its paths without a trailing `/`.
    fn normalised(mut self) -> Result<Rule, String> {
        let written = self.host.trim().trim_end_matches('.');
        let (wildcard, bare) = match written.strip_prefix("*.") {
            Some(bare) => ("*.", bare),
            None => ("", written),
        };
        let ascii = match url::Host::parse(bare) {
            Ok(url::Host::Domain(domain)) => domain.to_ascii_lowercase(),
            Ok(url::Host::Ipv4(ip)) if wildcard.is_empty() => ip.to_string(),
            _ => return Err(format!("host {:?} must be a host name or *.domain", self.host)),
        };
        self.host = format!("{wildcard}{ascii}");
        for path in &mut self.paths {
            while path.len() > 1 && path.ends_with('/') {
                path.pop();
            }
        }
        Ok(self)
    }

    fn matches_host(&self, host: &str) -> bool {
        let pattern = self.host.trim().trim_end_matches('.');
        match pattern.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() + 1
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
            None => host.eq_ignore_ascii_case(pattern),
        }
    }

    fn matches_path(&self, path: &str) -> bool {
        self.paths.is_empty()
            || self.paths.iter().any(|prefix| {
                path.starts_with(prefix.as_str())
                    && (prefix.ends_with('/')
                        || path.len() == prefix.len()
                        || path.as_bytes()[prefix.len()] == b'/')
            })
    }

    /// Whether this rule lets `who` in (a bypass lets anyone in), second
    /// factor aside.
    pub fn allows(&self, who: &Who<'_>) -> bool {
        match self.policy {
            Some(Policy::Bypass) => true,
            Some(Policy::Deny) => false,
            None | Some(Policy::TwoFactor) if self.users.is_empty() && self.groups.is_empty() => true,
            None | Some(Policy::TwoFactor) => {
                self.users.iter().any(|u| u == who.username)
                    || self.groups.iter().any(|g| who.groups.iter().any(|mine| mine == g))
            }
        }
    }
}

/// The rules and the default, checked once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    default: DefaultPolicy,
}

impl Rules {
    /// The rules, checked (a line names the first unusable one), hosts in IDNA form.
    pub fn new(rules: Vec<Rule>, default: DefaultPolicy) -> Result<Rules, String> {
        if let Some(problem) = rules.iter().find_map(Rule::problem) {
            return Err(problem);
        }
        let rules = rules.into_iter().map(Rule::normalised).collect::<Result<_, _>>()?;
        Ok(Rules { rules, default })
    }

    /// The first rule matching `host` (lower-case, no port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches_host(host) && r.matches_path(path))
    }

    /// The verdict for `who` (or an anonymous visitor) at `host` + `path`.
    pub fn decide(&self, host: &str, path: &str, who: Option<&Who<'_>>) -> Verdict {
        let allowed = match self.find(host, path) {
            Some(rule) if rule.policy == Some(Policy::Bypass) => return Verdict::Public,
            Some(rule) if rule.policy == Some(Policy::Deny) => return Verdict::Forbidden,
            Some(rule) if rule.policy == Some(Policy::TwoFactor) => match who {
                Some(w) if rule.allows(w) && !w.second_factor => return Verdict::SecondFactorRequired,
                _ => who.map(|w| rule.allows(w)),
            },
            Some(rule) => who.map(|w| rule.allows(w)),
            None if self.default == DefaultPolicy::Deny => return Verdict::Forbidden,
            None => who.map(|_| true),
        };
        match allowed {
            None => Verdict::LoginRequired,
            Some(true) => Verdict::Allowed,
            Some(false) => Verdict::Forbidden,
        }
    }

    /// The apps to list on `who`'s page: rules with a name and a url that
    /// let them in.
    pub fn apps_for(&self, who: &Who<'_>) -> Vec<(&str, &str)> {
        self.rules
            .iter()
            .filter(|r| r.allows(who))
            .filter_map(|r| Some((r.name.as_deref()?, r.url.as_deref()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str) -> Rule {
        Rule { host: host.into(), ..Rule::default() }
    }

    #[test]
    fn first_match_wins_and_every_kind_decides() {
        let rules = Rules::new(
            vec![
                Rule {
                    paths: vec!["/public".into()],
                    policy: Some(Policy::Bypass),
                    ..rule("wiki.example.com")
                },
                Rule {
                    paths: vec!["/admin".into()],
                    groups: vec!["admins".into()],
                    ..rule("wiki.example.com")
                },
                Rule { policy: Some(Policy::Deny), ..rule("secret.example.com") },
                Rule { users: vec!["bob".into()], ..rule("*.bob.example.com") },
                rule("wiki.example.com"),
            ],
            DefaultPolicy::Deny,
        )
        .unwrap();
        let alice = Who { username: "alice", groups: &["admins".to_owned()], second_factor: false };
        let bob = Who { username: "bob", groups: &[], second_factor: false };
        assert_eq!(rules.decide("wiki.example.com", "/public/x", None), Verdict::Public);
        assert_eq!(rules.decide("wiki.example.com", "/publicity", None), Verdict::LoginRequired);
        assert_eq!(rules.decide("wiki.example.com", "/admin", Some(&alice)), Verdict::Allowed);
        assert_eq!(rules.decide("wiki.example.com", "/admin/users", Some(&bob)), Verdict::Forbidden);
        assert_eq!(rules.decide("WIKI.example.COM", "/administrator", Some(&bob)), Verdict::Allowed);
        assert_eq!(rules.decide("secret.example.com", "/", Some(&alice)), Verdict::Forbidden);
        assert_eq!(rules.decide("a.bob.example.com", "/", Some(&bob)), Verdict::Allowed);
        assert_eq!(rules.decide("a.bob.example.com", "/", Some(&alice)), Verdict::Forbidden);
        assert_eq!(rules.decide("bob.example.com", "/", Some(&bob)), Verdict::Forbidden, "default deny");
        assert_eq!(rules.decide("xbob.example.com", "/", Some(&bob)), Verdict::Forbidden);
        let open = Rules::new(vec![], DefaultPolicy::Allow).unwrap();
        assert_eq!(open.decide("any.example.com", "/", None), Verdict::LoginRequired);
        assert_eq!(open.decide("any.example.com", "/", Some(&bob)), Verdict::Allowed);
    }

    #[test]
    fn two_factor_rules_want_a_second_factor_of_those_they_allow() {
        let rules = Rules::new(
            vec![
                Rule {
                    policy: Some(Policy::TwoFactor),
                    groups: vec!["admins".into()],
                    ..rule("admin.example.com")
                },
                Rule { policy: Some(Policy::TwoFactor), ..rule("files.example.com") },
            ],
            DefaultPolicy::Allow,
        )
        .unwrap();
        let admins = ["admins".to_owned()];
        let with = Who { username: "alice", groups: &admins, second_factor: true };
        let without = Who { username: "alice", groups: &admins, second_factor: false };
        let other = Who { username: "bob", groups: &[], second_factor: true };
        let other_without = Who { username: "bob", groups: &[], second_factor: false };
        assert_eq!(rules.decide("admin.example.com", "/", None), Verdict::LoginRequired);
        assert_eq!(rules.decide("admin.example.com", "/", Some(&with)), Verdict::Allowed);
        assert_eq!(rules.decide("admin.example.com", "/", Some(&without)), Verdict::SecondFactorRequired);
        assert_eq!(rules.decide("admin.example.com", "/", Some(&other)), Verdict::Forbidden);
        assert_eq!(rules.decide("admin.example.com", "/", Some(&other_without)), Verdict::Forbidden);
        assert_eq!(
            rules.decide("files.example.com", "/", Some(&other_without)),
            Verdict::SecondFactorRequired
        );
        assert_eq!(rules.decide("files.example.com", "/", Some(&other)), Verdict::Allowed);
    }

    #[test]
    fn unicode_hosts_and_trailing_slashes_are_normalised_at_start_up() {
        let rules = Rules::new(
            vec![
                Rule { policy: Some(Policy::Deny), ..rule("B\u{fc}cher.example.com") },
                Rule { policy: Some(Policy::Deny), ..rule("*.\u{f6}l.example.com.") },
                Rule {
                    paths: vec!["/secret/".into()],
                    policy: Some(Policy::Deny),
                    ..rule("app.example.com")
                },
                Rule { paths: vec!["/".into()], policy: Some(Policy::Bypass), ..rule("open.example.com") },
            ],
            DefaultPolicy::Allow,
        )
        .unwrap();
        let bob = Who { username: "bob", groups: &[], second_factor: false };
        // Targets arrive in IDNA form (the target parser maps them).
        assert_eq!(rules.decide("xn--bcher-kva.example.com", "/", Some(&bob)), Verdict::Forbidden);
        assert_eq!(rules.decide("a.xn--l-0ga.example.com", "/", Some(&bob)), Verdict::Forbidden);
        assert_eq!(rules.decide("app.example.com", "/secret", Some(&bob)), Verdict::Forbidden);
        assert_eq!(rules.decide("app.example.com", "/secret/x", Some(&bob)), Verdict::Forbidden);
        assert_eq!(rules.decide("app.example.com", "/secretive", Some(&bob)), Verdict::Allowed);
        assert_eq!(rules.decide("app.example.com", "/Secret", Some(&bob)), Verdict::Allowed, "case counts");
        assert_eq!(rules.decide("open.example.com", "/anything", None), Verdict::Public);
    }

    #[test]
    fn unusable_rules_are_refused() {
        for bad in [
            rule(""),
            rule("*"),
            rule("a.com/x"),
            Rule { paths: vec!["admin".into()], ..rule("a.com") },
            Rule { policy: Some(Policy::Deny), users: vec!["x".into()], ..rule("a.com") },
            Rule { policy: Some(Policy::Bypass), groups: vec!["x".into()], ..rule("a.com") },
            Rule { name: Some("A".into()), ..rule("a.com") },
            rule("*.127.0.0.1"),
        ] {
            assert!(Rules::new(vec![bad], DefaultPolicy::Allow).is_err());
        }
    }
}
