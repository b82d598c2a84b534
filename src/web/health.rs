//! `/healthz` and the stylesheet.

use rocket::http::{ContentType, Header, Status};
use rocket::{get, Responder, State};

use super::pages;
use crate::storage::Storage;

#[get("/healthz")]
pub async fn healthz(storage: &State<Storage>) -> (Status, &'static str) {
    if storage.ping().await {
        (Status::Ok, "ok")
    } else {
        (Status::ServiceUnavailable, "database unavailable")
    }
}

#[derive(Responder)]
pub struct Css {
    body: (ContentType, &'static str),
    cache: Header<'static>,
}

#[get("/style.css")]
pub fn stylesheet() -> Css {
    Css {
        body: (ContentType::CSS, pages::STYLESHEET),
        cache: Header::new("Cache-Control", "public, max-age=3600"),
    }
}

/// This area's routes.
pub fn routes() -> Vec<rocket::Route> {
    rocket::routes![healthz, stylesheet,]
}
