//! Talking to a provider's authorization server: the authorization URL (PKCE S256, `state`),
//! and token requests (code exchange, refresh, client credentials, revocation), sent
//! through the hub's outbound client (SSRF guard, no redirect followed, bounded answer).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::store::OAuthAppRow;
use crate::context::AppState;
use crate::error::{AppError, AppResult};
use crate::http::OutboundRequest;

/// Token answers larger than this are refused.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// Attempts of a token request that fails in a way worth retrying (network, 429, 5xx).
const TOKEN_ATTEMPTS: u32 = 3;

/// Seals an app's secret value (bound to the app and what it is).
pub fn seal(state: &AppState, plain: &[u8], context: &str) -> AppResult<String> {
    let (key_id, sealed) = state.keyring.seal(plain, context)?;
    Ok(format!("{key_id}:{sealed}"))
}

/// Opens what [`seal`] sealed.
pub fn open(state: &AppState, stored: &str, context: &str) -> AppResult<String> {
    let (key_id, sealed) = stored
        .split_once(':')
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("a sealed OAuth value is malformed")))?;
    let bytes = state.keyring.open(key_id, sealed, context)?;
    String::from_utf8(bytes)
        .map_err(|_| AppError::internal(anyhow::anyhow!("a sealed OAuth value is not text")))
}

pub fn secret_context(app_id: &str) -> String {
    format!("oauth_app:{app_id}:secret")
}

pub fn verifier_context(integration_id: &str) -> String {
    format!("oauth_state:{integration_id}:verifier")
}

/// `n` random bytes, base64url: states and PKCE verifiers (RFC 7636: 43 to 128 characters).
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    B64URL.encode(bytes)
}

/// SHA-256, base64url: the PKCE S256 challenge of a verifier, and how states are stored.
pub fn sha256_b64(text: &str) -> String {
    B64URL.encode(Sha256::digest(text.as_bytes()))
}

/// The URL a user opens to consent.
pub fn authorization_url(
    app: &OAuthAppRow,
    redirect_uri: &str,
    state_value: &str,
    verifier: Option<&str>,
    spec: Option<&crate::providers::oauth::OAuthSpec>,
) -> AppResult<url::Url> {
    let authorize = app
        .authorize_url
        .as_deref()
        .ok_or_else(|| AppError::validation("the OAuth app has no authorizeUrl"))?;
    let mut url = url::Url::parse(authorize)
        .map_err(|_| AppError::validation("the OAuth app's authorizeUrl is not a URL"))?;
    let separator = spec.map_or(" ", |s| s.scope_separator);
    {
        let mut pairs = url.query_pairs_mut();
        pairs
            .append_pair("response_type", "code")
            .append_pair("client_id", &app.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state_value);
        let scopes = app.scopes();
        if !scopes.is_empty() {
            pairs.append_pair("scope", &scopes.join(separator));
        }
        if let Some(verifier) = verifier {
            pairs
                .append_pair("code_challenge", &sha256_b64(verifier))
                .append_pair("code_challenge_method", "S256");
        }
        for (name, value) in spec.map_or(&[][..], |s| s.authorize_params) {
            pairs.append_pair(name, value);
        }
        for (name, value) in app.authorize_params() {
            if let Some(value) = value.as_str() {
                pairs.append_pair(&name, value);
            }
        }
    }
    Ok(url)
}

/// What a token endpoint granted.
#[derive(Debug, Clone)]
pub struct Granted {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<i64>,
    /// Space- or comma-separated, as the provider wrote it.
    pub scope: Option<String>,
}

impl Granted {
    /// Granted scopes as a JSON array (None when the provider did not say).
    pub fn scopes_json(&self) -> Option<String> {
        let scope = self.scope.as_deref()?;
        let list: Vec<&str> = scope
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .take(200)
            .collect();
        serde_json::to_string(&list).ok()
    }

    pub fn expires_at(&self) -> Option<chrono::NaiveDateTime> {
        let secs = self.expires_in.filter(|s| *s > 0)?.min(10 * 365 * 86_400);
        Some(crate::db::now() + chrono::Duration::seconds(secs))
    }
}

