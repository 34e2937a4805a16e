//! Request logs, metrics, health and project statistics, from real calls to local upstreams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::calls::{EXECUTE, TEST_CONNECTION, register};
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    logs_and_metrics,
    health_monitor_changes_status,
    a_bad_row_costs_only_itself,
    old_logs_are_pruned_by_age_and_count,
    calls_are_seen_by_the_next_read,
);

const LOGS: &str = "query($i: ID, $p: ID, $level: LogLevel, $status: Int, $first: Int, $after: String) {
    integrationLogs(integrationId: $i, projectId: $p, level: $level, status: $status, first: $first, after: $after) {
        edges { node { integrationId level method path status durationMs bytesIn bytesOut error actor correlationId } }
        pageInfo { hasNextPage endCursor }
    }
}";

fn nodes(answer: &crate::support::Answer) -> Vec<Value> {
    answer.data()["integrationLogs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

async fn logs_and_metrics(backend: Backend) {
    let server = Receiver::start(|request| match request.path.as_str() {
        "/ok" => Reply::json(200, &json!({ "fine": true })),
        "/missing" => Reply::text(404, "nope"),
        _ => Reply::text(500, "broken"),
    })
    .await;
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "P").await;
    // Query-parameter auth puts the token in the URL: the log must not.
    let id = register(
        &app,
        &project,
        "generic_rest",
        "api",
        json!({ "baseUrl": server.url, "authType": "query", "authQueryParam": "api_key" }),
        json!({ "token": "SECRET-query-token-1234" }),
    )
    .await;
    let other = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": server.url }),
        json!({ "token": "SECRET-gh-5678" }),
    )
    .await;
    let call = |id: &str, method: &str, path: &str| json!({ "id": id, "input": { "method": method, "path": path, "query": { "password": "SECRET-pw-in-query", "page": 1 } } });
    for (method, path) in [
        ("GET", "/ok"),
        ("GET", "/missing"),
        ("POST", "/boom"),
        ("GET", "/ok"),
    ] {
        app.gql(&admin, EXECUTE, call(&id, method, path))
            .await
            .data();
    }
    app.gql(&admin, EXECUTE, call(&other, "GET", "/ok"))
        .await
        .data();

    let all = app.gql(&admin, LOGS, json!({ "i": id })).await;
    let logs = nodes(&all);
    assert_eq!(logs.len(), 4);
    let levels: Vec<&str> = logs.iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["INFO", "ERROR", "WARN", "INFO"], "newest first");
    let newest = &logs[0];
    assert_eq!(newest["method"], "GET");
    assert_eq!(newest["status"], 200);
    assert!(newest["actor"].as_str().unwrap().starts_with("api_key:"));
    assert!(newest["bytesIn"].as_i64().unwrap() > 0);
    let path = newest["path"].as_str().unwrap();
    assert!(path.starts_with("/ok?"), "{path}");
    assert!(
        path.contains("api_key=[REDACTED]")
            && path.contains("password=[REDACTED]")
            && path.contains("page=1"),
        "{path}"
    );
    assert!(
        server.requests()[0]
            .query
            .contains("api_key=SECRET-query-token-1234"),
        "the upstream got the token"
    );
    let text = all.body.to_string();
    assert!(!text.contains("SECRET-"), "no secret in logs: {text}");

    let errors = app
        .gql(&admin, LOGS, json!({ "i": id, "level": "WARN" }))
        .await;
    assert_eq!(nodes(&errors).len(), 2);
    let not_found = app
        .gql(&admin, LOGS, json!({ "i": id, "status": 404 }))
        .await;
    assert_eq!(nodes(&not_found).len(), 1);
    let project_logs = app.gql(&admin, LOGS, json!({ "p": project })).await;
    assert_eq!(nodes(&project_logs).len(), 5);
    let page = app
        .gql(&admin, LOGS, json!({ "p": project, "first": 3 }))
        .await;
    let cursor = page.data()["integrationLogs"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_string();
    let rest = app
        .gql(
            &admin,
            LOGS,
            json!({ "p": project, "first": 3, "after": cursor }),
        )
        .await;
    assert_eq!(nodes(&rest).len(), 2);
    assert_eq!(
        app.gql(&admin, LOGS, json!({})).await.code(),
        "VALIDATION_FAILED"
    );

    let metrics = app
        .gql(&admin, "query($i: ID!) { integrationMetrics(integrationId: $i) { totalRequests successfulRequests failedRequests averageResponseMs p95ResponseMs bytesIn bytesOut lastActivity } }", json!({ "i": id }))
        .await;
    let m = &metrics.data()["integrationMetrics"];
    assert_eq!(
        (
            m["totalRequests"].as_i64(),
            m["successfulRequests"].as_i64(),
            m["failedRequests"].as_i64()
        ),
        (Some(4), Some(2), Some(2))
    );
    assert!(m["averageResponseMs"].as_f64().is_some() && m["p95ResponseMs"].as_i64().is_some());
    assert!(m["lastActivity"].is_string());

    let stats = app
        .gql(&admin, "query($p: ID!) { projectStatistics(projectId: $p) { totalIntegrations byCategory { category count } byStatus { status count } healthy unhealthy totalRequests averageResponseMs } }", json!({ "p": project }))
        .await;
    let s = &stats.data()["projectStatistics"];
    assert_eq!(s["totalIntegrations"], 2);
    assert_eq!(s["totalRequests"], 5);
    assert_eq!(s["byStatus"], json!([{ "status": "PENDING", "count": 2 }]));
    let mut categories: Vec<Value> = s["byCategory"].as_array().unwrap().clone();
    categories.sort_by_key(|c| c["category"].as_str().unwrap().to_string());
    assert_eq!(
        categories,
        vec![
            json!({ "category": "CUSTOM", "count": 1 }),
            json!({ "category": "VERSION_CONTROL", "count": 1 })
        ]
    );

    // Reading logs needs logs:read; another team sees nothing.
    let (_, reader) = app.key_with(&["integrations:read"]).await;
    assert_eq!(
        app.gql(&reader, LOGS, json!({ "i": id })).await.code(),
        "FORBIDDEN"
    );
    let (_, other_team) = app.new_team("other").await;
    assert_eq!(
        app.gql(&other_team, LOGS, json!({ "i": id })).await.code(),
        "NOT_FOUND"
    );
    app.stop().await;
}

