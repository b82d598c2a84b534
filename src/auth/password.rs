//! Argon2id hashing and verification, off the async workers and bounded.
//!
//! Each hash takes about 19 MiB and a core for tens of milliseconds. Hashing
//! runs on a fixed set of threads of its own, one per core, gated by a
//! semaphore of the same size: beyond it requests queue, and only a wait
//! longer than [`MAX_QUEUE_WAIT`] is refused. Fixed threads also bound
//! memory: the allocator keeps a hash's 19 MiB around per thread that ran
//! it, and Rocket's blocking pool would spread hashes over up to 512.

use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

/// Longest a login waits for a hashing slot before it is answered 503.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Passwords longer than this are refused (and never hashed at login).
pub const MAX_PASSWORD_BYTES: usize = 1024;
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many logins at once; try again in a moment")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords with argon2id at the OWASP parameters
/// (m = 19 MiB, t = 2, p = 1).
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    dummy: Arc<OnceLock<String>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Default for Hasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..cores {
            let queue = queue.clone();
            // The threads end when the last Hasher clone is dropped.
            let _ = std::thread::Builder::new().name(format!("sesija-hash-{i}")).spawn(move || loop {
                let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
                match job {
                    Ok(job) => job(),
                    Err(()) => return,
                }
            });
        }
        Hasher { permits: Arc::new(Semaphore::new(cores)), jobs, dummy: Arc::default() }
    }
}

impl Hasher {
    async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = tokio::time::timeout(MAX_QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(job());
            }))
            .map_err(|_| HashError::Failed("hashing threads are gone".into()))?;
        result.await.map_err(|_| HashError::Failed("hashing thread failed".into()))?
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.blocking(move || hash_now(&password)).await
    }

    /// Checks `password` against `hash`. With no hash (unknown user) it checks
    /// against a dummy hash instead, so both cases cost the same.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let dummy = self.dummy.clone();
        self.blocking(move || {
            let (hash, real) = match &hash {
                Some(h) => (h.as_str(), true),
                None => {
                    (dummy.get_or_init(|| hash_now("dummy password").unwrap_or_default()).as_str(), false)
                }
            };
            let parsed = PasswordHash::new(hash).map_err(|e| HashError::Failed(e.to_string()))?;
            let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
            Ok(ok && real)
        })
        .await
    }
}

fn hash_now(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

/// Why a new password is refused, in words for the person choosing it.
pub fn check_new_password(username: &str, password: &str) -> Result<(), &'static str> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err("Password must be at most 1024 bytes.");
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err("Password must be at least 8 characters.");
    }
    if password == username {
        return Err("Password must not be the same as the user name.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let h = Hasher::default();
        let a = h.hash("correct horse".into()).await.unwrap();
        let b = h.hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b);
        assert!(h.verify("correct horse".into(), Some(a.clone())).await.unwrap());
        assert!(!h.verify("correct hors".into(), Some(a)).await.unwrap());
        assert!(!h.verify("dummy password".into(), None).await.unwrap());
    }

    #[test]
    fn password_rules() {
        assert!(check_new_password("bob", "short").is_err());
        assert!(check_new_password("bobbobbob", "bobbobbob").is_err());
        assert!(check_new_password("bob", &"x".repeat(1025)).is_err());
        assert!(check_new_password("bob", &"x".repeat(1024)).is_ok());
        assert!(check_new_password("bob", "Pässword ").is_ok());
    }
}
