//! `GET /metrics` for operators: after a few operations the counters moved (the process's
//! recorder is shared by the test servers of this binary, so the checks are on increases).

use serde_json::json;

use crate::calls::{EXECUTE, register};
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(counters_move_with_operations);

pub const TOKEN: &str = "metrics-token-for-tests";

pub async fn scrape(app: &TestApp) -> String {
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", app.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the series `name` whose labels include all of `labels` (0 when absent).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn counters_move_with_operations(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.metrics_token = Some(TOKEN.into());
        config.metrics_operations = "Dashboard, Other_Registered".into();
    })
    .await;
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let project = app.create_project(&app.admin_key, "m").await;
    let github = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "t" }),
    )
    .await;
    let before = scrape(&app).await;

    for _ in 0..3 {
        app.gql(&app.admin_key, "{ viewer { kind } }", json!({}))
            .await
            .data();
    }
    // A registered operation name is a label; any other name is counted as `other`.
    for name in ["Dashboard", "Sneaky"] {
        app.gql(
            &app.admin_key,
            &format!("query {name} {{ viewer {{ kind }} }}"),
            json!({}),
        )
        .await
        .data();
    }
    // A repeated read of stored fields: kept on SQLite, then served again.
    for _ in 0..2 {
        app.gql(&app.admin_key, "{ projects { id } }", json!({}))
            .await
            .data();
    }
    let bad = app.gql(&app.admin_key, "{ nope }", json!({})).await;
    assert_eq!(bad.code(), "VALIDATION_FAILED");
    app.gql(
        &app.admin_key,
        EXECUTE,
        json!({ "id": github, "input": { "method": "GET", "path": "/x" } }),
    )
    .await
    .data();
    let after = scrape(&app).await;

    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let ok_queries = [("type", "query"), ("outcome", "ok")];
    assert!(
        moved("hub_graphql_operations_total", &ok_queries) >= 3.0,
        "{after}"
    );
    assert!(moved("hub_graphql_operations_total", &[("type", "mutation")]) >= 1.0);
    assert!(
        moved(
            "hub_graphql_operations_total",
            &[("operation", "Dashboard"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(moved("hub_graphql_operations_total", &[("operation", "other")]) >= 3.0);
    assert!(
        !after.contains("Sneaky"),
        "an unregistered name is no label"
    );
    assert!(moved("hub_graphql_errors_total", &[("code", "VALIDATION_FAILED")]) >= 1.0);
    assert!(moved("hub_graphql_answers_total", &[("result", "miss")]) >= 1.0);
    assert!(moved("hub_graphql_answers_total", &[("result", "hit")]) >= 1.0);
    let outbound = [("provider", "github"), ("status", "2xx")];
    assert!(moved("hub_outbound_requests_total", &outbound) >= 1.0);
    assert!(
        moved(
            "hub_outbound_request_duration_seconds_count",
            &[("provider", "github")]
        ) >= 1.0
    );
    let graphql_2xx = [("route", "graphql"), ("status", "2xx")];
    assert!(
        moved("hub_http_requests_total", &graphql_2xx) >= 4.0,
        "{}",
        after
            .lines()
            .filter(|l| l.contains("http_requests"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        moved(
            "hub_graphql_operation_duration_seconds_count",
            &[("type", "query")]
        ) >= 3.0
    );
    assert!(after.contains("hub_graphql_operation_duration_seconds_bucket{"));
    // This server's levels.
    assert!(value(&after, "hub_db_connections", &[("state", "idle")]) >= 0.0);
    assert!(after.contains("hub_db_connections{state=\"in_use\"}"));
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(value(&after, "process_open_fds", &[]) > 0.0);
    assert!(after.contains("hub_journal_pending_rows"));
    // Bounded labels only: no id, key or path in any series.
    for id in [github.as_str(), project.as_str(), "/x"] {
        assert!(!after.contains(id), "{id} in the metrics");
    }
    app.stop().await;
}
