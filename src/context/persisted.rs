//! Automatic persisted queries, Apollo's protocol: a client sends only the sha256 of its
//! document (`extensions.persistedQuery`); on a miss it is answered
//! `PERSISTED_QUERY_NOT_FOUND` and sends the document with its hash, which is checked and
//! kept. Per replica and bounded (least recently used go first). A document registered this
//! way is executed like any other: parsed, validated, limited and checked against the
//! caller's scopes on every request.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::{Request, Value};
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};

/// Documents larger than this are not kept (the request still runs).
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

pub struct PersistedQueries {
    entries: Mutex<lru::LruCache<String, Arc<str>>>,
}

impl PersistedQueries {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Fills in (or checks and keeps) the document of a request that names one by hash;
    /// requests without `persistedQuery` are left as they are.
    pub fn resolve(&self, request: &mut Request) -> AppResult<()> {
        let Some(persisted) = request.extensions.get("persistedQuery") else {
            return Ok(());
        };
        let Value::Object(persisted) = persisted else {
            return Err(AppError::validation("`persistedQuery` must be an object"));
        };
        if persisted.get("version") != Some(&Value::from(1)) {
            return Err(AppError::validation(
                "only persistedQuery version 1 is supported",
            ));
        }
        let hash = match persisted.get("sha256Hash") {
            Some(Value::String(hash))
                if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                hash.to_ascii_lowercase()
            }
            _ => {
                return Err(AppError::validation(
                    "persistedQuery.sha256Hash must be 64 hex digits",
                ));
            }
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if request.query.trim().is_empty() {
            let document = entries.get(&hash).ok_or(AppError::PersistedQueryNotFound)?;
            request.query = document.to_string();
            return Ok(());
        }
        let actual = hex(&Sha256::digest(request.query.as_bytes()));
        if actual != hash {
            return Err(AppError::validation(
                "provided sha does not match query (persistedQuery.sha256Hash)",
            ));
        }
        if request.query.len() <= MAX_DOCUMENT_BYTES {
            entries.put(hash, request.query.as_str().into());
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_hash(query: &str, hash: &str) -> Request {
        let mut request = Request::new(query);
        let mut persisted = async_graphql::indexmap::IndexMap::new();
        persisted.insert(async_graphql::Name::new("version"), Value::from(1));
        persisted.insert(async_graphql::Name::new("sha256Hash"), Value::from(hash));
        request
            .extensions
            .insert("persistedQuery".into(), Value::Object(persisted));
        request
    }

    #[test]
    fn miss_register_hit_and_wrong_hashes() {
        let cache = PersistedQueries::new(1);
        let query = "{ viewer { kind } }";
        let hash = hex(&Sha256::digest(query.as_bytes()));
        let err = cache.resolve(&mut with_hash("", &hash)).unwrap_err();
        assert_eq!(err.code(), "PERSISTED_QUERY_NOT_FOUND");
        cache.resolve(&mut with_hash(query, &hash)).unwrap();
        let mut hit = with_hash("", &hash);
        cache.resolve(&mut hit).unwrap();
        assert_eq!(hit.query, query);
        let wrong = "0".repeat(64);
        let err = cache.resolve(&mut with_hash(query, &wrong)).unwrap_err();
        assert_eq!(err.code(), "VALIDATION_FAILED");
        // Bounded: a second document pushes the first out of a one-entry cache.
        let other = "{ __typename }";
        cache
            .resolve(&mut with_hash(
                other,
                &hex(&Sha256::digest(other.as_bytes())),
            ))
            .unwrap();
        let err = cache.resolve(&mut with_hash("", &hash)).unwrap_err();
        assert_eq!(err.code(), "PERSISTED_QUERY_NOT_FOUND");
    }
}
