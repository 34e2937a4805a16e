//! Rules for API keys: what a caller may grant, and how a presented key becomes a principal.

use chrono::NaiveDateTime;

use super::model::ApiKeyRow;
use super::store;
use crate::auth::api_key;
use crate::auth::{Actor, Principal, ScopeSet};
use crate::db::{DbConn, new_id, now};
use crate::error::{AppError, AppResult};

pub struct NewApiKey {
    pub team_id: String,
    pub name: String,
    pub scopes: ScopeSet,
    pub expires_at: Option<NaiveDateTime>,
    pub created_by: Option<String>,
}

/// Builds the row and the full key text without touching the database.
pub fn prepare_api_key(new: NewApiKey) -> (ApiKeyRow, String) {
    let generated = api_key::generate();
    let row = ApiKeyRow {
        id: new_id(),
        team_id: new.team_id,
        name: new.name,
        public_id: generated.public_id,
        key_hash: generated.hash,
        scopes: serde_json::to_string(&new.scopes.names()).unwrap_or_else(|_| "[]".into()),
        expires_at: new.expires_at,
        revoked_at: None,
        last_used_at: None,
        usage_count: 0,
        created_by: new.created_by,
        created_at: now(),
    };
    (row, generated.full)
}

pub fn validate_new(
    name: &str,
    scopes: &ScopeSet,
    expires_at: Option<NaiveDateTime>,
) -> AppResult<()> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(AppError::validation("name must be 1 to 100 characters"));
    }
    if scopes.is_empty() {
        return Err(AppError::validation("a key needs at least one scope"));
    }
    if expires_at.is_some_and(|e| e <= now()) {
        return Err(AppError::validation("expiresAt must be in the future"));
    }
    Ok(())
}

/// Validates and stores a new key; returns the row and the full key (shown once).
pub async fn create_api_key(conn: &mut DbConn, new: NewApiKey) -> AppResult<(ApiKeyRow, String)> {
    validate_new(&new.name, &new.scopes, new.expires_at)?;
    let (row, full) = prepare_api_key(NewApiKey {
        name: new.name.trim().to_string(),
        ..new
    });
    store::insert(conn, &row).await?;
    Ok((row, full))
}

/// Turns a presented key into a principal, or UNAUTHENTICATED. Whether a key is revoked or
/// expired is only said once the secret has been verified.
pub async fn authenticate(conn: &mut DbConn, presented: &str) -> AppResult<Principal> {
    let invalid = || AppError::Unauthenticated("invalid API key".into());
    let public_id = api_key::public_id(presented).ok_or_else(invalid)?;
    let row = store::find_by_public_id(conn, public_id)
        .await?
        .ok_or_else(invalid)?;
    if !api_key::matches(presented, &row.key_hash) {
        return Err(invalid());
    }
    if row.revoked_at.is_some() {
        return Err(AppError::Unauthenticated("API key has been revoked".into()));
    }
    if row.is_expired(now()) {
        return Err(AppError::Unauthenticated("API key has expired".into()));
    }
    Ok(Principal {
        team_id: row.team_id.clone(),
        scopes: row.scope_set(),
        actor: Actor::ApiKey { id: row.id },
    })
}
