use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use serde_json::json;

use integration_hub::db::DbConn;

use crate::calls::{EXECUTE, register};
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(no_secret_in_the_database_or_responses);

#[derive(diesel::QueryableByName)]
struct Dumped {
    #[diesel(sql_type = Text)]
    row: String,
}

/// Everything the database holds, as text: the raw SQLite file and WAL, or every row of every
/// PostgreSQL table.
pub async fn dump(app: &TestApp) -> String {
    match app.db.backend {
        Backend::Sqlite => {
            let mut all = Vec::new();
            for file in app.db.sqlite_files() {
                all.extend(std::fs::read(file).unwrap());
            }
            assert!(all.len() > 4096, "read the database files");
            String::from_utf8_lossy(&all).into_owned()
        }
        Backend::Postgres => {
            let mut conn = app.state.pool.get().await.unwrap();
            let DbConn::Postgres(c) = &mut conn else {
                unreachable!()
            };
            let mut out = String::new();
            for table in [
                "teams",
                "projects",
                "integrations",
                "api_keys",
                "audit_events",
                "request_logs",
                "health_checks",
                "oauth_apps",
                "oauth_states",
            ] {
                let rows: Vec<Dumped> =
                    diesel::sql_query(format!("SELECT CAST(t AS text) AS row FROM {table} t"))
                        .load(&mut **c)
                        .await
                        .unwrap();
                for r in rows {
                    out.push_str(&r.row);
                    out.push('\n');
                }
            }
            out
        }
    }
}

async fn no_secret_in_the_database_or_responses(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "P").await;
    let secrets = [
        "SECRET-jira-token-7f3a9c",
        "SECRET-alm-password-c41d",
        "SECRET-gh-token-99ab",
    ];
    let jira = app
        .gql(
            &admin,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "jira", "name": "jira",
                "config": { "baseUrl": "https://acme.atlassian.net" },
                "credentials": { "email": "ci@acme.test", "apiToken": secrets[0] } } }),
        )
        .await;
    let alm = app
        .gql(
            &admin,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "alm", "name": "alm",
                "config": { "baseUrl": "https://alm.acme.test", "domain": "D", "project": "P" },
                "credentials": { "username": "bot", "password": secrets[1] } } }),
        )
        .await;
    let gh = app
        .register_github(&admin, &project, "gh", "placeholder")
        .await;
    let rotated = app
        .gql(
            &admin,
            "mutation($id: ID!, $c: JSON!) { rotateIntegrationCredentials(id: $id, credentials: $c) { credentials { fields } } }",
            json!({ "id": gh, "c": { "token": secrets[2] } }),
        )
        .await;
    let (_, new_key) = app.key_with(&["integrations:read"]).await;

    // Calls through integrations whose credentials travel in headers and in the URL.
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let query_auth = register(
        &app,
        &project,
        "generic_rest",
        "query auth",
        json!({ "baseUrl": upstream.url, "authType": "query", "authQueryParam": "token" }),
        json!({ "token": "SECRET-url-token-77aa" }),
    )
    .await;
    let header_auth = register(
        &app,
        &project,
        "github",
        "gh2",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "SECRET-header-token-88bb" }),
    )
    .await;
    for id in [&query_auth, &header_auth] {
        app.gql(
            &admin,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/x" } }),
        )
        .await
        .data();
        app.gql(
            &admin,
            "mutation($id: ID!) { testConnection(integrationId: $id) { ok } }",
            json!({ "id": id }),
        )
        .await
        .data();
    }
    let secrets = [
        secrets[0],
        secrets[1],
        secrets[2],
        "SECRET-url-token-77aa",
        "SECRET-header-token-88bb",
    ];
    assert!(
        upstream
            .requests()
            .iter()
            .any(|r| r.query.contains("SECRET-url-token-77aa")),
        "the upstream got it"
    );

    let mut responses = vec![
        jira.body.to_string(),
        alm.body.to_string(),
        rotated.body.to_string(),
    ];
    for query in [
        "{ apiKeys { id name prefix scopes createdBy } }".to_string(),
        format!(
            "{{ integrations(projectId: \"{project}\") {{ edges {{ node {{ name config credentials {{ isSet fields keyId }} }} }} }} }}"
        ),
    ] {
        responses.push(app.gql(&admin, &query, json!({})).await.body.to_string());
    }
    let logs = app
        .gql(&admin, &format!("{{ integrationLogs(projectId: \"{project}\") {{ edges {{ node {{ path error }} }} }} }}"), json!({}))
        .await;
    assert_eq!(
        logs.data()["integrationLogs"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    responses.push(logs.body.to_string());
    for response in &responses {
        for secret in secrets
            .iter()
            .copied()
            .chain([admin.as_str(), new_key.as_str()])
        {
            assert!(
                !response.contains(secret),
                "a response contains a secret: {response}"
            );
        }
    }

    let stored = dump(&app).await;
    assert!(
        stored.contains("https://acme.atlassian.net"),
        "the dump holds the rows (sanity check)"
    );
    assert!(
        stored.contains("token=[REDACTED]"),
        "the dump holds the request logs (sanity check)"
    );
    for secret in secrets
        .iter()
        .copied()
        .chain([admin.as_str(), new_key.as_str()])
    {
        assert!(
            !stored.contains(secret),
            "the database holds a secret in plain text"
        );
    }
    // Nor the secret half of a key on its own.
    for key in [&admin, &new_key] {
        // `ihk_` + 16-character public id + `_` + secret (which may itself contain `_`).
        let secret_part = &key["ihk_".len() + 16 + 1..];
        assert!(secret_part.len() >= 40);
        assert!(!stored.contains(secret_part));
    }
    app.stop().await;
}
