//! [`OpenedCookies`]: what each sealed session cookie opened to, kept so
//! that the next request with the very same cookie skips the decryption
//! (AES-256-GCM) and the token's SHA-256.
//!
//! A forward-auth check runs on every request of every protected app, each
//! with the same cookie as the last: opening it again each time was a third
//! of the check's own cost. What is kept is a cookie's exact sealed value
//! (unique per issue: every sealing draws a fresh nonce) and the
//! [`SessionKey`] it named. It is not a credential of its own: the key
//! still has to find a live row in the store on every request, so a
//! session's end is seen at once as before, and a cookie only gets in
//! after it opened under the current key once. Only cookies that opened
//! under the current key and name are kept (one that needs re-issuing goes
//! the long way each time, until the browser holds the new one); the keys
//! are fixed for the life of the process, so no entry outlives its key.
//!
//! A look-up takes an attacker's value: it is hashed with a per-process
//! random key (so nobody can aim at an entry) and compared in full, in
//! constant time (so timing tells nothing of a stored value). Bounded: when
//! full, it starts again empty, and each browser pays one opening.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use foldhash::quality::RandomState;

use super::cache::KeyHasher;
use super::token::{constant_time_eq, SessionKey};

/// Sealed values kept at most; beyond, the memo starts again empty.
const CAPACITY: usize = 16_384;

/// Sealed cookie values already opened, and the key each named.
#[derive(Default)]
pub struct OpenedCookies {
    /// Keyed with a per-process random seed (foldhash: SipHash cost a
    /// check a tenth of what the memo saves it).
    keyed: RandomState,
    /// By the keyed hash of the sealed value: the value itself (compared
    /// in full before an entry is used) and its key. Two values of one
    /// hash keep the later: the other takes the long way.
    map: Mutex<Entries>,
}

type Entries = HashMap<u64, (Box<str>, SessionKey), KeyHasher>;

impl OpenedCookies {
    /// The key `sealed` opened to before, if it did.
    pub fn get(&self, sealed: &str) -> Option<SessionKey> {
        let hash = self.keyed.hash_one(sealed);
        let map = self.map.lock().unwrap();
        let (value, key) = map.get(&hash)?;
        constant_time_eq(value.as_bytes(), sealed.as_bytes()).then_some(*key)
    }

    /// Remembers that `sealed` opened to `key`.
    pub fn insert(&self, sealed: &str, key: SessionKey) {
        let hash = self.keyed.hash_one(sealed);
        let mut map = self.map.lock().unwrap();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(hash, (sealed.into(), key));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::token::Token;

    fn key(id: i64) -> SessionKey {
        SessionKey { id, hash: Token::generate().hash() }
    }

    #[test]
    fn only_the_exact_value_finds_its_key() {
        let opened = OpenedCookies::default();
        let k = key(7);
        opened.insert("sealed-value", k);
        assert_eq!(opened.get("sealed-value"), Some(k));
        for other in ["sealed-valu", "sealed-value ", "Sealed-value", "", "sealed-valuf"] {
            assert_eq!(opened.get(other), None, "{other:?}");
        }
    }

    #[test]
    fn it_stays_bounded() {
        let opened = OpenedCookies::default();
        for i in 0..(CAPACITY as i64 + 10) {
            opened.insert(&format!("v{i}"), key(i));
        }
        assert!(opened.len() <= CAPACITY);
        assert_eq!(opened.get(&format!("v{}", CAPACITY as i64 + 9)).map(|k| k.id), Some(CAPACITY as i64 + 9));
    }
}
