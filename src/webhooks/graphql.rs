//! The webhooks API: endpoints (their secret shown once, at creation and rotation), their
//! deliveries with every attempt, statistics, redelivery and replay, a test event, and live
//! delivery updates. An endpoint of a project is reached by keys that reach the project; a
//! team-wide one (no project) only by keys without project limits.

use async_graphql::{
    Context, Enum, ID, InputObject, Json, MaybeUndefined, Object, SimpleObject, Subscription, Union,
};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

use super::store::{self, AttemptRow, DeliveryFilter, DeliveryRow, EndpointChanges, EndpointRow};
use crate::audit;
use crate::auth::{Principal, Scope, ScopeGuard, principal};
use crate::context::live::{EventsMissed, Live, watch};
use crate::context::unit::after_commit;
use crate::context::{AppState, Connection, Page, asks_total, conn, state};
use crate::db::{Fetch, new_id, now};
use crate::error::{AppError, AppResult};
use crate::events::EventKind;
use crate::integrations::graphql::ResealResult;

/// Seals a secret value of an endpoint (bound to the endpoint and what it is).
fn seal(state: &AppState, plain: &[u8], endpoint_id: &str, what: &str) -> AppResult<String> {
    let (key_id, sealed) = state
        .keyring
        .seal(plain, &format!("webhook:{endpoint_id}:{what}"))?;
    Ok(format!("{key_id}:{sealed}"))
}

/// Opens what [`seal`] sealed.
pub fn open(state: &AppState, stored: &str, endpoint_id: &str, what: &str) -> AppResult<Vec<u8>> {
    let (key_id, sealed) = stored.split_once(':').ok_or_else(|| {
        AppError::internal(anyhow::anyhow!("a sealed webhook value is malformed"))
    })?;
    state
        .keyring
        .open(key_id, sealed, &format!("webhook:{endpoint_id}:{what}"))
}

/// NOT_FOUND unless the caller reaches the endpoint: its project, or (team-wide) any project.
fn check_reach(caller: &Principal, endpoint: &EndpointRow) -> AppResult<()> {
    let reached = match &endpoint.project_id {
        Some(project) => caller.check_project(project).is_ok(),
        None => caller.require_unrestricted().is_ok(),
    };
    reached
        .then_some(())
        .ok_or_else(|| AppError::not_found("webhook endpoint"))
}

async fn reachable_endpoint(
    ctx: &Context<'_>,
    caller: &Principal,
    id: &str,
) -> AppResult<EndpointRow> {
    let row = store::get_endpoint(&mut *conn(ctx).await?, &caller.team_id, id).await?;
    check_reach(caller, &row)?;
    Ok(row)
}

pub struct WebhookEndpointNode {
    row: EndpointRow,
    /// Set only in the answers of `createWebhookEndpoint` and `rotateWebhookSecret`.
    secret: Option<String>,
}

