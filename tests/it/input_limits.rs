//! Every input is bounded before work starts. Each request an outside review used to crash or
//! exhaust the hub is sent as it was, and the server must answer with VALIDATION_FAILED naming
//! the field (or fail only the record, with the reason) and stay up.

use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(
    reported_requests_are_refused_and_the_server_stays_up,
    stored_configs_are_held_to_the_same_limits
);

const PREVIEW: &str = "query($m: [FieldMappingInput!]!, $r: [JSON!]!) {
    previewSyncMapping(mappings: $m, sampleRecords: $r) { output skipped errors { field message } } }";

async fn still_up(app: &TestApp) {
    let answer = app.gql(&app.admin_key, "{ __typename }", json!({})).await;
    assert_eq!(answer.data()["__typename"], "Query");
}

/// The first problem's path of a VALIDATION_FAILED answer.
fn refused_at(answer: &crate::support::Answer) -> String {
    assert_eq!(answer.code(), "VALIDATION_FAILED", "{}", answer.body);
    let problems = &answer.body["errors"][0]["extensions"]["problems"];
    problems[0]["path"].as_str().unwrap_or_default().to_string()
}

async fn preview(
    app: &TestApp,
    key: &str,
    mappings: Value,
    records: Value,
) -> crate::support::Answer {
    app.gql(key, PREVIEW, json!({ "m": mappings, "r": records }))
        .await
}

