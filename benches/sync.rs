//! Sync benchmarks (run on demand: `cargo bench --bench sync`). Prints:
//! 1. records mapped per second in-process with 10 mappings including transformers
//!    (target ≥ 200,000/s);
//! 2. a 100,000-record sync from a local source to a local target through the hub (the
//!    release binary, its own process, SQLite), end to end (target ≤ 10 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use integration_hub::sync::mapping::{Mapped, Mapper, OutputBudget};
use integration_hub::sync::spec::FieldMapping;
use serde_json::{Value, json};

const RECORDS: usize = 100_000;

mod support;

fn main() {
    mapping_throughput();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(end_to_end());
}

fn record(i: usize) -> Value {
    json!({ "key": format!("QA-{i}"), "summary": format!("  Issue number {i}  "), "status": if i.is_multiple_of(3) { "In Progress" } else { "Open" },
        "points": format!("{}", i % 13), "due": "2026-03-01 14:30", "done": if i.is_multiple_of(2) { "yes" } else { "no" },
        "labels": "ui, auth, backend", "component": "web", "version": "v1.2.3", "reporter": { "name": "Ann", "email": "ann@acme.test" } })
}

fn mappings() -> Vec<FieldMapping> {
    serde_json::from_value(json!([
        { "target": "externalId", "source": "key", "required": true },
        { "target": "fields.summary", "source": "summary", "transformers": [{ "kind": "trim" }, { "kind": "uppercase" }] },
        { "target": "fields.state", "source": "status", "transformers": [{ "kind": "value_map", "table": { "In Progress": "Active", "Open": "New" } }] },
        { "target": "fields.points", "source": "points", "transformers": [{ "kind": "to_number" }] },
        { "target": "fields.due", "source": "due", "transformers": [{ "kind": "date_format", "from": "%Y-%m-%d %H:%M", "to": "rfc3339" }] },
        { "target": "fields.done", "source": "done", "transformers": [{ "kind": "to_bool" }] },
        { "target": "fields.labels", "source": "labels", "transformers": [{ "kind": "split", "separator": "," }] },
        { "target": "fields.title", "transformers": [{ "kind": "template", "template": "{summary} [{key}]" }] },
        { "target": "fields.version", "source": "version", "transformers": [{ "kind": "regex_replace", "pattern": "^v", "replacement": "" }] },
        { "target": "fields.reporter", "source": "reporter.email", "transformers": [{ "kind": "lowercase" }] },
    ]))
    .unwrap()
}

fn mapping_throughput() {
    let mapper = Mapper::compile(&mappings(), "mappings").unwrap();
    let records: Vec<Value> = (0..50_000).map(record).collect();
    let mut best = 0.0f64;
    for round in 0..5 {
        let started = Instant::now();
        let mut ok = 0;
        let budget = OutputBudget::new(usize::MAX);
        for r in &records {
            if matches!(mapper.map(r, &budget), Mapped::Record(_)) {
                ok += 1;
            }
        }
        assert_eq!(ok, records.len());
        let rate = records.len() as f64 / started.elapsed().as_secs_f64();
        println!("mapping round {round}: {rate:.0} records/s");
        best = best.max(rate);
    }
    println!("records mapped per second with 10 mappings (best of 5): {best:.0} (target ≥ 200000)");
}

async fn source(req: HttpRequest) -> HttpResponse {
    let query: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let size: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1000);
    let start = (page - 1) * size;
    let items: Vec<Value> = (start..(start + size).min(RECORDS)).map(record).collect();
    HttpResponse::Ok().json(json!({ "items": items }))
}

async fn end_to_end() {
    let received = Arc::new(AtomicU64::new(0));
    let servers = {
        let received = received.clone();
        HttpServer::new(move || {
            let received = received.clone();
            App::new()
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/items", web::get().to(source))
                .route(
                    "/items",
                    web::post().to(move |body: web::Bytes| {
                        let received = received.clone();
                        async move {
                            let items: Value = serde_json::from_slice(&body).unwrap_or_default();
                            received.fetch_add(
                                items.as_array().map_or(1, Vec::len) as u64,
                                Ordering::Relaxed,
                            );
                            HttpResponse::Created().finish()
                        }
                    }),
                )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap()
    };
    let upstream = format!("http://{}", servers.addrs()[0]);
    tokio::spawn(servers.run());

    let hub = support::start_hub(&[("HUB_SYNC_WRITE_CONCURRENCY", "8")]).await;
    let (addr, key) = (hub.addr.clone(), hub.key.clone());
    let client = reqwest::Client::new();
    let gql = |query: &'static str, variables: Value| {
        let (client, addr, key) = (client.clone(), addr.clone(), key.clone());
        async move {
            client
                .post(format!("http://{addr}/graphql"))
                .bearer_auth(key)
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let project = gql(
        "mutation { createProject(input: { name: \"bench\" }) { id } }",
        json!({}),
    )
    .await["data"]["createProject"]["id"]
        .clone();
    let register =
        "mutation($input: RegisterIntegrationInput!) { registerIntegration(input: $input) { id } }";
    let source_id = gql(register, json!({ "input": { "projectId": project, "provider": "generic_rest", "name": "source", "config": { "baseUrl": upstream } } })).await
        ["data"]["registerIntegration"]["id"]
        .clone();
    let target_id = gql(register, json!({ "input": { "projectId": project, "provider": "generic_rest", "name": "target", "config": { "baseUrl": upstream } } })).await
        ["data"]["registerIntegration"]["id"]
        .clone();
    let mapping_input: Value = json!([
        { "target": "externalId", "source": "key", "required": true },
        { "target": "title", "source": "summary", "transformers": [{ "kind": "TRIM" }] },
        { "target": "state", "source": "status", "transformers": [{ "kind": "LOWERCASE" }] },
        { "target": "points", "source": "points", "transformers": [{ "kind": "TO_NUMBER" }] },
    ]);
    let config = gql(
        "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id } }",
        json!({ "input": { "projectId": project, "name": "100k", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
            "sourceRead": { "path": "/items", "recordsPointer": "/items", "pagination": { "kind": "PAGE", "size": 1000 } },
            "targetWrite": { "createPath": "/items", "batchSize": 500 },
            "sourceKey": "key", "targetKey": "externalId", "mappings": mapping_input } }),
    )
    .await;
    let config = config["data"]["createSyncConfig"]["id"].clone();
    let started = Instant::now();
    let run = gql(
        "mutation($id: ID!) { runSync(configId: $id) { id } }",
        json!({ "id": config }),
    )
    .await;
    let run_id = run["data"]["runSync"]["id"].clone();
    let finished = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let runs = gql(
            "query($c: ID!) { syncRuns(configId: $c) { edges { node { id status recordsRead recordsWritten recordsFailed } } } }",
            json!({ "c": config }),
        )
        .await;
        let node = runs["data"]["syncRuns"]["edges"][0]["node"].clone();
        if node["id"] == run_id && !matches!(node["status"].as_str(), Some("QUEUED" | "RUNNING")) {
            break node;
        }
        if started.elapsed() > Duration::from_secs(600) {
            panic!("the run did not finish");
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "100,000-record sync end to end: {elapsed:.2} s (target ≤ 10 s); run {finished}; target received {}",
        received.load(Ordering::Relaxed)
    );
    drop(hub);
}
