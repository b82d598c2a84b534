//! Recovery codes: single-use codes (`xxxxx-xxxxx`, lowercase letters and
//! digits, about 52 bits each) for when the authenticator is lost.

use rand::Rng;

/// Recovery codes made at a time.
pub const RECOVERY_CODES: usize = 10;
pub(super) const RECOVERY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Ten new recovery codes, `xxxxx-xxxxx`.
pub fn new_recovery_codes() -> Vec<String> {
    let mut rng = rand::rng();
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut code: String = (0..10)
                .map(|_| RECOVERY_ALPHABET[rng.random_range(0..RECOVERY_ALPHABET.len())] as char)
                .collect();
            code.insert(5, '-');
            code
        })
        .collect()
}

/// A typed recovery code in its stored form (`xxxxx-xxxxx`), if it has the
/// shape of one: case, spaces and the dash are forgiven.
pub fn recovery_form(input: &str) -> Option<String> {
    let plain: String =
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    if plain.len() != 10 || !plain.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)) {
        return None;
    }
    Some(format!("{}-{}", &plain[..5], &plain[5..]))
}