async fn health_monitor_changes_status(backend: Backend) {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let server = Receiver::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::json(200, &json!({ "login": "bot" }))
        } else {
            Reply::text(503, "down")
        }
    })
    .await;
    let app = TestApp::start_configured(backend, |config| {
        config.health_interval_secs = 1;
        config.outbound_max_retries = 0;
    })
    .await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": server.url }),
        json!({ "token": "t" }),
    )
    .await;
    // The monitor checks the new integration on its own.
    let connected = wait_for(&app, &id, "CONNECTED").await;
    assert_eq!(connected["uptimePercent"], 100.0);
    assert!(connected["lastCheckAt"].is_string());
    assert!(server.requests().iter().any(|r| r.path == "/user"));

    // The upstream goes down: degraded at once, disconnected after three failed checks.
    healthy.store(false, Ordering::SeqCst);
    wait_for(&app, &id, "DEGRADED").await;
    let down = wait_for(&app, &id, "DISCONNECTED").await;
    assert!(down["consecutiveFailures"].as_i64().unwrap() >= 3);
    assert!(down["lastError"].as_str().unwrap().contains("503"));

    // testConnection checks on demand too.
    healthy.store(true, Ordering::SeqCst);
    let answer = app
        .gql(&app.admin_key, TEST_CONNECTION, json!({ "id": id }))
        .await;
    assert_eq!(answer.data()["testConnection"]["ok"], true);
    let back = health(&app, &id).await;
    assert_eq!(back["consecutiveFailures"], 0);
    assert!(
        back["uptimePercent"].as_f64().unwrap() < 100.0,
        "the failures count against uptime"
    );
    app.stop().await;
}

async fn health(app: &TestApp, id: &str) -> Value {
    app.gql(
        &app.admin_key,
        "query($i: ID!) { integrationHealth(integrationId: $i) { status uptimePercent lastCheckAt lastError consecutiveFailures checksInWindow } }",
        json!({ "i": id }),
    )
    .await
    .data()["integrationHealth"]
        .clone()
}

