//! Webhooks out: endpoints subscribed to the hub's events, signed per the Standard Webhooks
//! spec, delivered at least once from the database (an outbox) with retries.
//!
//! An event that matters to receivers is queued by the bus for `outbox` (a queue of its own,
//! never pushed out by other traffic), which writes one delivery row per matching endpoint
//! of the event's team; `worker` claims due rows (a lease per row, so a replica that dies
//! loses its claims and another sends them), sends, records each attempt and schedules the
//! next one.

pub mod graphql;
pub mod inbound;
pub mod outbox;
pub mod sign;
pub mod store;
pub mod worker;

use serde_json::{Value, json};

use crate::events::{Event, EventKind};

/// The event types an endpoint can subscribe to: name, description, an example `data`.
pub const EVENT_TYPES: [(&str, &str); 15] = [
    ("integration.created", "An integration was registered."),
    (
        "integration.updated",
        "An integration's configuration, credentials or enabled state changed.",
    ),
    ("integration.deleted", "An integration was deleted."),
    (
        "integration.connected",
        "An integration's OAuth connection completed.",
    ),
    (
        "integration.oauth_failed",
        "An integration's OAuth grant was refused (consent revoked) or its token expired unrenewed.",
    ),
    (
        "integration.health_changed",
        "An integration's health status changed (CONNECTED, DEGRADED, ERROR...).",
    ),
    (
        "integration.request_failed",
        "A call through an integration failed: no answer, a timeout, a 5xx or an auth refusal.",
    ),
    ("sync.started", "A sync run started."),
    ("sync.completed", "A sync run finished."),
    ("sync.failed", "A sync run failed or was interrupted."),
    ("api_key.created", "An API key was created."),
    ("api_key.revoked", "An API key was revoked."),
    (
        "webhook.received",
        "A provider pushed an event into the hub (an inbound webhook).",
    ),
    ("webhook.test", "Sent by sendTestWebhook."),
    (
        "webhook.endpoint_disabled",
        "One of the team's webhook endpoints was disabled (410 Gone, or failing too long).",
    ),
];

/// Whether `name` is an event type endpoints can subscribe to.
pub fn is_event_type(name: &str) -> bool {
    EVENT_TYPES.iter().any(|(known, _)| *known == name)
}

/// An example of each type's `data`.
pub fn example(name: &str) -> Value {
    match name.split('.').next() {
        Some("integration") if name == "integration.request_failed" => json!({
            "integrationId": "0193...", "projectId": "0193...", "method": "GET",
            "path": "/repos/acme/api", "status": 503, "error": null, "durationMs": 812,
            "correlationId": "0193..."
        }),
        Some("integration") => json!({
            "id": "0193...", "projectId": "0193...", "name": "GitHub", "providerKey": "github",
            "enabled": true, "status": "CONNECTED"
        }),
        Some("sync") => json!({
            "id": "0193...", "projectId": "0193...", "config_id": "0193...",
            "status": "succeeded", "records_read": 120, "records_written": 7
        }),
        Some("api_key") => json!({ "id": "0193...", "name": "ci" }),
        _ if name == "webhook.received" => json!({
            "integrationId": "0193...", "provider": "github", "eventType": "push",
            "deliveryId": "72d3162e-...", "payload": { "ref": "refs/heads/main" }
        }),
        _ if name == "webhook.endpoint_disabled" => json!({
            "id": "0193...", "url": "https://example.com/hooks", "reason": "410 Gone"
        }),
        _ => json!({ "endpointId": "0193...", "message": "a test event from integration-hub" }),
    }
}

/// The webhook type of a bus event, if receivers can subscribe to it.
pub fn type_of(event: &Event) -> Option<&'static str> {
    Some(match event.kind {
        EventKind::IntegrationCreated => "integration.created",
        EventKind::IntegrationUpdated => "integration.updated",
        EventKind::IntegrationDeleted => "integration.deleted",
        EventKind::IntegrationHealthChanged => "integration.health_changed",
        EventKind::IntegrationConnected => "integration.connected",
        EventKind::IntegrationOAuthFailed => "integration.oauth_failed",
        EventKind::IntegrationRequest => {
            let log = event.request_log.as_ref()?;
            let failed =
                log.error.is_some() || log.status.is_none_or(|s| s >= 500 || s == 401 || s == 403);
            if !failed {
                return None;
            }
            "integration.request_failed"
        }
        EventKind::SyncStarted => "sync.started",
        EventKind::SyncCompleted => "sync.completed",
        EventKind::SyncFailed => "sync.failed",
        EventKind::ApiKeyCreated => "api_key.created",
        EventKind::ApiKeyRevoked => "api_key.revoked",
        EventKind::WebhookReceived => "webhook.received",
        EventKind::WebhookEndpointDisabled => "webhook.endpoint_disabled",
        EventKind::WebhookTest
        | EventKind::WebhookDeliveryUpdated
        | EventKind::SyncProgress
        | EventKind::ErrorOccurred => return None,
    })
}

/// For the bus's tap: the events that become deliveries.
pub fn wants(event: &Event) -> bool {
    type_of(event).is_some()
}

/// The integration an event is about, for endpoints limited to some integrations.
pub fn integration_of(event: &Event) -> Option<&str> {
    match event.kind {
        EventKind::IntegrationCreated
        | EventKind::IntegrationUpdated
        | EventKind::IntegrationDeleted
        | EventKind::IntegrationHealthChanged
        | EventKind::IntegrationRequest
        | EventKind::IntegrationConnected
        | EventKind::IntegrationOAuthFailed
        | EventKind::WebhookReceived => Some(&event.subject_id),
        _ => None,
    }
}

/// The body sent: `{"type", "timestamp", "data"}`.
pub fn body(event_type: &str, at: chrono::NaiveDateTime, data: Value) -> String {
    json!({
        "type": event_type,
        "timestamp": at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// A bus event's `data`: what it carries, with the ids a receiver needs.
pub fn data_of(event: &Event) -> Value {
    if let Some(log) = &event.request_log {
        return json!({
            "integrationId": log.integration_id,
            "projectId": log.project_id,
            "method": log.method,
            "path": log.path,
            "status": log.status,
            "error": log.error,
            "durationMs": log.duration_ms,
            "correlationId": log.correlation_id,
        });
    }
    let mut data = match &event.payload {
        Value::Object(map) => map.clone(),
        Value::Null => serde_json::Map::new(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("value".into(), other.clone());
            map
        }
    };
    data.entry("id").or_insert_with(|| json!(event.subject_id));
    if let Some(project) = &event.project_id {
        data.entry("projectId").or_insert_with(|| json!(project));
    }
    Value::Object(data)
}
