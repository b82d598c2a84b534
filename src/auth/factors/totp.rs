//! Time-based one-time codes (RFC 6238: 6 digits, 30 s steps, HMAC-SHA-1,
//! what authenticator apps use): new secrets, the text and URI an app
//! takes, and which step a typed code is right for.

use rand::RngCore;
use totp_rs::{Algorithm, Builder, Totp};

/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
/// Seconds per code.
pub const STEP: u64 = 30;

/// A fresh random secret.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    secret
}

fn totp(secret: &[u8], digits: u8) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_step_duration(STEP)
        .with_skew(1)
        .with_secret(secret.to_vec())
        .build()
        .ok()
}

/// The code for `secret` at unix time `time` (`digits` long).
pub fn code_at(secret: &[u8], time: u64, digits: u8) -> Option<String> {
    totp(secret, digits).map(|t| t.generate(time).to_string())
}

/// The base32 text of a secret, in groups of four (as apps accept it typed).
pub fn secret_text(secret: &[u8]) -> String {
    let plain = totp_rs::Secret::from(secret.to_vec()).to_base32();
    plain.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

/// The `otpauth://` URI an app scans: issuer `sesija`, the account name.
pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let base32 = totp_rs::Secret::from(secret.to_vec()).to_base32();
    let account = utf8_percent_encode(account, NON_ALPHANUMERIC);
    format!(
        "otpauth://totp/sesija:{account}?secret={base32}&issuer=sesija&algorithm=SHA1&digits=6&period={STEP}"
    )
}

/// The time step a 6-digit `code` is right for at `now` (one step of skew
/// either way), if any. Spaces are ignored.
pub fn step_of(secret: &[u8], code: &str, now: i64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(secret, 6)?;
    let now = u64::try_from(now).ok()?;
    let origin = now / STEP;
    // Latest first: a code that matches two steps counts as the later.
    [origin + 1, origin, origin.saturating_sub(1)].into_iter().find(|step| {
        let expected = totp.generate(step * STEP).to_string();
        crate::session::constant_time_eq(expected.as_bytes(), code.as_bytes())
    })
}
