//! What a dashboard shows next to each integration — its health over the window and its call
//! metrics — loaded for a whole page of integrations at once.
//!
//! Each statement here takes a set of integration ids and answers per integration (`GROUP
//! BY`, and a window function for the 95th percentile), so a page of 20 or 100 integrations
//! costs the same few statements as one. The nodes of one page share a [`Siblings`]: the
//! first node whose `health` or `metrics` is asked loads it for all of them, the others
//! wait for and reuse that answer. These statements aggregate logs, which may be many, so
//! they run off the request threads ([`crate::db::DbPool::scan`]), after a journal flush.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::dsl::{count_star, max, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel_async::RunQueryDsl;
use tokio::sync::OnceCell;

use super::model::{IntegrationRow, IntegrationStatus};
use crate::context::AppState;
use crate::db::schema::{health_checks, request_logs};
use crate::db::{DbConn, first_id_at, now};
use crate::error::AppResult;
use crate::http::breaker::CircuitState;
use crate::with_conn;

/// Aggregates over the request logs of one integration since a time.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub total: i64,
    pub successful: i64,
    /// Calls that say the integration is unwell: no answer (transport failure, timeout,
    /// refused destination), a 5xx, or the credentials refused (401, 403). Other 4xx answers
    /// are about the caller's request, not the integration.
    pub unhealthy: i64,
    pub duration_ms: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub last_activity: Option<NaiveDateTime>,
    pub p95_ms: Option<i64>,
}

/// Uptime and error rate over the health window.
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    pub checks: i64,
    pub checks_ok: i64,
    pub requests: i64,
    /// Requests that failed because of the integration (see [`Totals::unhealthy`]).
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

/// Where the health window starts now.
pub fn window_start(state: &AppState) -> NaiveDateTime {
    now() - chrono::Duration::seconds(state.config.health_window_secs as i64)
}

/// The lowest log id that can belong to a log written at `since` or later: a bound on the
/// primary key that lets the `(integration_id, id)` index skip older logs (with a minute of
/// slack between a log's id and its `created_at`, which still decides).
fn first_log_id(since: NaiveDateTime) -> String {
    first_id_at(since - chrono::Duration::minutes(1))
}

/// Request-log totals of each of these integrations of the team since `since` (all time when
/// None), with each one's 95th percentile when `p95` is asked. Integrations without logs are
/// left out. Two statements, whatever the number of ids.
pub async fn totals(
    conn: &mut DbConn,
    team_id: &str,
    ids: &[String],
    since: Option<NaiveDateTime>,
    p95: bool,
) -> AppResult<HashMap<String, Totals>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let since = since.unwrap_or_default();
    let first_id = first_log_id(since);
    type Row = (String, i64, i64, i64, i64, i64, i64, Option<NaiveDateTime>);
    let rows: Vec<Row> = with_conn!(conn, |c| {
        request_logs::table
        // Confined to the team without steering SQLite's planner to the team's index (every
        // log of the team); the integration index narrows to these ids' recent logs.
        .filter(request_logs::team_id.concat("").eq(team_id))
        .filter(request_logs::integration_id.eq_any(ids))
        .filter(request_logs::id.ge(&first_id))
        .filter(request_logs::created_at.ge(since))
        .group_by(request_logs::integration_id)
        .select((
            request_logs::integration_id,
            count_star(),
            sql::<BigInt>(
                "CAST(COALESCE(SUM(CASE WHEN status < 400 AND error IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT)",
            ),
            sql::<BigInt>(
                "CAST(COALESCE(SUM(CASE WHEN error IS NOT NULL OR status IS NULL OR status >= 500 \
                 OR status IN (401, 403) THEN 1 ELSE 0 END), 0) AS BIGINT)",
            ),
            sql::<BigInt>("CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT)"),
            sql::<BigInt>("CAST(COALESCE(SUM(bytes_in), 0) AS BIGINT)"),
            sql::<BigInt>("CAST(COALESCE(SUM(bytes_out), 0) AS BIGINT)"),
            max(request_logs::created_at),
        ))
        .load(c)
        .await
    })?;
    let mut out: HashMap<String, Totals> = rows
        .into_iter()
        .map(
            |(id, total, successful, unhealthy, duration_ms, bytes_in, bytes_out, last)| {
                let totals = Totals {
                    total,
                    successful,
                    unhealthy,
                    duration_ms,
                    bytes_in,
                    bytes_out,
                    last_activity: last,
                    p95_ms: None,
                };
                (id, totals)
            },
        )
        .collect();
    if p95 && !out.is_empty() {
        let counts: Vec<(String, i64)> = out.iter().map(|(id, t)| (id.clone(), t.total)).collect();
        for (id, p95_ms) in percentile_95(conn, team_id, &counts, since, &first_id).await? {
            if let Some(totals) = out.get_mut(&id) {
                totals.p95_ms = Some(p95_ms);
            }
        }
    }
    Ok(out)
}

