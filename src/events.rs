//! The one event bus: every event the hub publishes (integration changes, request logs,
//! health changes, key revocations...) goes through here to subscriptions (and later
//! webhooks). A bounded broadcast channel: a subscriber that falls behind is told how many
//! events it missed instead of growing memory.
//!
//! With several replicas on one PostgreSQL, every event published here is also relayed to
//! the other replicas (`context::peers`), which `deliver` it to their own subscribers.

use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::Value;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    IntegrationCreated,
    IntegrationUpdated,
    IntegrationDeleted,
    IntegrationHealthChanged,
    IntegrationRequest,
    /// An OAuth connection completed (callback or client credentials).
    IntegrationConnected,
    /// An OAuth grant was refused (`invalid_grant`...) or a token expired unrenewed.
    IntegrationOAuthFailed,
    ApiKeyCreated,
    ApiKeyRevoked,
    SyncStarted,
    SyncProgress,
    SyncCompleted,
    SyncFailed,
    ErrorOccurred,
    /// A provider pushed an event into the hub (an inbound webhook).
    WebhookReceived,
    /// `sendTestWebhook`.
    WebhookTest,
    WebhookEndpointDisabled,
    /// A delivery changed (queued, attempted, delivered, failed): for subscriptions only.
    WebhookDeliveryUpdated,
}

impl EventKind {
    pub const ALL: [EventKind; 18] = [
        Self::IntegrationCreated,
        Self::IntegrationUpdated,
        Self::IntegrationDeleted,
        Self::IntegrationHealthChanged,
        Self::IntegrationRequest,
        Self::IntegrationConnected,
        Self::IntegrationOAuthFailed,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::SyncStarted,
        Self::SyncProgress,
        Self::SyncCompleted,
        Self::SyncFailed,
        Self::ErrorOccurred,
        Self::WebhookReceived,
        Self::WebhookTest,
        Self::WebhookEndpointDisabled,
        Self::WebhookDeliveryUpdated,
    ];

    /// The kind `name` names (see [`EventKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The event's name as documented (`integration.created` ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::IntegrationCreated => "integration.created",
            Self::IntegrationUpdated => "integration.updated",
            Self::IntegrationDeleted => "integration.deleted",
            Self::IntegrationHealthChanged => "integration.health_changed",
            Self::IntegrationRequest => "integration.request",
            Self::IntegrationConnected => "integration.connected",
            Self::IntegrationOAuthFailed => "integration.oauth_failed",
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::SyncStarted => "sync.started",
            Self::SyncProgress => "sync.progress",
            Self::SyncCompleted => "sync.completed",
            Self::SyncFailed => "sync.failed",
            Self::ErrorOccurred => "error.occurred",
            Self::WebhookReceived => "webhook.received",
            Self::WebhookTest => "webhook.test",
            Self::WebhookEndpointDisabled => "webhook.endpoint_disabled",
            Self::WebhookDeliveryUpdated => "webhook.delivery_updated",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub team_id: String,
    pub project_id: Option<String>,
    /// The integration, API key... the event is about.
    pub subject_id: String,
    /// What the event carries, as JSON (null for request logs: see `request_log`).
    pub payload: Value,
    /// The request log itself, for subscribers (shared, never copied per subscriber).
    pub request_log: Option<Arc<crate::db::rows::RequestLogRow>>,
    pub at: NaiveDateTime,
}

/// An event as it travels between replicas: one line of JSON (serde_json never writes a raw
/// newline).
#[derive(serde::Serialize)]
struct WireOut<'a> {
    k: &'static str,
    t: &'a str,
    p: Option<&'a str>,
    s: &'a str,
    #[serde(skip_serializing_if = "Value::is_null")]
    v: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    l: Option<&'a crate::db::rows::RequestLogRow>,
    a: NaiveDateTime,
}

