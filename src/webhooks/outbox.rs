//! Events to deliveries: each event the bus queued for webhooks becomes one delivery row per
//! enabled endpoint of its team that wants it (its project, event types and integrations),
//! written before anything is sent. Events are taken in batches (one insert per batch).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::sync::mpsc::Receiver;

use super::store::{self, DeliveryRow, EndpointRow};
use crate::context::AppState;
use crate::events::Event;

/// A delivery's id, also its `webhook-id`: `msg_` and a time-ordered UUID.
pub fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// Whether `endpoint` wants an event of `event_type` about `project` and `integration`.
pub fn wants(
    endpoint: &EndpointRow,
    event_type: &str,
    project: Option<&str>,
    integration: Option<&str>,
) -> bool {
    if !endpoint.enabled {
        return false;
    }
    if let Some(own) = &endpoint.project_id
        && project != Some(own.as_str())
    {
        return false;
    }
    let types = endpoint.event_types();
    if !types.is_empty() && !types.iter().any(|t| t == event_type) {
        return false;
    }
    let integrations = endpoint.integration_ids();
    match integration {
        Some(id) if !integrations.is_empty() => integrations.iter().any(|i| i == id),
        _ => true,
    }
}

/// A pending delivery of `body` to `endpoint`.
pub fn delivery(
    endpoint: &EndpointRow,
    event_type: &str,
    project: Option<&str>,
    body: String,
    at: NaiveDateTime,
) -> DeliveryRow {
    DeliveryRow {
        id: message_id(),
        team_id: endpoint.team_id.clone(),
        project_id: project.map(str::to_string),
        endpoint_id: endpoint.id.clone(),
        event_type: event_type.to_string(),
        payload: body,
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: at,
        claimed_until: None,
        last_status: None,
        last_error: None,
        created_at: at,
        finished_at: None,
    }
}

/// Events taken from the queue and not yet written (the stop waits for them).
#[derive(Default)]
pub struct Backlog(AtomicUsize);

impl Backlog {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn spawn(
    state: AppState,
    mut queue: Receiver<Arc<Event>>,
    backlog: Arc<Backlog>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while queue.recv_many(&mut batch, 500).await > 0 {
            backlog.0.store(batch.len(), Ordering::SeqCst);
            let events = std::mem::take(&mut batch);
            let count = events.len();
            if let Err(err) = write(&state, &events).await {
                tracing::error!(
                    code = err.code(),
                    events = count,
                    "webhook deliveries of these events not written: the database stayed unavailable"
                );
            }
            backlog.0.store(0, Ordering::SeqCst);
            state.wake_deliveries.notify_one();
        }
    })
}

/// Writes the deliveries of `events`, riding out a database outage of up to a minute (the
/// rows are made once, so a retried insert never doubles one).
async fn write(state: &AppState, events: &[Arc<Event>]) -> crate::error::AppResult<()> {
    let mut teams: Vec<&str> = events.iter().map(|e| e.team_id.as_str()).collect();
    teams.sort_unstable();
    teams.dedup();
    let window = Duration::from_secs(60);
    let endpoints = crate::db::retry_outages(&state.pool, window, |mut conn| {
        let teams = teams.clone();
        async move {
            let mut all = Vec::new();
            for team in teams {
                all.extend(store::enabled_endpoints(&mut conn, team).await?);
            }
            Ok(all)
        }
    })
    .await?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let at = crate::db::now();
    let mut rows = Vec::new();
    for event in events {
        let Some(event_type) = super::type_of(event) else {
            continue;
        };
        let project = event.project_id.as_deref();
        let integration = super::integration_of(event);
        let mut body = None;
        for endpoint in endpoints.iter().filter(|e| e.team_id == event.team_id) {
            if wants(endpoint, event_type, project, integration) {
                let body = body.get_or_insert_with(|| {
                    super::body(event_type, event.at, super::data_of(event))
                });
                rows.push(delivery(endpoint, event_type, project, body.clone(), at));
            }
        }
    }
    let rows = &rows;
    crate::db::retry_outages(&state.pool, window, |mut conn| async move {
        // One transaction for the batch (on SQLite, one write lock instead of one per row).
        conn.begin_write().await?;
        match store::insert_deliveries(&mut conn, rows).await {
            Ok(()) => conn.commit().await,
            Err(err) => {
                let _ = conn.rollback().await;
                Err(err)
            }
        }
    })
    .await
}
