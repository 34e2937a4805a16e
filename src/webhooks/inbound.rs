//! Webhooks in: providers push events to `POST /hooks/<token>`. The token (kept hashed)
//! names the integration; the request is verified the provider's way (constant-time):
//! GitHub `X-Hub-Signature-256`, Slack `X-Slack-Signature` (timestamp within 5 minutes),
//! GitLab `X-Gitlab-Token`, Azure DevOps basic auth, Standard Webhooks for generic
//! integrations, the URL token alone for the others. A refused request stores nothing (401);
//! a body above 1 MiB is refused (413). An accepted event is stored (once per provider
//! delivery id), answered at once, published as `webhook.received`, and starts the syncs that
//! run on it.

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit;
use crate::auth::{Scope, ScopeGuard, principal};
use crate::context::{AppState, Connection, Page, asks_total, conn, state};
use crate::db::schema::{inbound_webhook_events, inbound_webhooks};
use crate::db::{DbConn, Fetch, Listed, new_id, now};
use crate::error::{AppError, AppResult};
use crate::events::{Event, EventKind};
use crate::integrations::model::IntegrationRow;
use crate::with_conn;

/// The largest body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// How far a Slack request's timestamp may be from now.
const SLACK_SKEW_SECS: i64 = 300;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = inbound_webhooks)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct InboundRow {
    pub integration_id: String,
    pub team_id: String,
    /// sha256 (hex) of the URL's token.
    pub token_hash: String,
    /// `<key id>:<sealed>`.
    pub secret_sealed: String,
    pub created_at: NaiveDateTime,
}

pub use crate::db::rows::InboundEventRow;

/// How a provider proves a push is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    GitHub,
    Slack,
    GitLab,
    AzureDevOps,
    Standard,
    TokenOnly,
}

fn scheme(provider: &str) -> Scheme {
    match provider {
        "github" => Scheme::GitHub,
        "slack" => Scheme::Slack,
        "gitlab" => Scheme::GitLab,
        "azure_devops" => Scheme::AzureDevOps,
        "generic_rest" | "graphql" => Scheme::Standard,
        _ => Scheme::TokenOnly,
    }
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random(bytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut out);
    out
}

fn header<'a>(req: &'a actix_web::HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Checks the request against the integration's secret; `Err` says why it is refused.
fn verify(
    scheme: Scheme,
    secret: &str,
    req: &actix_web::HttpRequest,
    body: &[u8],
) -> Result<(), &'static str> {
    match scheme {
        Scheme::GitHub => {
            let given = header(req, "x-hub-signature-256")
                .and_then(|v| v.strip_prefix("sha256="))
                .and_then(|v| hex::decode(v).ok())
                .ok_or("X-Hub-Signature-256 is missing or malformed")?;
            let mut mac = hmac_sha256(secret.as_bytes());
            mac.update(body);
            mac.verify_slice(&given)
                .map_err(|_| "X-Hub-Signature-256 does not match")
        }
        Scheme::Slack => {
            let timestamp: i64 = header(req, "x-slack-request-timestamp")
                .and_then(|v| v.parse().ok())
                .ok_or("X-Slack-Request-Timestamp is missing")?;
            if (now().and_utc().timestamp() - timestamp).abs() > SLACK_SKEW_SECS {
                return Err("X-Slack-Request-Timestamp is more than 5 minutes away");
            }
            let given = header(req, "x-slack-signature")
                .and_then(|v| v.strip_prefix("v0="))
                .and_then(|v| hex::decode(v).ok())
                .ok_or("X-Slack-Signature is missing or malformed")?;
            let mut mac = hmac_sha256(secret.as_bytes());
            mac.update(format!("v0:{timestamp}:").as_bytes());
            mac.update(body);
            mac.verify_slice(&given)
                .map_err(|_| "X-Slack-Signature does not match")
        }
        Scheme::GitLab => {
            let given = header(req, "x-gitlab-token").ok_or("X-Gitlab-Token is missing")?;
            bool::from(given.as_bytes().ct_eq(secret.as_bytes()))
                .then_some(())
                .ok_or("X-Gitlab-Token does not match")
        }
        Scheme::AzureDevOps => {
            let given = header(req, "authorization")
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|v| B64.decode(v.trim()).ok())
                .ok_or("basic authorization is missing")?;
            let password = given
                .iter()
                .position(|b| *b == b':')
                .map(|at| &given[at + 1..])
                .ok_or("basic authorization is malformed")?;
            bool::from(password.ct_eq(secret.as_bytes()))
                .then_some(())
                .ok_or("basic authorization does not match")
        }
        Scheme::Standard => {
            let id = header(req, "webhook-id").ok_or("webhook-id is missing")?;
            let timestamp: i64 = header(req, "webhook-timestamp")
                .and_then(|v| v.parse().ok())
                .ok_or("webhook-timestamp is missing")?;
            if (now().and_utc().timestamp() - timestamp).abs() > SLACK_SKEW_SECS {
                return Err("webhook-timestamp is more than 5 minutes away");
            }
            let key = super::sign::key_of(secret).map_err(|_| "the secret is not usable")?;
            let expected = super::sign::signature(&key, id, timestamp, body);
            let signatures =
                header(req, "webhook-signature").ok_or("webhook-signature is missing")?;
            signatures
                .split(' ')
                .any(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
                .then_some(())
                .ok_or("webhook-signature does not match")
        }
        Scheme::TokenOnly => Ok(()),
    }
}

