//! JWT verification for web frontends, after RFC 8725: algorithms come from configuration
//! (each key is bound to exactly one), never from the token; `exp`, `iss`, `aud` and `sub` are
//! required and checked (with `nbf`) within a small leeway; `alg: none` cannot be expressed;
//! tokens that point at their own keys (`jku`, `x5u`, `jwk`, `x5c`) or carry `crit` are refused.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use super::ScopeSet;
use super::jwks::Jwks;
use crate::config::Config;
use crate::error::{AppError, AppResult};

/// What a verified token says about its bearer.
#[derive(Debug, Clone)]
pub struct JwtIdentity {
    pub subject: String,
    pub team_id: String,
    pub scopes: ScopeSet,
    pub expires_at: NaiveDateTime,
}

pub struct JwtVerifier {
    static_keys: Vec<(Algorithm, DecodingKey)>,
    jwks: Option<Jwks>,
    issuer: String,
    audience: String,
    leeway: u64,
    team_claim: String,
    roles_claim: String,
    roles: HashMap<String, ScopeSet>,
}

fn unauthenticated(message: &str) -> AppError {
    AppError::Unauthenticated(message.to_string())
}

impl JwtVerifier {
    /// None when no JWT key source is configured.
    pub fn from_config(config: &Config, client: reqwest::Client) -> Result<Option<Self>, String> {
        if !config.jwt_enabled() {
            return Ok(None);
        }
        let mut static_keys = Vec::new();
        if let Some(secret) = &config.jwt_hs256_secret {
            static_keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(path) = &config.jwt_public_key_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("HUB_JWT_PUBLIC_KEY_FILE {}: {e}", path.display()))?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .map(|k| (Algorithm::RS256, k))
                .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (Algorithm::ES256, k)))
                .map_err(|_| {
                    format!(
                        "HUB_JWT_PUBLIC_KEY_FILE {}: not an RSA or EC P-256 public key in PEM",
                        path.display()
                    )
                })?;
            static_keys.push(key);
        }
        let jwks = config.jwt_jwks_url.as_ref().map(|url| {
            Jwks::new(
                url.clone(),
                client,
                Duration::from_secs(config.jwt_jwks_min_refetch_secs),
                Duration::from_secs(config.jwt_jwks_refresh_secs),
            )
        });
        let roles = config
            .jwt_roles
            .iter()
            .map(|(role, scopes)| {
                let scopes = ScopeSet::parse(scopes).map_err(|unknown| {
                    format!("jwt_roles.{role}: unknown scopes {}", unknown.join(", "))
                })?;
                Ok((role.clone(), scopes))
            })
            .collect::<Result<_, String>>()?;
        Ok(Some(Self {
            static_keys,
            jwks,
            issuer: config.jwt_issuer.clone().unwrap_or_default(),
            audience: config.jwt_audience.clone().unwrap_or_default(),
            leeway: config.jwt_leeway_secs,
            team_claim: config.jwt_team_claim.clone(),
            roles_claim: config.jwt_roles_claim.clone(),
            roles,
        }))
    }

    pub async fn verify(&self, token: &str) -> AppResult<JwtIdentity> {
        let header = decode_header(token).map_err(|_| unauthenticated("malformed token"))?;
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(unauthenticated(
                "tokens that reference their own keys (jku, x5u, jwk, x5c) are refused",
            ));
        }
        if header.crit.is_some() {
            return Err(unauthenticated(
                "critical token header extensions are not supported",
            ));
        }
        let (algorithm, key) = match (&header.kid, &self.jwks) {
            (Some(kid), Some(jwks)) => match jwks.key(kid).await {
                Some(found) => found,
                None => return Err(unauthenticated("token signed with an unknown key")),
            },
            _ => self
                .static_keys
                .iter()
                .find(|(alg, _)| *alg == header.alg)
                .cloned()
                .ok_or_else(|| unauthenticated("token algorithm not accepted"))?,
        };
        if header.alg != algorithm {
            return Err(unauthenticated("token algorithm not accepted"));
        }
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|err| {
                unauthenticated(match err.kind() {
                    ErrorKind::ExpiredSignature => "token has expired",
                    ErrorKind::ImmatureSignature => "token is not valid yet",
                    ErrorKind::InvalidIssuer => "token issuer not accepted",
                    ErrorKind::InvalidAudience => "token audience not accepted",
                    ErrorKind::MissingRequiredClaim(_) => {
                        "token lacks a required claim (exp, iss, aud, sub)"
                    }
                    ErrorKind::InvalidSignature => "invalid token signature",
                    ErrorKind::InvalidAlgorithm => "token algorithm not accepted",
                    _ => "invalid token",
                })
            })?
            .claims;
        self.identity(&claims)
    }

    fn identity(&self, claims: &Value) -> AppResult<JwtIdentity> {
        let subject = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthenticated("token `sub` must be a string"))?;
        let team_id = claims[&self.team_claim]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                AppError::Unauthenticated(format!("token lacks the `{}` claim", self.team_claim))
            })?;
        let roles: Vec<&str> = match &claims[&self.roles_claim] {
            Value::String(role) => vec![role.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let scopes = roles
            .iter()
            .filter_map(|role| self.roles.get(*role))
            .flat_map(|set| set.iter())
            .collect::<ScopeSet>();
        let exp = claims["exp"]
            .as_i64()
            .ok_or_else(|| unauthenticated("token `exp` must be a number"))?;
        let expires_at = DateTime::from_timestamp(exp, 0)
            .ok_or_else(|| unauthenticated("token `exp` out of range"))?
            .naive_utc();
        Ok(JwtIdentity {
            subject: subject.to_string(),
            team_id: team_id.to_string(),
            scopes,
            expires_at,
        })
    }
}
