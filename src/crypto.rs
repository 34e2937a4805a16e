//! Sealing of integration credentials with AES-256-GCM under versioned keys.
//!
//! A sealed value is `base64(nonce || ciphertext)`, stored next to the id of the key that
//! sealed it, so keys can rotate: new values use the active key, old values open with the key
//! they name, and a re-seal moves everything to the active key. The integration id is bound in
//! as associated data, so a sealed value copied onto another row does not open.

use std::collections::HashMap;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::AppError;

const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key...]`; the first key is the active one.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = HashMap::new();
        let mut active = None;
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) = entry
                .split_once(':')
                .ok_or("each key must be written `id:base64key`")?;
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("key id `{id}` must be letters, digits, - or _"));
            }
            let bytes = B64
                .decode(key.trim())
                .map_err(|_| format!("key `{id}` is not valid base64"))?;
            if bytes.len() != 32 {
                return Err(format!("key `{id}` must be 32 bytes (got {})", bytes.len()));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            if keys.insert(id.to_string(), cipher).is_some() {
                return Err(format!("key id `{id}` appears twice"));
            }
            active.get_or_insert_with(|| id.to_string());
        }
        let active = active.ok_or("no key given")?;
        Ok(Self { active, keys })
    }

    /// A new random key spec with one key.
    pub fn generate_spec(id: &str) -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        format!("{id}:{}", B64.encode(key))
    }

    /// Reads the key file; None when it does not exist.
    pub fn load_file(path: &Path) -> Result<Option<Self>, String> {
        if !path.exists() {
            return Ok(None);
        }
        let spec = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read key file {}: {err}", path.display()))?;
        Self::parse(&spec)
            .map(Some)
            .map_err(|err| format!("key file {}: {err}", path.display()))
    }

    /// Creates the key file (mode 0600) with a fresh key; fails if it exists.
    pub fn create_file(path: &Path) -> Result<Self, String> {
        let spec = Self::generate_spec("k1");
        write_private_file(path, &format!("{spec}\n"))
            .map_err(|err| format!("cannot create key file {}: {err}", path.display()))?;
        Self::parse(&spec)
    }

    /// True when this keyring holds the key `id`.
    pub fn has(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seals `plaintext` under the active key; returns (key id, sealed text).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<(String, String), AppError> {
        let cipher = &self.keys[&self.active];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| AppError::internal(anyhow::anyhow!("sealing failed")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok((self.active.clone(), B64.encode(out)))
    }

    pub fn open(&self, key_id: &str, sealed: &str, context: &str) -> Result<Vec<u8>, AppError> {
        let cipher = self.keys.get(key_id).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!("sealing key `{key_id}` is not configured"))
        })?;
        let bytes = B64
            .decode(sealed)
            .map_err(|_| AppError::internal(anyhow::anyhow!("sealed value is not base64")))?;
        if bytes.len() < NONCE_LEN {
            return Err(AppError::internal(anyhow::anyhow!(
                "sealed value too short"
            )));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                AppError::internal(anyhow::anyhow!(
                    "sealed value does not open with key `{key_id}`"
                ))
            })
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_bind_context() {
        let ring = Keyring::parse(&Keyring::generate_spec("a")).unwrap();
        let (id, sealed) = ring.seal(b"secret", "row-1").unwrap();
        assert_eq!(id, "a");
        assert!(!sealed.contains("secret"));
        assert_eq!(ring.open(&id, &sealed, "row-1").unwrap(), b"secret");
        assert!(ring.open(&id, &sealed, "row-2").is_err());
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = Keyring::generate_spec("old");
        let ring_old = Keyring::parse(&old).unwrap();
        let (id, sealed) = ring_old.seal(b"v", "c").unwrap();
        let ring_new = Keyring::parse(&format!("{},{old}", Keyring::generate_spec("new"))).unwrap();
        assert_eq!(ring_new.active_key_id(), "new");
        assert_eq!(ring_new.open(&id, &sealed, "c").unwrap(), b"v");
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("k1:AAAA").is_err());
        assert!(Keyring::parse("nocolon").is_err());
        let spec = Keyring::generate_spec("k");
        assert!(Keyring::parse(&format!("{spec},{spec}")).is_err());
    }
}
