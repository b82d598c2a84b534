//! Accounts: users, password hashing and the login throttle. Knows nothing of
//! pages or cookies.

pub mod access;
pub mod accounts;
pub mod factors;
pub mod identity;
pub mod login;
pub mod password;
pub mod state;
pub mod throttle;
pub mod users;

pub use login::{Authenticator, LoginError, Verdict};
pub use password::{HashError, Hasher};
pub use throttle::Throttle;
pub use users::{User, UserError};