/// A project with two generic REST integrations (nothing is called): (project, [source,
/// target]).
async fn source_and_target(app: &TestApp) -> (String, Vec<String>) {
    let project = app.create_project(&app.admin_key, "P").await;
    let mut ids = Vec::new();
    for name in ["source", "target"] {
        let answer = app
            .gql(
                &app.admin_key,
                REGISTER,
                json!({ "input": { "projectId": project, "provider": "generic_rest", "name": name,
                    "config": { "baseUrl": "http://127.0.0.1:9" }, "credentials": {} } }),
            )
            .await;
        ids.push(
            answer.data()["registerIntegration"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    (project, ids)
}

/// `createSyncConfig` from source to target with one mapping `target` ← `a`.
async fn create_config(
    app: &TestApp,
    project: &str,
    ids: &[String],
    target: &str,
) -> crate::support::Answer {
    app.gql(
        &app.admin_key,
        "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id } }",
        json!({ "input": { "projectId": project, "name": "sync", "sourceIntegrationId": ids[0],
            "targetIntegrationId": ids[1], "sourceRead": { "path": "/items" },
            "targetWrite": { "createPath": "/items" }, "sourceKey": "a", "targetKey": "a",
            "mappings": [{ "target": target, "source": "a" }] } }),
    )
    .await
}

async fn reported_requests_are_refused_and_the_server_stays_up(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, reader) = app.key_with(&["sync:read"]).await;

    // A 5,000-segment target path (it used to overflow a worker's stack).
    let deep = vec!["a"; 5000].join(".");
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": deep, "source": "a" }]),
        json!([{ "a": 1 }]),
    )
    .await;
    assert_eq!(refused_at(&answer), "mappings[0].target");
    still_up(&app).await;
    // 33 segments are refused; 32 work.
    let over = vec!["a"; 33].join(".");
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": over, "source": "a" }]),
        json!([{ "a": 1 }]),
    )
    .await;
    assert!(
        answer.message().contains("at most 32 segments"),
        "{}",
        answer.body
    );
    let at_limit = vec!["a"; 32].join(".");
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": at_limit, "source": "a" }]),
        json!([{ "a": 1 }]),
    )
    .await;
    assert!(answer.data()["previewSyncMapping"][0]["output"].is_object());

    // Huge array indexes (they used to allocate gigabytes or abort the process).
    for index in [
        "10000000",
        "99999999",
        "1000000000",
        "99999999999999999999999",
    ] {
        let answer = preview(
            &app,
            &reader,
            json!([{ "target": format!("x[{index}]"), "source": "a" }]),
            json!([{ "a": 1 }]),
        )
        .await;
        assert_eq!(refused_at(&answer), "mappings[0].target", "{index}");
        still_up(&app).await;
    }
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": "x[999]", "source": "a" }]),
        json!([{ "a": 1 }]),
    )
    .await;
    assert_eq!(
        answer.data()["previewSyncMapping"][0]["output"]["x"]
            .as_array()
            .unwrap()
            .len(),
        1000
    );

    // The same path stored through createSyncConfig is refused before it is stored.
    let (project, ids) = source_and_target(&app).await;
    let answer = create_config(&app, &project, &ids, &deep).await;
    assert_eq!(refused_at(&answer), "mappings[0].target");
    let stored = app
        .gql(&app.admin_key, "{ syncConfigs { id } }", json!({}))
        .await;
    assert_eq!(
        stored.data()["syncConfigs"],
        json!([]),
        "nothing half-written"
    );

    // Counts: mappings, transformers, sample records.
    let many = (0..201)
        .map(|i| json!({ "target": format!("f{i}"), "source": "a" }))
        .collect::<Vec<_>>();
    assert_eq!(
        refused_at(&preview(&app, &reader, json!(many), json!([{}])).await),
        "mappings"
    );
    let trims = vec![json!({ "kind": "TRIM" }); 21];
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": "t", "source": "a", "transformers": trims }]),
        json!([{}]),
    )
    .await;
    assert_eq!(refused_at(&answer), "mappings[0].transformers");
    let samples = vec![json!({ "a": 1 }); 101];
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": "t", "source": "a" }]),
        json!(samples),
    )
    .await;
    assert_eq!(refused_at(&answer), "sampleRecords");

    // Regexes: too long, or too large once compiled.
    let long = "a".repeat(5000);
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": "t", "source": "a",
        "transformers": [{ "kind": "REGEX_REPLACE", "pattern": long }] }]),
        json!([{}]),
    )
    .await;
    assert_eq!(refused_at(&answer), "mappings[0].transformers[0]");
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": "t", "source": "a",
        "transformers": [{ "kind": "REGEX_REPLACE", "pattern": "(\\w{1000}){1000}" }] }]),
        json!([{}]),
    )
    .await;
    assert_eq!(refused_at(&answer), "mappings[0].transformers[0]");
    still_up(&app).await;

    // Output that multiplies its input fails the record with the reason, nothing more.
    let template = "{a}".repeat(60);
    let replace = "$0".repeat(200);
    let big = "x".repeat(200_000);
    let answer = preview(
        &app,
        &reader,
        json!([
            { "target": "t", "transformers": [{ "kind": "TEMPLATE", "template": template }] },
        ]),
        json!([{ "a": big }]),
    )
    .await;
    let errors = &answer.data()["previewSyncMapping"][0]["errors"];
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{errors}"
    );
    let answer = preview(&app, &reader, json!([
        { "target": "t", "source": "a", "transformers": [{ "kind": "REGEX_REPLACE", "pattern": "x+", "replacement": replace }] },
    ]), json!([{ "a": big }])).await;
    let errors = &answer.data()["previewSyncMapping"][0]["errors"];
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{errors}"
    );
    let copies = (0..10)
        .map(|i| json!({ "target": format!("c{i}"), "source": "a" }))
        .collect::<Vec<_>>();
    let answer = preview(&app, &reader, json!(copies), json!([{ "a": big }])).await;
    let errors = &answer.data()["previewSyncMapping"][0]["errors"];
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("mapped record would be larger"),
        "{errors}"
    );
    still_up(&app).await;

    // Records nested deeper than 32 levels, as variables and as literals in the document.
    let mut nested = json!(1);
    for _ in 0..40 {
        nested = json!({ "a": nested });
    }
    let answer = preview(
        &app,
        &reader,
        json!([{ "target": "t", "source": "a" }]),
        json!([nested]),
    )
    .await;
    assert_eq!(refused_at(&answer), "sampleRecords[0]");
    let literal = format!("{}1{}", "{a: ".repeat(3000), "}".repeat(3000));
    let answer = app
        .gql(
            &reader,
            &format!("{{ previewSyncMapping(mappings: [{{target: \"t\", source: \"a\"}}], sampleRecords: [{literal}]) {{ output }} }}"),
            json!({}),
        )
        .await;
    assert!(
        answer.body["errors"][0]["extensions"]["code"].is_string(),
        "{}",
        answer.body
    );
    let list = format!("{}1{}", "[".repeat(3000), "]".repeat(3000));
    let answer = app
        .gql(&reader, &format!("{{ __typename(x: {list}) }}"), json!({}))
        .await;
    assert!(
        answer.body["errors"][0]["extensions"]["code"].is_string(),
        "{}",
        answer.body
    );
    still_up(&app).await;

    // Calls: header and query-parameter counts, path length; nested variables anywhere.
    let execute = "mutation($id: ID!, $input: ExecuteRequestInput!) { executeRequest(integrationId: $id, input: $input) { status } }";
    let headers: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let answer = app
        .gql(
            &app.admin_key,
            execute,
            json!({ "id": ids[0], "input": { "method": "GET", "path": "/", "headers": headers } }),
        )
        .await;
    assert_eq!(refused_at(&answer), "headers");
    let query: serde_json::Map<String, Value> =
        [("n".to_string(), json!((0..101).collect::<Vec<_>>()))]
            .into_iter()
            .collect();
    let answer = app
        .gql(
            &app.admin_key,
            execute,
            json!({ "id": ids[0], "input": { "method": "GET", "path": "/", "query": query } }),
        )
        .await;
    assert_eq!(answer.code(), "VALIDATION_FAILED");
    assert!(
        answer.message().contains("at most 100 parameters"),
        "{}",
        answer.body
    );
    let answer = app
        .gql(&app.admin_key, execute, json!({ "id": ids[0], "input": { "method": "GET", "path": format!("/{}", "a".repeat(5000)) } }))
        .await;
    assert_eq!(answer.code(), "VALIDATION_FAILED");
    let mut deep = json!("x");
    for _ in 0..70 {
        deep = json!([deep]);
    }
    let answer = app
        .gql(
            &app.admin_key,
            execute,
            json!({ "id": ids[0], "input": { "method": "POST", "path": "/", "body": deep } }),
        )
        .await;
    assert_eq!(answer.code(), "VALIDATION_FAILED");
    assert!(
        answer.message().contains("`$input` nests deeper than 64"),
        "{}",
        answer.body
    );
    still_up(&app).await;
    app.stop().await;
}