/// Why a token request failed.
#[derive(Debug, Clone)]
pub enum TokenFailure {
    /// The provider refused (4xx): `invalid_grant` (consent revoked, a used code or refresh
    /// token), `invalid_client`... Retrying will not help.
    Refused { code: String, description: String },
    /// The endpoint could not be reached or failed (network, timeout, 429, 5xx) after retries.
    Transient(String),
}

impl TokenFailure {
    pub fn message(&self) -> String {
        match self {
            Self::Refused { code, description } if description.is_empty() => {
                format!("the provider's token endpoint refused: {code}")
            }
            Self::Refused { code, description } => {
                format!("the provider's token endpoint refused: {code} ({description})")
            }
            Self::Transient(reason) => format!("the provider's token endpoint failed: {reason}"),
        }
    }

    /// The failure with `secrets` cut out of what the provider wrote (a provider that echoes
    /// the request must not put a secret into `lastError`).
    fn redacted(self, secrets: &[&str]) -> Self {
        let cut = |text: String| {
            secrets
                .iter()
                .filter(|s| s.len() >= 4)
                .fold(text, |text, secret| text.replace(secret, "[redacted]"))
        };
        match self {
            Self::Refused { code, description } => Self::Refused {
                code: cut(code),
                description: cut(description),
            },
            Self::Transient(reason) => Self::Transient(cut(reason)),
        }
    }
}

/// A grant to exchange at the token endpoint.
pub enum Grant<'a> {
    Code {
        code: &'a str,
        redirect_uri: &'a str,
        verifier: Option<&'a str>,
    },
    Refresh(&'a str),
    ClientCredentials,
}

/// The form a token request sends (client_secret_post).
fn token_body(app: &OAuthAppRow, client_secret: &str, grant: &Grant<'_>) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match grant {
        Grant::Code {
            code,
            redirect_uri,
            verifier,
        } => {
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect_uri);
            if let Some(verifier) = verifier {
                form.append_pair("code_verifier", verifier);
            }
        }
        Grant::Refresh(token) => {
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", token);
        }
        Grant::ClientCredentials => {
            form.append_pair("grant_type", "client_credentials");
            let scopes = app.scopes();
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
        }
    }
    form.append_pair("client_id", &app.client_id)
        .append_pair("client_secret", client_secret);
    form.finish()
}

/// The secret values a token request sends.
fn grant_secrets<'a>(client_secret: &'a str, grant: &Grant<'a>) -> Vec<&'a str> {
    let mut secrets = vec![client_secret];
    match grant {
        Grant::Code { code, verifier, .. } => {
            secrets.push(code);
            secrets.extend(verifier.iter().copied());
        }
        Grant::Refresh(token) => secrets.push(token),
        Grant::ClientCredentials => {}
    }
    secrets
}

