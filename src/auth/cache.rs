//! Verified credentials, remembered briefly so a request does not cost a database read (API
//! keys) or a signature check (JWTs). Entries are keyed by a SHA-256 of the credential, never
//! the credential itself, and end at the credential's own expiry. Revoking or changing a key
//! drops its entries at once on this replica.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};

use super::{Actor, Principal};
use crate::db::now;

const MAX_ENTRIES: usize = 50_000;

struct Entry {
    principal: Arc<Principal>,
    cached_at: Instant,
    valid_until: Option<NaiveDateTime>,
}

pub struct CredentialCache {
    ttl: Duration,
    entries: RwLock<HashMap<[u8; 32], Entry>>,
}

fn fingerprint(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

impl CredentialCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, credential: &str) -> Option<Arc<Principal>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&fingerprint(credential))?;
        let fresh = entry.cached_at.elapsed() < self.ttl
            && entry.valid_until.is_none_or(|until| until > now());
        fresh.then(|| entry.principal.clone())
    }

    /// Remembers a verified credential until `valid_until` (or the cache period, if sooner).
    pub fn insert(
        &self,
        credential: &str,
        principal: Arc<Principal>,
        valid_until: Option<NaiveDateTime>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, e| e.cached_at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            fingerprint(credential),
            Entry {
                principal,
                cached_at: Instant::now(),
                valid_until,
            },
        );
    }

    /// Forgets everything (changes may have been missed).
    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drops every cached credential of this API key (revoked, rolled or changed).
    pub fn invalidate_key(&self, key_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| !matches!(&e.principal.actor, Actor::ApiKey { id } if id == key_id));
    }
}