/// The provider's event type and delivery id (a hash of the body when it sends none).
fn identify(
    scheme: Scheme,
    req: &actix_web::HttpRequest,
    body: &Value,
    raw: &[u8],
) -> (String, String) {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let (kind, id) = match scheme {
        Scheme::GitHub => (
            header(req, "x-github-event").map(str::to_string),
            header(req, "x-github-delivery").map(str::to_string),
        ),
        Scheme::GitLab => (
            header(req, "x-gitlab-event").map(str::to_string),
            header(req, "x-gitlab-event-uuid")
                .or_else(|| header(req, "idempotency-key"))
                .map(str::to_string),
        ),
        Scheme::Slack => (
            text(&body["event"]["type"]).or_else(|| text(&body["type"])),
            text(&body["event_id"]),
        ),
        Scheme::AzureDevOps => (text(&body["eventType"]), text(&body["id"])),
        Scheme::Standard => (
            text(&body["type"]),
            header(req, "webhook-id").map(str::to_string),
        ),
        Scheme::TokenOnly => (
            text(&body["webhookEvent"]).or_else(|| text(&body["type"])),
            header(req, "x-atlassian-webhook-identifier").map(str::to_string),
        ),
    };
    let clip = |s: String| s.chars().take(200).collect::<String>();
    (
        clip(kind.unwrap_or_else(|| "unknown".into())),
        clip(id.unwrap_or_else(|| hex::encode(Sha256::digest(raw)))),
    )
}

fn refuse(status: actix_web::http::StatusCode, message: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::build(status).json(json!({ "error": message }))
}

/// `POST /hooks/{token}`.
pub async fn receive(
    state: actix_web::web::Data<AppState>,
    token: actix_web::web::Path<String>,
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
) -> actix_web::HttpResponse {
    use actix_web::http::StatusCode;
    match accept(&state, &token, &req, &body).await {
        Ok(Accepted::Challenge(challenge)) => actix_web::HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge),
        Ok(Accepted::Stored) => {
            actix_web::HttpResponse::Accepted().json(json!({ "accepted": true }))
        }
        Ok(Accepted::Duplicate) => {
            actix_web::HttpResponse::Ok().json(json!({ "accepted": true, "duplicate": true }))
        }
        Err(Refused::Unknown) => refuse(StatusCode::NOT_FOUND, "no such webhook"),
        Err(Refused::Signature(why)) => {
            tracing::info!(reason = why, "inbound webhook refused");
            refuse(StatusCode::UNAUTHORIZED, why)
        }
        Err(Refused::Disabled) => refuse(StatusCode::GONE, "the integration is disabled"),
        Err(Refused::Failed(err)) => {
            let status =
                StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            err.log();
            refuse(status, &err.message())
        }
    }
}

enum Accepted {
    Stored,
    Duplicate,
    Challenge(String),
}

