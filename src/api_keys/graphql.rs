use std::collections::BTreeSet;
use std::time::Duration;

use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::model::ApiKeyRow;
use super::service::{self, ApiKeyUpdate, KeyAction, KeyAuthority, NewApiKey};
use super::store;
use crate::audit;
use crate::auth::{Principal, ResourceLimits, Scope, ScopeGuard, ScopeSet, api_key, principal};
use crate::context::{conn, state};
use crate::db::now;
use crate::error::{AppError, AppResult, FieldProblem};
use crate::events::{Event, EventKind};
use crate::ratelimit::RateSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ApiKeyStatus {
    Active,
    Expired,
    Revoked,
}

/// A request quota: `requests` per `periodSeconds`, up to `burst` at once.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "RateLimitInput")]
pub struct RateLimit {
    pub requests: i32,
    pub period_seconds: i32,
    /// Defaults to `requests`.
    pub burst: Option<i32>,
}

impl RateLimit {
    fn to_spec(&self) -> AppResult<RateSpec> {
        let positive = |n: i32| u32::try_from(n).ok().filter(|n| *n > 0);
        let (Some(requests), Some(period)) =
            (positive(self.requests), positive(self.period_seconds))
        else {
            return Err(AppError::validation(
                "rateLimit: requests and periodSeconds must be positive",
            ));
        };
        let burst = match self.burst {
            Some(b) => positive(b)
                .ok_or_else(|| AppError::validation("rateLimit: burst must be positive"))?,
            None => requests,
        };
        RateSpec::new(requests, Duration::from_secs(period.into()), burst)
            .map_err(|err| AppError::validation(format!("rateLimit: {err}")))
    }

    fn from_spec(spec: RateSpec) -> Self {
        Self {
            requests: spec.requests as i32,
            period_seconds: spec.period.as_secs() as i32,
            burst: Some(spec.burst as i32),
        }
    }
}

/// An API key as listed: never its secret, only the prefix that identifies it.
pub struct ApiKeyNode(pub ApiKeyRow);

/// Everything but `id` and `prefix` needs `api_keys:read` (a key that may only roll or
/// revoke itself learns nothing more about keys).
#[Object(name = "ApiKey")]
impl ApiKeyNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// `ihk_<public id>`: the non-secret start of the key, to tell keys apart.
    async fn prefix(&self) -> String {
        api_key::display_prefix(&self.0.public_id)
    }
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn scopes(&self) -> Vec<String> {
        self.0.scope_set().names()
    }
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn status(&self) -> ApiKeyStatus {
        if self.0.revoked_at.is_some() {
            ApiKeyStatus::Revoked
        } else if self.0.is_expired(now()) {
            ApiKeyStatus::Expired
        } else {
            ApiKeyStatus::Active
        }
    }
    /// Projects the key is limited to (null: not limited by project).
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn allowed_project_ids(&self) -> Option<Vec<ID>> {
        self.0
            .limits()
            .projects
            .map(|ids| ids.into_iter().map(ID).collect())
    }
    /// Integrations the key is limited to (null: not limited by integration).
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn allowed_integration_ids(&self) -> Option<Vec<ID>> {
        self.0
            .limits()
            .integrations
            .map(|ids| ids.into_iter().map(ID).collect())
    }
    /// The key's own quota; null means the server default.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn rate_limit(&self) -> Option<RateLimit> {
        self.0.rate_spec().map(RateLimit::from_spec)
    }
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at.map(|t| t.and_utc())
    }
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at.map(|t| t.and_utc())
    }
    /// Until when the secret replaced by the last roll is still accepted.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn previous_secret_expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.previous_key_expires_at.map(|t| t.and_utc())
    }
    /// Updated in batches: a few seconds behind.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at.map(|t| t.and_utc())
    }
    /// Requests made with this key; updated in batches.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn usage_count(&self) -> i64 {
        self.0.usage_count
    }
    /// Who created it: `api_key:<id>`, `user:<sub>`, `cli` or `system`.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn created_by(&self) -> Option<&str> {
        self.0.created_by.as_deref()
    }
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at.map(|t| t.and_utc())
    }
}

#[derive(InputObject)]
pub struct CreateApiKeyInput {
    pub name: String,
    /// Scope names from the catalogue, e.g. `integrations:read`.
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Limit the key to these projects (and all their integrations).
    pub allowed_project_ids: Option<Vec<ID>>,
    /// Limit the key to these integrations.
    pub allowed_integration_ids: Option<Vec<ID>>,
    /// The key's own quota instead of the server default.
    pub rate_limit: Option<RateLimit>,
}

