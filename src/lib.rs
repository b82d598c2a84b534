//! sesija: a self-hosted login server whose sessions live in SQLite and
//! survive restarts, crashes and upgrades.
//!
//! * [`session`]: the reusable session layer (store, cookie, guards, purge).
//! * [`auth`]: accounts, password hashing, login throttling.
//! * [`web`]: the pages and forms.
//! * [`config`], [`secret`], [`db`]: settings, the cookie key, the database;
//!   [`sql`]: the write helpers every SQLite writer shares.
//! * [`startup`]: wires them into one Rocket app; [`cli`]: the command line;
//!   [`control`]: the local socket through which commands reach the server;
//!   [`transfer`]: an SQLite installation moved to PostgreSQL.

pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod niceness;
pub mod secret;
pub mod session;
pub mod sql;
pub mod startup;
pub mod transfer;
pub mod web;

pub use startup::{app, app_with_clock, StartupError};
