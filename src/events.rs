//! The one event bus: every event the hub publishes (integration changes, request logs,
//! health changes, key revocations...) goes through here to subscriptions (and later
//! webhooks). A bounded broadcast channel: a subscriber that falls behind is told how many
//! events it missed instead of growing memory.

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
    ApiKeyCreated,
    ApiKeyRevoked,
    SyncStarted,
    SyncProgress,
    SyncCompleted,
    SyncFailed,
    ErrorOccurred,
}

impl EventKind {
    /// The event's name as documented (`integration.created` ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::IntegrationCreated => "integration.created",
            Self::IntegrationUpdated => "integration.updated",
            Self::IntegrationDeleted => "integration.deleted",
            Self::IntegrationHealthChanged => "integration.health_changed",
            Self::IntegrationRequest => "integration.request",
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::SyncStarted => "sync.started",
            Self::SyncProgress => "sync.progress",
            Self::SyncCompleted => "sync.completed",
            Self::SyncFailed => "sync.failed",
            Self::ErrorOccurred => "error.occurred",
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

#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(16));
        Self { sender }
    }

    /// Publishes to whoever listens now; with no listener the event is simply dropped.
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}
