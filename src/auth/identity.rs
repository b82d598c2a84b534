//! Who a session's owner is, as forward auth hands it to the apps: user
//! name, groups, display name, e-mail. Kept in memory, keyed by account id,
//! so a forward-auth check of a warm session reads no database.
//!
//! Every change to an account (groups, profile, removal) made by this
//! process or announced over the control socket calls [`Identities::forget`];
//! a generation counter stops a read that began before it from putting the
//! old identity back, as the session cache does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::users;
use crate::storage::Storage;

/// One account as the apps behind the proxy see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account name.
    pub username: String,
    /// Its groups, sorted.
    pub groups: Vec<String>,
    /// Its display name, if set.
    pub display_name: Option<String>,
    /// Its e-mail address, if set.
    pub email: Option<String>,
}

/// Most identities kept; past it the map starts afresh.
const CAPACITY: usize = 10_000;

/// Identities by account id, cached while the caches are trusted.
pub struct Identities {
    storage: Storage,
    /// Off for a server that hears of no outside change (a peer).
    caching: bool,
    /// Whether outside changes still arrive (servers on PostgreSQL): while
    /// they may not, every look-up reads the database.
    trusted: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_id: HashMap<i64, Arc<Identity>>,
    generation: u64,
}

impl Identities {
    /// `caching`: keep identities in memory (only where every change is
    /// announced with [`Identities::forget`]).
    pub fn new(storage: Storage, caching: bool) -> Identities {
        Identities { storage, caching, trusted: None, state: Mutex::default() }
    }

    /// Keeps identities only while `trusted()` (see `session::Coherence`).
    pub fn gated(mut self, trusted: Arc<dyn Fn() -> bool + Send + Sync>) -> Identities {
        self.trusted = Some(trusted);
        self
    }

    /// The identity of account `id`; `None` if there is no such account.
    pub async fn get(&self, id: i64) -> Result<Option<Arc<Identity>>, sqlx::Error> {
        let usable = self.caching && self.trusted.as_ref().is_none_or(|trusted| trusted());
        let generation = {
            let state = self.state.lock().unwrap();
            if let Some(found) = state.by_id.get(&id).filter(|_| usable) {
                return Ok(Some(found.clone()));
            }
            state.generation
        };
        let Some(user) = users::by_id(&self.storage, id).await? else { return Ok(None) };
        let groups = users::groups(&self.storage, id).await?;
        let identity = Arc::new(Identity {
            username: user.username,
            groups,
            display_name: user.display_name,
            email: user.email,
        });
        let mut state = self.state.lock().unwrap();
        if usable && state.generation == generation {
            if state.by_id.len() >= CAPACITY {
                state.by_id.clear();
            }
            state.by_id.insert(id, identity.clone());
        }
        Ok(Some(identity))
    }

    /// Accounts changed: read them afresh from the next request on.
    pub fn forget(&self) {
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        state.by_id.clear();
    }
}
