//! Turns the credential a request presents into its caller, the same way on every transport
//! (HTTP and WebSocket): an API key (checked against the database) or a JWT (verified, its
//! team looked up), kept in the replica's credential cache for a while.

use std::sync::Arc;

use crate::api_keys;
use crate::auth::{Actor, Principal, ResourceLimits, api_key};
use crate::context::AppState;
use crate::error::AppError;

/// Authenticates a credential presented from `client` the same way on every transport (HTTP
/// and WebSocket): while the address is throttled nothing is looked up (only a credential
/// this replica verified recently, and so holds in memory, still passes: it cannot be a
/// guess), and a refused or malformed credential (`presented` is the transport's error for
/// one it could not read) counts against the address's anonymous quota. A refusal comes
/// with the address's quota decision, and is RATE_LIMITED once that quota is spent.
pub async fn authenticate_from(
    state: &AppState,
    client: std::net::IpAddr,
    presented: Result<String, AppError>,
) -> Result<Arc<Principal>, (AppError, crate::ratelimit::Decision)> {
    let result = match presented {
        Err(err) => Err(err),
        Ok(credential)
            if state.rate_limits.throttled(client)
                && state.credentials.get(&credential).is_none() =>
        {
            Err(AppError::Unauthenticated(
                "not checked: too many failed attempts from this address".into(),
            ))
        }
        Ok(credential) => authenticate(state, &credential).await,
    };
    result.map_err(|err| {
        let decision = state
            .rate_limits
            .check(&crate::ratelimit::Subject::Anonymous(client));
        let err = match decision.retry_after_secs {
            Some(retry_after_secs) => AppError::RateLimited { retry_after_secs },
            None => err,
        };
        (err, decision)
    })
}

/// The caller behind a credential: from the cache, else by checking the API key against the
/// database or verifying the JWT. Counts the use of an API key.
pub async fn authenticate(state: &AppState, credential: &str) -> Result<Arc<Principal>, AppError> {
    let principal = match state.credentials.get(credential) {
        Some(principal) => principal,
        None => {
            let (principal, valid_until) = if credential.starts_with(api_key::PREFIX) {
                let mut conn = state.pool.get().await?;
                api_keys::service::authenticate(&mut conn, credential).await?
            } else if let Some(jwt) = &state.jwt {
                let identity = jwt.verify(credential).await?;
                let mut conn = state.pool.get().await?;
                crate::teams::find(&mut conn, &identity.team_id)
                    .await
                    .map_err(|_| {
                        AppError::Unauthenticated("the token's team does not exist".into())
                    })?;
                let principal = Principal {
                    team_id: identity.team_id,
                    actor: Actor::User {
                        subject: identity.subject,
                    },
                    scopes: identity.scopes,
                    limits: ResourceLimits::default(),
                    rate: None,
                    expires_at: Some(identity.expires_at),
                };
                (principal, Some(identity.expires_at))
            } else {
                return Err(AppError::Unauthenticated(
                    "send an API key (ihk_...); JWTs are not configured".into(),
                ));
            };
            let principal = Arc::new(principal);
            state
                .credentials
                .insert(credential, principal.clone(), valid_until);
            principal
        }
    };
    if let Actor::ApiKey { id } = &principal.actor {
        state.usage.record(id);
    }
    Ok(principal)
}
