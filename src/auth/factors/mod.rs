//! Second factors, one file per kind: time-based one-time codes
//! (RFC 6238, `totp.rs`) and single-use recovery codes (`recovery.rs`);
//! here, what is stored of an account's factors, sealing, and the check of
//! a typed code against either. Knows nothing of pages or sessions (a
//! passkey will be one more file).
//!
//! * A secret is 20 random bytes, stored sealed (AES-256-GCM) under a key
//!   derived from the cookie key: the database alone yields no secret.
//!   Opened under a previous cookie key, it is sealed again under the
//!   current one at start-up ([`reseal_all`]).
//! * A code is accepted for the current step or one step either side, and
//!   only for a step later than the last one accepted (one conditional
//!   `UPDATE`), so no code is ever accepted twice, not even by two requests
//!   at once.
//! * Recovery codes (`xxxxx-xxxxx`, lowercase letters and digits, about 52
//!   bits each) are stored as argon2id hashes and marked used by a
//!   conditional `UPDATE`: each works once.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

mod recovery;
mod totp;

pub use recovery::{new_recovery_codes, recovery_form, RECOVERY_CODES};
pub use totp::{code_at, new_secret, otpauth_uri, secret_text, step_of, SECRET_BYTES, STEP};

use super::password::{HashError, Hasher};
use super::users::UserError;
use crate::storage::{reading, transaction, writing, Storage};

/// Longest code input looked at (anything longer is simply wrong).
const MAX_CODE_INPUT: usize = 32;

/// What a second-factor operation can fail with.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant says what it is in its message
pub enum FactorError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The stored secret opens under none of the keys this server has (the
    /// cookie key it was sealed under was retired): only a reset helps.
    #[error("the second-factor secret of account {0} cannot be opened with any configured key")]
    Sealed(i64),
}

/// Seals and opens secrets with keys derived from the cookie keys.
#[derive(Clone)]
pub struct Sealer {
    current: [u8; 32],
    previous: Vec<[u8; 32]>,
}

impl Sealer {
    /// From the current cookie key and the previous ones still accepted.
    pub fn new(current: &cookie::Key, previous: &[cookie::Key]) -> Sealer {
        Sealer {
            current: crate::keys::second_factor_key(current),
            previous: previous.iter().map(crate::keys::second_factor_key).collect(),
        }
    }

    /// `nonce (12 bytes) || ciphertext`, sealed under the current key.
    pub fn seal(&self, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new((&self.current).into());
        let sealed = cipher.encrypt(Nonce::from_slice(&nonce), secret).unwrap_or_default();
        [&nonce[..], &sealed].concat()
    }

    /// The secret and whether it was sealed under a previous key.
    pub fn open(&self, sealed: &[u8]) -> Option<(Vec<u8>, bool)> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, body) = sealed.split_at(12);
        std::iter::once(&self.current).chain(&self.previous).enumerate().find_map(|(i, key)| {
            let cipher = Aes256Gcm::new(key.into());
            cipher.decrypt(Nonce::from_slice(nonce), body).ok().map(|secret| (secret, i > 0))
        })
    }
}

/// An account's second factor, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// When it was turned on (unix seconds).
    pub enabled_at: i64,
    /// Recovery codes not yet used.
    pub codes_left: i64,
}

