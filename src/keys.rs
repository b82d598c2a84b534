//! The key that encrypts cookies: configured, or kept in the data directory.
//!
//! Rocket refuses to launch in the release profile without a `secret_key`,
//! and in debug it invents a new one per start, which would log everybody out
//! on every restart. So unless the operator configured a key, sesija keeps
//! one in `<data_dir>/secret.key` (created on first start, mode 0600) and
//! merges it into the configuration before ignition.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use rocket::config::SecretKey;
use rocket::figment::Figment;

/// The key from Rocket's documentation: public, so never acceptable.
const PUBLISHED_KEY: &str = "hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBi2QJxBVHQk=";

/// Where the key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `secret_key` in Rocket.toml or `ROCKET_SECRET_KEY`.
    Configured,
    /// Read from the key file.
    File,
    /// Just created in the key file.
    Generated,
}

/// File beside the key file holding previous keys, newest first, one a line.
pub fn previous_path(key_path: &Path) -> std::path::PathBuf {
    key_path.with_extension("key.previous")
}

/// The bytes of a key written as Rocket reads it: 44 or 88 base64
/// characters, or 64 hex characters (either case).
fn key_bytes(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    match text.len() {
        44 | 88 => STANDARD.decode(text).ok(),
        64 if text.is_ascii() => {
            (0..64).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
        }
        _ => None,
    }
}

/// Why these key bytes must not be used, if they must not: the published
/// example key (in any encoding), all zeros, or so few distinct byte values
/// that the key cannot have come from a random source (a random 32-byte key
/// has about 30 distinct values; fewer than a quarter of its length happens
/// by chance with odds below 10^-20).
fn weakness(bytes: &[u8]) -> Option<&'static str> {
    if STANDARD.decode(PUBLISHED_KEY).is_ok_and(|published| published == bytes) {
        return Some("is the example key published in Rocket's documentation");
    }
    if bytes.iter().all(|b| *b == 0) {
        return Some("is all zeros");
    }
    let distinct = bytes.iter().collect::<std::collections::HashSet<_>>().len();
    if distinct < (bytes.len() / 4).max(8) {
        return Some("has too little entropy to be a random key");
    }
    None
}

const GENERATE: &str = "generate one with `openssl rand -base64 64`";

/// Parses a key as Rocket does (base64 or hex); 64 bytes are the master
/// key, 32 bytes are expanded (HKDF). `Err` says why the key is refused.
pub fn parse_key(text: &str) -> Result<cookie::Key, String> {
    let bytes = key_bytes(text).ok_or("is not 44 or 88 base64 characters or 64 hex characters")?;
    if let Some(why) = weakness(&bytes) {
        return Err(why.into());
    }
    match bytes.len() {
        64.. => cookie::Key::try_from(&bytes[..]).map_err(|_| "is not a valid key".to_owned()),
        32..=63 => Ok(cookie::Key::derive_from(&bytes)),
        _ => Err("is shorter than 32 bytes".into()),
    }
}

/// Previous keys that cookies may still be sealed under: the configured
/// `secret_key_fallbacks`, then those kept by `sesija key rotate`.
pub fn fallbacks(figment: &Figment, key_path: &Path) -> Result<Vec<cookie::Key>, String> {
    let mut texts: Vec<String> = match figment.find_value("secret_key_fallbacks") {
        Ok(_) => figment.extract_inner("secret_key_fallbacks").map_err(|_| {
            "configuration: `secret_key_fallbacks` must be a list of keys, e.g. [\"KEY1\", \"KEY2\"]"
                .to_owned()
        })?,
        Err(_) => Vec::new(),
    };
    match fs::read_to_string(previous_path(key_path)) {
        Ok(text) => texts.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", previous_path(key_path).display())),
    }
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            parse_key(text).map_err(|why| {
                format!(
                    "configuration: `secret_key_fallbacks`: previous secret key #{} {why}; {GENERATE}",
                    i + 1
                )
            })
        })
        .collect()
}

