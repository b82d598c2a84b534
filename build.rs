//! The migrations are embedded (`sqlx::migrate!`); a file added to
//! `migrations/` must rebuild the crate, which the macro alone does not
//! tell cargo.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