enum Refused {
    Unknown,
    Signature(&'static str),
    Disabled,
    Failed(AppError),
}

impl From<AppError> for Refused {
    fn from(err: AppError) -> Self {
        Refused::Failed(err)
    }
}

/// An open hook: its integration and secret, kept by the replica like call targets (dropped
/// when the integration or its hook changes here; elsewhere within
/// `HUB_INTEGRATION_CACHE_SECS`).
struct Hook {
    integration: IntegrationRow,
    secret: String,
}

async fn open_hook(state: &AppState, token: &str) -> Result<std::sync::Arc<Hook>, Refused> {
    let key = format!("hook:{}", token_hash(token));
    if let Some(hook) = state.call_targets.get::<Hook>(&key) {
        return Ok(hook);
    }
    let generation = state.call_targets.generation();
    let mut db = state.pool.get().await?;
    let row: Option<InboundRow> = with_conn!(&mut db, |c| inbound_webhooks::table
        .filter(inbound_webhooks::token_hash.eq(token_hash(token)))
        .select(InboundRow::as_select())
        .first(c)
        .await
        .optional())
    .map_err(AppError::from)?;
    let row = row.ok_or(Refused::Unknown)?;
    let integration =
        crate::integrations::store::get(&mut db, &row.team_id, &row.integration_id).await?;
    let secret = String::from_utf8(super::graphql::open(
        state,
        &row.secret_sealed,
        &row.integration_id,
        "inbound",
    )?)
    .map_err(|_| AppError::internal(anyhow::anyhow!("an inbound secret is not text")))?;
    let hook = std::sync::Arc::new(Hook {
        integration,
        secret,
    });
    state.call_targets.insert_keyed(
        generation,
        &key,
        &hook.integration.id,
        &hook.integration.project_id,
        hook.clone(),
    );
    Ok(hook)
}

async fn accept(
    state: &AppState,
    token: &str,
    req: &actix_web::HttpRequest,
    raw: &[u8],
) -> Result<Accepted, Refused> {
    if token.len() > 100 {
        return Err(Refused::Unknown);
    }
    let hook = open_hook(state, token).await?;
    let integration = &hook.integration;
    let scheme = scheme(&integration.provider_key);
    verify(scheme, &hook.secret, req, raw).map_err(Refused::Signature)?;
    if !integration.enabled {
        return Err(Refused::Disabled);
    }
    let body: Value = serde_json::from_slice(raw).unwrap_or_else(|_| {
        // Form posts (Slack's interactive payloads) and text are kept as text.
        json!({ "text": String::from_utf8_lossy(raw) })
    });
    if scheme == Scheme::Slack && body["type"] == "url_verification" {
        return Ok(Accepted::Challenge(
            body["challenge"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let (event_type, delivery_id) = identify(scheme, req, &body, raw);
    // The same delivery pushed twice at once: the second waits for nothing and is a duplicate
    // (on this replica; across replicas the row is still stored once).
    let Some(_receiving) = Receiving::start(&integration.id, &delivery_id) else {
        return Ok(Accepted::Duplicate);
    };
    let seen: i64 = {
        let mut db = state.pool.get().await?;
        with_conn!(&mut db, |c| inbound_webhook_events::table
            .filter(inbound_webhook_events::integration_id.eq(&integration.id))
            .filter(inbound_webhook_events::delivery_id.eq(&delivery_id))
            .count()
            .get_result(c)
            .await)
        .map_err(AppError::from)?
    };
    if seen > 0 {
        return Ok(Accepted::Duplicate);
    }
    let row = InboundEventRow {
        id: new_id(),
        team_id: integration.team_id.clone(),
        project_id: integration.project_id.clone(),
        integration_id: integration.id.clone(),
        provider: integration.provider_key.clone(),
        event_type,
        delivery_id,
        payload: String::from_utf8_lossy(raw).into_owned(),
        received_at: now(),
    };
    // Group-committed with other writes; stored before the answer.
    state.journal.inbound_event(row.clone()).await?;
    let state = state.clone();
    let hook = hook.clone();
    tokio::spawn(async move { after_accept(&state, &hook.integration, row, body).await });
    Ok(Accepted::Stored)
}

/// Deliveries being received now, by integration and delivery id.
static RECEIVING: std::sync::LazyLock<dashmap::DashSet<String>> =
    std::sync::LazyLock::new(dashmap::DashSet::new);

/// A delivery being received; none if it already is.
struct Receiving(String);

impl Receiving {
    fn start(integration_id: &str, delivery_id: &str) -> Option<Self> {
        let key = format!("{integration_id}:{delivery_id}");
        RECEIVING.insert(key.clone()).then_some(Self(key))
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        RECEIVING.remove(&self.0);
    }
}

/// What follows an accepted event, after the answer: the event on the bus, and the syncs
/// that run on it.
async fn after_accept(
    state: &AppState,
    integration: &IntegrationRow,
    row: InboundEventRow,
    body: Value,
) {
    state.events.publish(Event {
        kind: EventKind::WebhookReceived,
        team_id: row.team_id.clone(),
        project_id: Some(row.project_id.clone()),
        subject_id: row.integration_id.clone(),
        payload: json!({
            "integrationId": row.integration_id,
            "name": integration.name,
            "providerKey": integration.provider_key,
            "enabled": integration.enabled,
            "status": integration.status,
            "provider": row.provider,
            "eventType": row.event_type,
            "deliveryId": row.delivery_id,
            "payload": body,
        }),
        request_log: None,
        at: row.received_at,
    });
    let configs = match state.pool.get().await {
        Ok(mut conn) => {
            crate::sync::store::configs_on_webhook(&mut conn, &row.integration_id).await
        }
        Err(err) => Err(err),
    };
    let configs = match configs {
        Ok(configs) => configs,
        Err(err) => {
            tracing::warn!(code = err.code(), "syncs that run on webhooks not checked");
            return;
        }
    };
    for config in configs {
        let types: Vec<String> = serde_json::from_str(&config.run_on_webhook).unwrap_or_default();
        if !types.iter().any(|t| t == "*" || *t == row.event_type) {
            continue;
        }
        match crate::sync::engine::start_run(state, config, "webhook").await {
            Ok(_) | Err(AppError::Conflict(_)) => {}
            Err(err) => tracing::warn!(code = err.code(), "a sync on a webhook did not start"),
        }
    }
}

/// A page of an integration's events, newest first (or their count).
async fn list_events(
    conn: &mut DbConn,
    integration_id: &str,
    fetch: Fetch<'_>,
) -> AppResult<Listed<InboundEventRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = inbound_webhook_events::table
            .filter(inbound_webhook_events::integration_id.eq(integration_id))
            .into_boxed();
        crate::page_or_count!(
            query,
            c,
            fetch,
            InboundEventRow,
            inbound_webhook_events::id,
            lt,
            desc
        )
    })?)
}

/// Drops events received before `cutoff`.
pub async fn prune(conn: &mut DbConn, cutoff: NaiveDateTime) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::delete(
        inbound_webhook_events::table.filter(inbound_webhook_events::received_at.lt(cutoff))
    )
    .execute(c)
    .await)?)
}

