//! The WebSocket transport of GraphQL subscriptions (and of queries and mutations sent on
//! a socket): authentication of a connection from its `connection_init` payload, `socket`
//! speaking the two subprotocols, and `fanout` running each distinct subscription once for
//! all who share it. The event stream a subscription reads is the domains' own
//! (`context::live`).

mod fanout;
mod socket;

use std::sync::Arc;

use crate::auth::{Principal, Scope};
use crate::context::AppState;
use crate::error::AppError;

/// The credential in a `connection_init` payload: `{"Authorization": "Bearer <API key or
/// JWT>"}` (any case of the key).
pub fn credential(payload: &serde_json::Value) -> Result<String, AppError> {
    payload
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| {
                    k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("x-api-key")
                })
                .and_then(|(_, v)| v.as_str())
        })
        .map(|v| {
            let v = v.trim();
            match v.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    token.trim().to_string()
                }
                _ => v.to_string(),
            }
        })
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            AppError::Unauthenticated(
                "send {\"Authorization\": \"Bearer <key>\"} in connection_init".into(),
            )
        })
}

/// Who `credential` is now, if it may subscribe. Checked at `connection_init` and again at
/// every `subscribe`, so a key revoked or changed since the connection opened is seen.
pub async fn authorize(state: &AppState, credential: &str) -> Result<Arc<Principal>, AppError> {
    let principal = crate::graphql::authenticate::authenticate(state, credential).await?;
    principal.require(Scope::LogsSubscribe)?;
    Ok(principal)
}

pub use fanout::Fanout;
pub use socket::{Upgrades, upgrade};
