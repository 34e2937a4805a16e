//! The health monitor: checks every enabled integration once per interval (with jitter, so
//! checks spread out), a bounded number at once; and prunes old logs and checks.

use std::time::Duration;

use chrono::Duration as ChronoDuration;
use futures_util::StreamExt;
use rand::Rng;

use crate::context::AppState;
use crate::db::now;

const ACTOR: &str = "system:health-monitor";

pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = state.config.health_interval_secs;
        let tick = Duration::from_secs((interval / 10).clamp(1, 30));
        let mut last_prune = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            if interval > 0 {
                run_due(&state, interval).await;
            }
            if last_prune.elapsed() > Duration::from_secs(60) {
                prune(&state).await;
                last_prune = std::time::Instant::now();
            }
            tokio::time::sleep(tick).await;
        }
    })
}

async fn run_due(state: &AppState, interval: u64) {
    // Up to 10 % jitter: an integration is due a little before or after its interval.
    let jitter = rand::rng().random_range(0..=interval.max(10) / 10) as i64;
    let before = now() - ChronoDuration::seconds(interval as i64 - jitter);
    let due = match state.pool.get().await {
        Ok(mut conn) => crate::health::store::due(&mut conn, before, 100).await,
        Err(err) => Err(err),
    };
    let due = match due {
        Ok(due) => due,
        Err(err) => {
            tracing::warn!(
                code = err.code(),
                "health monitor could not list integrations"
            );
            return;
        }
    };
    futures_util::stream::iter(due)
        .for_each_concurrent(state.config.health_concurrency, |integration| async move {
            // Each due check is claimed first, so replicas sharing the database check an
            // integration once per interval between them, not once each.
            let claimed = match state.pool.get().await {
                Ok(mut conn) => {
                    crate::health::store::claim_check(&mut conn, &integration.id, before, now())
                        .await
                }
                Err(err) => Err(err),
            };
            match claimed {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(integration_id = %integration.id, code = err.code(), "health check not claimed");
                    return;
                }
            }
            if let Err(err) = crate::health::run_check(state, &integration, ACTOR).await {
                tracing::warn!(integration_id = %integration.id, code = err.code(), "health check failed to run");
            }
        })
        .await;
}

/// How long a replica holds the pruning job: three rounds (a round each minute), so a
/// stopped replica's turn passes to another within three minutes.
pub const PRUNE_HOLD: Duration = Duration::from_secs(180);

async fn prune(state: &AppState) {
    // One replica prunes at a time (the others would repeat the same deletes).
    if !state.claim_job("prune-logs", PRUNE_HOLD).await {
        return;
    }
    let Ok(mut conn) = state.pool.get().await else {
        return;
    };
    let cutoff = now() - ChronoDuration::days(state.config.log_retention_days as i64);
    match crate::logs::store::prune(
        &mut conn,
        cutoff,
        state.config.log_retention_per_integration,
    )
    .await
    {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "request logs pruned"),
        Err(err) => tracing::warn!(code = err.code(), "request logs not pruned"),
    }
    let window = now() - ChronoDuration::seconds(2 * state.config.health_window_secs as i64);
    if let Err(err) = crate::health::store::prune(&mut conn, window).await {
        tracing::warn!(code = err.code(), "health checks not pruned");
    }
}
