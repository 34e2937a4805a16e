//! Syncs between two local record servers the tests start: each pagination style, create vs
//! update by key, unchanged records left alone, transformers and previews, bidirectional
//! syncs and their conflict policies, cancel, interruption, push to several targets, the
//! scheduler, team confinement and live progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::calls::register;
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    concurrent_run_requests_start_one_run,
    pagination_styles_create_update_and_skip,
    transformers_preview_and_real_run_agree,
    bidirectional_without_ping_pong_and_conflicts,
    cancel_interrupt_and_rerun,
    a_lease_given_back_is_not_renewed,
    push_to_two_targets_one_failing,
    scheduler_confinement_and_live_progress,
    a_key_twice_in_a_page_is_recorded,
);

/// A record service: `GET /{style}/items` lists (page, offset, cursor or link pagination),
/// `POST /items` creates (one or an array), `PUT /items/{key}` updates.
#[derive(Default)]
struct Records {
    key: String,
    items: Mutex<BTreeMap<String, Value>>,
    creates: AtomicU64,
    updates: AtomicU64,
    delay_ms: AtomicU64,
    fail_writes: AtomicBool,
}

impl Records {
    fn new(key: &str, items: Vec<Value>) -> Arc<Self> {
        let records = Self {
            key: key.into(),
            ..Default::default()
        };
        for item in items {
            records.put(item);
        }
        Arc::new(records)
    }

    fn put(&self, item: Value) {
        let key = item[&self.key].as_str().unwrap().to_string();
        self.items.lock().unwrap().insert(key, item);
    }

    fn get(&self, key: &str) -> Option<Value> {
        self.items.lock().unwrap().get(key).cloned()
    }

    fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }

    fn writes(&self) -> u64 {
        self.creates.load(Ordering::SeqCst) + self.updates.load(Ordering::SeqCst)
    }

    fn answer(&self, request: &Recorded) -> Reply {
        let query: BTreeMap<String, String> = url::form_urlencoded::parse(request.query.as_bytes())
            .into_owned()
            .collect();
        let number = |name: &str, default: usize| {
            query
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let all: Vec<Value> = self.items.lock().unwrap().values().cloned().collect();
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/all/items") => Reply::json(200, &json!({ "items": all })),
            ("GET", "/page/items") => {
                let (page, size) = (number("page", 1), number("per_page", 10));
                let items: Vec<Value> = all
                    .iter()
                    .skip((page - 1) * size)
                    .take(size)
                    .cloned()
                    .collect();
                Reply::json(200, &json!({ "data": { "items": items } }))
            }
            ("GET", "/offset/items") => {
                let (offset, limit) = (number("offset", 0), number("limit", 10));
                Reply::json(
                    200,
                    &json!(
                        all.iter()
                            .skip(offset)
                            .take(limit)
                            .cloned()
                            .collect::<Vec<_>>()
                    ),
                )
            }
            ("GET", "/cursor/items") => {
                let start = number("cursor", 0);
                let items: Vec<Value> = all.iter().skip(start).take(7).cloned().collect();
                let next = (start + 7 < all.len()).then(|| (start + 7).to_string());
                Reply::json(200, &json!({ "items": items, "meta": { "next": next } }))
            }
            ("GET", "/link/items") => {
                let page = number("page", 1);
                let items: Vec<Value> = all.iter().skip((page - 1) * 6).take(6).cloned().collect();
                let reply = Reply::json(200, &json!({ "items": items }));
                if page * 6 < all.len() {
                    reply.with_header("link", &format!("</link/items?page={}>; rel=\"next\", </link/items?page=1>; rel=\"first\"", page + 1))
                } else {
                    reply
                }
            }
            (method, path)
                if (method == "POST" && path == "/items")
                    || (method == "PUT" && path.starts_with("/items/")) =>
            {
                if self.fail_writes.load(Ordering::SeqCst) {
                    return Reply::json(500, &json!({ "error": "storage offline" }));
                }
                let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                if body.to_string().contains("REJECT") {
                    return Reply::json(422, &json!({ "error": "rejected" })).after(delay);
                }
                let items = match body {
                    Value::Array(items) => items,
                    other => vec![other],
                };
                for item in items {
                    if method == "PUT" {
                        let key = path.trim_start_matches("/items/").to_string();
                        let mut merged =
                            self.get(&key).unwrap_or_else(|| json!({ &self.key: key }));
                        for (k, v) in item.as_object().cloned().unwrap_or_default() {
                            merged[k] = v;
                        }
                        self.put(merged);
                        self.updates.fetch_add(1, Ordering::SeqCst);
                    } else {
                        self.put(item);
                        self.creates.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Reply::json(
                    if method == "POST" { 201 } else { 200 },
                    &json!({ "ok": true }),
                )
                .after(delay)
            }
            _ => Reply::json(404, &json!({ "error": "no route" })),
        }
    }
}

async fn serve(records: &Arc<Records>) -> Receiver {
    let records = records.clone();
    Receiver::start(move |request| records.answer(request)).await
}

fn issues(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({ "key": format!("QA-{i:03}"), "summary": format!("  Issue {i} "), "status": "Open", "points": format!("{i}") }))
        .collect()
}

const CREATE_CONFIG: &str =
    "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id } }";
const RUN: &str = "mutation($id: ID!) { runSync(configId: $id) { id status } }";

fn basic_mappings() -> Value {
    json!([
        { "target": "externalId", "source": "key", "required": true },
        { "target": "title", "source": "summary", "transformers": [{ "kind": "TRIM" }] },
        { "target": "points", "source": "points", "transformers": [{ "kind": "TO_NUMBER" }] },
    ])
}

