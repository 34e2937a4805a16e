//! A dashboard's read: a project with its integrations, each with its health and call
//! metrics. Each integration's figures are its own (checked against its request logs), and
//! the read runs as many statements for 8 integrations as for 2 (no query per integration).

use serde_json::{Value, json};

use crate::calls::{EXECUTE, register};
use crate::metrics::{TOKEN, scrape, value};
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    each_integration_shows_its_own_health_and_metrics,
    statements_do_not_grow_with_the_page
);

const DASHBOARD: &str = "query($p: ID!) { project(id: $p) { id name } \
    integrations(projectId: $p, first: 20) { nodes { id name \
      health { status uptimePercent errorRate checksInWindow consecutiveFailures circuit } \
      metrics { totalRequests successfulRequests failedRequests averageResponseMs p95ResponseMs bytesIn lastActivity } \
      later: metrics(since: \"2999-01-01T00:00:00Z\") { totalRequests } } } }";

/// An upstream answering `/fail` with 500, `/wait/<ms>` after that many milliseconds, and
/// anything else at once with 200.
async fn upstream() -> Receiver {
    Receiver::start(|request| {
        if request.path == "/fail" {
            return Reply::json(500, &json!({ "error": "down" }));
        }
        let reply = Reply::json(200, &json!({ "ok": true }));
        match request.path.strip_prefix("/wait/") {
            Some(ms) => reply.after(std::time::Duration::from_millis(ms.parse().unwrap_or(0))),
            None => reply,
        }
    })
    .await
}

async fn call(app: &TestApp, id: &str, path: &str) {
    app.gql(
        &app.admin_key,
        EXECUTE,
        json!({ "id": id, "input": { "method": "GET", "path": path } }),
    )
    .await
    .data();
}

fn node<'a>(answer: &'a Value, id: &str) -> &'a Value {
    answer["integrations"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap()
}

