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

/// Returns `figment` with a usable `secret_key` in it.
pub fn provide(figment: Figment, key_path: &Path) -> Result<(Figment, KeySource), String> {
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
    if !configured.is_zero() {
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
