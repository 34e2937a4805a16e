//! The API key format: `ihk_<public id>_<secret>`. The public id finds the row; only a SHA-256
//! hash of the whole key is stored and compared in constant time. The secret carries 256 bits
//! of entropy, so a fast hash is the right tool (as Unkey and GitHub do), not a password KDF.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "ihk_";
const PUBLIC_ID_LEN: usize = 16;

/// A freshly generated key: the full text (shown once) and what is stored.
pub struct GeneratedKey {
    pub full: String,
    pub public_id: String,
    pub hash: String,
}

pub fn generate() -> GeneratedKey {
    let mut rng = rand::rng();
    let public_id: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(PUBLIC_ID_LEN)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    let secret: [u8; 32] = rng.random();
    let full = format!("{PREFIX}{public_id}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&full);
    GeneratedKey {
        full,
        public_id,
        hash,
    }
}

/// A new secret for an existing public id (a rolled key keeps its identity).
pub fn with_public_id(public_id: &str) -> String {
    let secret: [u8; 32] = rand::rng().random();
    format!("{PREFIX}{public_id}_{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The public id of a well-formed key, or None.
pub fn public_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == PUBLIC_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric())
        && secret.len() >= 32)
        .then_some(id)
}

pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of a presented key with a stored hash.
pub fn matches(key: &str, stored_hash: &str) -> bool {
    hash(key).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// What users see to tell keys apart: the prefix and public id, never the secret.
pub fn display_prefix(public_id: &str) -> String {
    format!("{PREFIX}{public_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = generate();
        assert!(key.full.starts_with(PREFIX));
        assert_eq!(public_id(&key.full), Some(key.public_id.as_str()));
        assert!(matches(&key.full, &key.hash));
        assert!(!matches(&format!("{}x", key.full), &key.hash));
        assert!(!key.hash.contains(&key.full));
    }

    #[test]
    fn malformed_keys_have_no_public_id() {
        for bad in [
            "",
            "ihk_",
            "ihk_short_secret",
            "abc",
            "ihk_0123456789abcdef_tooshort",
        ] {
            assert_eq!(public_id(bad), None, "{bad}");
        }
    }
}
