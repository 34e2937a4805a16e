//! Health: each check (on demand or from the monitor) is stored, the integration's status is
//! derived from it and from the window's uptime and error rate, and every change of status is
//! published as `integration.health_changed`.

pub mod graphql;
pub mod monitor;
pub mod store;

use chrono::{Duration, NaiveDateTime};
use serde_json::json;

use crate::app::AppState;
use crate::calls::service::{CheckOutcome, check};
use crate::db::{new_id, now};
use crate::error::AppResult;
use crate::events::{Event, EventKind};
use crate::integrations::model::{IntegrationRow, IntegrationStatus};
use store::HealthCheckRow;

/// Uptime below this (percent) makes a reachable integration degraded.
const DEGRADED_UPTIME: f64 = 90.0;
/// An error rate above this (fraction of requests) makes it degraded.
const DEGRADED_ERROR_RATE: f64 = 0.10;
/// Consecutive failed checks after which it is disconnected.
const DISCONNECTED_AFTER: i32 = 3;

/// Uptime and error rate over the health window.
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    pub checks: i64,
    pub checks_ok: i64,
    pub requests: i64,
    pub requests_failed: i64,
}

impl WindowStats {
    pub fn uptime_percent(&self) -> Option<f64> {
        (self.checks > 0).then(|| 100.0 * self.checks_ok as f64 / self.checks as f64)
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.requests_failed as f64 / self.requests as f64)
    }
}

pub fn window_start(state: &AppState) -> NaiveDateTime {
    now() - Duration::seconds(state.config.health_window_secs as i64)
}

pub async fn window_stats(
    state: &AppState,
    integration: &IntegrationRow,
) -> AppResult<WindowStats> {
    state.journal.flush().await?;
    let mut conn = state.pool.get().await?;
    let since = window_start(state);
    let (checks, checks_ok) = store::check_counts(&mut conn, &integration.id, since).await?;
    let totals = crate::logs::store::totals(
        &mut conn,
        &integration.team_id,
        std::slice::from_ref(&integration.id),
        Some(since),
    )
    .await?;
    Ok(WindowStats {
        checks,
        checks_ok,
        requests: totals.total,
        requests_failed: totals.total - totals.successful,
    })
}

/// The status a check leads to.
pub fn derive_status(
    outcome: &CheckOutcome,
    consecutive_failures: i32,
    stats: &WindowStats,
) -> IntegrationStatus {
    if !outcome.ok {
        return if outcome.auth_failed {
            IntegrationStatus::Error
        } else if consecutive_failures >= DISCONNECTED_AFTER {
            IntegrationStatus::Disconnected
        } else {
            IntegrationStatus::Degraded
        };
    }
    let low_uptime = stats.uptime_percent().is_some_and(|u| u < DEGRADED_UPTIME);
    let many_errors = stats.error_rate().is_some_and(|r| r > DEGRADED_ERROR_RATE);
    if low_uptime || many_errors {
        IntegrationStatus::Degraded
    } else {
        IntegrationStatus::Connected
    }
}

/// Runs the provider's health request, stores it, updates the integration's status and
/// publishes a change. Returns the outcome and the integration as it now is.
pub async fn run_check(
    state: &AppState,
    integration: &IntegrationRow,
    actor: &str,
) -> AppResult<(CheckOutcome, IntegrationRow)> {
    let outcome = check(state, integration, actor).await?;
    let at = now();
    let mut conn = state.pool.get().await?;
    store::insert(
        &mut conn,
        &HealthCheckRow {
            id: new_id(),
            integration_id: integration.id.clone(),
            ok: outcome.ok,
            status: outcome.status.map(i32::from),
            duration_ms: outcome.duration_ms,
            error: outcome.error.clone(),
            checked_at: at,
        },
    )
    .await?;
    drop(conn);
    let failures = if outcome.ok {
        0
    } else {
        integration.consecutive_failures + 1
    };
    let stats = window_stats(state, integration).await?;
    let status = derive_status(&outcome, failures, &stats);
    let mut conn = state.pool.get().await?;
    let updated = store::record_status(
        &mut conn,
        &integration.id,
        status,
        if outcome.ok {
            None
        } else {
            outcome.error.clone()
        },
        at,
        outcome.duration_ms,
        failures,
    )
    .await?;
    let previous = IntegrationStatus::parse(&integration.status);
    if previous != status {
        state.events.publish(Event {
            kind: EventKind::IntegrationHealthChanged,
            team_id: integration.team_id.clone(),
            project_id: Some(integration.project_id.clone()),
            subject_id: integration.id.clone(),
            payload: json!({
                "integrationId": integration.id,
                "previous": previous.as_str(),
                "status": status.as_str(),
                "error": updated.last_error,
            }),
            request_log: None,
            at,
        });
    }
    Ok((outcome, updated))
}
