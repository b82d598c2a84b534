//! The session cookie's value as the layer decodes it: a token must be 43
//! URL-safe base64 characters that round-trip, and nothing else may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesija::session::Token;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(token) = Token::decode(text) {
        assert_eq!(text.len(), 43);
        assert_eq!(token.encode(), text);
    }
});