/// The durations of an integration's logs, from the logs themselves.
async fn durations(app: &TestApp, id: &str) -> Vec<i64> {
    let logs = app
        .gql(
            &app.admin_key,
            "query($i: ID!) { integrationLogs(integrationId: $i, first: 100) { nodes { durationMs } } }",
            json!({ "i": id }),
        )
        .await;
    let mut all: Vec<i64> = logs.data()["integrationLogs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["durationMs"].as_i64().unwrap())
        .collect();
    all.sort();
    all
}

async fn each_integration_shows_its_own_health_and_metrics(backend: Backend) {
    let app = TestApp::start(backend).await;
    let server = upstream().await;
    let project = app.create_project(&app.admin_key, "dash").await;
    let config = json!({ "baseUrl": server.url });
    let creds = json!({ "token": "t" });
    let slow = register(
        &app,
        &project,
        "github",
        "slow",
        config.clone(),
        creds.clone(),
    )
    .await;
    let flaky = register(
        &app,
        &project,
        "github",
        "flaky",
        config.clone(),
        creds.clone(),
    )
    .await;
    let idle = register(&app, &project, "github", "idle", config, creds).await;
    for ms in [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 40] {
        call(&app, &slow, &format!("/wait/{ms}")).await;
    }
    for path in ["/ok", "/fail", "/ok", "/fail"] {
        call(&app, &flaky, path).await;
    }
    let tested = app
        .gql(
            &app.admin_key,
            "mutation($i: ID!) { testConnection(integrationId: $i) { ok } }",
            json!({ "i": slow }),
        )
        .await;
    assert_eq!(tested.data()["testConnection"]["ok"], true);

    let answer = app
        .gql(&app.admin_key, DASHBOARD, json!({ "p": project }))
        .await;
    let data = answer.data();
    assert_eq!(data["project"]["name"], "dash");
    assert_eq!(data["integrations"]["nodes"].as_array().unwrap().len(), 3);

    // The slow one: 12 calls and the check's, its p95 and mean as its logs give them, one
    // passing check.
    let logged = durations(&app, &slow).await;
    assert_eq!(logged.len(), 13);
    let s = node(data, &slow);
    assert_eq!(s["metrics"]["totalRequests"], 13);
    assert_eq!(s["metrics"]["failedRequests"], 0);
    let rank = (logged.len() - 1) * 95 / 100;
    assert_eq!(s["metrics"]["p95ResponseMs"], logged[rank], "{logged:?}");
    let mean = logged.iter().sum::<i64>() as f64 / logged.len() as f64;
    let shown = s["metrics"]["averageResponseMs"].as_f64().unwrap();
    assert!((shown - mean).abs() < 1e-6, "{shown} vs {mean}");
    assert_eq!(s["health"]["checksInWindow"], 1);
    assert_eq!(s["health"]["uptimePercent"], 100.0);
    assert_eq!(s["health"]["errorRate"], 0.0);
    assert_eq!(s["later"]["totalRequests"], 0);

    // The flaky one: half its calls failed.
    let f = node(data, &flaky);
    assert_eq!(f["metrics"]["totalRequests"], 4);
    assert_eq!(f["metrics"]["successfulRequests"], 2);
    assert_eq!(f["metrics"]["failedRequests"], 2);
    assert_eq!(f["health"]["errorRate"], 0.5);
    assert_eq!(f["health"]["checksInWindow"], 0);
    assert!(f["health"]["uptimePercent"].is_null());
    let flaky_logged = durations(&app, &flaky).await;
    assert_eq!(
        f["metrics"]["p95ResponseMs"],
        flaky_logged[(4 - 1) * 95 / 100]
    );

    // The idle one: nothing, and nothing borrowed from its siblings.
    let i = node(data, &idle);
    assert_eq!(i["metrics"]["totalRequests"], 0);
    assert!(i["metrics"]["p95ResponseMs"].is_null());
    assert!(i["metrics"]["averageResponseMs"].is_null());
    assert!(i["metrics"]["lastActivity"].is_null());
    assert!(i["health"]["errorRate"].is_null());
    assert_eq!(i["health"]["circuit"], "CLOSED");

    // The single-integration queries agree with the page.
    for id in [&slow, &flaky, &idle] {
        let one = app
            .gql(
                &app.admin_key,
                "query($i: ID!) { integrationMetrics(integrationId: $i) { totalRequests failedRequests p95ResponseMs } \
                 integrationHealth(integrationId: $i) { errorRate checksInWindow } }",
                json!({ "i": id }),
            )
            .await;
        let one = one.data();
        let paged = node(data, id);
        for field in ["totalRequests", "failedRequests", "p95ResponseMs"] {
            assert_eq!(one["integrationMetrics"][field], paged["metrics"][field]);
        }
        for field in ["errorRate", "checksInWindow"] {
            assert_eq!(one["integrationHealth"][field], paged["health"][field]);
        }
    }

    // Another team's key sees none of it.
    let (_, other) = app.new_team("rivals").await;
    let refused = app.gql(&other, DASHBOARD, json!({ "p": project })).await;
    assert_eq!(refused.code(), "NOT_FOUND");
    app.stop().await;
}

/// Statements the dashboard read of `project` runs: the fewest over five reads (the first
/// flushes the calls' logs; a background write can land inside one).
async fn statements_of(app: &TestApp, project: &str) -> f64 {
    let mut fewest = f64::MAX;
    for _ in 0..5 {
        let before = value(&scrape(app).await, "hub_db_statements_total", &[]);
        app.gql(&app.admin_key, DASHBOARD, json!({ "p": project }))
            .await
            .data();
        let after = value(&scrape(app).await, "hub_db_statements_total", &[]);
        fewest = fewest.min(after - before);
    }
    fewest
}

async fn statements_do_not_grow_with_the_page(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.metrics_token = Some(TOKEN.into());
        // Background work that would run statements of its own during the reads.
        config.webhook_poll_ms = 3_600_000;
        config.usage_flush_ms = 3_600_000;
        config.sync_scheduler_secs = 0;
    })
    .await;
    let server = upstream().await;
    let config = json!({ "baseUrl": server.url });
    let creds = json!({ "token": "t" });
    let mut projects = Vec::new();
    for size in [2, 8] {
        let project = app
            .create_project(&app.admin_key, &format!("p{size}"))
            .await;
        for n in 0..size {
            let id = register(
                &app,
                &project,
                "github",
                &format!("i{n}"),
                config.clone(),
                creds.clone(),
            )
            .await;
            call(&app, &id, "/ok").await;
        }
        projects.push(project);
    }
    let small = statements_of(&app, &projects[0]).await;
    let large = statements_of(&app, &projects[1]).await;
    assert!(small > 0.0, "the read ran statements");
    assert_eq!(
        small, large,
        "2 integrations: {small} statements, 8: {large}"
    );
    app.stop().await;
}