#[Object(name = "WebhookEndpoint")]
impl WebhookEndpointNode {
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }
    /// None: the endpoint receives the whole team's events.
    async fn project_id(&self) -> Option<ID> {
        self.row.project_id.clone().map(ID)
    }
    async fn url(&self) -> &str {
        &self.row.url
    }
    async fn description(&self) -> &str {
        &self.row.description
    }
    /// Empty: every event type.
    async fn event_types(&self) -> Vec<String> {
        self.row.event_types()
    }
    /// Empty: events of every integration.
    async fn integration_ids(&self) -> Vec<ID> {
        self.row.integration_ids().into_iter().map(ID).collect()
    }
    /// The names of the extra headers sent (their values are sealed and never shown).
    async fn header_names(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let Some(sealed) = &self.row.headers_sealed else {
            return Ok(Vec::new());
        };
        let headers: serde_json::Map<String, Value> =
            serde_json::from_slice(&open(state(ctx), sealed, &self.row.id, "headers")?)?;
        Ok(headers.keys().cloned().collect())
    }
    async fn rate_limit_per_second(&self) -> Option<i32> {
        self.row.rate_limit_per_second
    }
    async fn enabled(&self) -> bool {
        self.row.enabled
    }
    /// Why the hub disabled the endpoint (410 Gone, or failing too long).
    async fn disabled_reason(&self) -> Option<&str> {
        self.row.disabled_reason.as_deref()
    }
    /// The signing secret (`whsec_...`): only in the answer that made it; never again.
    async fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }
    /// Until when the previous secret still signs beside the current one.
    async fn previous_secret_expires_at(&self) -> Option<DateTime<Utc>> {
        self.row
            .previous_secret_until
            .filter(|until| *until > now())
            .map(|t| t.and_utc())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum WebhookDeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl WebhookDeliveryStatus {
    fn parse(text: &str) -> Self {
        match text {
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

pub struct WebhookDeliveryNode(pub DeliveryRow);

#[Object(name = "WebhookDelivery")]
impl WebhookDeliveryNode {
    /// Also the `webhook-id` header, the same on every attempt.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn endpoint_id(&self) -> ID {
        ID(self.0.endpoint_id.clone())
    }
    async fn project_id(&self) -> Option<ID> {
        self.0.project_id.clone().map(ID)
    }
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// The body sent: `{"type", "timestamp", "data"}`.
    async fn payload(&self) -> Json<Value> {
        Json(serde_json::from_str(&self.0.payload).unwrap_or(Value::Null))
    }
    async fn status(&self) -> WebhookDeliveryStatus {
        WebhookDeliveryStatus::parse(&self.0.status)
    }
    /// When the next attempt is due (pending deliveries).
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        (self.0.status == "pending").then(|| self.0.next_attempt_at.and_utc())
    }
    /// The last attempt's response status and error.
    async fn last_status(&self) -> Option<i32> {
        self.0.last_status
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at.map(|t| t.and_utc())
    }
    /// Every attempt, oldest first.
    async fn attempts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WebhookAttempt>> {
        let rows =
            store::attempts_of(&mut *conn(ctx).await?, std::slice::from_ref(&self.0.id)).await?;
        Ok(rows.into_iter().map(WebhookAttempt).collect())
    }
}

pub struct WebhookAttempt(AttemptRow);

#[Object]
impl WebhookAttempt {
    async fn attempted_at(&self) -> DateTime<Utc> {
        self.0.attempted_at.and_utc()
    }
    /// None when no answer came (timeout, connection refused...).
    async fn response_status(&self) -> Option<i32> {
        self.0.response_status
    }
    async fn duration_ms(&self) -> i64 {
        self.0.duration_ms
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// The first 1 KiB of the answer.
    async fn response_body(&self) -> Option<&str> {
        self.0.response_body.as_deref()
    }
}

#[derive(SimpleObject)]
pub struct WebhookEventType {
    pub name: String,
    pub description: String,
    /// An example body of this type.
    pub example: Json<Value>,
}

#[derive(SimpleObject)]
pub struct WebhookStats {
    /// Attempts made in the period.
    pub attempted: i64,
    /// Deliveries (created in the period) that reached the endpoint, and that failed for good.
    pub delivered: i64,
    pub failed: i64,
    /// Share of attempts answered 2xx (0 to 1; null without attempts).
    pub success_rate: Option<f64>,
    pub p50_latency_ms: Option<i64>,
    pub p95_latency_ms: Option<i64>,
}

#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    /// None: events of the whole team (needs a key without project limits).
    pub project_id: Option<ID>,
    pub url: String,
    pub description: Option<String>,
    /// Empty or none: every event type.
    pub event_types: Option<Vec<String>>,
    /// Empty or none: events of every integration.
    pub integration_ids: Option<Vec<ID>>,
    /// Extra headers sent with every delivery (an object of strings); sealed at rest.
    pub headers: Option<Json<Value>>,
    pub rate_limit_per_second: Option<i32>,
    pub enabled: Option<bool>,
}

#[derive(InputObject)]
pub struct UpdateWebhookEndpointInput {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub integration_ids: Option<Vec<ID>>,
    /// Null removes them.
    pub headers: MaybeUndefined<Json<Value>>,
    /// Null removes the limit.
    pub rate_limit_per_second: MaybeUndefined<i32>,
    /// Enabling clears the reason it was disabled and its failing streak.
    pub enabled: Option<bool>,
}

const RESERVED_HEADERS: [&str; 8] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

fn check_url(state: &AppState, url: &str) -> AppResult<String> {
    let url = url.trim();
    if url.len() > 2048 {
        return Err(AppError::validation("url: at most 2048 characters"));
    }
    let parsed = url::Url::parse(url)
        .map_err(|err| AppError::validation(format!("url: not a URL ({err})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(AppError::validation("url: must be an http or https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(AppError::validation(
            "url: no credentials in the URL (use headers)",
        ));
    }
    state
        .outbound
        .check_url(&parsed)
        .map_err(|reason| AppError::validation(format!("url: {reason}")))?;
    Ok(parsed.to_string())
}

fn check_description(description: Option<String>) -> AppResult<String> {
    let description = description.unwrap_or_default();
    if description.chars().count() > 2000 {
        return Err(AppError::validation("description: at most 2000 characters"));
    }
    Ok(description)
}

fn check_event_types(types: Option<Vec<String>>) -> AppResult<String> {
    let mut types = types.unwrap_or_default();
    if types.len() > super::EVENT_TYPES.len() {
        return Err(AppError::validation("eventTypes: too many"));
    }
    if let Some(unknown) = types.iter().find(|t| !super::is_event_type(t)) {
        return Err(AppError::validation(format!(
            "eventTypes: unknown event type `{}` (see webhookEventTypes)",
            unknown.chars().take(100).collect::<String>()
        )));
    }
    types.sort();
    types.dedup();
    Ok(serde_json::to_string(&types)?)
}

async fn check_integrations(
    ctx: &Context<'_>,
    caller: &Principal,
    project: Option<&str>,
    ids: Option<Vec<ID>>,
) -> AppResult<String> {
    let mut ids: Vec<String> = ids.unwrap_or_default().into_iter().map(|i| i.0).collect();
    if ids.len() > 100 {
        return Err(AppError::validation("integrationIds: at most 100"));
    }
    ids.sort();
    ids.dedup();
    for id in &ids {
        let row = crate::integrations::graphql::reachable(ctx, caller, id).await?;
        if project.is_some_and(|p| p != row.project_id) {
            return Err(AppError::validation(format!(
                "integrationIds: `{id}` is not in the endpoint's project"
            )));
        }
    }
    Ok(serde_json::to_string(&ids)?)
}

fn check_headers(headers: Value) -> AppResult<Option<Vec<u8>>> {
    let Value::Object(map) = headers else {
        if headers.is_null() {
            return Ok(None);
        }
        return Err(AppError::validation(
            "headers: must be an object of strings",
        ));
    };
    if map.len() > 20 {
        return Err(AppError::validation("headers: at most 20"));
    }
    for (name, value) in &map {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(AppError::validation(format!(
                "headers: `{}` is not a header name",
                name.chars().take(100).collect::<String>()
            )));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(AppError::validation(format!(
                "headers: `{name}` is set by the hub"
            )));
        }
        match value.as_str() {
            Some(v) if v.len() <= 4096 && reqwest::header::HeaderValue::from_str(v).is_ok() => {}
            _ => {
                return Err(AppError::validation(format!(
                    "headers: `{name}` must be a string of at most 4096 visible characters"
                )));
            }
        }
    }
    if map.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_vec(&map)?))
}

fn check_rate(rate: Option<i32>) -> AppResult<Option<i32>> {
    match rate {
        Some(n) if !(1..=10_000).contains(&n) => {
            Err(AppError::validation("rateLimitPerSecond: 1 to 10000"))
        }
        other => Ok(other),
    }
}

/// Wakes the delivery worker once the mutation has committed.
fn wake(ctx: &Context<'_>) {
    after_commit(ctx, |state| state.wake_deliveries.notify_one());
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The event types an endpoint can subscribe to, each with an example body.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksRead)")]
    async fn webhook_event_types(&self) -> Vec<WebhookEventType> {
        super::EVENT_TYPES
            .iter()
            .map(|(name, description)| WebhookEventType {
                name: name.to_string(),
                description: description.to_string(),
                example: Json(json!({
                    "type": name,
                    "timestamp": "2026-11-30T12:00:00.000Z",
                    "data": super::example(name),
                })),
            })
            .collect()
    }

    /// The team's endpoints (`projectId`: that project's).
    #[graphql(guard = "ScopeGuard(Scope::WebhooksRead)")]
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        project_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<WebhookEndpointNode>> {
        let caller = principal(ctx)?;
        let page = Page::new("webhook_endpoint", first, after)?;
        let projects = match &project_id {
            Some(id) => {
                caller.check_project(id)?;
                Some(vec![id.0.clone()])
            }
            None => {
                caller.require_unrestricted()?;
                None
            }
        };
        let fetch = Fetch::Page {
            after: page.after.as_deref(),
            limit: page.fetch(),
        };
        let rows = store::list_endpoints(
            &mut *conn(ctx).await?,
            &caller.team_id,
            projects.as_deref(),
            fetch,
        )
        .await?
        .rows();
        let total = if asks_total(ctx) {
            Some(
                store::list_endpoints(
                    &mut *conn(ctx).await?,
                    &caller.team_id,
                    projects.as_deref(),
                    Fetch::Count,
                )
                .await?
                .count(),
            )
        } else {
            None
        };
        Ok(page.connection(
            rows,
            total,
            |r| &r.id,
            |row| WebhookEndpointNode { row, secret: None },
        ))
    }

    #[graphql(guard = "ScopeGuard(Scope::WebhooksRead)")]
    async fn webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<WebhookEndpointNode> {
        let caller = principal(ctx)?;
        let row = reachable_endpoint(ctx, caller, &id).await?;
        Ok(WebhookEndpointNode { row, secret: None })
    }

    /// Deliveries, newest first, of one endpoint or of one project's endpoints (or, for keys
    /// without project limits, of the team's).
    #[graphql(guard = "ScopeGuard(Scope::WebhooksRead)")]
    #[allow(clippy::too_many_arguments)]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        endpoint_id: Option<ID>,
        project_id: Option<ID>,
        status: Option<WebhookDeliveryStatus>,
        event_type: Option<String>,
        since: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<WebhookDeliveryNode>> {
        let caller = principal(ctx)?;
        let page = Page::new("webhook_delivery", first, after)?;
        if let Some(id) = &endpoint_id {
            reachable_endpoint(ctx, caller, id).await?;
        }
        if let Some(id) = &project_id {
            caller.check_project(id)?;
        }
        if endpoint_id.is_none() && project_id.is_none() {
            caller.require_unrestricted()?;
        }
        let filter = DeliveryFilter {
            endpoint_id: endpoint_id.map(|i| i.0),
            project_id: project_id.map(|i| i.0),
            status: status.map(|s| s.as_str().to_string()),
            event_type,
            since: since.map(|t| t.naive_utc()),
        };
        let fetch = Fetch::Page {
            after: page.after.as_deref(),
            limit: page.fetch(),
        };
        let rows = store::list_deliveries(&mut *conn(ctx).await?, &caller.team_id, &filter, fetch)
            .await?
            .rows();
        let total = if asks_total(ctx) {
            Some(
                store::list_deliveries(
                    &mut *conn(ctx).await?,
                    &caller.team_id,
                    &filter,
                    Fetch::Count,
                )
                .await?
                .count(),
            )
        } else {
            None
        };
        Ok(page.connection(rows, total, |r| &r.id, WebhookDeliveryNode))
    }

    /// An endpoint's figures since a time (default: the last 24 hours). Attempts, success
    /// rate and latencies are over at most the newest 100,000 attempts.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksRead)")]
    async fn webhook_stats(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        since: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<WebhookStats> {
        let caller = principal(ctx)?;
        let endpoint = reachable_endpoint(ctx, caller, &endpoint_id).await?;
        let since = since
            .map(|t| t.naive_utc())
            .unwrap_or_else(|| now() - chrono::Duration::hours(24));
        let mut db = conn(ctx).await?;
        let outcomes = store::attempt_outcomes(&mut db, &endpoint.id, since).await?;
        let (delivered, failed) = store::delivery_outcomes(&mut db, &endpoint.id, since).await?;
        let attempted = outcomes.len() as i64;
        let ok = outcomes
            .iter()
            .filter(|(s, _)| s.is_some_and(|s| (200..300).contains(&s)))
            .count() as f64;
        let mut latencies: Vec<i64> = outcomes.iter().map(|(_, d)| *d).collect();
        latencies.sort_unstable();
        let at = |p: f64| {
            (!latencies.is_empty())
                .then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize])
        };
        Ok(WebhookStats {
            attempted,
            delivered,
            failed,
            success_rate: (attempted > 0).then(|| ok / attempted as f64),
            p50_latency_ms: at(0.5),
            p95_latency_ms: at(0.95),
        })
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// A new endpoint; its `secret` is in this answer only.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> async_graphql::Result<WebhookEndpointNode> {
        let caller = principal(ctx)?;
        let state = state(ctx);
        let project = input.project_id.map(|p| p.0);
        match &project {
            Some(id) => {
                caller.check_project(id)?;
                crate::projects::store::get(&mut *conn(ctx).await?, &caller.team_id, id).await?;
            }
            None => caller.require_unrestricted()?,
        }
        let id = new_id();
        audit::target(ctx, "webhook_endpoint", &id);
        let url = check_url(state, &input.url)?;
        let description = check_description(input.description)?;
        let event_types = check_event_types(input.event_types)?;
        let integration_ids =
            check_integrations(ctx, caller, project.as_deref(), input.integration_ids).await?;
        let headers = match input.headers {
            Some(headers) => check_headers(headers.0)?,
            None => None,
        };
        let rate = check_rate(input.rate_limit_per_second)?;
        let secret = super::sign::new_secret();
        let at = now();
        let row = EndpointRow {
            secret_sealed: seal(state, secret.as_bytes(), &id, "secret")?,
            headers_sealed: headers
                .map(|h| seal(state, &h, &id, "headers"))
                .transpose()?,
            id,
            team_id: caller.team_id.clone(),
            project_id: project,
            url,
            description,
            event_types,
            integration_ids,
            rate_limit_per_second: rate,
            enabled: input.enabled.unwrap_or(true),
            disabled_reason: None,
            previous_secret_sealed: None,
            previous_secret_until: None,
            failing_since: None,
            created_at: at,
            updated_at: at,
        };
        store::insert_endpoint(&mut *conn(ctx).await?, &row).await?;
        Ok(WebhookEndpointNode {
            row,
            secret: Some(secret),
        })
    }

    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWebhookEndpointInput,
    ) -> async_graphql::Result<WebhookEndpointNode> {
        let caller = principal(ctx)?;
        let state = state(ctx);
        audit::target(ctx, "webhook_endpoint", &id);
        let row = reachable_endpoint(ctx, caller, &id).await?;
        let mut changes = EndpointChanges {
            updated_at: Some(now()),
            ..Default::default()
        };
        if let Some(url) = input.url {
            changes.url = Some(check_url(state, &url)?);
        }
        if input.description.is_some() {
            changes.description = Some(check_description(input.description)?);
        }
        if input.event_types.is_some() {
            changes.event_types = Some(check_event_types(input.event_types)?);
        }
        if input.integration_ids.is_some() {
            changes.integration_ids = Some(
                check_integrations(
                    ctx,
                    caller,
                    row.project_id.as_deref(),
                    input.integration_ids,
                )
                .await?,
            );
        }
        match input.headers {
            MaybeUndefined::Undefined => {}
            MaybeUndefined::Null => changes.headers_sealed = Some(None),
            MaybeUndefined::Value(headers) => {
                changes.headers_sealed = Some(
                    check_headers(headers.0)?
                        .map(|h| seal(state, &h, &row.id, "headers"))
                        .transpose()?,
                );
            }
        }
        match input.rate_limit_per_second {
            MaybeUndefined::Undefined => {}
            MaybeUndefined::Null => changes.rate_limit_per_second = Some(None),
            MaybeUndefined::Value(n) => changes.rate_limit_per_second = Some(check_rate(Some(n))?),
        }
        if let Some(enabled) = input.enabled {
            changes.enabled = Some(enabled);
            if enabled {
                changes.disabled_reason = Some(None);
                changes.failing_since = Some(None);
            }
        }
        let mut db = conn(ctx).await?;
        store::update_endpoint(&mut db, &row.id, &changes).await?;
        let row = store::get_endpoint(&mut db, &caller.team_id, &row.id).await?;
        wake(ctx);
        Ok(WebhookEndpointNode { row, secret: None })
    }

    /// Deletes the endpoint with its deliveries.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn delete_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<bool> {
        let caller = principal(ctx)?;
        audit::target(ctx, "webhook_endpoint", &id);
        reachable_endpoint(ctx, caller, &id).await?;
        store::delete_endpoint(&mut *conn(ctx).await?, &caller.team_id, &id).await?;
        Ok(true)
    }

    /// A new secret (in this answer only); the old one keeps signing beside it for
    /// `overlapSeconds` (default 0, at most 7 days), so receivers can switch without a gap.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
        overlap_seconds: Option<i32>,
    ) -> async_graphql::Result<WebhookEndpointNode> {
        let caller = principal(ctx)?;
        let state = state(ctx);
        audit::target(ctx, "webhook_endpoint", &id);
        let overlap = overlap_seconds.unwrap_or(0);
        if !(0..=7 * 24 * 3600).contains(&overlap) {
            return Err(AppError::validation("overlapSeconds: 0 to 604800").into());
        }
        let row = reachable_endpoint(ctx, caller, &id).await?;
        let secret = super::sign::new_secret();
        let at = now();
        let changes = EndpointChanges {
            secret_sealed: Some(seal(state, secret.as_bytes(), &row.id, "secret")?),
            previous_secret_sealed: Some((overlap > 0).then(|| row.secret_sealed.clone())),
            previous_secret_until: Some(
                (overlap > 0).then(|| at + chrono::Duration::seconds(overlap as i64)),
            ),
            updated_at: Some(at),
            ..Default::default()
        };
        let mut db = conn(ctx).await?;
        store::update_endpoint(&mut db, &row.id, &changes).await?;
        let row = store::get_endpoint(&mut db, &caller.team_id, &row.id).await?;
        Ok(WebhookEndpointNode {
            row,
            secret: Some(secret),
        })
    }

    /// Queues a `webhook.test` event to the endpoint, delivered like any other.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn send_test_webhook(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<WebhookDeliveryNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "webhook_endpoint", &id);
        let endpoint = reachable_endpoint(ctx, caller, &id).await?;
        if !endpoint.enabled {
            return Err(AppError::Conflict("the endpoint is disabled".into()).into());
        }
        let at = now();
        let body = super::body(
            "webhook.test",
            at,
            json!({ "endpointId": endpoint.id, "message": "a test event from integration-hub" }),
        );
        let delivery = super::outbox::delivery(
            &endpoint,
            "webhook.test",
            endpoint.project_id.as_deref(),
            body,
            at,
        );
        store::insert_deliveries(&mut *conn(ctx).await?, std::slice::from_ref(&delivery)).await?;
        wake(ctx);
        Ok(WebhookDeliveryNode(delivery))
    }

    /// Queues a delivery again (a new round of attempts, with the same `webhook-id`).
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn redeliver_webhook(
        &self,
        ctx: &Context<'_>,
        delivery_id: ID,
    ) -> async_graphql::Result<WebhookDeliveryNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "webhook_delivery", &delivery_id);
        let delivery =
            store::get_delivery(&mut *conn(ctx).await?, &caller.team_id, &delivery_id).await?;
        let endpoint = reachable_endpoint(ctx, caller, &delivery.endpoint_id)
            .await
            .map_err(|_| AppError::not_found("webhook delivery"))?;
        if delivery.status == "pending" {
            return Err(AppError::Conflict("the delivery is still pending".into()).into());
        }
        if !endpoint.enabled {
            return Err(AppError::Conflict("the endpoint is disabled".into()).into());
        }
        let mut db = conn(ctx).await?;
        store::requeue(
            &mut db,
            &caller.team_id,
            std::slice::from_ref(&delivery.id),
            now(),
        )
        .await?;
        let delivery = store::get_delivery(&mut db, &caller.team_id, &delivery.id).await?;
        wake(ctx);
        Ok(WebhookDeliveryNode(delivery))
    }

    /// Re-seals the team's credentials (OAuth tokens too), OAuth app secrets, webhook secrets and
    /// webhook headers under the active
    /// encryption key (after adding a key to `HUB_ENCRYPTION_KEYS`). Needs `admin`.
    #[graphql(guard = "ScopeGuard(Scope::Admin)")]
    async fn reseal_credentials(&self, ctx: &Context<'_>) -> async_graphql::Result<ResealResult> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        let keyring = &state(ctx).keyring;
        let mut db = conn(ctx).await?;
        let credentials =
            crate::integrations::service::reseal_all(&mut db, keyring, Some(&caller.team_id))
                .await?;
        let webhooks = store::reseal_all(&mut db, keyring, Some(&caller.team_id)).await?;
        let apps = crate::oauth::store::reseal_all(&mut db, keyring, Some(&caller.team_id)).await?;
        Ok(ResealResult {
            resealed: credentials + webhooks + apps,
            active_key_id: keyring.active_key_id().to_string(),
        })
    }

    /// Queues again every delivery to the endpoint since `since` that failed (for a receiver
    /// back from an outage): at most 10,000 at a time. Returns how many.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn replay_webhooks(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        since: DateTime<Utc>,
    ) -> async_graphql::Result<i32> {
        let caller = principal(ctx)?;
        audit::target(ctx, "webhook_endpoint", &endpoint_id);
        let endpoint = reachable_endpoint(ctx, caller, &endpoint_id).await?;
        if !endpoint.enabled {
            return Err(AppError::Conflict("the endpoint is disabled".into()).into());
        }
        let mut db = conn(ctx).await?;
        let ids =
            store::undelivered_since(&mut db, &endpoint.id, since.naive_utc(), 10_000).await?;
        let mut count = 0;
        for chunk in ids.chunks(500) {
            count += store::requeue(&mut db, &caller.team_id, chunk, now()).await?;
        }
        wake(ctx);
        Ok(count as i32)
    }
}

