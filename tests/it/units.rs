//! A mutation and its audit event commit together or not at all: with the audit log refusing
//! every row, each mutation that changes stored state fails and leaves the database exactly
//! as it was, announces nothing, and drops no cached state; once the audit log accepts rows
//! again, the same mutations succeed with their events.

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::Text;
use integration_hub::db::{DbConn, describe_tables};
use integration_hub::with_conn;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(mutations_commit_with_their_audit_event_or_not_at_all);

#[derive(QueryableByName)]
struct Dump {
    #[diesel(sql_type = Text)]
    rows: String,
}

/// Tables whose rows other writers change while the test runs (or that are the audit itself).
const SKIPPED_TABLES: [&str; 3] = ["audit_events", "request_logs", "__diesel_schema_migrations"];
/// Key usage is counted in the background as keys are used.
const SKIPPED_COLUMNS: [&str; 2] = ["last_used_at", "usage_count"];

/// Every stored row of every table (but the skipped), as text.
async fn snapshot(app: &TestApp) -> Vec<(String, String)> {
    let tables = describe_tables(&app.state.pool)
        .await
        .map_err(|e| e.message())
        .unwrap();
    let mut conn = app.state.pool.get().await.unwrap();
    let mut dump = Vec::new();
    for (table, columns) in tables {
        if SKIPPED_TABLES.contains(&table.as_str()) {
            continue;
        }
        let quote = match conn {
            DbConn::Postgres(_) => "quote_nullable",
            DbConn::Sqlite(_) => "quote",
        };
        let row = columns
            .iter()
            .filter(|c| !SKIPPED_COLUMNS.contains(&c.as_str()))
            .map(|c| format!("{quote}({c})"))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let sql = match conn {
            DbConn::Postgres(_) => format!(
                "SELECT COALESCE(string_agg(r, '|' ORDER BY r), '') AS rows \
                 FROM (SELECT {row} AS r FROM {table}) s"
            ),
            DbConn::Sqlite(_) => format!(
                "SELECT COALESCE(group_concat(r, '|'), '') AS rows \
                 FROM (SELECT {row} AS r FROM {table} ORDER BY 1)"
            ),
        };
        let rows: Dump = with_conn!(&mut conn, |c| {
            diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql.as_str()), c).await
        })
        .unwrap();
        dump.push((table, rows.rows));
    }
    dump
}

/// Makes the database refuse (or accept again) every audit row.
async fn refuse_audit(app: &TestApp, refuse: bool) {
    let mut conn = app.state.pool.get().await.unwrap();
    let sql = match (&conn, refuse) {
        (DbConn::Postgres(_), true) => {
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit();"
        }
        (DbConn::Postgres(_), false) => {
            "DROP TRIGGER refuse_audit ON audit_events; DROP FUNCTION refuse_audit();"
        }
        (DbConn::Sqlite(_), true) => {
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END;"
        }
        (DbConn::Sqlite(_), false) => "DROP TRIGGER refuse_audit;",
    };
    with_conn!(&mut conn, |c| {
        diesel_async::SimpleAsyncConnection::batch_execute(c, sql).await
    })
    .unwrap();
}

