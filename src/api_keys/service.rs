//! Rules for API keys: what a caller may grant, rolling and changing keys, and how a
//! presented key becomes a principal.

use std::collections::HashMap;

use chrono::NaiveDateTime;

use super::model::{ApiKeyChanges, ApiKeyRow, id_list_json};
use super::store;
use crate::auth::api_key;
use crate::auth::{Actor, Principal, ResourceLimits, Scope, ScopeSet};
use crate::db::{DbConn, new_id, now};
use crate::error::{AppError, AppResult, FieldProblem};
use crate::ratelimit::RateSpec;

pub struct NewApiKey {
    pub team_id: String,
    pub name: String,
    pub scopes: ScopeSet,
    pub expires_at: Option<NaiveDateTime>,
    pub created_by: Option<String>,
    pub limits: ResourceLimits,
    pub rate: Option<RateSpec>,
}

impl NewApiKey {
    /// A key for `team_id` with these scopes, no limits and no expiry.
    pub fn new(team_id: String, name: &str, scopes: ScopeSet, created_by: &str) -> Self {
        Self {
            team_id,
            name: name.to_string(),
            scopes,
            expires_at: None,
            created_by: Some(created_by.to_string()),
            limits: ResourceLimits::default(),
            rate: None,
        }
    }
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
        allowed_project_ids: id_list_json(&new.limits.projects),
        allowed_integration_ids: id_list_json(&new.limits.integrations),
        rate_limit_requests: new.rate.map(|r| r.requests.into()),
        rate_limit_period_secs: new.rate.map(|r| r.period.as_secs() as i64),
        rate_limit_burst: new.rate.map(|r| r.burst.into()),
        previous_key_hash: None,
        previous_key_expires_at: None,
        updated_at: None,
    };
    (row, generated.full)
}

fn check_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::validation("name must be 1 to 100 characters"));
    }
    Ok(name.to_string())
}

fn check_scopes(scopes: &ScopeSet) -> AppResult<()> {
    if scopes.is_empty() {
        return Err(AppError::validation("a key needs at least one scope"));
    }
    Ok(())
}

fn check_expiry(expires_at: Option<NaiveDateTime>) -> AppResult<()> {
    if expires_at.is_some_and(|e| e <= now()) {
        return Err(AppError::validation("expiresAt must be in the future"));
    }
    Ok(())
}

/// Every project and integration a key is limited to must exist in its team.
async fn check_limits(conn: &mut DbConn, team_id: &str, limits: &ResourceLimits) -> AppResult<()> {
    let mut problems = Vec::new();
    for id in limits.projects.iter().flatten() {
        if crate::projects::store::get(conn, team_id, id)
            .await
            .is_err()
        {
            problems.push(FieldProblem {
                path: "allowedProjectIds".into(),
                message: format!("no project `{id}` in this team"),
            });
        }
    }
    for id in limits.integrations.iter().flatten() {
        if crate::integrations::store::get(conn, team_id, id)
            .await
            .is_err()
        {
            problems.push(FieldProblem {
                path: "allowedIntegrationIds".into(),
                message: format!("no integration `{id}` in this team"),
            });
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(AppError::Validation {
        message: problems
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
        problems,
    })
}

/// What a caller does with a key that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Read,
    Change,
    Roll,
    Revoke,
}

/// The one rule for acting on keys: a caller manages only keys it dominates, and grants only
/// what it holds. Dominating a key means holding every scope it holds (`admin` holds all) and
/// reaching every project and integration it reaches. Keys outside the caller's reach are
/// NOT_FOUND (as if they did not exist); keys within reach that hold more are FORBIDDEN. A
/// key may always roll and revoke itself. JWT users follow the same rule with their role's
/// scopes (they reach the whole team).
pub struct KeyAuthority<'a> {
    caller: &'a Principal,
    /// Project of each integration the judged keys are limited to (only for limited callers).
    projects: HashMap<String, String>,
}