/// Where a provider sends its events, and the secret to give it.
#[derive(SimpleObject)]
pub struct InboundWebhook {
    /// `HUB_PUBLIC_URL/hooks/<token>`: shown in this answer only (enable again for a new one).
    pub url: String,
    /// For providers that sign or authenticate (GitHub, Slack, GitLab, Azure DevOps as the
    /// basic-auth password, generic as a `whsec_` Standard Webhooks secret).
    pub secret: String,
    /// How pushes are verified.
    pub verification: String,
}

pub struct InboundEventNode(InboundEventRow);

#[Object(name = "InboundWebhookEvent")]
impl InboundEventNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn integration_id(&self) -> ID {
        ID(self.0.integration_id.clone())
    }
    async fn provider(&self) -> &str {
        &self.0.provider
    }
    /// The provider's event type (`push`, `issues`, `Merge Request Hook`...).
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// The provider's delivery id (events are kept once per id).
    async fn delivery_id(&self) -> &str {
        &self.0.delivery_id
    }
    async fn payload(&self) -> Json<Value> {
        Json(serde_json::from_str(&self.0.payload).unwrap_or(Value::String(self.0.payload.clone())))
    }
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.received_at.and_utc()
    }
}

fn describe(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::GitHub => "GitHub X-Hub-Signature-256 (set the secret as the webhook's secret)",
        Scheme::Slack => "Slack X-Slack-Signature (the secret is your Slack app's signing secret)",
        Scheme::GitLab => "GitLab X-Gitlab-Token (set the secret as the webhook's secret token)",
        Scheme::AzureDevOps => "basic authentication (any user name, the secret as the password)",
        Scheme::Standard => "Standard Webhooks signatures with the whsec_ secret",
        Scheme::TokenOnly => "the URL's token alone",
    }
}

