//! Integration tests: the app through Rocket's local client, the real binary
//! over HTTP, and a real browser.

mod helpers;
mod http;

mod browser;
mod cache;
mod cli;
mod conformance;
mod devices;
mod forward_auth;
mod hardening;
mod layer;
mod login;
mod logout;
mod on_postgres;
mod operations;
mod postgres;
mod process;
mod proxies;
mod server;
mod setup;
mod two_factor;