/// A delivery's new state, or a notice of updates missed by a slow subscriber.
#[derive(Union)]
pub enum WebhookDeliveryItem {
    Delivery(Box<WebhookDeliveryNode>),
    Missed(EventsMissed),
}

#[derive(Default)]
pub struct WebhookSubscription;

#[Subscription]
impl WebhookSubscription {
    /// Deliveries as they are queued, attempted, delivered or failed: of one endpoint, or of
    /// one project's endpoints (or, for keys without project limits, of the team's).
    #[graphql(guard = "ScopeGuard(Scope::WebhooksRead)")]
    async fn webhook_delivery_updates(
        &self,
        ctx: &Context<'_>,
        project_id: Option<ID>,
        endpoint_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = WebhookDeliveryItem> + use<>> {
        let caller = principal(ctx)?;
        if let Some(id) = &endpoint_id {
            reachable_endpoint(ctx, caller, id).await?;
        }
        if let Some(id) = &project_id {
            caller.check_project(id)?;
        }
        if endpoint_id.is_none() && project_id.is_none() {
            caller.require_unrestricted()?;
        }
        let (project, endpoint) = (project_id.map(|i| i.0), endpoint_id.map(|i| i.0));
        Ok(watch(ctx, caller).filter_map(move |item| {
            let out = match item {
                Live::Event(event) if event.kind == EventKind::WebhookDeliveryUpdated => {
                    let wanted = endpoint.as_ref().is_none_or(|e| *e == event.subject_id)
                        && project
                            .as_ref()
                            .is_none_or(|p| event.project_id.as_ref() == Some(p));
                    wanted
                        .then(|| serde_json::from_value::<DeliveryRow>(event.payload.clone()).ok())
                        .flatten()
                        .map(|d| WebhookDeliveryItem::Delivery(Box::new(WebhookDeliveryNode(d))))
                }
                Live::Event(_) => None,
                Live::Missed(count) => Some(WebhookDeliveryItem::Missed(EventsMissed {
                    count: count.min(i32::MAX as u64) as i32,
                })),
            };
            std::future::ready(out)
        }))
    }
}