/// Drops the replica's open hook of the integration once the change has committed.
fn forget_hook(ctx: &Context<'_>, integration_id: &str) {
    let id = integration_id.to_string();
    crate::context::unit::after_commit(ctx, move |state| {
        state.changed(crate::context::peers::Change::Integration(id))
    });
}

#[derive(Default)]
pub struct InboundQuery;

#[Object]
impl InboundQuery {
    /// Events the integration's provider pushed, newest first.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksRead)")]
    async fn inbound_webhook_events(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<InboundEventNode>> {
        let caller = principal(ctx)?;
        crate::integrations::graphql::reachable(ctx, caller, &integration_id).await?;
        let page = Page::new("inbound_event", first, after)?;
        let rows = list_events(
            &mut *conn(ctx).await?,
            &integration_id,
            Fetch::Page {
                after: page.after.as_deref(),
                limit: page.fetch(),
            },
        )
        .await?
        .rows();
        let total = if asks_total(ctx) {
            Some(
                list_events(&mut *conn(ctx).await?, &integration_id, Fetch::Count)
                    .await?
                    .count(),
            )
        } else {
            None
        };
        Ok(page.connection(rows, total, |r| &r.id, InboundEventNode))
    }
}

#[derive(Default)]
pub struct InboundMutation;

#[Object]
impl InboundMutation {
    /// Opens (or re-opens, with a new URL and secret) the integration to pushes from its
    /// provider. `secret`: the provider's own (Slack's signing secret); otherwise one is made.
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn enable_inbound_webhook(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        secret: Option<String>,
    ) -> async_graphql::Result<InboundWebhook> {
        let caller = principal(ctx)?;
        let state = state(ctx);
        audit::target(ctx, "integration", &integration_id);
        let integration =
            crate::integrations::graphql::reachable(ctx, caller, &integration_id).await?;
        let scheme = scheme(&integration.provider_key);
        let secret = match secret {
            Some(s) if (16..=512).contains(&s.len()) && !s.chars().any(char::is_whitespace) => s,
            Some(_) => {
                return Err(
                    AppError::validation("secret: 16 to 512 characters without spaces").into(),
                );
            }
            None if scheme == Scheme::Standard => super::sign::new_secret(),
            None => hex::encode(random(32)),
        };
        let token = URL_SAFE_NO_PAD.encode(random(32));
        let (key_id, sealed) = state.keyring.seal(
            secret.as_bytes(),
            &format!("webhook:{}:inbound", integration.id),
        )?;
        let row = InboundRow {
            integration_id: integration.id.clone(),
            team_id: caller.team_id.clone(),
            token_hash: token_hash(&token),
            secret_sealed: format!("{key_id}:{sealed}"),
            created_at: now(),
        };
        let mut db = conn(ctx).await?;
        with_conn!(&mut *db, |c| diesel::delete(
            inbound_webhooks::table
                .filter(inbound_webhooks::integration_id.eq(&row.integration_id))
        )
        .execute(c)
        .await)?;
        with_conn!(&mut *db, |c| diesel::insert_into(inbound_webhooks::table)
            .values(&row)
            .execute(c)
            .await)?;
        forget_hook(ctx, &integration.id);
        Ok(InboundWebhook {
            url: format!("{}/hooks/{token}", state.public_base()),
            secret,
            verification: describe(scheme).into(),
        })
    }

    /// Closes the integration to pushes (its URL answers 404 from now on).
    #[graphql(guard = "ScopeGuard(Scope::WebhooksWrite)")]
    async fn disable_inbound_webhook(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
    ) -> async_graphql::Result<bool> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let integration =
            crate::integrations::graphql::reachable(ctx, caller, &integration_id).await?;
        let mut db = conn(ctx).await?;
        let removed = with_conn!(&mut *db, |c| diesel::delete(
            inbound_webhooks::table.filter(inbound_webhooks::integration_id.eq(&integration.id))
        )
        .execute(c)
        .await)?;
        forget_hook(ctx, &integration.id);
        Ok(removed > 0)
    }
}
