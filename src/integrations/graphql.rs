use async_graphql::{
    Context, Enum, ID, InputObject, Json, Object, SimpleObject, Subscription, Union,
};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde_json::json;

use std::sync::Arc;

use super::insight::{IntegrationHealth, IntegrationMetrics, Siblings};
use super::model::{IntegrationFilter, IntegrationRow, IntegrationStatus};
use super::service::{self, IntegrationUpdate, NewIntegration};
use super::store;
use crate::audit;
use crate::auth::Principal;
use crate::auth::{Scope, ScopeGuard, principal};
use crate::context::live::{EventsMissed, Live, watch};
use crate::context::{Connection, Page, asks_total, conn, state};
use crate::db::DbConn;
use crate::db::now;
use crate::error::{AppError, AppResult};
use crate::events::{Event, EventKind};
use crate::providers::graphql::ProviderNode;
use crate::providers::{self, ProviderCategory};

/// An integration as the schema shows it, with the page it was listed on (its siblings), so
/// its `health` and `metrics` load for the whole page at once.
pub struct IntegrationNode(pub IntegrationRow, Arc<Siblings>);

impl IntegrationNode {
    /// An integration on its own.
    pub fn one(row: IntegrationRow) -> Self {
        let siblings = Siblings::of(std::slice::from_ref(&row));
        Self(row, siblings)
    }

    /// A page of integrations, sharing their loads.
    pub fn page(rows: Vec<IntegrationRow>) -> Vec<Self> {
        let siblings = Siblings::of(&rows);
        rows.into_iter()
            .map(|row| Self(row, siblings.clone()))
            .collect()
    }
}