impl<'a> KeyAuthority<'a> {
    /// Loads what judging these limits needs: one query, and none for unlimited callers.
    pub async fn load<'l>(
        conn: &mut DbConn,
        caller: &'a Principal,
        limits: impl IntoIterator<Item = &'l ResourceLimits>,
    ) -> AppResult<Self> {
        let mut projects = HashMap::new();
        if !caller.limits.is_unrestricted() {
            let ids: Vec<String> = limits
                .into_iter()
                .flat_map(|l| l.integrations.iter().flatten().cloned())
                .collect();
            projects = crate::integrations::store::projects_of(conn, &caller.team_id, &ids).await?;
        }
        Ok(Self { caller, projects })
    }

    fn reaches(&self, limits: &ResourceLimits) -> bool {
        self.caller
            .limits
            .covers(limits, |id| self.projects.get(id).cloned())
    }

    fn is_self(&self, key: &ApiKeyRow) -> bool {
        matches!(&self.caller.actor, Actor::ApiKey { id } if *id == key.id)
    }

    /// May the caller do `action` to `key`?
    pub fn check(&self, key: &ApiKeyRow, action: KeyAction) -> AppResult<()> {
        if self.is_self(key) && matches!(action, KeyAction::Roll | KeyAction::Revoke) {
            return Ok(());
        }
        self.caller.require(match action {
            KeyAction::Read => Scope::ApiKeysRead,
            _ => Scope::ApiKeysWrite,
        })?;
        if !self.reaches(&key.limits()) {
            return Err(AppError::not_found("API key"));
        }
        if !self.caller.scopes.covers(&key.scope_set()) {
            return Err(AppError::Forbidden(
                "this key holds scopes you do not hold; only a key holding all of them can manage it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// True when the caller may see `key` (lists leave the others out).
    pub fn sees(&self, key: &ApiKeyRow) -> bool {
        self.check(key, KeyAction::Read).is_ok()
    }

    /// A caller hands out only what it holds: scopes, reach, and (for keys) no longer life
    /// than its own. `None` means that part is not being set.
    pub fn check_grant(
        &self,
        scopes: Option<&ScopeSet>,
        limits: Option<&ResourceLimits>,
        expires_at: Option<Option<NaiveDateTime>>,
    ) -> AppResult<()> {
        if scopes.is_some_and(|s| !self.caller.scopes.covers(s)) {
            return Err(AppError::Forbidden(
                "a key cannot grant scopes its creator does not hold".into(),
            ));
        }
        if limits.is_some_and(|l| !self.reaches(l)) {
            return Err(AppError::Forbidden(
                "a key cannot reach resources its creator cannot reach".into(),
            ));
        }
        if let (Actor::ApiKey { .. }, Some(own), Some(granted)) =
            (&self.caller.actor, self.caller.expires_at, expires_at)
            && granted.is_none_or(|g| g > own)
        {
            return Err(AppError::Forbidden(
                "a key cannot grant a life longer than its own: set expiresAt no later than the caller's expiry"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Validates and stores a new key; returns the row and the full key (shown once).
pub async fn create_api_key(conn: &mut DbConn, new: NewApiKey) -> AppResult<(ApiKeyRow, String)> {
    let name = check_name(&new.name)?;
    check_scopes(&new.scopes)?;
    check_expiry(new.expires_at)?;
    check_limits(conn, &new.team_id, &new.limits).await?;
    let (row, full) = prepare_api_key(NewApiKey { name, ..new });
    store::insert(conn, &row).await?;
    Ok((row, full))
}

/// What may change on a key; `None` leaves a field as it is.
#[derive(Default)]
pub struct ApiKeyUpdate {
    pub name: Option<String>,
    pub scopes: Option<ScopeSet>,
    pub expires_at: Option<Option<NaiveDateTime>>,
    pub limits: Option<ResourceLimits>,
    pub rate: Option<Option<RateSpec>>,
}

pub async fn update_api_key(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    update: ApiKeyUpdate,
) -> AppResult<ApiKeyRow> {
    if let Some(scopes) = &update.scopes {
        check_scopes(scopes)?;
    }
    if let Some(expires_at) = update.expires_at {
        check_expiry(expires_at)?;
    }
    if let Some(limits) = &update.limits {
        check_limits(conn, team_id, limits).await?;
    }
    let changes = ApiKeyChanges {
        name: update.name.as_deref().map(check_name).transpose()?,
        scopes: update
            .scopes
            .map(|s| serde_json::to_string(&s.names()))
            .transpose()?,
        expires_at: update.expires_at,
        allowed_project_ids: update.limits.as_ref().map(|l| id_list_json(&l.projects)),
        allowed_integration_ids: update
            .limits
            .as_ref()
            .map(|l| id_list_json(&l.integrations)),
        rate_limit_requests: update.rate.map(|r| r.map(|r| r.requests.into())),
        rate_limit_period_secs: update.rate.map(|r| r.map(|r| r.period.as_secs() as i64)),
        rate_limit_burst: update.rate.map(|r| r.map(|r| r.burst.into())),
        updated_at: Some(now()),
        ..Default::default()
    };
    store::update(conn, team_id, id, &changes)
        .await?
        .ok_or_else(|| AppError::not_found("API key"))
}

/// Gives the key a new secret. The old one keeps working for `grace` (then stops); a key
/// rolled again before that loses its older secret at once.
pub async fn roll_api_key(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    grace: chrono::Duration,
) -> AppResult<(ApiKeyRow, String)> {
    let current = store::find(conn, team_id, id)
        .await?
        .ok_or_else(|| AppError::not_found("API key"))?;
    if current.revoked_at.is_some() {
        return Err(AppError::Conflict("a revoked key cannot be rolled".into()));
    }
    let full = api_key::with_public_id(&current.public_id);
    let at = now();
    let changes = ApiKeyChanges {
        key_hash: Some(api_key::hash(&full)),
        previous_key_hash: Some(
            (grace > chrono::Duration::zero()).then(|| current.key_hash.clone()),
        ),
        previous_key_expires_at: Some((grace > chrono::Duration::zero()).then(|| at + grace)),
        updated_at: Some(at),
        ..Default::default()
    };
    let row = store::update(conn, team_id, id, &changes)
        .await?
        .ok_or_else(|| AppError::not_found("API key"))?;
    Ok((row, full))
}

/// Turns a presented key into a principal and how long that holds, or UNAUTHENTICATED.
/// Whether a key is revoked or expired is only said once the secret has been verified.
pub async fn authenticate(
    conn: &mut DbConn,
    presented: &str,
) -> AppResult<(Principal, Option<NaiveDateTime>)> {
    let invalid = || AppError::Unauthenticated("invalid API key".into());
    let public_id = api_key::public_id(presented).ok_or_else(invalid)?;
    let row = store::find_by_public_id(conn, public_id)
        .await?
        .ok_or_else(invalid)?;
    let at = now();
    let mut valid_until = row.expires_at;
    if !api_key::matches(presented, &row.key_hash) {
        let previous_ok = row
            .previous_key_hash
            .as_deref()
            .is_some_and(|h| api_key::matches(presented, h));
        match row.previous_key_expires_at {
            Some(until) if previous_ok && until > at => {
                valid_until = Some(valid_until.map_or(until, |v| v.min(until)));
            }
            _ if previous_ok => {
                return Err(AppError::Unauthenticated(
                    "this key was rolled; use the new key".into(),
                ));
            }
            _ => return Err(invalid()),
        }
    }
    if row.revoked_at.is_some() {
        return Err(AppError::Unauthenticated("API key has been revoked".into()));
    }
    if row.is_expired(at) {
        return Err(AppError::Unauthenticated("API key has expired".into()));
    }
    let principal = Principal {
        team_id: row.team_id.clone(),
        scopes: row.scope_set(),
        limits: row.limits(),
        rate: row.rate_spec(),
        expires_at: valid_until,
        actor: Actor::ApiKey { id: row.id },
    };
    Ok((principal, valid_until))
}
