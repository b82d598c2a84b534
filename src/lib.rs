//! sesija: a self-hosted login portal whose sessions live in a database
//! (embedded SQLite, or PostgreSQL for several instances) and survive
//! restarts, crashes and upgrades.
//!
//! Where to change what (docs/architecture.md walks a request through):
//!
//! | to change | go to |
//! |---|---|
//! | how sessions are stored, found, expired, cached, kept coherent | [`session`] (knows no users or pages) |
//! | who someone is, how they prove it, the login steps, account changes | [`auth`] (no HTTP) |
//! | a page, a form, an endpoint, an HTTP answer | [`web`], one file per area |
//! | settings and their validation | [`config`] |
//! | the cookie key and every key derived from it | [`keys`] |
//! | the database: opening, migrations, backups, query macros | [`storage`] |
//! | how the pieces are put together into one server | [`mod@app`] |
//! | the operator's commands | [`cli`]; [`control`]: the socket commands reach a running server through |
//! | moving an installation to PostgreSQL | [`transfer`] |

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod keys;
pub mod niceness;
pub mod session;
pub mod storage;
pub mod transfer;
pub mod web;

pub use app::{app, app_with_clock, StartupError};
