//! The session cookie's value as the layer decodes it: `ID.TOKEN` with a
//! positive decimal id, where a token is 43 URL-safe base64 characters that
//! round-trip; nothing else may panic or open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesija::session::CookieValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(value) = CookieValue::decode(text) {
        assert!(value.id > 0);
        assert_eq!(CookieValue::encode(value.id, &value.token), text);
    }
});