async fn wait_for(app: &TestApp, id: &str, status: &str) -> Value {
    for _ in 0..100 {
        let h = health(app, id).await;
        if h["status"] == status {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never became {status}: {}", health(app, id).await);
}

/// Rows written together share a transaction; one that cannot be stored (its integration was
/// deleted meanwhile) fails alone and the others are kept.
async fn a_bad_row_costs_only_itself(backend: Backend) {
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let integration = app
        .register_github(&app.admin_key, &project, "gh", "tok")
        .await;
    let row = |integration_id: &str, path: String| {
        app.log_row(&project, integration_id, &path, integration_hub::db::now())
    };
    let writes = (0..16).map(|i| {
        let target = if i == 7 {
            "no-such-integration"
        } else {
            integration.as_str()
        };
        app.state
            .journal
            .request_log(row(target, format!("/r/{i}")))
    });
    let outcomes = futures_util::future::join_all(writes).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(
            outcome.is_err(),
            i == 7,
            "row {i}: {:?}",
            outcome.as_ref().err().map(|e| e.code())
        );
    }
    // Queued rows (no waiting) are stored by the next flush, in order.
    for i in 0..3 {
        app.state
            .journal
            .queue_request_log(row(&integration, format!("/q/{i}")))
            .await
            .unwrap();
    }
    app.state.journal.flush().await.unwrap();
    let logs = app
        .gql(
            &app.admin_key,
            LOGS,
            json!({ "i": integration, "first": 50 }),
        )
        .await;
    assert_eq!(nodes(&logs).len(), 18);
    app.stop().await;
}

/// Retention: the background task drops logs older than `log_retention_days` (found by their
/// time-ordered ids), then all but the newest `log_retention_per_integration` of each
/// integration. It runs when the server starts and every minute after.
async fn old_logs_are_pruned_by_age_and_count(backend: Backend) {
    let (_server, app, project, id) = with_github(backend).await;
    let mut calls = Vec::new();
    for i in 0..3 {
        let answer = app
            .gql(
                &app.admin_key,
                EXECUTE,
                json!({ "id": id, "input": { "method": "GET", "path": format!("/call/{i}") } }),
            )
            .await;
        calls.push(answer.data()["executeRequest"]["correlationId"].clone());
    }
    // A log made ten days ago (its id carries its time, as every id does), and one made
    // six days ago, inside the retention of seven days.
    let made_ago = |days: i64, path: &str| {
        app.log_row(
            &project,
            &id,
            path,
            integration_hub::db::now() - chrono::Duration::days(days),
        )
    };
    for row in [made_ago(10, "/ten-days"), made_ago(6, "/six-days")] {
        app.state.journal.request_log(row).await.unwrap();
    }
    let paths = |answer: &crate::support::Answer| -> Vec<String> {
        nodes(answer)
            .iter()
            .map(|n| n["path"].as_str().unwrap().to_string())
            .collect()
    };
    let all = app
        .gql(&app.admin_key, LOGS, json!({ "i": id, "first": 50 }))
        .await;
    assert_eq!(
        paths(&all),
        ["/call/2", "/call/1", "/call/0", "/six-days", "/ten-days"]
    );

    // By age: the ten-day-old log goes at the next start, the rest stay.
    let config = integration_hub::config::Config::clone(&app.state.config);
    let app = app.restart(config.clone()).await;
    let kept = until_logs(&app, &id, 4).await;
    assert_eq!(paths(&kept), ["/call/2", "/call/1", "/call/0", "/six-days"]);

    // By count: only the newest two of the integration stay.
    let mut config = config;
    config.log_retention_per_integration = 2;
    let app = app.restart(config).await;
    let kept = until_logs(&app, &id, 2).await;
    assert_eq!(paths(&kept), ["/call/2", "/call/1"]);
    let correlation: Vec<Value> = nodes(&kept)
        .iter()
        .map(|n| n["correlationId"].clone())
        .collect();
    assert_eq!(correlation, [calls[2].clone(), calls[1].clone()]);
    app.stop().await;
}

/// A call's request log and audit event are queued, not waited for; a read of logs, metrics
/// or the audit log that starts after the calls have answered sees every one of them.
async fn calls_are_seen_by_the_next_read(backend: Backend) {
    let (_server, app, _project, id) = with_github(backend).await;
    let calls = (0..24).map(|i| {
        app.gql(
            &app.admin_key,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": format!("/call/{i}") } }),
        )
    });
    for answer in futures_util::future::join_all(calls).await {
        assert_eq!(answer.data()["executeRequest"]["status"], 200);
    }
    let batch = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!, $calls: [ExecuteRequestInput!]!) { batchExecute(integrationId: $id, calls: $calls) { index } }",
            json!({ "id": id, "calls": [{ "method": "GET", "path": "/b/0" }, { "method": "GET", "path": "/b/1" }] }),
        )
        .await;
    assert_eq!(batch.data()["batchExecute"].as_array().unwrap().len(), 2);

    let logs = app
        .gql(&app.admin_key, LOGS, json!({ "i": id, "first": 50 }))
        .await;
    assert_eq!(nodes(&logs).len(), 26);
    let metrics = app
        .gql(
            &app.admin_key,
            "query($i: ID!) { integrationMetrics(integrationId: $i) { totalRequests } }",
            json!({ "i": id }),
        )
        .await;
    assert_eq!(metrics.data()["integrationMetrics"]["totalRequests"], 26);
    let audited = |action: &'static str| {
        app.gql(
            &app.admin_key,
            "query($f: AuditFilterInput) { auditLog(filter: $f, first: 100) { edges { node { targetId outcome } } } }",
            json!({ "f": { "action": action } }),
        )
    };
    let executed = audited("executeRequest").await;
    let executed = executed.data()["auditLog"]["edges"].as_array().unwrap();
    assert_eq!(executed.len(), 24);
    assert!(
        executed
            .iter()
            .all(|e| e["node"]["targetId"] == id && e["node"]["outcome"] == "SUCCESS")
    );
    let batched = audited("batchExecute").await;
    assert_eq!(
        batched.data()["auditLog"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

/// An app with a project and a GitHub integration whose upstream answers every call with 200:
/// the upstream (kept running while it is held), the app, the project id and the integration id.
async fn with_github(backend: Backend) -> (Receiver, TestApp, String, String) {
    let server = Receiver::start(|_| Reply::json(200, &json!({ "fine": true }))).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": server.url }),
        json!({ "token": "tok" }),
    )
    .await;
    (server, app, project, id)
}

/// The integration's logs once there are `count` of them (pruning runs in the background).
async fn until_logs(app: &TestApp, id: &str, count: usize) -> crate::support::Answer {
    for _ in 0..100 {
        let answer = app
            .gql(&app.admin_key, LOGS, json!({ "i": id, "first": 50 }))
            .await;
        if nodes(&answer).len() == count {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the logs never came down to {count}");
}