#[derive(QueryableByName)]
struct P95 {
    #[diesel(sql_type = Text)]
    integration_id: String,
    #[diesel(sql_type = BigInt)]
    duration_ms: i64,
}

/// The 95th-percentile duration of each integration's logs — the value at rank
/// ⌊0.95·(n − 1)⌋ in duration order, `n` being its count — in one statement: one ordered
/// pick per integration, joined with `UNION ALL` (each walks its integration's index range;
/// a window function over all of them was 2.6 times slower on SQLite).
async fn percentile_95(
    conn: &mut DbConn,
    team_id: &str,
    counts: &[(String, i64)],
    since: NaiveDateTime,
    first_id: &str,
) -> AppResult<Vec<(String, i64)>> {
    let postgres = matches!(conn, DbConn::Postgres(_));
    let mut next = 0;
    let mut mark = || {
        next += 1;
        if postgres {
            format!("${next}")
        } else {
            format!("?{next}")
        }
    };
    let picks: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(n, _)| {
            format!(
                "SELECT * FROM (SELECT integration_id, duration_ms FROM request_logs \
                 WHERE integration_id = {} AND id >= {} AND created_at >= {} AND (team_id || '') = {} \
                 ORDER BY duration_ms LIMIT 1 OFFSET {}) pick{n}",
                mark(),
                mark(),
                mark(),
                mark(),
                mark()
            )
        })
        .collect();
    let statement = picks.join(" UNION ALL ");
    let rows: Vec<P95> = with_conn!(conn, |c| {
        let mut query = diesel::sql_query(statement.as_str()).into_boxed();
        for (id, n) in counts {
            query = query
                .bind::<Text, _>(id)
                .bind::<Text, _>(first_id)
                .bind::<Timestamp, _>(since)
                .bind::<Text, _>(team_id)
                .bind::<BigInt, _>((n - 1) * 95 / 100);
        }
        query.load(c).await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| (r.integration_id, r.duration_ms))
        .collect())
}

/// (checks, successful checks) of each of these integrations since `since`; those without
/// checks are left out. One statement.
pub async fn check_counts(
    conn: &mut DbConn,
    ids: &[String],
    since: NaiveDateTime,
) -> AppResult<HashMap<String, (i64, i64)>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64, i64)> = with_conn!(conn, |c| health_checks::table
        .filter(health_checks::integration_id.eq_any(ids))
        .filter(health_checks::checked_at.ge(since))
        .group_by(health_checks::integration_id)
        .select((
            health_checks::integration_id,
            count_star(),
            sql::<BigInt>("CAST(COALESCE(SUM(CASE WHEN ok THEN 1 ELSE 0 END), 0) AS BIGINT)"),
        ))
        .load(c)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, checks, ok)| (id, (checks, ok)))
        .collect())
}

