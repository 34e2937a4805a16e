//! The operators' view: `GET /metrics` in the Prometheus text format, through the `metrics`
//! facade and its Prometheus exporter. Served only when `HUB_METRICS_TOKEN` is set, to
//! callers presenting it as a bearer token. Labels are bounded sets; nothing is labelled by
//! key, id or path.

use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusBuilder;
use subtle::ConstantTimeEq;

use crate::context::AppState;

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
    });
    let handle = recorder.handle();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}
