//! The operators' view: `GET /metrics` in the Prometheus text format, through the `metrics`
//! facade and its Prometheus exporter. Served only when `HUB_METRICS_TOKEN` is set, to
//! callers presenting it as a bearer token. Labels are bounded sets; nothing is labelled by
//! key, id or path.
//!
//! Counters and histograms (HTTP requests, GraphQL operations and errors, rate-limit
//! refusals, outbound calls, breaker transitions, subscriptions, sync runs, journal batches,
//! webhook attempts) are recorded where they happen into the process's one recorder,
//! installed at the first start. Levels of this server (journal queue, database pool,
//! process) are read at each scrape into a registry of the scrape's own, so several servers
//! in one process (as in the tests) never see each other's.

use std::sync::OnceLock;

use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;

use crate::context::AppState;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; a recorder installed by someone else is left).
pub fn install() {
    RECORDER.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let rows = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 512.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), &rows))
            .map(PrometheusBuilder::build_recorder);
        let Ok(recorder) = recorder else {
            return None;
        };
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        describe_events();
        Some(handle)
    });
}

fn describe_events() {
    let counters = [
        (
            "hub_http_requests_total",
            "HTTP requests by route and status class",
        ),
        (
            "hub_graphql_operations_total",
            "GraphQL operations by type, registered operation name (HUB_METRICS_OPERATIONS, else `other`) and outcome",
        ),
        ("hub_graphql_errors_total", "GraphQL errors by code"),
        (
            "hub_rate_limited_total",
            "Requests refused by a quota, by subject kind",
        ),
        (
            "hub_outbound_requests_total",
            "Outbound calls by provider and status class (or error)",
        ),
        ("hub_outbound_retries_total", "Outbound retries by provider"),
        (
            "hub_breaker_transitions_total",
            "Circuit breakers opened or closed",
        ),
        (
            "hub_subscription_results_delivered_total",
            "Subscription results written to sockets",
        ),
        (
            "hub_subscription_events_missed_total",
            "Events slow subscribers missed",
        ),
        ("hub_sync_runs_total", "Sync runs ended, by status"),
        (
            "hub_sync_records_total",
            "Records of ended sync runs, by what became of them",
        ),
        (
            "hub_webhook_attempts_total",
            "Webhook delivery attempts by outcome",
        ),
        (
            "hub_oauth_refreshes_total",
            "OAuth token refreshes by outcome (refreshed, refused, transient)",
        ),
        (
            "hub_sync_runs_taken_over_total",
            "Sync runs taken over after their replica's lease ran out",
        ),
        (
            "hub_rate_limit_fallbacks_total",
            "Quota checks decided by this replica because Redis did not answer in time",
        ),
        (
            "hub_peer_notices_sent_total",
            "Event notices sent to the other replicas (NOTIFY hub_events)",
        ),
        (
            "hub_peer_event_notices_dropped_total",
            "Event notices that could not be sent to the other replicas (database)",
        ),
        (
            "hub_peer_events_dropped_total",
            "Events not relayed to the other replicas: the relay queue was full",
        ),
        (
            "hub_peer_events_received_total",
            "Events received from the other replicas",
        ),
        (
            "hub_peer_event_notices_missed_total",
            "Gaps in another replica's numbered notices (notices lost)",
        ),
        (
            "hub_peer_notices_dropped_total",
            "Cache invalidations not announced to the other replicas",
        ),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, help);
    }
    let histograms = [
        (
            "hub_http_request_duration_seconds",
            "HTTP request duration by route",
        ),
        (
            "hub_graphql_operation_duration_seconds",
            "GraphQL operation duration by type",
        ),
        (
            "hub_outbound_request_duration_seconds",
            "Outbound call duration by provider",
        ),
        (
            "hub_journal_batch_seconds",
            "Time to commit one journal batch",
        ),
        ("hub_journal_batch_rows", "Rows per journal batch"),
    ];
    for (name, help) in histograms {
        metrics::describe_histogram!(name, help);
    }
    metrics::describe_gauge!("hub_websocket_connections", "WebSocket connections open");
}

fn describe() {
    metrics::describe_gauge!(
        "hub_journal_pending_rows",
        "Request-log and audit rows waiting in the journal for the database"
    );
    metrics::describe_gauge!(
        "hub_journal_max_pending_rows",
        "HUB_JOURNAL_MAX_PENDING: beyond it calls are refused with UNAVAILABLE"
    );
    metrics::describe_counter!(
        "hub_log_lines_dropped_total",
        "Log lines (or messages) the process could not write to its output"
    );
    metrics::describe_gauge!("hub_db_connections", "Database connections by state");
    metrics::describe_counter!(
        "hub_db_statements_total",
        "SQL statements the server's database connections ran"
    );
    metrics::describe_gauge!("process_resident_memory_bytes", "Resident memory");
    metrics::describe_counter!(
        "process_cpu_seconds_total",
        "CPU time used (user and system)"
    );
    metrics::describe_gauge!("process_open_fds", "Open file descriptors");
    metrics::describe_counter!(
        "hub_webhook_events_not_queued_total",
        "Events dropped before the webhook outbox: its queue was full"
    );
}

/// The process's resident memory (bytes), CPU time (seconds) and open files, from /proc.
fn process() -> (f64, f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    (rss_kb * 1024.0, ticks / 100.0, fds as f64)
}

/// GET /metrics: 404 unless a token is configured, 401 without it.
pub async fn serve(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(token) = state.config.metrics_token.as_deref() else {
        return HttpResponse::NotFound().finish();
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        return HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Bearer realm=\"metrics\""))
            .finish();
    }
    // Levels of this server, read now into a registry of the scrape's own (several servers
    // in one process, as in the tests, never see each other's).
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        describe();
        metrics::gauge!("hub_journal_pending_rows").set(state.journal.pending() as f64);
        metrics::gauge!("hub_journal_max_pending_rows")
            .set(state.config.journal_max_pending as f64);
        metrics::counter!("hub_log_lines_dropped_total").absolute(crate::logging::dropped_lines());
        let (in_use, idle) = state.pool.usage();
        metrics::gauge!("hub_db_connections", "state" => "in_use").set(in_use as f64);
        metrics::gauge!("hub_db_connections", "state" => "idle").set(idle as f64);
        metrics::counter!("hub_db_statements_total").absolute(state.pool.statements().count());
        let (rss, cpu, fds) = process();
        metrics::gauge!("process_resident_memory_bytes").set(rss);
        metrics::counter!("process_cpu_seconds_total").absolute(cpu as u64);
        metrics::gauge!("process_open_fds").set(fds);
        metrics::counter!("hub_webhook_events_not_queued_total")
            .absolute(state.events.tap_dropped());
    });
    let mut body = recorder.handle().render();
    if let Some(Some(events)) = RECORDER.get() {
        body.push_str(&events.render());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
