//! Every mutation leaves an audit event: actor, action, target, outcome; readable with
//! `audit:read`, filtered and paginated, confined to the team.

use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(mutations_are_audited);
on_both_backends!(a_known_document_is_audited_as_a_new_one);

const LOG: &str = "query($f: AuditFilterInput, $first: Int, $after: String) { auditLog(filter: $f, first: $first, after: $after) {
    edges { node { actor action targetType targetId outcome errorCode at } }
    pageInfo { hasNextPage endCursor }
} }";

async fn mutations_are_audited(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let (key_id, writer) = app
        .key_with(&["integrations:write", "integrations:read"])
        .await;
    let project = app.create_project(&writer, "P").await;
    let integration = app.register_github(&admin, &project, "g", "t").await;
    app.gql(
        &writer,
        &format!(
            "mutation {{ setIntegrationEnabled(id: \"{integration}\", enabled: false) {{ id }} }}"
        ),
        json!({}),
    )
    .await
    .data();
    let failed = app
        .gql(
            &writer,
            "mutation { deleteIntegration(id: \"missing\") }",
            json!({}),
        )
        .await;
    assert_eq!(failed.code(), "NOT_FOUND");
    let forbidden = app
        .gql(
            &writer,
            "mutation { createApiKey(input: { name: \"x\", scopes: [\"admin\"] }) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(forbidden.code(), "FORBIDDEN");

    let all = app.gql(&admin, LOG, json!({})).await;
    let events: Vec<serde_json::Value> = all.data()["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let summary: Vec<(String, String, Option<String>, String)> = events
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["targetId"].as_str().map(str::to_string),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let by_writer = format!("api_key:{key_id}");
    let admin_actor = summary.last().unwrap().0.clone();
    assert_eq!(
        summary,
        vec![
            (
                by_writer.clone(),
                "createApiKey".into(),
                None,
                "FAILURE".into()
            ),
            (
                by_writer.clone(),
                "deleteIntegration".into(),
                Some("missing".into()),
                "FAILURE".into()
            ),
            (
                by_writer.clone(),
                "setIntegrationEnabled".into(),
                Some(integration.clone()),
                "SUCCESS".into()
            ),
            (
                admin_actor.clone(),
                "registerIntegration".into(),
                Some(integration.clone()),
                "SUCCESS".into()
            ),
            (
                by_writer.clone(),
                "createProject".into(),
                Some(project.clone()),
                "SUCCESS".into()
            ),
            (
                admin_actor.clone(),
                "createApiKey".into(),
                Some(key_id.clone()),
                "SUCCESS".into()
            ),
        ]
    );
    assert_eq!(events[0]["errorCode"], "FORBIDDEN");
    assert_eq!(events[1]["errorCode"], "NOT_FOUND");
    assert_eq!(events[2]["targetType"], "integration");

    let failures = app
        .gql(&admin, LOG, json!({ "f": { "outcome": "FAILURE" } }))
        .await;
    assert_eq!(
        failures.data()["auditLog"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let on_integration = app
        .gql(&admin, LOG, json!({ "f": { "targetId": integration } }))
        .await;
    assert_eq!(
        on_integration.data()["auditLog"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Pages of two, newest first, cover everything once.
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let page = app
            .gql(&admin, LOG, json!({ "first": 2, "after": after }))
            .await;
        let conn = page.data()["auditLog"].clone();
        seen += conn["edges"].as_array().unwrap().len();
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, 6);

    // Needs audit:read; another team sees none of it.
    assert_eq!(app.gql(&writer, LOG, json!({})).await.code(), "FORBIDDEN");
    let (_, other) = app.new_team("other").await;
    let theirs = app.gql(&other, LOG, json!({})).await;
    assert_eq!(theirs.data()["auditLog"]["edges"], json!([]));
    app.stop().await;
}

/// The first request with a document is validated in full on the schema with extensions;
/// later ones run on the schema without them (`graphql::FastSchema`). Both record the same
/// audit events: success with its target, failure with its code, a call through the journal.
async fn a_known_document_is_audited_as_a_new_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let (_, writer) = app
        .key_with(&["integrations:write", "integrations:execute"])
        .await;
    let create = "mutation($name: String!) { createProject(input: { name: $name }) { id } }";
    let delete = "mutation($id: ID!) { deleteIntegration(id: $id) }";
    let forbidden =
        "mutation { createApiKey(input: { name: \"x\", scopes: [\"admin\"] }) { key } }";
    let call = "mutation($id: ID!) { executeRequest(integrationId: $id, input: { method: \"GET\", path: \"/x\" }) { status } }";
    let mut expected = Vec::new();
    for round in 0..3 {
        let created = app
            .gql(&admin, create, json!({ "name": format!("p{round}") }))
            .await;
        let id = created.data()["createProject"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        expected.push(("createProject", "SUCCESS", None, Some(id)));
        let missing = format!("missing-{round}");
        let failed = app.gql(&writer, delete, json!({ "id": missing })).await;
        assert_eq!(failed.code(), "NOT_FOUND", "{}", failed.body);
        expected.push((
            "deleteIntegration",
            "FAILURE",
            Some("NOT_FOUND"),
            Some(missing),
        ));
        let refused = app.gql(&writer, forbidden, json!({})).await;
        assert_eq!(refused.code(), "FORBIDDEN", "{}", refused.body);
        expected.push(("createApiKey", "FAILURE", Some("FORBIDDEN"), None));
        // A call (its audit row goes through the journal with its request log) to an
        // integration of another team's, refused as unknown.
        let called = app.gql(&writer, call, json!({ "id": "nowhere" })).await;
        assert_eq!(called.code(), "NOT_FOUND", "{}", called.body);
        expected.push((
            "executeRequest",
            "FAILURE",
            Some("NOT_FOUND"),
            Some("nowhere".into()),
        ));
    }
    let log = app
        .gql(
            &admin,
            "{ auditLog(first: 100) { edges { node { action outcome errorCode targetId } } } }",
            json!({}),
        )
        .await;
    let mut seen: Vec<(String, String, Option<String>, Option<String>)> =
        log.data()["auditLog"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["node"])
            // The writer's key, created first, is not this test's.
            .filter(|n| n["action"] != "createApiKey" || n["outcome"] == "FAILURE")
            .map(|n| {
                (
                    n["action"].as_str().unwrap().to_string(),
                    n["outcome"].as_str().unwrap().to_string(),
                    n["errorCode"].as_str().map(str::to_string),
                    n["targetId"].as_str().map(str::to_string),
                )
            })
            .collect();
    seen.reverse();
    let expected: Vec<(String, String, Option<String>, Option<String>)> = expected
        .into_iter()
        .map(|(action, outcome, code, target)| {
            (
                action.into(),
                outcome.into(),
                code.map(str::to_string),
                target,
            )
        })
        .collect();
    assert_eq!(seen, expected);
    app.stop().await;
}
