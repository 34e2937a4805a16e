//! Health: each check (on demand or from the monitor) is stored, the integration's status is
//! derived from it and from the window's uptime and error rate, and every change of status is
//! published as `integration.health_changed`.

pub mod graphql;
pub mod monitor;
pub mod store;

use serde_json::json;

use crate::calls::service::{CheckOutcome, check};
use crate::context::AppState;
use crate::db::{new_id, now};
use crate::error::AppResult;
use crate::events::{Event, EventKind};
use crate::integrations::insight::{self, WindowStats};
use crate::integrations::model::{IntegrationRow, IntegrationStatus};
use store::HealthCheckRow;

/// Uptime below this (percent) makes a reachable integration degraded.
const DEGRADED_UPTIME: f64 = 90.0;
/// An error rate above this (fraction of requests) makes it degraded.
const DEGRADED_ERROR_RATE: f64 = 0.10;
/// Consecutive failed checks after which it is disconnected.
const DISCONNECTED_AFTER: i32 = 3;

/// The health-window statistics of one integration (see [`insight::window_stats`]), after
/// flushing the journal so the window holds every call that ended.
pub async fn window_stats(
    state: &AppState,
    integration: &IntegrationRow,
) -> AppResult<WindowStats> {
    state.journal.flush().await?;
    let mut conn = state.pool.get().await?;
    let ids = std::slice::from_ref(&integration.id);
    let since = insight::window_start(state);
    let mut stats = insight::window_stats(&mut conn, &integration.team_id, ids, since).await?;
    Ok(stats.remove(&integration.id).unwrap_or_default())
}

/// The status a check leads to, and why when it is not CONNECTED (the integration's
/// `lastError`).
pub fn derive_status(
    outcome: &CheckOutcome,
    consecutive_failures: i32,
    stats: &WindowStats,
) -> (IntegrationStatus, Option<String>) {
    if !outcome.ok {
        let status = if outcome.auth_failed {
            IntegrationStatus::Error
        } else if consecutive_failures >= DISCONNECTED_AFTER {
            IntegrationStatus::Disconnected
        } else {
            IntegrationStatus::Degraded
        };
        let reason = outcome
            .error
            .clone()
            .unwrap_or_else(|| match outcome.status {
                Some(code) => format!("the health check was answered HTTP {code}"),
                None => "the health check failed".into(),
            });
        return (status, Some(reason));
    }
    if let Some(uptime) = stats.uptime_percent().filter(|u| *u < DEGRADED_UPTIME) {
        let reason = format!(
            "uptime {uptime:.0} % over the health window ({} of {} checks passed; below {DEGRADED_UPTIME:.0} %)",
            stats.checks_ok, stats.checks
        );
        return (IntegrationStatus::Degraded, Some(reason));
    }
    if let Some(rate) = stats.error_rate().filter(|r| *r > DEGRADED_ERROR_RATE) {
        let reason = format!(
            "{:.0} % of calls failed over the health window ({} of {}: no answer, 5xx or \
             credentials refused; above {:.0} %)",
            rate * 100.0,
            stats.requests_failed,
            stats.requests,
            DEGRADED_ERROR_RATE * 100.0
        );
        return (IntegrationStatus::Degraded, Some(reason));
    }
    (IntegrationStatus::Connected, None)
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
    let (status, reason) = derive_status(&outcome, failures, &stats);
    let mut conn = state.pool.get().await?;
    let updated = store::record_status(
        &mut conn,
        &integration.id,
        status,
        reason,
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
