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

/// Parses a key as Rocket does: 44 or 88 base64 characters, or 64 hex
/// characters; 64 bytes are the master key, 32 bytes are expanded (HKDF).
pub fn parse_key(text: &str) -> Option<cookie::Key> {
    let text = text.trim();
    let bytes = match text.len() {
        44 | 88 => STANDARD.decode(text).ok()?,
        64 => {
            (0..64).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect::<Option<_>>()?
        }
        _ => return None,
    };
    if bytes.iter().all(|b| *b == 0) {
        return None;
    }
    match bytes.len() {
        64.. => cookie::Key::try_from(&bytes[..]).ok(),
        32..=63 => Some(cookie::Key::derive_from(&bytes)),
        _ => None,
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
            parse_key(text)
                .ok_or_else(|| format!("configuration: previous secret key #{} is not a valid key", i + 1))
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
    if let Ok(value) = figment.find_value("secret_key") {
        if value.as_str() == Some(PUBLISHED_KEY) {
            return Err("configuration: `secret_key` is the example key published in Rocket's \
                        documentation; generate your own with `openssl rand -base64 64`"
                .into());
        }
    }
    let configured: SecretKey = figment.extract_inner("secret_key").map_err(|_| {
        "configuration: `secret_key` must be 44 or 88 base64 characters or 64 hex characters \
         (e.g. the output of `openssl rand -base64 32`)"
            .to_owned()
    })?;
    Ok(!configured.is_zero())
}

/// Whether `secret_key` comes from the configuration rather than the key file.
pub fn configured(figment: &Figment) -> bool {
    check_configured(figment).unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_like_rocket_parses_them() {
        assert!(parse_key(&STANDARD.encode([1u8; 64])).is_some());
        assert!(parse_key(&STANDARD.encode([1u8; 32])).is_some());
        assert!(parse_key(&"ab".repeat(32)).is_some());
        assert!(parse_key(&STANDARD.encode([0u8; 64])).is_none());
        assert!(parse_key("short").is_none());
        assert!(parse_key(&"zz".repeat(32)).is_none());
    }
}