/// A config stored before these limits (written here straight into the database) is held to
/// them when it is previewed, run or pushed: refused with the field named, server up.
async fn stored_configs_are_held_to_the_same_limits(backend: Backend) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use integration_hub::db::schema::sync_configs;

    let app = TestApp::start(backend).await;
    let (project, ids) = source_and_target(&app).await;
    let created = create_config(&app, &project, &ids, "a").await;
    let config = created.data()["createSyncConfig"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = app.state.pool.get().await.unwrap();
    let spec: String = integration_hub::with_conn!(&mut conn, |c| sync_configs::table
        .filter(sync_configs::id.eq(&config))
        .select(sync_configs::spec)
        .first(c)
        .await)
    .unwrap();
    let mut spec: Value = serde_json::from_str(&spec).unwrap();
    spec["mappings"][0]["target"] = json!(vec!["a"; 5000].join("."));
    let spec = spec.to_string();
    integration_hub::with_conn!(&mut conn, |c| diesel::update(
        sync_configs::table.filter(sync_configs::id.eq(&config))
    )
    .set(sync_configs::spec.eq(&spec))
    .execute(c)
    .await)
    .unwrap();
    drop(conn);

    let preview = app
        .gql(
            &app.admin_key,
            "query($id: ID!) { previewSyncMapping(configId: $id, sampleRecords: [{ a: 1 }]) { output } }",
            json!({ "id": config }),
        )
        .await;
    assert_eq!(refused_at(&preview), "mappings[0].target");
    let run = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!) { runSync(configId: $id) { id } }",
            json!({ "id": config }),
        )
        .await;
    assert_eq!(refused_at(&run), "mappings[0].target");
    let push = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!) { pushRecords(records: [{ a: 1 }], syncConfigIds: [$id]) { written error { code message } } }",
            json!({ "id": config }),
        )
        .await;
    let outcome = &push.data()["pushRecords"][0];
    assert_eq!(outcome["written"], 0);
    assert_eq!(outcome["error"]["code"], "VALIDATION_FAILED", "{outcome}");
    assert!(
        outcome["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 256 characters")
    );
    still_up(&app).await;
    app.stop().await;
}
