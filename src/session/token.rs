//! Session tokens: what the browser holds, and the digest the database holds.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 256 random bits handed to the browser inside an encrypted cookie.
///
/// A token is minted fresh at every login and never stored server-side: the
/// store only ever sees its [`TokenHash`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl Token {
    /// Mints a new token from the thread-local CSPRNG (ChaCha12 seeded by the OS).
    pub fn generate() -> Token {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Token(bytes)
    }

    /// The cookie form: 43 characters of unpadded URL-safe base64.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses the cookie form; anything but exactly 32 encoded bytes is `None`.
    pub fn decode(value: &str) -> Option<Token> {
        if value.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        Some(Token(bytes.try_into().ok()?))
    }

    /// SHA-256 of the raw token bytes: the only form the store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }

    /// The raw bytes (for tests and stores that need them).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// SHA-256 of a [`Token`]: what a store keeps and checks.
#[derive(Clone, Copy)]
pub struct TokenHash(pub [u8; 32]);

/// In constant time, so that no comparison (a cache's or a store's) tells
/// how much of a hash matched.
impl PartialEq for TokenHash {
    fn eq(&self, other: &TokenHash) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for TokenHash {}

impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl TokenHash {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash([redacted])")
    }
}

/// What a store finds a session by: the id the store gave the row when it
/// was created (a selector: not secret, but only ever sent to the browser
/// inside the encrypted cookie) and the hash of the token, which must match
/// as well (a verifier; a look-up compares it in constant time). Finding
/// rows by id keeps random keys out of the database's indexes, so inserting
/// and purging rows touches few pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SessionKey {
    /// The row's id.
    pub id: i64,
    /// The token's hash.
    pub hash: TokenHash,
}

impl std::hash::Hash for SessionKey {
    /// The token hash alone: it is already uniformly spread, and two keys
    /// with the same hash and different ids are as good as unknown.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

/// What the session cookie holds, once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieValue {
    /// The row id.
    pub id: i64,
    /// The token.
    pub token: Token,
}

impl CookieValue {
    /// `ID.TOKEN`: the decimal row id, a dot, the 43-character token.
    pub fn encode(id: i64, token: &Token) -> String {
        format!("{id}.{}", token.encode())
    }

    /// Parses `ID.TOKEN`; anything else, including a bare token and an id
    /// that is not a positive number in its one decimal form (no sign, no
    /// leading zero), is `None`.
    pub fn decode(value: &str) -> Option<CookieValue> {
        let (id, token) = value.split_once('.')?;
        // Digits only (`parse` would take a sign), no leading zero; an empty
        // or too long id fails to parse.
        if id.starts_with('0') || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(CookieValue { id: id.parse().ok()?, token: Token::decode(token)? })
    }
}

/// A public, random identifier for one session row: safe to show on a page,
/// in a log line or in an operator's listing, since it cannot log anyone in.
pub fn new_handle() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_distinct() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(Token::decode(&a.encode()), Some(a.clone()));
        assert_eq!(a.encode().len(), 43);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = Token::generate().encode();
        assert!(Token::decode("").is_none());
        assert!(Token::decode(&good[..42]).is_none());
        assert!(Token::decode(&format!("{good}A")).is_none());
        assert!(Token::decode(&"!".repeat(43)).is_none());
    }

    #[test]
    fn cookie_values_carry_the_row_id() {
        let t = Token::generate();
        let value = CookieValue::encode(42, &t);
        assert_eq!(value.len(), 3 + 43);
        assert_eq!(CookieValue::decode(&value), Some(CookieValue { id: 42, token: t.clone() }));
        let token = t.encode();
        for bad in [
            token.clone(),
            format!("0.{token}"),
            format!("042.{token}"),
            format!("-1.{token}"),
            format!("+1.{token}"),
            format!(".{token}"),
            format!("1.{}", &token[..42]),
            format!("99999999999999999999.{token}"),
            format!("1.1.{token}"),
            "1.".to_string(),
        ] {
            assert_eq!(CookieValue::decode(&bad), None, "{bad}");
        }
    }

    #[test]
    fn hash_is_sha256_of_the_raw_bytes() {
        let t = Token::generate();
        let expected: [u8; 32] = Sha256::digest(t.as_bytes()).into();
        assert_eq!(t.hash().0, expected);
    }

    #[test]
    fn token_hashes_compare_by_value() {
        let t = Token::generate();
        assert_eq!(t.hash(), t.clone().hash());
        assert_ne!(t.hash(), Token::generate().hash());
        let mut near = t.hash();
        near.0[31] ^= 1;
        assert_ne!(t.hash(), near);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
