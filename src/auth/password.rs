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

use std::cell::RefCell;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::session::constant_time_eq;
use tokio::sync::Semaphore;

/// Longest a login waits for a hashing slot before it is answered 503.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Passwords longer than this are refused (and never hashed at login).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted for a new password.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant says what it is in its message
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
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..cores {
            let queue = queue.clone();
            // The threads end when the last Hasher clone is dropped.
            let _ = std::thread::Builder::new().name(format!("sesija-hash-{i}")).spawn(move || {
                crate::niceness::lower_this_thread();
                hash_jobs(&queue);
            });
        }
        Hasher { permits: Arc::new(Semaphore::new(cores)), jobs, dummy: Arc::default() }
    }
}

fn hash_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
        match job {
            Ok(job) => job(),
            Err(()) => return,
        }
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
            Ok(verify_now(&password, hash)? && real)
        })
        .await
    }
}

/// Argon2id settings for random secrets (recovery codes, about 52 bits
/// each): far lighter than a password's, as guessing such a secret from its
/// hash needs some 2^51 tries whatever the cost of one.
fn secret_params() -> Params {
    Params::new(8 * 1024, 1, 1, None).unwrap_or_default()
}

impl Hasher {
    /// Hashes each of `secrets` (random, high-entropy) with fresh salts.
    pub async fn hash_secrets(&self, secrets: Vec<String>) -> Result<Vec<String>, HashError> {
        self.blocking(move || secrets.iter().map(|s| hash_with(s, secret_params())).collect()).await
    }

    /// Which of `hashes` (if any) `secret` matches; every hash is checked,
    /// so the time taken says nothing of which one matched.
    pub async fn find_secret(&self, secret: String, hashes: Vec<String>) -> Result<Option<usize>, HashError> {
        self.blocking(move || {
            let mut found = None;
            for (i, hash) in hashes.iter().enumerate() {
                if verify_now(&secret, hash)? && found.is_none() {
                    found = Some(i);
                }
            }
            Ok(found)
        })
        .await
    }
}

/// Whether a stored hash was made with weaker settings than new hashes get
/// (another algorithm, less memory, fewer passes, a shorter output): then a
/// login that proved the password stores a new hash of it. An unreadable
/// hash is not "weaker": verifying it fails instead.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let target = Params::default();
    let algorithm = Algorithm::try_from(parsed.algorithm).ok();
    let version = parsed.version.map(Version::try_from).transpose().ok().flatten().unwrap_or_default();
    algorithm != Some(Algorithm::Argon2id)
        || version != Version::V0x13
        || params.m_cost() < target.m_cost()
        || params.t_cost() < target.t_cost()
        || params.p_cost() < target.p_cost()
        || parsed.hash.is_some_and(|h| h.len() < Params::DEFAULT_OUTPUT_LEN)
}

fn failed(e: impl std::fmt::Display) -> HashError {
    HashError::Failed(e.to_string())
}

thread_local! {
    /// Argon2's working memory, kept by each hashing thread for its next hash:
    /// allocating 19 MiB per hash leaves the allocator holding several copies.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 into `out` with this thread's kept memory.
fn argon2_into(
    argon: &Argon2<'_>,
    blocks: usize,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    BLOCKS.with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < blocks {
            kept.resize(blocks, Block::default());
        }
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut kept[..blocks])
            .map_err(failed)
    })
}

fn hash_now(password: &str) -> Result<String, HashError> {
    hash_with(password, Params::default())
}

fn hash_with(password: &str, params: Params) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).map_err(failed)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon, params.block_count(), password, salt_bytes, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(failed)?),
    };
    Ok(phc.to_string())
}

fn verify_now(password: &str, phc: &str) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(phc).map_err(failed)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(failed)?;
    let version = parsed.version.map(Version::try_from).transpose().map_err(failed)?.unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(failed)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return Ok(false) };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(failed)?;
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    argon2_into(&argon, params.block_count(), password, salt_bytes, &mut out)?;
    Ok(constant_time_eq(&out, expected.as_bytes()))
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
    async fn hashing_threads_run_below_page_views() {
        let h = Hasher::default();
        h.hash("warm up".into()).await.unwrap();
        // Other tests start hashers of their own at the same time; a thread
        // just spawned lowers its priority as its first step: poll briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = crate::niceness::niceness_of_threads_named("sesija-hash-");
        while !found.iter().all(|n| *n == crate::niceness::BACKGROUND_NICENESS)
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            found = crate::niceness::niceness_of_threads_named("sesija-hash-");
        }
        assert!(!found.is_empty(), "hashing threads found");
        assert!(found.iter().all(|n| *n == crate::niceness::BACKGROUND_NICENESS), "{found:?}");
    }

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

    #[tokio::test]
    async fn hashes_from_the_standard_api_verify_and_weaker_params_too() {
        use argon2::password_hash::PasswordHasher;
        let h = Hasher::default();
        let salt = SaltString::generate(&mut OsRng);
        let standard = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(h.verify("correct horse".into(), Some(standard.clone())).await.unwrap());
        assert!(!h.verify("wrong horse".into(), Some(standard)).await.unwrap());
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(1024, 1, 1, None).unwrap());
        let small = small.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(h.verify("pw".into(), Some(small)).await.unwrap());
        assert!(h.verify("pw".into(), Some("not a hash".into())).await.is_err());
    }

    #[tokio::test]
    async fn weaker_hashes_need_a_new_hash_and_ours_do_not() {
        use argon2::password_hash::PasswordHasher;
        let ours = Hasher::default().hash("correct horse".into()).await.unwrap();
        assert!(!needs_rehash(&ours));
        let salt = SaltString::generate(&mut OsRng);
        for (algorithm, m, t) in
            [(Algorithm::Argon2id, 1024, 2), (Algorithm::Argon2id, 19456, 1), (Algorithm::Argon2i, 19456, 2)]
        {
            let weak = Argon2::new(algorithm, Version::V0x13, Params::new(m, t, 1, None).unwrap());
            let weak = weak.hash_password(b"pw", &salt).unwrap().to_string();
            assert!(needs_rehash(&weak), "{weak}");
        }
        assert!(!needs_rehash("not a hash"));
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