async fn mutations_commit_with_their_audit_event_or_not_at_all(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "P").await;
    let mut ids = Vec::new();
    for name in ["source", "target"] {
        let answer = app
            .gql(
                &admin,
                REGISTER,
                json!({ "input": { "projectId": project, "provider": "generic_rest", "name": name,
                    "config": { "baseUrl": "http://127.0.0.1:9" }, "credentials": { "token": "t" } } }),
            )
            .await;
        ids.push(
            answer.data()["registerIntegration"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let sync_input = json!({ "projectId": project, "name": "sync", "sourceIntegrationId": ids[0],
        "targetIntegrationId": ids[1], "sourceRead": { "path": "/items" },
        "targetWrite": { "createPath": "/items" }, "sourceKey": "a", "targetKey": "a",
        "mappings": [{ "target": "a", "source": "a" }] });
    let sync = app
        .gql(
            &admin,
            "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id } }",
            json!({ "input": sync_input }),
        )
        .await;
    let sync = sync.data()["createSyncConfig"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let endpoint = app
        .gql(
            &admin,
            // Only test events: nothing is delivered (and written) behind the snapshots' back.
            "mutation { createWebhookEndpoint(input: { url: \"http://127.0.0.1:9/hook\", eventTypes: [\"webhook.test\"] }) { id } }",
            json!({}),
        )
        .await;
    let endpoint = endpoint.data()["createWebhookEndpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (key_id, key) = app.key_with(&["integrations:read"]).await;
    let viewer = "{ viewer { kind } }";
    app.gql(&key, viewer, json!({})).await.data();

    // Every mutation that changes stored state, on the objects above (deletions last, so
    // that all succeed in this order once the audit log accepts rows).
    let mut renamed = sync_input.clone();
    renamed["name"] = json!("renamed");
    let mut second = sync_input.clone();
    second["name"] = json!("second");
    let mutations: Vec<(&str, Value)> = vec![
        (
            "mutation { createProject(input: { name: \"Q\" }) { id } }",
            json!({}),
        ),
        (
            "mutation($id: ID!) { updateProject(id: $id, input: { name: \"R\" }) { id } }",
            json!({ "id": project }),
        ),
        (
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "generic_rest", "name": "third",
            "config": { "baseUrl": "http://127.0.0.1:9" }, "credentials": {} } }),
        ),
        (
            "mutation($id: ID!) { updateIntegration(id: $id, input: { name: \"renamed\" }) { id } }",
            json!({ "id": ids[0] }),
        ),
        (
            "mutation($id: ID!) { setIntegrationEnabled(id: $id, enabled: false) { id } }",
            json!({ "id": ids[0] }),
        ),
        (
            "mutation($id: ID!) { rotateIntegrationCredentials(id: $id, credentials: { token: \"u\" }) { id } }",
            json!({ "id": ids[0] }),
        ),
        ("mutation { resealCredentials { resealed } }", json!({})),
        (
            "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id } }",
            json!({ "input": second }),
        ),
        (
            "mutation($id: ID!, $input: SyncConfigInput!) { updateSyncConfig(id: $id, input: $input) { id } }",
            json!({ "id": sync, "input": renamed }),
        ),
        (
            "mutation($id: ID!) { deleteSyncConfig(id: $id) }",
            json!({ "id": sync }),
        ),
        (
            "mutation { createApiKey(input: { name: \"k\", scopes: [\"sync:read\"] }) { key } }",
            json!({}),
        ),
        (
            "mutation($id: ID!) { updateApiKey(id: $id, input: { name: \"renamed\" }) { id } }",
            json!({ "id": key_id }),
        ),
        (
            "mutation($id: ID!) { rollApiKey(id: $id, gracePeriodSeconds: 0) { key } }",
            json!({ "id": key_id }),
        ),
        (
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({ "id": key_id }),
        ),
        (
            "mutation { createWebhookEndpoint(input: { url: \"http://127.0.0.1:9/other\" }) { id } }",
            json!({}),
        ),
        (
            "mutation($id: ID!) { updateWebhookEndpoint(id: $id, input: { description: \"d\" }) { id } }",
            json!({ "id": endpoint }),
        ),
        (
            "mutation($id: ID!) { rotateWebhookSecret(id: $id, overlapSeconds: 60) { secret } }",
            json!({ "id": endpoint }),
        ),
        (
            "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }",
            json!({ "id": endpoint }),
        ),
        (
            "mutation($id: ID!) { enableInboundWebhook(integrationId: $id) { url } }",
            json!({ "id": ids[0] }),
        ),
        (
            "mutation($id: ID!) { disableInboundWebhook(integrationId: $id) }",
            json!({ "id": ids[0] }),
        ),
        (
            "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }",
            json!({ "id": endpoint }),
        ),
        (
            "mutation($id: ID!) { deleteIntegration(id: $id) }",
            json!({ "id": ids[1] }),
        ),
        (
            "mutation($id: ID!) { deleteProject(id: $id) }",
            json!({ "id": project }),
        ),
    ];

    let mut events = app.state.events.subscribe();
    refuse_audit(&app, true).await;
    let before = snapshot(&app).await;
    // Twice: a new document runs on the schema that validates it, a known one on the schema
    // without extensions (`graphql::FastSchema`); both roll back the same.
    for document in ["new", "known"] {
        for (mutation, variables) in &mutations {
            let answer = app.gql(&admin, mutation, variables.clone()).await;
            assert!(
                answer.body["errors"].is_array(),
                "{mutation} ({document}) answered success without its audit event: {}",
                answer.body
            );
            assert_eq!(answer.code(), "INTERNAL", "{mutation}: {}", answer.body);
            assert!(answer.body["data"].is_null(), "{mutation}: {}", answer.body);
            assert_eq!(
                snapshot(&app).await,
                before,
                "{mutation} ({document}) left a change behind without its audit event"
            );
            // The key that was rolled and revoked still works with its old secret: nothing
            // was committed, and no cached state was dropped or replaced.
            app.gql(&key, viewer, json!({})).await.data();
        }
    }
    while let Ok(event) = events.try_recv() {
        assert!(
            !event.kind.name().starts_with("integration.")
                && event.kind.name() != "api_key.revoked",
            "a rolled-back mutation announced its change: {}",
            event.kind.name()
        );
    }

    // Accepting again: the same mutations succeed, each with its committed audit event.
    refuse_audit(&app, false).await;
    let audited = |answer: &Value| {
        answer["data"]["auditLog"]["edges"]
            .as_array()
            .unwrap()
            .len()
    };
    let log =
        "{ auditLog(first: 100, filter: { outcome: SUCCESS }) { edges { node { action } } } }";
    let mut succeeded = audited(&app.gql(&admin, log, json!({})).await.body);
    for (mutation, variables) in &mutations {
        let answer = app.gql(&admin, mutation, variables.clone()).await;
        answer.data();
        succeeded += 1;
        assert_eq!(
            audited(&app.gql(&admin, log, json!({})).await.body),
            succeeded,
            "{mutation}"
        );
    }
    let mut announced = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await
    {
        announced.push(event.kind.name());
    }
    for kind in [
        "integration.created",
        "integration.updated",
        "integration.deleted",
        "api_key.revoked",
    ] {
        assert!(
            announced.contains(&kind),
            "{kind} not announced: {announced:?}"
        );
    }
    let answer = app.gql(&key, viewer, json!({})).await;
    assert_eq!(answer.code(), "UNAUTHENTICATED", "{}", answer.body);
}