async fn project_with(
    app: &TestApp,
    source: &Receiver,
    target: &Receiver,
) -> (String, String, String) {
    let project = app.create_project(&app.admin_key, "P").await;
    let source_id = register(
        app,
        &project,
        "generic_rest",
        "source",
        json!({ "baseUrl": source.url }),
        json!({}),
    )
    .await;
    let target_id = register(
        app,
        &project,
        "generic_rest",
        "target",
        json!({ "baseUrl": target.url }),
        json!({}),
    )
    .await;
    (project, source_id, target_id)
}

pub async fn create_config(app: &TestApp, input: Value) -> String {
    let answer = app
        .gql(&app.admin_key, CREATE_CONFIG, json!({ "input": input }))
        .await;
    answer.data()["createSyncConfig"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs the config and waits for the run to end; returns the finished run.
/// A config reading the source's pages of 10 (`/page/items`) into the target by key; its id.
async fn paged_config(app: &TestApp, source: &Receiver, target: &Receiver, name: &str) -> String {
    let (project, source_id, target_id) = project_with(app, source, target).await;
    create_config(
        app,
        json!({ "projectId": project, "name": name, "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
            "sourceRead": { "path": "/page/items", "recordsPointer": "/data/items", "pagination": { "kind": "PAGE", "size": 10 } },
            "targetWrite": { "createPath": "/items", "updatePath": "/items/{key}" },
            "sourceKey": "key", "targetKey": "externalId", "mappings": basic_mappings() }),
    )
    .await
}

pub async fn run_to_end(app: &TestApp, config: &str) -> Value {
    let started = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    let run_id = started.data()["runSync"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_run(app, config, &run_id).await
}

async fn wait_run(app: &TestApp, config: &str, run_id: &str) -> Value {
    // The run as last seen, for the failure message: its status and attempts tell a run never
    // taken over (RUNNING, the first attempt) from one taken over that is still going.
    let mut last = Value::Null;
    for _ in 0..300 {
        let runs = app
            .gql(
                &app.admin_key,
                "query($c: ID!) { syncRuns(configId: $c, first: 100) { edges { node { id status trigger recordsRead recordsWritten recordsSkipped recordsFailed errorSamples { key message } error startedAt finishedAt attempts } } } }",
                json!({ "c": config }),
            )
            .await;
        let run = runs.data()["syncRuns"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .find(|r| r["id"] == run_id)
            .expect("the run is listed");
        if !matches!(run["status"].as_str(), Some("QUEUED" | "RUNNING")) {
            return run;
        }
        last = run;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the run did not end within 15 s: {last}");
}

fn counts(run: &Value) -> (i64, i64, i64, i64) {
    (
        run["recordsRead"].as_i64().unwrap(),
        run["recordsWritten"].as_i64().unwrap(),
        run["recordsSkipped"].as_i64().unwrap(),
        run["recordsFailed"].as_i64().unwrap(),
    )
}

async fn pagination_styles_create_update_and_skip(backend: Backend) {
    let source = Records::new("key", issues(25));
    let source_server = serve(&source).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let source_id = register(
        &app,
        &project,
        "generic_rest",
        "source",
        json!({ "baseUrl": source_server.url }),
        json!({}),
    )
    .await;
    let styles = [
        (
            "page",
            json!({ "path": "/page/items", "recordsPointer": "/data/items", "pagination": { "kind": "PAGE", "size": 10 } }),
        ),
        (
            "offset",
            json!({ "path": "/offset/items", "pagination": { "kind": "OFFSET", "size": 10 } }),
        ),
        (
            "cursor",
            json!({ "path": "/cursor/items", "recordsPointer": "/items", "pagination": { "kind": "CURSOR", "cursorPointer": "/meta/next" } }),
        ),
        (
            "link",
            json!({ "path": "/link/items", "recordsPointer": "/items", "pagination": { "kind": "LINK_HEADER" } }),
        ),
    ];
    for (style, read) in styles {
        let target = Records::new("externalId", vec![]);
        let target_server = serve(&target).await;
        let target_id = register(
            &app,
            &project,
            "generic_rest",
            &format!("target {style}"),
            json!({ "baseUrl": target_server.url }),
            json!({}),
        )
        .await;
        let config = create_config(
            &app,
            json!({ "projectId": project, "name": format!("sync {style}"), "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
                "sourceRead": read, "targetWrite": { "createPath": "/items", "updatePath": "/items/{key}" },
                "sourceKey": "key", "targetKey": "externalId", "mappings": basic_mappings() }),
        )
        .await;
        let run = run_to_end(&app, &config).await;
        assert_eq!(run["status"], "SUCCEEDED", "{style}: {run}");
        assert_eq!(counts(&run), (25, 25, 0, 0), "{style}");
        assert_eq!(target.len(), 25, "{style}");
        assert_eq!(
            target.get("QA-007").unwrap(),
            json!({ "externalId": "QA-007", "title": "Issue 7", "points": 7 })
        );
    }

    // The last target again: nothing changed, nothing written; one change, one update.
    let target = Records::new("externalId", vec![]);
    let target_server = serve(&target).await;
    let target_id = register(
        &app,
        &project,
        "generic_rest",
        "target again",
        json!({ "baseUrl": target_server.url }),
        json!({}),
    )
    .await;
    let config = create_config(
        &app,
        json!({ "projectId": project, "name": "again", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
            "sourceRead": { "path": "/all/items", "recordsPointer": "/items" },
            "targetWrite": { "createPath": "/items", "updatePath": "/items/{key}" },
            "sourceKey": "key", "targetKey": "externalId", "mappings": basic_mappings() }),
    )
    .await;
    assert_eq!(counts(&run_to_end(&app, &config).await), (25, 25, 0, 0));
    assert_eq!(target.creates.load(Ordering::SeqCst), 25);
    assert_eq!(
        counts(&run_to_end(&app, &config).await),
        (25, 0, 25, 0),
        "unchanged records are not written"
    );
    source.put(json!({ "key": "QA-003", "summary": "Renamed", "status": "Open", "points": "3" }));
    assert_eq!(counts(&run_to_end(&app, &config).await), (25, 1, 24, 0));
    assert_eq!(
        target.updates.load(Ordering::SeqCst),
        1,
        "an existing record is updated by key"
    );
    assert_eq!(target.get("QA-003").unwrap()["title"], "Renamed");
    app.stop().await;
}

async fn transformers_preview_and_real_run_agree(backend: Backend) {
    let samples = vec![
        json!({ "key": "T-1", "summary": " Login broken ", "status": "In Progress", "points": "5", "due": "2026-03-01 14:30", "done": "yes", "labels": "ui, auth", "component": "web", "version": "v1.2" }),
        json!({ "key": "T-2", "summary": "Crash", "status": "Weird", "points": "many", "due": "tomorrow", "done": "no", "labels": "", "component": "api", "version": "v2" }),
        json!({ "summary": "No key", "status": "Done", "points": "1", "due": "2026-01-01 00:00", "done": "0" }),
    ];
    let mappings = json!([
        { "target": "externalId", "source": "key", "required": true },
        { "target": "fields.summary", "source": "summary", "transformers": [{ "kind": "TRIM" }, { "kind": "UPPERCASE" }] },
        { "target": "fields.state", "source": "status", "transformers": [{ "kind": "LOWERCASE" }, { "kind": "VALUE_MAP", "table": { "in progress": "Active", "done": "Closed" }, "value": "New" }] },
        { "target": "fields.points", "source": "points", "transformers": [{ "kind": "TO_NUMBER" }] },
        { "target": "fields.due", "source": "due", "transformers": [{ "kind": "DATE_FORMAT", "from": "%Y-%m-%d %H:%M", "fromTz": "+02:00", "to": "rfc3339", "toTz": "UTC" }] },
        { "target": "fields.done", "source": "done", "transformers": [{ "kind": "TO_BOOL" }] },
        { "target": "fields.labels", "source": "labels", "transformers": [{ "kind": "SPLIT", "separator": "," }] },
        { "target": "fields.area", "source": "component", "transformers": [{ "kind": "DEFAULT", "value": "general" }] },
        { "target": "fields.path", "transformers": [{ "kind": "CONCAT", "fields": ["component", "key"], "separator": "/" }] },
        { "target": "fields.title", "transformers": [{ "kind": "TEMPLATE", "template": "{summary} [{key}]" }] },
        { "target": "fields.version", "source": "version", "transformers": [{ "kind": "REGEX_REPLACE", "pattern": "^v", "replacement": "" }, { "kind": "TO_STRING" }] },
    ]);
    let source = Records::new("key", samples[..2].to_vec());
    let target = Records::new("externalId", vec![]);
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start(backend).await;
    let (project, source_id, target_id) = project_with(&app, &source_server, &target_server).await;

    let preview = app
        .gql(
            &app.admin_key,
            "query($m: [FieldMappingInput!], $s: [JSON!]!) { previewSyncMapping(mappings: $m, sampleRecords: $s) { index output skipped errors { field message } } }",
            json!({ "m": mappings, "s": samples }),
        )
        .await;
    let results = preview.data()["previewSyncMapping"]
        .as_array()
        .unwrap()
        .clone();
    let first = results[0]["output"].clone();
    assert_eq!(
        first,
        json!({ "externalId": "T-1", "fields": { "summary": "LOGIN BROKEN", "state": "Active", "points": 5,
            "due": "2026-03-01T12:30:00+00:00", "done": true, "labels": ["ui", "auth"], "area": "web",
            "path": "web/T-1", "title": " Login broken  [T-1]", "version": "1.2" } })
    );
    let errors: Vec<(String, String)> = results[1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        errors.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["fields.points", "fields.due"]
    );
    assert!(
        errors[0].1.contains("`many` is not a number")
            && errors[1].1.contains("`tomorrow` does not match"),
        "{errors:?}"
    );
    assert_eq!(
        results[2]["skipped"],
        "required field `externalId` is missing"
    );
    let bad = app
        .gql(&app.admin_key, "query { previewSyncMapping(mappings: [{ target: \"a\", source: \"b\", transformers: [{ kind: REGEX_REPLACE, pattern: \"(\" }] }], sampleRecords: [{}]) { index } }", json!({}))
        .await;
    assert_eq!(bad.code(), "VALIDATION_FAILED");
    assert!(
        bad.body["errors"][0]["extensions"]["problems"][0]["path"] == "mappings[0].transformers[0]"
    );

    // A real run writes what the preview showed, and reports the failing record by key.
    let config = create_config(
        &app,
        json!({ "projectId": project, "name": "transform", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
            "sourceRead": { "path": "/all/items", "recordsPointer": "/items" }, "targetWrite": { "createPath": "/items" },
            "sourceKey": "key", "targetKey": "externalId", "mappings": mappings }),
    )
    .await;
    let by_config = app
        .gql(&app.admin_key, "query($c: ID!, $s: [JSON!]!) { previewSyncMapping(configId: $c, sampleRecords: $s) { output } }", json!({ "c": config, "s": [samples[0]] }))
        .await;
    assert_eq!(by_config.data()["previewSyncMapping"][0]["output"], first);
    let run = run_to_end(&app, &config).await;
    assert_eq!(run["status"], "PARTIALLY_FAILED");
    assert_eq!(counts(&run), (2, 1, 0, 1));
    assert_eq!(run["errorSamples"][0]["key"], "T-2");
    assert!(
        run["errorSamples"][0]["message"]
            .as_str()
            .unwrap()
            .contains("fields.points")
    );
    assert_eq!(target.get("T-1").unwrap(), first);
    app.stop().await;
}

async fn bidirectional_without_ping_pong_and_conflicts(backend: Backend) {
    let source = Records::new(
        "key",
        vec![
            json!({ "key": "A", "summary": "only in source", "status": "open", "updated": "2026-01-01T00:00:00Z" }),
            json!({ "key": "C", "summary": "same", "status": "open", "updated": "2026-01-01T00:00:00Z" }),
            json!({ "key": "D", "summary": "source says", "status": "open", "updated": "2026-01-01T00:00:00Z" }),
        ],
    );
    let target = Records::new(
        "externalId",
        vec![
            json!({ "externalId": "B", "title": "only in target", "state": "done", "modified": "2026-01-01T00:00:00Z" }),
            json!({ "externalId": "C", "title": "same", "state": "open", "modified": "2026-01-01T00:00:00Z" }),
            json!({ "externalId": "D", "title": "target says", "state": "open", "modified": "2026-01-01T00:00:00Z" }),
        ],
    );
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start(backend).await;
    let (project, source_id, target_id) = project_with(&app, &source_server, &target_server).await;
    let mut input = json!({ "projectId": project, "name": "both ways", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
        "direction": "BIDIRECTIONAL",
        "sourceRead": { "path": "/all/items", "recordsPointer": "/items" }, "targetRead": { "path": "/all/items", "recordsPointer": "/items" },
        "sourceWrite": { "createPath": "/items", "updatePath": "/items/{key}" }, "targetWrite": { "createPath": "/items", "updatePath": "/items/{key}" },
        "sourceKey": "key", "targetKey": "externalId",
        "mappings": [{ "target": "externalId", "source": "key" }, { "target": "title", "source": "summary" }, { "target": "state", "source": "status" }],
        "conflictPolicy": "SOURCE_WINS", "sourceTimestampField": "updated", "targetTimestampField": "modified" });
    let config = create_config(&app, input.clone()).await;

    let first = run_to_end(&app, &config).await;
    assert_eq!(first["status"], "SUCCEEDED", "{first}");
    assert_eq!(target.get("A").unwrap()["title"], "only in source");
    assert_eq!(source.get("B").unwrap()["summary"], "only in target");
    assert_eq!(
        target.get("D").unwrap()["title"],
        "source says",
        "first sight of a difference: the policy decides"
    );
    let (source_writes, target_writes) = (source.writes(), target.writes());
    let second = run_to_end(&app, &config).await;
    assert_eq!(
        second["recordsWritten"], 0,
        "the second run writes nothing: {second}"
    );
    assert_eq!(
        (source.writes(), target.writes()),
        (source_writes, target_writes)
    );

    // One side changes: it flows to the other, and only that record.
    source.put(json!({ "key": "A", "summary": "edited in source", "status": "open", "updated": "2026-02-01T00:00:00Z" }));
    target.put(json!({ "externalId": "B", "title": "edited in target", "state": "done", "modified": "2026-02-01T00:00:00Z" }));
    let third = run_to_end(&app, &config).await;
    assert_eq!(third["recordsWritten"], 2, "{third}");
    assert_eq!(target.get("A").unwrap()["title"], "edited in source");
    assert_eq!(source.get("B").unwrap()["summary"], "edited in target");
    assert_eq!(run_to_end(&app, &config).await["recordsWritten"], 0);

    // Both sides change: SOURCE_WINS, then TARGET_WINS, then NEWEST_WINS.
    for (policy, source_time, target_time, winner) in [
        (
            "SOURCE_WINS",
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
            "source",
        ),
        (
            "TARGET_WINS",
            "2026-04-02T00:00:00Z",
            "2026-04-01T00:00:00Z",
            "target",
        ),
        (
            "NEWEST_WINS",
            "2026-05-01T00:00:00Z",
            "2026-05-02T00:00:00Z",
            "target",
        ),
        (
            "NEWEST_WINS",
            "2026-06-02T00:00:00Z",
            "2026-06-01T00:00:00Z",
            "source",
        ),
    ] {
        input["conflictPolicy"] = json!(policy);
        app.gql(&app.admin_key, "mutation($id: ID!, $input: SyncConfigInput!) { updateSyncConfig(id: $id, input: $input) { id } }", json!({ "id": config, "input": input }))
            .await
            .data();
        source.put(json!({ "key": "C", "summary": format!("source {policy} {source_time}"), "status": "open", "updated": source_time }));
        target.put(json!({ "externalId": "C", "title": format!("target {policy} {target_time}"), "state": "open", "modified": target_time }));
        let run = run_to_end(&app, &config).await;
        assert_eq!(run["recordsWritten"], 1, "{policy}: {run}");
        let (in_source, in_target) = (
            source.get("C").unwrap()["summary"].clone(),
            target.get("C").unwrap()["title"].clone(),
        );
        assert_eq!(in_source, in_target, "{policy}: both sides agree");
        assert!(
            in_source.as_str().unwrap().starts_with(winner),
            "{policy}: {winner} should win, got {in_source}"
        );
        assert_eq!(
            run_to_end(&app, &config).await["recordsWritten"],
            0,
            "{policy}: settled"
        );
    }
    app.stop().await;
}

async fn cancel_interrupt_and_rerun(backend: Backend) {
    let source = Records::new("key", issues(40));
    let target = Records::new("externalId", vec![]);
    target.delay_ms.store(150, Ordering::SeqCst);
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start_configured(backend, |config| config.sync_write_concurrency = 2).await;
    let config = paged_config(&app, &source_server, &target_server, "slow").await;

    // Cancel mid-run.
    let started = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    let run_id = started.data()["runSync"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let again = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    assert_eq!(
        again.code(),
        "CONFLICT",
        "no overlapping runs of one config"
    );
    while target.len() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { cancelSyncRun(runId: $id) { id } }",
        json!({ "id": run_id }),
    )
    .await
    .data();
    let cancelled = wait_run(&app, &config, &run_id).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    let written_cancelled = cancelled["recordsWritten"].as_i64().unwrap();
    assert!(
        written_cancelled > 0 && written_cancelled < 40,
        "{cancelled}"
    );

    // Cut by stopping the server: the stop gives its lease back, and the next start takes
    // the run over and finishes it, skipping what was written before.
    let started = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    let run_id = started.data()["runSync"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = target.len();
    while target.len() < before + 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config_now = integration_hub::config::Config::clone(&app.state.config);
    let app = app.restart(config_now).await;
    target.delay_ms.store(0, Ordering::SeqCst);
    let resumed = wait_run(&app, &config, &run_id).await;
    assert_eq!(resumed["status"], "SUCCEEDED", "{resumed}");
    assert_eq!(resumed["attempts"], 2, "{resumed}");
    assert_eq!(target.len(), 40);
    let (read, written, skipped, failed) = counts(&resumed);
    assert_eq!((read, failed), (40, 0), "{resumed}");
    assert_eq!(written + skipped, 40, "{resumed}");
    assert!(
        skipped >= written_cancelled,
        "records written before were not written again: {resumed}"
    );
    let rerun = run_to_end(&app, &config).await;
    assert_eq!(rerun["status"], "SUCCEEDED", "{rerun}");
    assert_eq!(rerun["attempts"], 1, "{rerun}");
    assert_eq!(
        counts(&rerun),
        (40, 0, 40, 0),
        "nothing left to write: {rerun}"
    );
    app.stop().await;
}

/// A lease given back at a stop stays given back: a renewal that lands after the release
/// (it was on its way when the replica stopped) does not hold the run for another lease.
async fn a_lease_given_back_is_not_renewed(backend: Backend) {
    use integration_hub::sync::store;
    let source = Records::new("key", issues(40));
    let target = Records::new("externalId", vec![]);
    target.delay_ms.store(100, Ordering::SeqCst);
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start(backend).await;
    let config = paged_config(&app, &source_server, &target_server, "held").await;
    let started = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    let run_id = started.data()["runSync"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = app.state.pool.get().await.unwrap();
    let at = integration_hub::db::now();
    assert!(
        store::heartbeat(&mut conn, &run_id, 1, at).await.unwrap(),
        "the holder renews its lease"
    );
    let released = store::release_runs(&mut conn, std::slice::from_ref(&run_id))
        .await
        .unwrap();
    assert_eq!(released, 1);
    assert!(
        !store::heartbeat(&mut conn, &run_id, 1, at).await.unwrap(),
        "a lease given back is not renewed"
    );
    let stale = store::stale_runs(&mut conn, at, &[], 8).await.unwrap();
    assert!(
        stale.iter().any(|run| run.id == run_id),
        "the run is free to take over"
    );
    drop(conn);
    app.stop().await;
}

async fn push_to_two_targets_one_failing(backend: Backend) {
    let (zephyr, jira) = (
        Records::new("externalId", vec![]),
        Records::new("externalId", vec![]),
    );
    jira.fail_writes.store(true, Ordering::SeqCst);
    let (zephyr_server, jira_server) = (serve(&zephyr).await, serve(&jira).await);
    let app = TestApp::start(backend).await;
    let (project, zephyr_id, jira_id) = project_with(&app, &zephyr_server, &jira_server).await;
    let mappings = json!([
        { "target": "externalId", "source": "test", "required": true },
        { "target": "result", "source": "outcome", "transformers": [{ "kind": "UPPERCASE" }] },
    ]);
    let mut ids = Vec::new();
    for (name, target) in [("to zephyr", &zephyr_id), ("to jira", &jira_id)] {
        ids.push(
            create_config(
                &app,
                json!({ "projectId": project, "name": name, "sourceIntegrationId": zephyr_id, "targetIntegrationId": target,
                    "sourceRead": { "path": "/all/items", "recordsPointer": "/items" }, "targetWrite": { "createPath": "/items", "batchSize": 2 },
                    "sourceKey": "test", "targetKey": "externalId", "mappings": mappings }),
            )
            .await,
        );
    }
    let (_, ci) = app.key_with(&["sync:run"]).await;
    let results = json!([
        { "test": "login", "outcome": "pass" }, { "test": "logout", "outcome": "fail" }, { "test": "search", "outcome": "pass" }, { "outcome": "pass" }
    ]);
    let pushed = app
        .gql(
            &ci,
            "mutation($r: [JSON!]!, $c: [ID!]!) { pushRecords(records: $r, syncConfigIds: $c) { configId written skipped failed errors { key message } error { code } } }",
            json!({ "r": results, "c": ids }),
        )
        .await;
    let outcomes = pushed.data()["pushRecords"].as_array().unwrap().clone();
    assert_eq!(outcomes[0]["configId"], json!(ids[0]));
    assert_eq!(
        (
            outcomes[0]["written"].as_i64(),
            outcomes[0]["skipped"].as_i64(),
            outcomes[0]["failed"].as_i64()
        ),
        (Some(3), Some(1), Some(0))
    );
    assert_eq!(zephyr.get("logout").unwrap()["result"], "FAIL");
    assert_eq!(
        (
            outcomes[1]["written"].as_i64(),
            outcomes[1]["failed"].as_i64()
        ),
        (Some(0), Some(3))
    );
    let messages: Vec<&str> = outcomes[1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("status 500")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("skipped: required field")),
        "{messages:?}"
    );
    let (_, reader) = app.key_with(&["sync:read"]).await;
    let refused = app
        .gql(
            &reader,
            "mutation($c: [ID!]!) { pushRecords(records: [{}], syncConfigIds: $c) { written } }",
            json!({ "c": ids }),
        )
        .await;
    assert_eq!(refused.code(), "FORBIDDEN");
    app.stop().await;
}

async fn scheduler_confinement_and_live_progress(backend: Backend) {
    let source = Records::new("key", issues(5));
    let target = Records::new("externalId", vec![]);
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start_configured(backend, |config| config.sync_scheduler_secs = 1).await;
    let (project, source_id, target_id) = project_with(&app, &source_server, &target_server).await;
    let input = json!({ "projectId": project, "name": "scheduled", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
        "sourceRead": { "path": "/all/items", "recordsPointer": "/items" }, "targetWrite": { "createPath": "/items", "updatePath": "/items/{key}" },
        "sourceKey": "key", "targetKey": "externalId", "mappings": basic_mappings(), "scheduleSeconds": 1 });

    // Validation names the wrong fields.
    let mut bad = input.clone();
    bad["targetWrite"] = json!(null);
    bad["mappings"] = json!([{ "target": "x" }]);
    let refused = app
        .gql(&app.admin_key, CREATE_CONFIG, json!({ "input": bad }))
        .await;
    assert_eq!(refused.code(), "VALIDATION_FAILED");
    let paths: Vec<&str> = refused.body["errors"][0]["extensions"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"targetWrite") && paths.contains(&"mappings[0].source"),
        "{paths:?}"
    );

    let config = create_config(&app, input.clone()).await;
    // The scheduler runs it on its own, again and again, never two at once.
    let mut runs = Vec::new();
    for _ in 0..100 {
        let answer = app
            .gql(&app.admin_key, "query($c: ID!) { syncRuns(configId: $c) { edges { node { status trigger startedAt finishedAt } } } }", json!({ "c": config }))
            .await;
        runs = answer.data()["syncRuns"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect::<Vec<_>>();
        if runs.iter().filter(|r| r["status"] == "SUCCEEDED").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished: Vec<&Value> = runs.iter().filter(|r| r["status"] == "SUCCEEDED").collect();
    assert!(finished.len() >= 2, "{runs:?}");
    assert!(finished.iter().all(|r| r["trigger"] == "schedule"));
    // Newest first: the newer run started after the older one finished.
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(
        time(&finished[0]["startedAt"]) >= time(&finished[1]["finishedAt"]),
        "{finished:?}"
    );
    assert_eq!(target.len(), 5);
    let mut off = input.clone();
    off["enabled"] = json!(false);
    app.gql(&app.admin_key, "mutation($id: ID!, $input: SyncConfigInput!) { updateSyncConfig(id: $id, input: $input) { enabled } }", json!({ "id": config, "input": off }))
        .await
        .data();

    // Another team sees and touches nothing, and cannot point a config at our integrations.
    let (_, other) = app.new_team("other").await;
    for query in [
        format!("{{ syncConfig(id: \"{config}\") {{ id }} }}"),
        format!("{{ syncRuns(configId: \"{config}\") {{ edges {{ cursor }} }} }}"),
        format!("mutation {{ runSync(configId: \"{config}\") {{ id }} }}"),
        format!("mutation {{ deleteSyncConfig(id: \"{config}\") }}"),
    ] {
        assert_eq!(
            app.gql(&other, &query, json!({})).await.code(),
            "NOT_FOUND",
            "{query}"
        );
    }
    let their_project = app.create_project(&other, "theirs").await;
    let mut stolen = input.clone();
    stolen["projectId"] = json!(their_project);
    stolen["name"] = json!("stolen");
    let refused = app
        .gql(&other, CREATE_CONFIG, json!({ "input": stolen }))
        .await;
    assert_eq!(refused.code(), "VALIDATION_FAILED");
    assert!(refused.message().contains("sourceIntegrationId"));
    assert_eq!(
        app.gql(&other, "{ syncConfigs { id } }", json!({}))
            .await
            .data()["syncConfigs"],
        json!([])
    );

    // Live progress of a real run.
    let manual = create_config(
        &app,
        json!({ "projectId": project, "name": "watched", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
            "sourceRead": { "path": "/page/items", "recordsPointer": "/data/items", "pagination": { "kind": "PAGE", "size": 2 } },
            "targetWrite": { "createPath": "/items" }, "sourceKey": "key", "targetKey": "externalId",
            "mappings": [{ "target": "externalId", "source": "key" }, { "target": "copy", "source": "summary" }] }),
    )
    .await;
    let (_, watcher) = app.key_with(&["logs:subscribe", "sync:read"]).await;
    let ws_url = format!("{}/graphql", app.base.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)
            .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let send = |v: Value| Message::text(v.to_string());
    socket.send(send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {watcher}") } }))).await.unwrap();
    socket.next().await.unwrap().unwrap();
    socket
        .send(send(json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription($p: ID) { syncRunProgress(projectId: $p) { ... on SyncRun { id status recordsRead recordsWritten } } }", "variables": { "p": project } } })))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = app.gql(&app.admin_key, RUN, json!({ "id": manual })).await;
    let run_id = started.data()["runSync"]["id"].clone();
    let mut seen = Vec::new();
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        let value: Value = serde_json::from_str(&text).unwrap();
        let run = value["payload"]["data"]["syncRunProgress"].clone();
        if run["id"] != run_id {
            continue; // a scheduled run of the other config
        }
        let status = run["status"].as_str().unwrap_or_default().to_string();
        seen.push((
            status.clone(),
            run["recordsRead"].as_i64().unwrap_or_default(),
        ));
        if status == "SUCCEEDED" {
            break;
        }
    }
    assert_eq!(
        seen.first().map(|s| s.0.as_str()),
        Some("RUNNING"),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&("SUCCEEDED".to_string(), 5)), "{seen:?}");
    assert!(
        seen.iter()
            .any(|(s, read)| s == "RUNNING" && *read > 0 && *read < 5),
        "counts as they change: {seen:?}"
    );

    // One run, subscribed to right after `runSync` answers: its state now first, each state
    // once, the final one once, then `complete`. (The project's stream goes on beside it.)
    let by_run = "subscription($r: ID) { syncRunProgress(runId: $r) { ... on SyncRun { id status recordsRead recordsWritten } } }";
    let started = app.gql(&app.admin_key, RUN, json!({ "id": manual })).await;
    let run_id = started.data()["runSync"]["id"].clone();
    socket
        .send(send(json!({ "id": "2", "type": "subscribe", "payload": { "query": by_run, "variables": { "r": run_id } } })))
        .await
        .unwrap();
    let (mut by_run_states, mut project_finals, mut completed) = (Vec::new(), 0, false);
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["id"] == "2" && value["type"] == "complete" {
            completed = true;
            break;
        }
        let run = value["payload"]["data"]["syncRunProgress"].clone();
        if run["id"] != run_id {
            continue;
        }
        if value["id"] == "2" {
            by_run_states.push(run.clone());
        } else if run["status"] == "SUCCEEDED" {
            project_finals += 1;
        }
    }
    assert!(
        completed,
        "the run's subscription completes: {by_run_states:?}"
    );
    assert!(
        matches!(
            by_run_states[0]["status"].as_str(),
            Some("QUEUED" | "RUNNING" | "SUCCEEDED")
        ),
        "{by_run_states:?}"
    );
    assert_eq!(by_run_states.last().unwrap()["status"], "SUCCEEDED");
    assert!(
        by_run_states.windows(2).all(|w| w[0] != w[1]),
        "no state twice: {by_run_states:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(300), socket.next()).await
    {
        let value: Value = serde_json::from_str(&text).unwrap();
        let run = &value["payload"]["data"]["syncRunProgress"];
        if run["id"] == run_id && run["status"] == "SUCCEEDED" {
            project_finals += 1;
        }
    }
    assert_eq!(project_finals, 1, "the final state is sent once");
    // A finished run: its state, then `complete` at once.
    socket
        .send(send(json!({ "id": "3", "type": "subscribe", "payload": { "query": by_run, "variables": { "r": run_id } } })))
        .await
        .unwrap();
    let mut answers = Vec::new();
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_secs(5), socket.next()).await
    {
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["id"] == "3" {
            let done = value["type"] == "complete";
            answers.push(value);
            if done {
                break;
            }
        }
    }
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        answers[0]["payload"]["data"]["syncRunProgress"]["status"],
        "SUCCEEDED"
    );
    app.stop().await;
}

/// Two replicas on one PostgreSQL database (PostgreSQL only: SQLite is one process). A replica
/// that starts leaves alone a run another live replica is executing: starts used to mark
/// every running run interrupted, after which `runSync` accepted a second run of the config
/// and the target received its records twice. The second replica refuses a second run while
/// the first runs; the run ends on its own replica with every record written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_replica_leaves_live_runs_alone() {
    let source = Records::new("key", issues(40));
    let target = Records::new("externalId", vec![]);
    target.delay_ms.store(100, Ordering::SeqCst);
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start_configured(Backend::Postgres, |config| {
        config.sync_write_concurrency = 2;
    })
    .await;
    let config = paged_config(&app, &source_server, &target_server, "slow").await;
    let started = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    let run_id = started.data()["runSync"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    while target.len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Replica B starts on the same database while A runs.
    let replica = app.start_replica().await;
    let on_b = app
        .client
        .post(format!("http://{}/graphql", replica.addr))
        .bearer_auth(&app.admin_key)
        .json(&json!({ "query": RUN, "variables": { "id": config } }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        on_b["errors"][0]["extensions"]["code"], "CONFLICT",
        "replica B refuses a second run while A runs: {on_b}"
    );
    let status = app
        .gql(
            &app.admin_key,
            "query($c: ID!) { syncRuns(configId: $c, first: 1) { nodes { id status } } }",
            json!({ "c": config }),
        )
        .await;
    assert_eq!(
        status.data()["syncRuns"]["nodes"][0],
        json!({ "id": run_id, "status": "RUNNING" }),
        "B's start did not interrupt A's run"
    );

    let done = wait_run(&app, &config, &run_id).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["recordsWritten"], 40, "{done}");
    assert_eq!(target.len(), 40);
    assert_eq!(
        target.creates.load(Ordering::SeqCst) + target.updates.load(Ordering::SeqCst),
        40,
        "each record written once"
    );
    replica.stop().await;
    app.stop().await;
}

/// Sixteen `runSync` requests for one config at once: exactly one run starts, every other
/// request is refused with CONFLICT (the database's unique index decides, so the same holds
/// across replicas), and the target receives each record once.
async fn concurrent_run_requests_start_one_run(backend: Backend) {
    let source = Records::new("key", issues(20));
    let target = Records::new("externalId", vec![]);
    target.delay_ms.store(20, Ordering::SeqCst);
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start(backend).await;
    let config = paged_config(&app, &source_server, &target_server, "once").await;
    let answers = futures_util::future::join_all(
        (0..16).map(|_| app.gql(&app.admin_key, RUN, json!({ "id": config }))),
    )
    .await;
    let started: Vec<String> = answers
        .iter()
        .filter_map(|a| a.body["data"]["runSync"]["id"].as_str().map(str::to_string))
        .collect();
    let refused = answers
        .iter()
        .filter(|a| a.body["errors"][0]["extensions"]["code"] == "CONFLICT")
        .count();
    assert_eq!(
        started.len(),
        1,
        "one run starts: {answers:?}",
        answers = answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    assert_eq!(refused, 15);
    let done = wait_run(&app, &config, &started[0]).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(
        target.creates.load(Ordering::SeqCst) + target.updates.load(Ordering::SeqCst),
        20,
        "each record written once"
    );
    let runs = app
        .gql(
            &app.admin_key,
            "query($c: ID!) { syncRuns(configId: $c, first: 100) { totalCount } }",
            json!({ "c": config }),
        )
        .await;
    assert_eq!(runs.data()["syncRuns"]["totalCount"], 1);
    // A run whose final state is stored frees its config at once, even while its task is
    // still winding down on this replica (it announces its end, then leaves the list of jobs):
    // a client that saw the run end and starts the next is not refused. The database decides.
    app.state.jobs.started(
        "winding-down".into(),
        config.clone(),
        Arc::new(AtomicBool::new(false)),
        tokio::spawn(async {}),
    );
    let again = run_to_end(&app, &config).await;
    assert_eq!(again["status"], "SUCCEEDED", "{again}");
    app.state.jobs.finished("winding-down");
    app.stop().await;
}

/// A scheduled period is claimed once: eight claims of the same period at the same instant
/// (as replicas' schedulers would make), one wins. PostgreSQL only: SQLite is one process.
/// Three replicas running a 2-second schedule: `replicas::three_processes_on_one_database`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_period_is_claimed_once() {
    let source = Records::new("key", issues(5));
    let target = Records::new("externalId", vec![]);
    let (source_server, target_server) = (serve(&source).await, serve(&target).await);
    let app = TestApp::start(Backend::Postgres).await;
    let (project, source_id, target_id) = project_with(&app, &source_server, &target_server).await;
    let config = create_config(
        &app,
        json!({ "projectId": project, "name": "every 2 s", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
            "sourceRead": { "path": "/all/items", "recordsPointer": "/items" }, "targetWrite": { "createPath": "/items", "updatePath": "/items/{key}" },
            "sourceKey": "key", "targetKey": "externalId", "mappings": basic_mappings() }),
    )
    .await;
    let at = integration_hub::db::now() + chrono::Duration::seconds(60);
    let claims = futures_util::future::join_all((0..8).map(|_| {
        let (pool, config) = (app.state.pool.clone(), config.clone());
        async move {
            let mut conn = pool.get().await.unwrap();
            integration_hub::sync::store::claim_period(
                &mut conn,
                &config,
                at,
                chrono::Duration::seconds(2),
            )
            .await
            .unwrap()
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|won| **won).count(), 1, "{claims:?}");
    app.stop().await;
}

/// A page that holds each record key twice, written 4 at a time to a target that answers
/// after 30 ms: writes that end together share one commit of their fingerprints, and a key
/// twice in that commit must not make it fail (PostgreSQL refuses an upsert that touches a
/// row twice).
async fn a_key_twice_in_a_page_is_recorded(backend: Backend) {
    let records: Vec<Value> = (0..40)
        .map(|i| json!({ "key": format!("r{}", i / 2), "title": format!("t{i}") }))
        .collect();
    let source = Receiver::start(move |_| Reply::json(200, &json!(records))).await;
    let target =
        Receiver::start(|_| Reply::json(201, &json!({})).after(Duration::from_millis(30))).await;
    let app = TestApp::start(backend).await;
    let (project, source_id, target_id) = project_with(&app, &source, &target).await;
    let config = create_config(
        &app,
        json!({ "projectId": project, "name": "twice", "sourceIntegrationId": source_id, "targetIntegrationId": target_id,
            "sourceRead": { "path": "/items" }, "targetWrite": { "createPath": "/items" },
            "sourceKey": "key", "targetKey": "key", "mappings": [{ "target": "key", "source": "key" }, { "target": "title", "source": "title" }] }),
    )
    .await;
    let run = run_to_end(&app, &config).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["recordsRead"], 40, "{run}");
    assert_eq!(run["recordsFailed"], 0, "{run}");
    assert_eq!(target.count(), 40, "both writes of each key were sent");
    app.stop().await;
}