/// Which credential fields are set. Values are write-only and never returned.
#[derive(SimpleObject)]
pub struct CredentialsInfo {
    pub is_set: bool,
    pub fields: Vec<String>,
    /// Id of the key the credentials are sealed under.
    pub key_id: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[Object(name = "Integration")]
impl IntegrationNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn project_id(&self) -> ID {
        ID(self.0.project_id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The catalogue entry, or for a template integration its template at the pinned version.
    async fn provider(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProviderNode>> {
        if let Some(builtin) = providers::find(&self.0.provider_key) {
            return Ok(Some(ProviderNode::Builtin(builtin)));
        }
        let (Some(template_id), Some(version)) = (&self.0.template_id, self.0.template_version)
        else {
            return Ok(None);
        };
        let custom = self
            .1
            .template_provider(state(ctx), template_id, version)
            .await?;
        Ok(custom.map(ProviderNode::Custom))
    }
    async fn provider_key(&self) -> &str {
        &self.0.provider_key
    }
    /// The template version a `template:<key>` integration is pinned to.
    async fn template_version(&self) -> Option<i32> {
        self.0.template_version
    }
    async fn config(&self) -> Json<serde_json::Value> {
        Json(serde_json::from_str(&self.0.config).unwrap_or_default())
    }
    async fn credentials(&self) -> CredentialsInfo {
        let fields: Vec<String> =
            serde_json::from_str(&self.0.credential_fields).unwrap_or_default();
        CredentialsInfo {
            is_set: self.0.credentials_sealed.is_some(),
            fields,
            key_id: self.0.credentials_key_id.clone(),
            updated_at: self.0.credentials_updated_at.map(|t| t.and_utc()),
        }
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// The OAuth connection, when the integration connects through an OAuth app.
    async fn oauth(&self) -> Option<super::oauth::OAuthInfo> {
        super::oauth::info(&self.0)
    }
    async fn status(&self) -> IntegrationStatus {
        IntegrationStatus::parse(&self.0.status)
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at.and_utc()
    }
    /// Health over the window (as `integrationHealth`); for a page of integrations, loaded
    /// for all of them in one set of statements.
    async fn health(&self, ctx: &Context<'_>) -> async_graphql::Result<IntegrationHealth> {
        let state = state(ctx);
        let stats = self.1.window_stats(state, &self.0.id).await?;
        Ok(IntegrationHealth::new(state, &self.0, &stats))
    }
    /// Call metrics since `since` (all time when omitted; as `integrationMetrics`); for a
    /// page of integrations, loaded for all of them in one set of statements.
    async fn metrics(
        &self,
        ctx: &Context<'_>,
        since: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<IntegrationMetrics> {
        let since = since.map(|t| t.naive_utc());
        Ok(self.1.totals(state(ctx), &self.0.id, since).await?.into())
    }
}

#[derive(InputObject, Default)]
pub struct IntegrationFilterInput {
    pub provider: Option<String>,
    pub category: Option<ProviderCategory>,
    pub status: Option<IntegrationStatus>,
    pub enabled: Option<bool>,
}

impl IntegrationFilterInput {
    fn resolve(self) -> IntegrationFilter {
        if let Some(template) = self
            .provider
            .as_ref()
            .filter(|p| p.starts_with(crate::templates::PREFIX))
        {
            // A team's template: its integrations, by their provider key.
            return IntegrationFilter {
                provider_keys: Some(vec![template.clone()]),
                status: self.status,
                enabled: self.enabled,
                only_ids: None,
            };
        }
        let provider_keys = (self.provider.is_some() || self.category.is_some()).then(|| {
            providers::catalogue::all()
                .iter()
                .filter(|p| self.provider.as_deref().is_none_or(|k| p.key == k))
                .filter(|p| self.category.is_none_or(|c| p.category == c))
                .map(|p| p.key.to_string())
                .collect()
        });
        IntegrationFilter {
            provider_keys,
            status: self.status,
            enabled: self.enabled,
            only_ids: None,
        }
    }
}

#[derive(InputObject)]
pub struct RegisterIntegrationInput {
    pub project_id: ID,
    /// Provider key from the catalogue, e.g. `jira`.
    pub provider: String,
    pub name: String,
    /// Validated against the provider's `configSchema`.
    pub config: Json<serde_json::Value>,
    /// Validated against the provider's `credentialsSchema`; sealed, never returned.
    pub credentials: Option<Json<serde_json::Value>>,
    #[graphql(default = true)]
    pub enabled: bool,
    /// Connect through this OAuth app of the team (`createOAuthApp`); the credentials are then
    /// the tokens the connection obtains (`startOAuthConnection`). Needs `credentials:write`.
    pub oauth_app_id: Option<ID>,
}

#[derive(InputObject)]
pub struct UpdateIntegrationInput {
    pub name: Option<String>,
    /// Replaces the whole configuration.
    pub config: Option<Json<serde_json::Value>>,
    /// Connect through this OAuth app from now on; the current credentials are dropped and
    /// the integration must be connected again. Needs `credentials:write`.
    pub oauth_app_id: Option<ID>,
}

#[derive(SimpleObject)]
pub struct ResealResult {
    /// How many sealed values (integrations' credentials, webhook secrets and headers) were
    /// re-sealed.
    pub resealed: u64,
    pub active_key_id: String,
}

/// Announces a change to an integration on the bus (no configuration or credentials in it)
/// and drops the replica's cached call target, once the mutation has committed.
fn publish(ctx: &Context<'_>, kind: EventKind, row: &IntegrationRow) {
    let event = Event {
        kind,
        team_id: row.team_id.clone(),
        project_id: Some(row.project_id.clone()),
        subject_id: row.id.clone(),
        payload: json!({
            "name": row.name,
            "providerKey": row.provider_key,
            "enabled": row.enabled,
            "status": row.status,
        }),
        request_log: None,
        at: now(),
    };
    crate::context::unit::after_commit(ctx, move |state| {
        state.changed(crate::context::peers::Change::Integration(
            event.subject_id.clone(),
        ));
        state.events.publish(event);
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum IntegrationEventKind {
    Created,
    Updated,
    Deleted,
    /// The provider pushed an event (an inbound webhook): see `webhookEventType`.
    WebhookReceived,
    /// The OAuth connection completed.
    Connected,
    /// The OAuth grant was refused or the token expired unrenewed: see `reason`.
    OauthFailed,
}

/// An integration was created, changed or deleted.
#[derive(SimpleObject, Clone)]
pub struct IntegrationEvent {
    pub kind: IntegrationEventKind,
    pub integration_id: ID,
    pub name: String,
    pub provider_key: String,
    pub enabled: bool,
    pub status: IntegrationStatus,
    pub at: DateTime<Utc>,
    /// For WEBHOOK_RECEIVED: the provider's event type (`push`, `issues`...).
    pub webhook_event_type: Option<String>,
    /// For WEBHOOK_RECEIVED: the provider's delivery id.
    pub webhook_delivery_id: Option<String>,
    /// For OAUTH_FAILED: why.
    pub reason: Option<String>,
}

#[derive(Union)]
pub enum IntegrationEventItem {
    Event(IntegrationEvent),
    Missed(EventsMissed),
}

#[derive(Default)]
pub struct IntegrationSubscription;

#[Subscription]
impl IntegrationSubscription {
    /// Integrations created, updated or deleted in the project, and the events their
    /// providers push (inbound webhooks), live.
    #[graphql(guard = "ScopeGuard(Scope::LogsSubscribe)")]
    async fn integration_events(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = IntegrationEventItem> + use<>> {
        let caller = principal(ctx)?;
        caller.check_project(&project_id)?;
        crate::projects::store::get(&mut *conn(ctx).await?, &caller.team_id, &project_id).await?;
        let project = project_id.0;
        Ok(watch(ctx, caller).filter_map(move |item| {
            let kind = |k: EventKind| match k {
                EventKind::IntegrationCreated => Some(IntegrationEventKind::Created),
                EventKind::IntegrationUpdated => Some(IntegrationEventKind::Updated),
                EventKind::IntegrationDeleted => Some(IntegrationEventKind::Deleted),
                EventKind::WebhookReceived => Some(IntegrationEventKind::WebhookReceived),
                EventKind::IntegrationConnected => Some(IntegrationEventKind::Connected),
                EventKind::IntegrationOAuthFailed => Some(IntegrationEventKind::OauthFailed),
                _ => None,
            };
            let out = match item {
                Live::Missed(count) => Some(IntegrationEventItem::Missed(EventsMissed {
                    count: count.min(i32::MAX as u64) as i32,
                })),
                Live::Event(event) if event.project_id.as_deref() == Some(project.as_str()) => {
                    kind(event.kind).map(|kind| {
                        IntegrationEventItem::Event(IntegrationEvent {
                            kind,
                            integration_id: ID(event.subject_id.clone()),
                            name: event.payload["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            provider_key: event.payload["providerKey"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            enabled: event.payload["enabled"].as_bool().unwrap_or_default(),
                            status: IntegrationStatus::parse(
                                event.payload["status"].as_str().unwrap_or_default(),
                            ),
                            at: event.at.and_utc(),
                            webhook_event_type: event.payload["eventType"]
                                .as_str()
                                .map(str::to_string),
                            webhook_delivery_id: event.payload["deliveryId"]
                                .as_str()
                                .map(str::to_string),
                            reason: event.payload["reason"].as_str().map(str::to_string),
                        })
                    })
                }
                Live::Event(_) => None,
            };
            std::future::ready(out)
        }))
    }
}

/// The integration if this caller may reach it; NOT_FOUND otherwise.
async fn visible(db: &mut DbConn, caller: &Principal, id: &str) -> AppResult<IntegrationRow> {
    let row = store::get(db, &caller.team_id, id).await?;
    caller.check_integration(&row.project_id, &row.id)?;
    Ok(row)
}

#[derive(Default)]
pub struct IntegrationQuery;

#[Object]
impl IntegrationQuery {
    /// A project's integrations in creation order, filtered, `first` at a time (max 100).
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn integrations(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        filter: Option<IntegrationFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<IntegrationNode>> {
        let caller = principal(ctx)?;
        let page = Page::new("integration", first, after)?;
        let mut db = conn(ctx).await?;
        let mut filter = filter.unwrap_or_default().resolve();
        if !caller.limits.allows_project(&project_id) {
            // A key limited to named integrations sees only those.
            let Some(ids) = &caller.limits.integrations else {
                return Err(AppError::not_found("project").into());
            };
            filter.only_ids = Some(ids.iter().cloned().collect());
        }
        let rows = store::list(
            &mut db,
            &caller.team_id,
            &project_id,
            &filter,
            page.after.as_deref(),
            page.fetch(),
        )
        .await?;
        if rows.is_empty() {
            // Rows are confined to the team and project, so any row proves the project is
            // the team's: only an empty page asks (NOT_FOUND for another team's project).
            crate::projects::store::get(&mut db, &caller.team_id, &project_id).await?;
        }
        let total = if asks_total(ctx) {
            Some(store::count(&mut db, &caller.team_id, &project_id, &filter).await?)
        } else {
            None
        };
        let nodes = IntegrationNode::page(rows);
        Ok(page.connection(nodes, total, |n| &n.0.id, |n| n))
    }

    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn integration(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        Ok(IntegrationNode::one(
            visible(&mut *conn(ctx).await?, caller, &id).await?,
        ))
    }
}

#[derive(Default)]
pub struct IntegrationMutation;

#[Object]
impl IntegrationMutation {
    /// Registers an integration. Sending credentials also needs `credentials:write`.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn register_integration(
        &self,
        ctx: &Context<'_>,
        input: RegisterIntegrationInput,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        if input.credentials.is_some() || input.oauth_app_id.is_some() {
            caller.require(Scope::CredentialsWrite)?;
        }
        caller.check_project(&input.project_id)?;
        let row = service::register(
            &mut *conn(ctx).await?,
            &state(ctx).keyring,
            &caller.team_id,
            NewIntegration {
                project_id: input.project_id.0,
                provider: input.provider,
                name: input.name,
                config: input.config.0,
                credentials: input.credentials.map(|c| c.0),
                enabled: input.enabled,
                oauth_app_id: input.oauth_app_id.map(|id| id.0),
            },
        )
        .await?;
        audit::target(ctx, "integration", &row.id);
        publish(ctx, EventKind::IntegrationCreated, &row);
        Ok(IntegrationNode::one(row))
    }

    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn update_integration(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateIntegrationInput,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &id);
        let mut db = conn(ctx).await?;
        visible(&mut db, caller, &id).await?;
        if input.oauth_app_id.is_some() {
            caller.require(Scope::CredentialsWrite)?;
        }
        let update = IntegrationUpdate {
            name: input.name,
            config: input.config.map(|c| c.0),
            oauth_app_id: input.oauth_app_id.map(|id| id.0),
        };
        let may_write_credentials = caller.require(Scope::CredentialsWrite).is_ok();
        let row =
            service::update(&mut db, &caller.team_id, &id, update, may_write_credentials).await?;
        publish(ctx, EventKind::IntegrationUpdated, &row);
        Ok(IntegrationNode::one(row))
    }

    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn set_integration_enabled(
        &self,
        ctx: &Context<'_>,
        id: ID,
        enabled: bool,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &id);
        let mut db = conn(ctx).await?;
        visible(&mut db, caller, &id).await?;
        let row = service::set_enabled(&mut db, &caller.team_id, &id, enabled).await?;
        publish(ctx, EventKind::IntegrationUpdated, &row);
        Ok(IntegrationNode::one(row))
    }

    /// Replaces the credentials; the old values are gone.
    #[graphql(guard = "ScopeGuard(Scope::CredentialsWrite)")]
    async fn rotate_integration_credentials(
        &self,
        ctx: &Context<'_>,
        id: ID,
        credentials: Json<serde_json::Value>,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &id);
        let mut db = conn(ctx).await?;
        visible(&mut db, caller, &id).await?;
        let row = service::rotate_credentials(
            &mut db,
            &state(ctx).keyring,
            &caller.team_id,
            &id,
            &credentials.0,
        )
        .await?;
        publish(ctx, EventKind::IntegrationUpdated, &row);
        Ok(IntegrationNode::one(row))
    }

    /// Moves a template integration to another version of its template; its configuration
    /// (and credentials) are checked against that version's schemas first.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn upgrade_integration(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: i32,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &id);
        let mut db = conn(ctx).await?;
        visible(&mut db, caller, &id).await?;
        let may_write_credentials = caller.require(Scope::CredentialsWrite).is_ok();
        let row = service::upgrade(
            &mut db,
            &state(ctx).keyring,
            &caller.team_id,
            &id,
            version,
            may_write_credentials,
        )
        .await?;
        publish(ctx, EventKind::IntegrationUpdated, &row);
        Ok(IntegrationNode::one(row))
    }

    /// Deletes the integration; returns its id.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn delete_integration(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &id);
        let mut db = conn(ctx).await?;
        let row = visible(&mut db, caller, &id).await?;
        store::delete(&mut db, &caller.team_id, &id).await?;
        publish(ctx, EventKind::IntegrationDeleted, &row);
        Ok(id)
    }
}

/// The integration if the caller may reach it (team and key limits).
pub async fn reachable(
    ctx: &Context<'_>,
    caller: &Principal,
    id: &str,
) -> AppResult<IntegrationRow> {
    let row = store::get(&mut *conn(ctx).await?, &caller.team_id, id).await?;
    caller.check_integration(&row.project_id, &row.id)?;
    Ok(row)
}