/// Whether account `id` has a second factor, and since when.
pub async fn status(storage: &Storage, id: i64) -> Result<Option<Enrolment>, sqlx::Error> {
    let row: Option<(Option<i64>, i64)> = reading!(storage, pool => sqlx::query_as(
        "SELECT totp_enabled_at, \
         (SELECT COUNT(*) FROM recovery_codes WHERE user_id = users.id AND used_at IS NULL) \
         FROM users WHERE id = $1 AND totp_secret IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await)?;
    Ok(row.map(|(at, codes_left)| Enrolment { enabled_at: at.unwrap_or_default(), codes_left }))
}

/// Replaces the recovery codes of account `$id` by `$hashes`, inside a
/// transaction (either engine).
macro_rules! insert_codes {
    ($tx:expr, $id:expr, $hashes:expr) => {
        async {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind($id).execute(&mut *$tx).await?;
            for hash in $hashes {
                sqlx::query("INSERT INTO recovery_codes (user_id, hash) VALUES ($1, $2)")
                    .bind($id)
                    .bind(hash)
                    .execute(&mut *$tx)
                    .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
    };
}

/// Turns the second factor on for account `id` (only if it is off), with
/// `step` (the step of the code that confirmed it) as already used and
/// these recovery-code hashes. `false`: it was on already, or the account
/// is gone.
pub async fn enable(
    storage: &Storage,
    id: i64,
    sealed: &[u8],
    step: u64,
    hashes: &[String],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let (sealed, hashes) = (sealed.to_vec(), hashes.to_vec());
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    transaction!(storage, tx => {
        // Only while it is off: of two set-ups at once, one wins.
        let done = sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_enabled_at = $2, totp_last_step = $3 \
             WHERE id = $4 AND totp_secret IS NULL",
        )
        .bind(&sealed)
        .bind(now)
        .bind(step)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_codes!(tx, id, &hashes).await?;
        Ok(true)
    })
}

/// Replaces the recovery codes of account `id` (only while 2FA is on).
pub async fn replace_codes(storage: &Storage, id: i64, hashes: &[String]) -> Result<bool, sqlx::Error> {
    let hashes = hashes.to_vec();
    transaction!(storage, tx => {
        // The account's row, locked where the engine locks rows, so a
        // concurrent reset cannot slip between the check and the insert.
        let on: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET totp_enabled_at = totp_enabled_at \
             WHERE id = $1 AND totp_secret IS NOT NULL RETURNING id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if on.is_none() {
            return Ok(false);
        }
        insert_codes!(tx, id, &hashes).await?;
        Ok(true)
    })
}

/// Turns the second factor off for account `id`: secret and recovery codes
/// go. `false`: it was off (or the account is gone).
pub async fn disable(storage: &Storage, id: i64) -> Result<bool, sqlx::Error> {
    transaction!(storage, tx => {
        let done = sqlx::query(
            "UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = 0 \
             WHERE id = $1 AND totp_secret IS NOT NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
        Ok(done.rows_affected() == 1)
    })
}

/// [`disable`] by account name (the operator's reset): the account's id and
/// whether 2FA was on.
pub async fn reset(storage: &Storage, name: &str) -> Result<(i64, bool), UserError> {
    let id: Option<i64> = reading!(storage, pool => sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
        .bind(name)
        .fetch_optional(pool)
        .await)?;
    let id = id.ok_or_else(|| UserError::NotFound(name.to_owned()))?;
    Ok((id, disable(storage, id).await?))
}

/// The outcome of a typed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// A right authenticator code, for a step not used before.
    Code,
    /// An unused recovery code, now used.
    RecoveryCode,
    /// Anything else: wrong, replayed, used, or 2FA is off.
    Wrong,
}

/// Checks `input` (an authenticator code or a recovery code) for account
/// `id` at `now`, and uses it up if right.
pub async fn verify(
    storage: &Storage,
    hasher: &Hasher,
    sealer: &Sealer,
    id: i64,
    input: &str,
    now: i64,
) -> Result<Verified, FactorError> {
    if input.len() > MAX_CODE_INPUT {
        return Ok(Verified::Wrong);
    }
    // Read where the writes go (SQLite's writer), so a code used a moment
    // ago is seen.
    let row: Option<(Vec<u8>, i64)> = writing!(storage, pool => sqlx::query_as(
        "SELECT totp_secret, totp_last_step FROM users WHERE id = $1 AND totp_secret IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await)?;
    let Some((sealed, last_step)) = row else { return Ok(Verified::Wrong) };
    if let Some(code) = recovery_form(input) {
        let hashes: Vec<String> = writing!(storage, pool => sqlx::query_scalar(
            "SELECT hash FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(id)
        .fetch_all(pool)
        .await)?;
        let Some(at) = hasher.find_secret(code, hashes.clone()).await? else { return Ok(Verified::Wrong) };
        let used = writing!(storage, pool => sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND hash = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(&hashes[at])
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        return Ok(if used == 1 { Verified::RecoveryCode } else { Verified::Wrong });
    }
    let (secret, _) = sealer.open(&sealed).ok_or(FactorError::Sealed(id))?;
    let Some(step) = step_of(&secret, input, now) else { return Ok(Verified::Wrong) };
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    if step <= last_step {
        return Ok(Verified::Wrong);
    }
    // Only one request can move the step past this one.
    let taken = writing!(storage, pool => sqlx::query(
        "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_secret = $3 AND totp_last_step < $1",
    )
    .bind(step)
    .bind(id)
    .bind(&sealed)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(if taken == 1 { Verified::Code } else { Verified::Wrong })
}

/// Seals again, under the current key, every secret still sealed under a
/// previous one (after a key rotation), so retiring the old key later
/// locks nobody out. Returns how many were sealed again and how many open
/// under no key at all.
pub async fn reseal_all(storage: &Storage, sealer: &Sealer) -> Result<(u64, u64), sqlx::Error> {
    let rows: Vec<(i64, Vec<u8>)> = writing!(storage, pool => sqlx::query_as(
        "SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL",
    )
    .fetch_all(pool)
    .await)?;
    let (mut resealed, mut lost) = (0, 0);
    for (id, sealed) in rows {
        match sealer.open(&sealed) {
            Some((_, false)) => {}
            Some((secret, true)) => {
                writing!(storage, pool => sqlx::query(
                    "UPDATE users SET totp_secret = $1 WHERE id = $2 AND totp_secret = $3",
                )
                .bind(sealer.seal(&secret))
                .bind(id)
                .bind(&sealed)
                .execute(pool)
                .await
                .map(drop))?;
                resealed += 1;
            }
            None => lost += 1,
        }
    }
    Ok((resealed, lost))
}

#[cfg(test)]
mod tests {
    use super::recovery::RECOVERY_ALPHABET;
    use super::*;

    /// RFC 6238, appendix B: the SHA-1 rows (8 digits, the 20-byte ASCII secret).
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(secret, time, 8).as_deref(), Some(code), "t = {time}");
            // The 6-digit code is the last six digits.
            assert_eq!(code_at(secret, time, 6).as_deref(), Some(&code[2..]), "t = {time}");
        }
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_only() {
        let secret = new_secret();
        let now = 1_700_000_015;
        let at = |offset: i64| code_at(&secret, (now + offset) as u64, 6).unwrap();
        let step = (now as u64) / STEP;
        assert_eq!(step_of(&secret, &at(0), now), Some(step));
        assert_eq!(step_of(&secret, &at(-30), now), Some(step - 1));
        assert_eq!(step_of(&secret, &at(30), now), Some(step + 1));
        assert_eq!(step_of(&secret, &at(-60), now), None);
        assert_eq!(step_of(&secret, &at(60), now), None);
        let spaced = format!("{} {}", &at(0)[..3], &at(0)[3..]);
        assert_eq!(step_of(&secret, &spaced, now), Some(step));
        for bad in ["", "12345", "1234567", "abcdef", "12345x"] {
            assert_eq!(step_of(&secret, bad, now), None, "{bad}");
        }
    }

    #[test]
    fn sealed_secrets_open_under_their_key_and_previous_ones_only() {
        let (old, new, other) = (cookie::Key::generate(), cookie::Key::generate(), cookie::Key::generate());
        let secret = new_secret();
        let sealed = Sealer::new(&old, &[]).seal(&secret);
        assert!(!sealed.windows(secret.len()).any(|w| w == secret), "stored in the clear");
        assert_eq!(Sealer::new(&old, &[]).open(&sealed), Some((secret.clone(), false)));
        assert_eq!(Sealer::new(&new, std::slice::from_ref(&old)).open(&sealed), Some((secret.clone(), true)));
        assert_eq!(Sealer::new(&new, &[other]).open(&sealed), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(Sealer::new(&old, &[]).open(&tampered), None);
    }

    #[test]
    fn recovery_codes_have_their_shape_and_typing_is_forgiven() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        for code in &codes {
            assert_eq!(code.len(), 11);
            assert_eq!(&code[5..6], "-");
            assert!(code.bytes().all(|b| b == b'-' || RECOVERY_ALPHABET.contains(&b)), "{code}");
            assert_eq!(recovery_form(code).as_deref(), Some(code.as_str()));
            assert_eq!(recovery_form(&code.to_uppercase().replace('-', " ")).as_deref(), Some(code.as_str()));
        }
        assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), 10);
        for bad in ["", "123456", "abcde-abcd", "abcde-abcdef", "abcd!-abcde"] {
            assert_eq!(recovery_form(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_show_as_grouped_base32_and_in_the_uri() {
        let secret = b"12345678901234567890";
        assert_eq!(secret_text(secret), "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ");
        assert_eq!(
            otpauth_uri(secret, "al ice"),
            "otpauth://totp/sesija:al%20ice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=sesija&algorithm=SHA1&digits=6&period=30"
        );
    }
}