/// One token request, retried (with backoff) when it fails in a way worth retrying.
pub async fn request_tokens(
    state: &AppState,
    app: &OAuthAppRow,
    client_secret: &str,
    grant: Grant<'_>,
) -> Result<Granted, TokenFailure> {
    let body = token_body(app, client_secret, &grant);
    let url = url::Url::parse(&app.token_url).map_err(|_| TokenFailure::Refused {
        code: "invalid_token_url".into(),
        description: "the OAuth app's tokenUrl is not a URL".into(),
    })?;
    let base = Duration::from_millis(state.config.outbound_retry_base_ms.max(1));
    let max = Duration::from_millis(state.config.outbound_retry_max_ms.max(1));
    let mut attempt = 0;
    let secrets = grant_secrets(client_secret, &grant);
    loop {
        attempt += 1;
        let outcome = post_form(state, &url, &body)
            .await
            .map_err(|failure| failure.redacted(&secrets));
        match outcome {
            Err(TokenFailure::Transient(reason)) if attempt < TOKEN_ATTEMPTS => {
                let wait = (base * 2u32.pow(attempt - 1)).min(max);
                tracing::warn!(attempt, %reason, "token request failed; retrying");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// One token request attempt: the outbound timeout, at most 10 s (a refresh holds its lease
/// for all attempts).
fn token_timeout(state: &AppState) -> Duration {
    Duration::from_millis(state.config.outbound_timeout_ms).min(Duration::from_secs(10))
}

fn form_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers
}

async fn post_form(state: &AppState, url: &url::Url, body: &str) -> Result<Granted, TokenFailure> {
    let request = OutboundRequest {
        method: Method::POST,
        url: url.clone(),
        headers: form_headers(),
        body: Some(body.as_bytes().to_vec()),
    };
    let timeout = token_timeout(state);
    let response = state
        .outbound
        .deliver_as("oauth", request, timeout, MAX_TOKEN_ANSWER)
        .await
        .map_err(|err| match err {
            crate::http::OutboundError::Blocked(reason) => TokenFailure::Refused {
                code: "blocked".into(),
                description: reason,
            },
            other => TokenFailure::Transient(other.message()),
        })?;
    let status = response.status.as_u16();
    let doc = parse_answer(&response.body);
    if status == 429 || status >= 500 {
        return Err(TokenFailure::Transient(format!("status {status}")));
    }
    // Slack answers errors with 200 and `ok: false`.
    let error = doc["error"].as_str().filter(|_| {
        !(200..300).contains(&status) || doc["ok"] == false || doc["access_token"].is_null()
    });
    if !(200..300).contains(&status) || error.is_some() {
        return Err(TokenFailure::Refused {
            code: short(error.unwrap_or(if (300..400).contains(&status) {
                "redirected"
            } else {
                "refused"
            })),
            description: short(
                doc["error_description"]
                    .as_str()
                    .unwrap_or(&format!("status {status}")),
            ),
        });
    }
    let access_token = doc["access_token"]
        .as_str()
        .filter(|t| !t.is_empty() && t.len() <= 8192)
        .ok_or_else(|| TokenFailure::Refused {
            code: "invalid_response".into(),
            description: "the answer holds no access_token".into(),
        })?;
    Ok(Granted {
        access_token: access_token.to_string(),
        refresh_token: doc["refresh_token"]
            .as_str()
            .filter(|t| !t.is_empty() && t.len() <= 8192)
            .map(str::to_string),
        expires_in: doc["expires_in"]
            .as_i64()
            .or_else(|| doc["expires_in"].as_str().and_then(|s| s.parse().ok())),
        scope: doc["scope"].as_str().map(short),
    })
}

/// A token answer: JSON, or the form encoding some providers (GitHub without `Accept`) use.
fn parse_answer(body: &[u8]) -> Value {
    if let Ok(doc) = serde_json::from_slice::<Value>(body) {
        return doc;
    }
    let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(body)
        .take(50)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    Value::Object(map)
}

/// A provider's words, bounded and on one line (they end up in messages and `lastError`).
fn short(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// RFC 7009 revocation of `token`; an error says why it failed.
pub async fn revoke(
    state: &AppState,
    app: &OAuthAppRow,
    client_secret: &str,
    revoke_url: &str,
    token: &str,
    hint: &str,
) -> Result<(), String> {
    let url = url::Url::parse(revoke_url).map_err(|_| "the revokeUrl is not a URL".to_string())?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("token_type_hint", hint)
        .append_pair("client_id", &app.client_id)
        .append_pair("client_secret", client_secret)
        .finish();
    let request = OutboundRequest {
        method: Method::POST,
        url,
        headers: form_headers(),
        body: Some(body.into_bytes()),
    };
    let response = state
        .outbound
        .deliver_as("oauth", request, token_timeout(state), MAX_TOKEN_ANSWER)
        .await
        .map_err(|err| err.message())?;
    if response.status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "the revocation endpoint answered with status {}",
            response.status.as_u16()
        ))
    }
}

/// An OAuth URL an app may name: http(s), at most 2048 characters, not blocked by the
/// outbound guard.
pub fn check_url(state: &AppState, field: &str, text: &str) -> AppResult<()> {
    let bad = |why: &str| AppError::validation(format!("{field}: {why}"));
    if text.len() > 2048 {
        return Err(bad("at most 2048 characters"));
    }
    let url = url::Url::parse(text).map_err(|_| bad("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(bad("may not carry user information or a fragment"));
    }
    state.outbound.check_url(&url).map_err(|why| bad(&why))
}