#[derive(InputObject)]
pub struct UpdateApiKeyInput {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// Null removes the expiry.
    pub expires_at: MaybeUndefined<DateTime<Utc>>,
    /// Null removes the project limit.
    pub allowed_project_ids: MaybeUndefined<Vec<ID>>,
    /// Null removes the integration limit.
    pub allowed_integration_ids: MaybeUndefined<Vec<ID>>,
    /// Null returns to the server default.
    pub rate_limit: MaybeUndefined<RateLimit>,
}

#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// The full key. Shown this once; only a hash is kept.
    pub key: String,
    pub api_key: ApiKeyNode,
}

fn parse_scopes(names: &[String]) -> AppResult<ScopeSet> {
    ScopeSet::parse(names).map_err(|unknown| AppError::Validation {
        message: format!("unknown scopes: {}", unknown.join(", ")),
        problems: unknown
            .iter()
            .map(|s| FieldProblem {
                path: "scopes".into(),
                message: format!("unknown scope `{s}`"),
            })
            .collect(),
    })
}

fn id_set(ids: Option<Vec<ID>>) -> AppResult<Option<BTreeSet<String>>> {
    match ids {
        Some(ids) if ids.len() > 100 => Err(AppError::validation(
            "a key can name at most 100 resources of a kind",
        )),
        Some(ids) => Ok(Some(ids.into_iter().map(|id| id.0).collect())),
        None => Ok(None),
    }
}

/// Undefined: unchanged; null: no limit; a list: that limit.
fn maybe_ids(value: MaybeUndefined<Vec<ID>>) -> AppResult<Option<Option<BTreeSet<String>>>> {
    match value {
        MaybeUndefined::Undefined => Ok(None),
        MaybeUndefined::Null => Ok(Some(None)),
        MaybeUndefined::Value(ids) => Ok(Some(id_set(Some(ids))?)),
    }
}

/// After any change to a key: forget what this replica cached about it.
/// (Once the change is committed: before, a request could cache the old key again.)
fn forget(ctx: &Context<'_>, id: &str) {
    let id = id.to_string();
    crate::context::unit::after_commit(ctx, move |state| {
        state.changed(crate::context::peers::Change::Key(id));
    });
}

/// The caller's team's key `id`, if the caller may do `action` to it.
async fn find_for(
    ctx: &Context<'_>,
    caller: &Principal,
    id: &str,
    action: KeyAction,
) -> AppResult<ApiKeyRow> {
    let mut db = conn(ctx).await?;
    let row = store::find(&mut db, &caller.team_id, id)
        .await?
        .ok_or_else(|| AppError::not_found("API key"))?;
    KeyAuthority::load(&mut db, caller, [&row.limits()])
        .await?
        .check(&row, action)?;
    Ok(row)
}

#[derive(Default)]
pub struct ApiKeyQuery;

