use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::model::ApiKeyRow;
use super::service::{NewApiKey, create_api_key};
use super::store;
use crate::auth::{Scope, ScopeGuard, ScopeSet, api_key, principal};
use crate::db::now;
use crate::error::{AppError, FieldProblem};
use crate::graphql::conn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ApiKeyStatus {
    Active,
    Expired,
    Revoked,
}

/// An API key as listed: never its secret, only the prefix that identifies it.
pub struct ApiKeyNode(pub ApiKeyRow);

#[Object(name = "ApiKey")]
impl ApiKeyNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// `ihk_<public id>`: the non-secret start of the key, to tell keys apart.
    async fn prefix(&self) -> String {
        api_key::display_prefix(&self.0.public_id)
    }
    async fn scopes(&self) -> Vec<String> {
        self.0.scope_set().names()
    }
    async fn status(&self) -> ApiKeyStatus {
        if self.0.revoked_at.is_some() {
            ApiKeyStatus::Revoked
        } else if self.0.is_expired(now()) {
            ApiKeyStatus::Expired
        } else {
            ApiKeyStatus::Active
        }
    }
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at.map(|t| t.and_utc())
    }
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at.map(|t| t.and_utc())
    }
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at.map(|t| t.and_utc())
    }
    async fn usage_count(&self) -> i64 {
        self.0.usage_count
    }
    /// Who created it: `api_key:<id>` or `system`.
    async fn created_by(&self) -> Option<&str> {
        self.0.created_by.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
}

#[derive(InputObject)]
pub struct CreateApiKeyInput {
    pub name: String,
    /// Scope names from the catalogue, e.g. `integrations:read`.
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// The full key. Shown this once; only a hash is kept.
    pub key: String,
    pub api_key: ApiKeyNode,
}

#[derive(Default)]
pub struct ApiKeyQuery;

#[Object]
impl ApiKeyQuery {
    /// The team's API keys, oldest first.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKeyNode>> {
        let caller = principal(ctx)?;
        let rows = store::list(&mut conn(ctx).await?, &caller.team_id).await?;
        Ok(rows.into_iter().map(ApiKeyNode).collect())
    }

    #[graphql(guard = "ScopeGuard(Scope::ApiKeysRead)")]
    async fn api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKeyNode> {
        let caller = principal(ctx)?;
        let row = store::find(&mut conn(ctx).await?, &caller.team_id, &id)
            .await?
            .ok_or_else(|| AppError::not_found("API key"))?;
        Ok(ApiKeyNode(row))
    }
}

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Creates a key with the given scopes. A caller can only grant scopes it holds itself.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysWrite)")]
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> async_graphql::Result<CreatedApiKey> {
        let caller = principal(ctx)?;
        let scopes = ScopeSet::parse(&input.scopes).map_err(|unknown| AppError::Validation {
            message: format!("unknown scopes: {}", unknown.join(", ")),
            problems: unknown
                .iter()
                .map(|s| FieldProblem {
                    path: "scopes".into(),
                    message: format!("unknown scope `{s}`"),
                })
                .collect(),
        })?;
        if !caller.scopes.covers(&scopes) {
            return Err(AppError::Forbidden(
                "a key cannot grant scopes its creator does not hold".into(),
            )
            .into());
        }
        let (row, key) = create_api_key(
            &mut conn(ctx).await?,
            NewApiKey {
                team_id: caller.team_id.clone(),
                name: input.name,
                scopes,
                expires_at: input.expires_at.map(|t| t.naive_utc()),
                created_by: Some(caller.actor.label()),
            },
        )
        .await?;
        Ok(CreatedApiKey {
            key,
            api_key: ApiKeyNode(row),
        })
    }

    /// Revokes a key at once; requests with it are refused from then on.
    #[graphql(guard = "ScopeGuard(Scope::ApiKeysWrite)")]
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKeyNode> {
        let caller = principal(ctx)?;
        let row = store::revoke(&mut conn(ctx).await?, &caller.team_id, &id, now())
            .await?
            .ok_or_else(|| AppError::not_found("API key"))?;
        Ok(ApiKeyNode(row))
    }
}