#[derive(serde::Deserialize)]
struct WireIn {
    k: String,
    t: String,
    p: Option<String>,
    s: String,
    #[serde(default)]
    v: Value,
    #[serde(default)]
    l: Option<crate::db::rows::RequestLogRow>,
    a: NaiveDateTime,
}

impl Event {
    /// The event as one line of JSON, for the other replicas.
    pub fn to_wire(&self) -> String {
        serde_json::to_string(&WireOut {
            k: self.kind.name(),
            t: &self.team_id,
            p: self.project_id.as_deref(),
            s: &self.subject_id,
            v: &self.payload,
            l: self.request_log.as_deref(),
            a: self.at,
        })
        .unwrap_or_default()
    }

    /// An event another replica sent; None for what this version cannot read.
    pub fn from_wire(line: &str) -> Option<Self> {
        let wire: WireIn = serde_json::from_str(line).ok()?;
        Some(Self {
            kind: EventKind::from_name(&wire.k)?,
            team_id: wire.t,
            project_id: wire.p,
            subject_id: wire.s,
            payload: wire.v,
            request_log: wire.l.map(Arc::new),
            at: wire.a,
        })
    }
}

#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
    /// Where events that must not be missed also go (the webhook outbox): a queue of its
    /// own, so a burst of other events on the broadcast channel never pushes them out.
    tap: Arc<std::sync::OnceLock<Tap>>,
    /// Where every event also goes to reach the other replicas (PostgreSQL only).
    relay: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Arc<Event>>>>,
}

struct Tap {
    wants: fn(&Event) -> bool,
    queue: tokio::sync::mpsc::Sender<Arc<Event>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(16));
        Self {
            sender,
            tap: Arc::default(),
            relay: Arc::default(),
        }
    }

    /// Publishes to whoever listens now; with no listener the event is simply dropped. An
    /// event the tap wants is queued for it too.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        if let Some(tap) = self.tap.get()
            && (tap.wants)(&event)
            && tap.queue.try_send(event.clone()).is_err()
        {
            tap.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                event = event.kind.name(),
                "event not queued for webhooks: the outbox queue is full"
            );
        }
        if let Some(relay) = self.relay.get()
            && relay.try_send(event.clone()).is_err()
        {
            metrics::counter!("hub_peer_events_dropped_total").increment(1);
            tracing::warn!(
                event = event.kind.name(),
                "event not relayed to the other replicas: the relay queue is full"
            );
        }
        let _ = self.sender.send(event);
    }

    /// An event another replica published: to this replica's subscribers only (the
    /// publishing replica did the rest, such as queueing webhook deliveries).
    pub fn deliver(&self, event: Event) {
        let _ = self.sender.send(Arc::new(event));
    }

    /// Sets the one relay: every event published from now on is also queued (up to
    /// `capacity`) for the receiver returned. None if a relay is already set.
    pub fn relay(&self, capacity: usize) -> Option<tokio::sync::mpsc::Receiver<Arc<Event>>> {
        let (queue, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        self.relay.set(queue).ok()?;
        Some(receiver)
    }

    /// Sets the one tap: the events `wants` picks are also queued (up to `capacity`) for the
    /// receiver returned. None if a tap is already set.
    pub fn tap(
        &self,
        wants: fn(&Event) -> bool,
        capacity: usize,
    ) -> Option<tokio::sync::mpsc::Receiver<Arc<Event>>> {
        let (queue, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        self.tap
            .set(Tap {
                wants,
                queue,
                dropped: Default::default(),
            })
            .ok()?;
        Some(receiver)
    }

    /// Events waiting in the tap's queue.
    pub fn tap_queued(&self) -> usize {
        self.tap
            .get()
            .map_or(0, |tap| tap.queue.max_capacity() - tap.queue.capacity())
    }

    /// Events the tap wanted but its queue was full for.
    pub fn tap_dropped(&self) -> u64 {
        self.tap.get().map_or(0, |tap| {
            tap.dropped.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Streams listening now (each running subscription holds one).
    pub fn listeners(&self) -> usize {
        self.sender.receiver_count()
    }
}