/// The health-window statistics (the window starting at `since`) of each of these
/// integrations of the team (every id gets one). Three statements, whatever the number of
/// ids.
pub async fn window_stats(
    conn: &mut DbConn,
    team_id: &str,
    ids: &[String],
    since: NaiveDateTime,
) -> AppResult<HashMap<String, WindowStats>> {
    let checks = check_counts(conn, ids, since).await?;
    let totals = totals(conn, team_id, ids, Some(since), false).await?;
    Ok(ids
        .iter()
        .map(|id| {
            let (checks, checks_ok) = checks.get(id).copied().unwrap_or_default();
            let calls = totals.get(id);
            let stats = WindowStats {
                checks,
                checks_ok,
                requests: calls.map_or(0, |t| t.total),
                requests_failed: calls.map_or(0, |t| t.unhealthy),
            };
            (id.clone(), stats)
        })
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

#[derive(SimpleObject, Clone)]
pub struct IntegrationHealth {
    pub status: IntegrationStatus,
    /// Successful checks ÷ checks over the health window, in percent.
    pub uptime_percent: Option<f64>,
    /// Failed requests ÷ requests over the health window.
    pub error_rate: Option<f64>,
    pub last_response_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_check_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub checks_in_window: i64,
    /// The outbound circuit breaker of this integration on this replica.
    pub circuit: Circuit,
}

impl IntegrationHealth {
    pub fn new(state: &AppState, row: &IntegrationRow, stats: &WindowStats) -> Self {
        let circuit = match state.outbound.breakers().state(&row.id) {
            CircuitState::Closed => Circuit::Closed,
            CircuitState::Open => Circuit::Open,
            CircuitState::HalfOpen => Circuit::HalfOpen,
        };
        Self {
            status: IntegrationStatus::parse(&row.status),
            uptime_percent: stats.uptime_percent(),
            error_rate: stats.error_rate(),
            last_response_ms: row.last_response_ms,
            last_error: row.last_error.clone(),
            last_check_at: row.last_check_at.map(|t| t.and_utc()),
            consecutive_failures: row.consecutive_failures,
            checks_in_window: stats.checks,
            circuit,
        }
    }
}

#[derive(SimpleObject, Clone)]
pub struct IntegrationMetrics {
    pub total_requests: i64,
    pub successful_requests: i64,
    pub failed_requests: i64,
    pub average_response_ms: Option<f64>,
    pub p95_response_ms: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub last_activity: Option<DateTime<Utc>>,
}

impl From<Totals> for IntegrationMetrics {
    fn from(t: Totals) -> Self {
        Self {
            total_requests: t.total,
            successful_requests: t.successful,
            failed_requests: t.total - t.successful,
            average_response_ms: (t.total > 0).then(|| t.duration_ms as f64 / t.total as f64),
            p95_response_ms: t.p95_ms,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            last_activity: t.last_activity.map(|at| at.and_utc()),
        }
    }
}

/// What the nodes of one page share: their ids and what was loaded for all of them.
pub struct Siblings {
    team_id: String,
    ids: Vec<String>,
    /// (template id, version) of the template integrations among them.
    templates: Vec<(String, i32)>,
    providers: OnceCell<HashMap<(String, i32), Arc<crate::providers::graphql::CustomProvider>>>,
    health: OnceCell<HashMap<String, WindowStats>>,
    /// Metrics by the `since` they were asked with (aliases may ask for several).
    metrics: Mutex<Vec<MetricsSlot>>,
}

type MetricsSlot = (
    Option<NaiveDateTime>,
    Arc<OnceCell<HashMap<String, Totals>>>,
);

impl Siblings {
    pub fn of(rows: &[IntegrationRow]) -> Arc<Self> {
        Arc::new(Self {
            team_id: rows.first().map(|r| r.team_id.clone()).unwrap_or_default(),
            ids: rows.iter().map(|r| r.id.clone()).collect(),
            templates: {
                let mut pairs: Vec<(String, i32)> = rows
                    .iter()
                    .filter_map(|r| Some((r.template_id.clone()?, r.template_version?)))
                    .collect();
                pairs.sort();
                pairs.dedup();
                pairs
            },
            providers: OnceCell::new(),
            health: OnceCell::new(),
            metrics: Mutex::new(Vec::new()),
        })
    }

    /// The template provider of a template integration among them (at its pinned version),
    /// loaded for every sibling by the first to ask.
    pub async fn template_provider(
        &self,
        state: &AppState,
        template_id: &str,
        version: i32,
    ) -> AppResult<Option<Arc<crate::providers::graphql::CustomProvider>>> {
        let all = self
            .providers
            .get_or_try_init(|| async {
                let mut conn = state.pool.read().await?;
                crate::templates::providers_of(&mut conn, &self.team_id, &self.templates).await
            })
            .await?;
        Ok(all.get(&(template_id.to_string(), version)).cloned())
    }

    /// The window statistics of `id`, loaded for every sibling by the first to ask.
    pub async fn window_stats(&self, state: &AppState, id: &str) -> AppResult<WindowStats> {
        let all = self
            .health
            .get_or_try_init(|| async {
                state.journal.flush().await?;
                let (team, ids, since) =
                    (self.team_id.clone(), self.ids.clone(), window_start(state));
                state
                    .pool
                    .scan(move |conn| {
                        Box::pin(async move { window_stats(conn, &team, &ids, since).await })
                    })
                    .await
            })
            .await?;
        Ok(all.get(id).cloned().unwrap_or_default())
    }

    /// The totals of `id` since `since`, loaded for every sibling by the first to ask.
    pub async fn totals(
        &self,
        state: &AppState,
        id: &str,
        since: Option<NaiveDateTime>,
    ) -> AppResult<Totals> {
        let cell = {
            let mut slots = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
            match slots.iter().find(|(s, _)| *s == since) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    slots.push((since, cell.clone()));
                    cell
                }
            }
        };
        let all = cell
            .get_or_try_init(|| async {
                state.journal.flush().await?;
                let (team, ids) = (self.team_id.clone(), self.ids.clone());
                state
                    .pool
                    .scan(move |conn| {
                        Box::pin(async move { totals(conn, &team, &ids, since, true).await })
                    })
                    .await
            })
            .await?;
        Ok(all.get(id).cloned().unwrap_or_default())
    }
}
