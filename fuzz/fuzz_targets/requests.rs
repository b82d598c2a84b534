//! Whole requests through the app: a route, a Cookie header and a form body
//! of any bytes. Nothing a client sends may cause a panic or a 5xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocket::http::{ContentType, Header};
use rocket::local::blocking::Client;

const ROUTES: [&str; 7] =
    ["/login", "/logout", "/setup", "/sessions/revoke", "/sessions/revoke-others", "/account/password", "/user"];

fn app() -> (tempfile::TempDir, Client) {
    let dir = tempfile::TempDir::new().unwrap();
    let figment =
        sesija::config::figment().merge(("data_dir", dir.path().join("data"))).merge(("log_level", "off"));
    let rocket = rocket::execute(sesija::app(figment)).unwrap();
    (dir, Client::untracked(rocket).unwrap())
}

thread_local!(static APP: (tempfile::TempDir, Client) = app());

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let route = ROUTES[usize::from(pick) % ROUTES.len()];
    // Cookie header up to the first NUL, the body after it.
    let (cookie, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(cookie) = std::str::from_utf8(cookie) else { return };
    if cookie.chars().any(|c| c.is_control()) {
        return; // not a header value a client can send
    }
    APP.with(|(_, client)| {
        let request = if pick & 0x80 == 0 { client.post(route) } else { client.get(route) };
        let response = request
            .header(ContentType::Form)
            .header(Header::new("Cookie", cookie.to_owned()))
            .body(body)
            .dispatch();
        assert!(response.status().code < 500, "{route}: {}", response.status());
    });
});
