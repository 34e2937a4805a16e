use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use crate::auth::{Actor, Principal, principal};
use crate::context::conn;
use crate::ratelimit::Decision;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ActorKind {
    ApiKey,
    User,
}

/// This request's standing against the caller's quota.
#[derive(SimpleObject, Clone)]
pub struct RateLimitState {
    pub limit: i32,
    pub remaining: i32,
    pub reset_seconds: i32,
    /// `requests;w=seconds;burst=n`.
    pub policy: String,
}

impl From<&Decision> for RateLimitState {
    fn from(d: &Decision) -> Self {
        Self {
            limit: d.limit as i32,
            remaining: d.remaining as i32,
            reset_seconds: d.reset_secs.min(i32::MAX as u64) as i32,
            policy: d.policy.clone(),
        }
    }
}

#[derive(SimpleObject)]
pub struct TeamInfo {
    pub id: ID,
    pub name: String,
}

/// Who is calling: the answer to "who am I" for keys and users alike.
pub struct Viewer(Principal);

#[Object]
impl Viewer {
    async fn kind(&self) -> ActorKind {
        match self.0.actor {
            Actor::ApiKey { .. } => ActorKind::ApiKey,
            Actor::User { .. } => ActorKind::User,
        }
    }
    /// `api_key:<id>` or `user:<sub>`.
    async fn actor(&self) -> String {
        self.0.actor.label()
    }
    /// The API key's id, for key callers.
    async fn api_key_id(&self) -> Option<ID> {
        match &self.0.actor {
            Actor::ApiKey { id } => Some(ID(id.clone())),
            Actor::User { .. } => None,
        }
    }
    async fn team(&self, ctx: &Context<'_>) -> async_graphql::Result<TeamInfo> {
        let team = crate::teams::find(&mut *conn(ctx).await?, &self.0.team_id).await?;
        Ok(TeamInfo {
            id: ID(team.id),
            name: team.name,
        })
    }
    async fn scopes(&self) -> Vec<String> {
        self.0.scopes.names()
    }
    /// Projects the caller is limited to (null: the whole team).
    async fn allowed_project_ids(&self) -> Option<Vec<ID>> {
        self.0
            .limits
            .projects
            .as_ref()
            .map(|ids| ids.iter().cloned().map(ID).collect())
    }
    /// Integrations the caller is limited to.
    async fn allowed_integration_ids(&self) -> Option<Vec<ID>> {
        self.0
            .limits
            .integrations
            .as_ref()
            .map(|ids| ids.iter().cloned().map(ID).collect())
    }
    /// When the credential stops working (key expiry, token `exp`).
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at.map(|t| t.and_utc())
    }
    async fn rate_limit(&self, ctx: &Context<'_>) -> Option<RateLimitState> {
        ctx.data_opt::<Decision>().map(RateLimitState::from)
    }
}

#[derive(Default)]
pub struct ViewerQuery;

#[Object]
impl ViewerQuery {
    /// The caller: identity, team, scopes, limits and rate-limit state.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
        Ok(Viewer(principal(ctx)?.clone()))
    }
}