#[Object]
impl ApiKeyQuery {
    /// The team's API keys, oldest first.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKeyNode>> {
        let caller = principal(ctx)?;
        let mut db = conn(ctx).await?;
        let rows = store::list(&mut db, &caller.team_id).await?;
        let limits: Vec<_> = rows.iter().map(ApiKeyRow::limits).collect();
        let authority = KeyAuthority::load(&mut db, caller, &limits).await?;
        Ok(rows
            .into_iter()
            .filter(|row| authority.sees(row))
            .map(ApiKeyNode)
            .collect())
    }

    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKeyNode> {
        let caller = principal(ctx)?;
        let row = find_for(ctx, caller, &id, KeyAction::Read).await?;
        Ok(ApiKeyNode(row))
    }
}

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Creates a key. A caller can only grant scopes and reach it holds itself.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysWrite)")]
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> async_graphql::Result<CreatedApiKey> {
        let caller = principal(ctx)?;
        let scopes = parse_scopes(&input.scopes)?;
        let limits = ResourceLimits {
            projects: id_set(input.allowed_project_ids)?,
            integrations: id_set(input.allowed_integration_ids)?,
        };
        let expires_at = input.expires_at.map(|t| t.naive_utc());
        let mut db = conn(ctx).await?;
        KeyAuthority::load(&mut db, caller, [&limits])
            .await?
            .check_grant(Some(&scopes), Some(&limits), Some(expires_at))?;
        let (row, key) = service::create_api_key(
            &mut db,
            NewApiKey {
                expires_at,
                limits,
                rate: input
                    .rate_limit
                    .as_ref()
                    .map(RateLimit::to_spec)
                    .transpose()?,
                ..NewApiKey::new(
                    caller.team_id.clone(),
                    &input.name,
                    scopes,
                    &caller.actor.label(),
                )
            },
        )
        .await?;
        audit::target(ctx, "api_key", &row.id);
        let event = Event {
            kind: EventKind::ApiKeyCreated,
            team_id: row.team_id.clone(),
            project_id: None,
            subject_id: row.id.clone(),
            payload: serde_json::json!({ "name": row.name, "scopes": row.scopes }),
            request_log: None,
            at: now(),
        };
        crate::context::unit::after_commit(ctx, move |state| state.events.publish(event));
        Ok(CreatedApiKey {
            key,
            api_key: ApiKeyNode(row),
        })
    }

    /// Changes a key's name, scopes, expiry, limits or quota; effective at once.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysWrite)")]
    async fn update_api_key(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateApiKeyInput,
    ) -> async_graphql::Result<ApiKeyNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "api_key", &id);
        let scopes = input.scopes.as_deref().map(parse_scopes).transpose()?;
        let current = find_for(ctx, caller, &id, KeyAction::Change).await?;
        let projects = maybe_ids(input.allowed_project_ids)?;
        let integrations = maybe_ids(input.allowed_integration_ids)?;
        let limits_changed = projects.is_some() || integrations.is_some();
        let mut limits = current.limits();
        if let Some(projects) = projects {
            limits.projects = projects;
        }
        if let Some(integrations) = integrations {
            limits.integrations = integrations;
        }
        let expires_at = match input.expires_at {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(t) => Some(Some(t.naive_utc())),
        };
        let mut db = conn(ctx).await?;
        KeyAuthority::load(&mut db, caller, [&limits])
            .await?
            .check_grant(
                scopes.as_ref(),
                limits_changed.then_some(&limits),
                expires_at,
            )?;
        let update = ApiKeyUpdate {
            name: input.name,
            scopes,
            expires_at,
            limits: limits_changed.then_some(limits),
            rate: match input.rate_limit {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(r) => Some(Some(r.to_spec()?)),
            },
        };
        let row = service::update_api_key(&mut db, &caller.team_id, &id, update).await?;
        forget(ctx, &id);
        Ok(ApiKeyNode(row))
    }

    /// Gives the key a new secret (returned once). The old secret keeps working for
    /// `gracePeriodSeconds` (default from configuration; 0 ends it at once). Needs
    /// `api_keys:write` and a caller that dominates the key; a key may always roll itself.
    async fn roll_api_key(
        &self,
        ctx: &Context<'_>,
        id: ID,
        grace_period_seconds: Option<i32>,
    ) -> async_graphql::Result<CreatedApiKey> {
        let caller = principal(ctx)?;
        audit::target(ctx, "api_key", &id);
        let grace = match grace_period_seconds {
            Some(s) if !(0..=30 * 86_400).contains(&s) => {
                return Err(AppError::validation(
                    "gracePeriodSeconds must be between 0 and 2592000",
                )
                .into());
            }
            Some(s) => i64::from(s),
            None => state(ctx).config.api_key_roll_grace_secs as i64,
        };
        find_for(ctx, caller, &id, KeyAction::Roll).await?;
        let (row, key) = service::roll_api_key(
            &mut *conn(ctx).await?,
            &caller.team_id,
            &id,
            chrono::Duration::seconds(grace),
        )
        .await?;
        forget(ctx, &id);
        Ok(CreatedApiKey {
            key,
            api_key: ApiKeyNode(row),
        })
    }

    /// Revokes a key at once; requests with it are refused from then on. Needs
    /// `api_keys:write` and a caller that dominates the key; a key may always revoke itself.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKeyNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "api_key", &id);
        find_for(ctx, caller, &id, KeyAction::Revoke).await?;
        let row = store::revoke(&mut *conn(ctx).await?, &caller.team_id, &id, now())
            .await?
            .ok_or_else(|| AppError::not_found("API key"))?;
        forget(ctx, &id);
        // Ends the key's open subscriptions.
        let event = Event {
            kind: EventKind::ApiKeyRevoked,
            team_id: row.team_id.clone(),
            project_id: None,
            subject_id: row.id.clone(),
            payload: serde_json::json!({ "name": row.name }),
            request_log: None,
            at: now(),
        };
        crate::context::unit::after_commit(ctx, move |state| state.events.publish(event));
        Ok(ApiKeyNode(row))
    }
}
