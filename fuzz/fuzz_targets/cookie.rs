//! The session cookie's value as the layer decodes it: `ID.TOKEN` with a
//! positive decimal id, or a bare token (older cookies), where a token is 43
//! URL-safe base64 characters that round-trip; nothing else may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesija::session::CookieValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(value) = CookieValue::decode(text) {
        match value.id {
            Some(id) => {
                assert!(id > 0);
                assert_eq!(CookieValue::encode(id, &value.token), text);
            }
            None => assert_eq!(value.token.encode(), text),
        }
    }
});