/// Makes a new key file and keeps the old key as a fallback. Returns the
/// number of previous keys now kept.
pub fn rotate(key_path: &Path) -> Result<usize, String> {
    let previous = previous_path(key_path);
    let mut kept = match fs::read_to_string(&previous) {
        Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", previous.display())),
    };
    match fs::read_to_string(key_path) {
        Ok(current) => kept.insert(0, current.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", key_path.display())),
    }
    // The old key is kept before the new one replaces it: a crash in between
    // leaves the old key in both files, never in neither.
    if !kept.is_empty() {
        write_private(&previous, kept.join("\n").as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", previous.display()))?;
    }
    generate(key_path)?;
    Ok(kept.len())
}

/// Retires every previous key; returns how many there were.
pub fn drop_old(key_path: &Path) -> Result<usize, String> {
    let previous = previous_path(key_path);
    match fs::read_to_string(&previous) {
        Ok(text) => {
            fs::remove_file(&previous).map_err(|e| format!("cannot remove {}: {e}", previous.display()))?;
            Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("cannot read {}: {e}", previous.display())),
    }
}

/// Checks a configured `secret_key`: `Ok(true)` when one is configured and
/// usable, `Ok(false)` when none is (the key file serves).
pub fn check_configured(figment: &Figment) -> Result<bool, String> {
    // A key the operator wrote is a string (Rocket's default is bytes, all
    // zero, meaning "none"): its decoded bytes are checked, so no encoding
    // of a weak key slips through, and all zeros is refused, not ignored.
    if let Some(text) = figment.find_value("secret_key").ok().as_ref().and_then(|v| v.as_str()) {
        if let Some(why) = key_bytes(text).as_deref().and_then(weakness) {
            return Err(format!("configuration: `secret_key` {why}; {GENERATE}"));
        }
    }
    let configured: SecretKey = figment.extract_inner("secret_key").map_err(|_| {
        "configuration: `secret_key` must be 44 or 88 base64 characters or 64 hex characters \
         (e.g. the output of `openssl rand -base64 32`)"
            .to_owned()
    })?;
    Ok(!configured.is_zero())
}

/// The cookie key in a `figment` that [`provide`] returned.
pub fn current(figment: &Figment) -> Result<cookie::Key, String> {
    let bad = |why: &str| format!("configuration: `secret_key` {why}; {GENERATE}");
    if let Ok(text) = figment.extract_inner::<String>("secret_key") {
        return parse_key(&text).map_err(|why| bad(&why));
    }
    // Rocket also takes the key as an array of bytes.
    let bytes: Vec<u8> = figment.extract_inner("secret_key").map_err(|_| bad("cannot be read"))?;
    match bytes.len() {
        64.. => cookie::Key::try_from(&bytes[..]).map_err(|_| bad("is not a valid key")),
        32..=63 => Ok(cookie::Key::derive_from(&bytes)),
        _ => Err(bad("is shorter than 32 bytes")),
    }
}

/// Returns `figment` with a usable `secret_key` in it.
pub fn provide(figment: Figment, key_path: &Path) -> Result<(Figment, KeySource), String> {
    if check_configured(&figment)? {
        return Ok((figment, KeySource::Configured));
    }

    let (encoded, source) = match fs::read_to_string(key_path) {
        Ok(text) => (text.trim().to_owned(), KeySource::File),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (generate(key_path)?, KeySource::Generated),
        Err(e) => return Err(format!("cannot read secret key {}: {e}", key_path.display())),
    };
    match STANDARD.decode(&encoded) {
        Ok(bytes) if bytes.len() == 64 && bytes.iter().any(|b| *b != 0) => {}
        _ => {
            return Err(format!(
                "secret key file {} is damaged (expected 88 base64 characters); \
                 restore it from a backup, or delete it to log everybody out and start afresh",
                key_path.display()
            ))
        }
    }
    Ok((figment.merge(("secret_key", encoded)), source))
}

/// Writes a new random key to `path` atomically, readable by the owner only.
fn generate(path: &Path) -> Result<String, String> {
    let mut bytes = [0u8; 64];
    rand::rng().fill_bytes(&mut bytes);
    let encoded = STANDARD.encode(bytes);
    write_private(path, encoded.as_bytes())
        .map_err(|e| format!("cannot write secret key {}: {e}", path.display()))?;
    Ok(encoded)
}

/// Writes `contents` to a temporary file beside `path` with mode 0600, syncs
/// it, renames it over `path` and syncs the directory.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// The key second-factor secrets are sealed under, derived from the cookie
/// key `key` (so the database alone yields no secret, and a key rotation
/// re-seals them).
pub fn second_factor_key(key: &cookie::Key) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"sesija second-factor secret v1\0");
    hasher.update(key.master());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_like_rocket_parses_them() {
        let random64: Vec<u8> = (0..64).map(|_| rand::random()).collect();
        let random32: Vec<u8> = (0..32).map(|_| rand::random()).collect();
        let hex: String = random32.iter().map(|b| format!("{b:02x}")).collect();
        assert!(parse_key(&STANDARD.encode(&random64)).is_ok());
        assert!(parse_key(&STANDARD.encode(&random32)).is_ok());
        assert!(parse_key(&hex).is_ok());
        assert!(parse_key(&hex.to_uppercase()).is_ok());
        assert!(parse_key("short").is_err());
        assert!(parse_key(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn weak_keys_are_refused_in_every_encoding() {
        let published = STANDARD.decode(PUBLISHED_KEY).unwrap();
        let hex: String = published.iter().map(|b| format!("{b:02x}")).collect();
        for text in [PUBLISHED_KEY.to_owned(), hex.clone(), hex.to_uppercase()] {
            assert!(parse_key(&text).unwrap_err().contains("published"), "{text}");
        }
        assert!(parse_key(&STANDARD.encode([0u8; 64])).unwrap_err().contains("zeros"));
        assert!(parse_key(&"00".repeat(32)).unwrap_err().contains("zeros"));
        for weak in [
            STANDARD.encode([1u8; 64]),
            "ab".repeat(32),
            STANDARD.encode(b"abcdabcdabcdabcdabcdabcdabcdabcd"),
        ] {
            assert!(parse_key(&weak).unwrap_err().contains("entropy"), "{weak}");
        }
    }
}
