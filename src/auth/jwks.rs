//! A JWKS (RFC 7517) fetched from a configured URL: RS256 and ES256 keys by `kid`. Refetched
//! when a token names an unknown `kid` (at most once per `min_refetch`) and when older than
//! `refresh`. A failed fetch keeps the keys already known. Symmetric keys are never taken
//! from a URL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

pub struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    last_fetch: Mutex<Option<Instant>>,
    min_refetch: Duration,
    refresh: Duration,
}

impl Jwks {
    pub fn new(
        url: String,
        client: reqwest::Client,
        min_refetch: Duration,
        refresh: Duration,
    ) -> Self {
        Self {
            url,
            client,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            min_refetch,
            refresh,
        }
    }

    /// The key with this `kid` and the one algorithm it is used with.
    pub async fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let known = self.keys.read().await.get(kid).cloned();
        let mut last_fetch = self.last_fetch.lock().await;
        let age = last_fetch.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a >= self.refresh);
        let may_refetch = age.is_none_or(|a| a >= self.min_refetch);
        if (known.is_none() && may_refetch) || stale {
            *last_fetch = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => *self.keys.write().await = keys,
                Err(err) => {
                    tracing::warn!(url = %self.url, error = %err, "JWKS fetch failed; keeping known keys")
                }
            }
        }
        drop(last_fetch);
        self.keys.read().await.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        let set: JwkSet = self
            .client
            .get(&self.url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, (algorithm, key));
                }
                Err(err) => tracing::warn!(kid, error = %err, "unusable JWKS key skipped"),
            }
        }
        tracing::debug!(count = keys.len(), "JWKS fetched");
        Ok(keys)
    }
}
