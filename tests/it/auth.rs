use chrono::{Duration, Utc};
use serde_json::json;

use integration_hub::api_keys::service::{NewApiKey, prepare_api_key};
use integration_hub::auth::{Scope, ScopeSet};

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    missing_invalid_revoked_and_expired_keys,
    both_headers_are_accepted,
    each_mutation_needs_its_scope,
    each_query_needs_its_scope,
);

async fn missing_invalid_revoked_and_expired_keys(backend: Backend) {
    let app = TestApp::start(backend).await;

    let missing = app.gql("", "{ projects { id } }", json!({})).await;
    assert_eq!(missing.code(), "UNAUTHENTICATED");

    for bad in [
        "ihk_garbage",
        "not-a-key",
        // Well-formed, unknown public id.
        "ihk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let answer = app.gql(bad, "{ projects { id } }", json!({})).await;
        assert_eq!(answer.status, 401, "{bad}");
        assert_eq!(answer.code(), "UNAUTHENTICATED");
    }
    // The right public id with a wrong secret.
    let mut tampered = app.admin_key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let answer = app.gql(&tampered, "{ projects { id } }", json!({})).await;
    assert_eq!((answer.status, answer.code()), (401, "UNAUTHENTICATED"));

    let (id, key) = app.key_with(&["integrations:read"]).await;
    app.gql(&key, "{ projects { id } }", json!({})).await.data();
    let revoked = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!) { revokeApiKey(id: $id) { status revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(revoked.data()["revokeApiKey"]["status"], "REVOKED");
    let answer = app.gql(&key, "{ projects { id } }", json!({})).await;
    assert_eq!((answer.status, answer.code()), (401, "UNAUTHENTICATED"));
    assert!(answer.message().contains("revoked"));

    // An expired key (stored directly: the API refuses to create one in the past).
    let (mut row, expired_key) = prepare_api_key(NewApiKey::new(
        app.team_id.clone(),
        "old",
        [Scope::Admin].into_iter().collect::<ScopeSet>(),
        "test",
    ));
    row.expires_at = Some((Utc::now() - Duration::minutes(1)).naive_utc());
    integration_hub::api_keys::store::insert(&mut app.state.pool.get().await.unwrap(), &row)
        .await
        .map_err(|e| e.message())
        .unwrap();
    let answer = app
        .gql(&expired_key, "{ projects { id } }", json!({}))
        .await;
    assert_eq!((answer.status, answer.code()), (401, "UNAUTHENTICATED"));
    assert!(answer.message().contains("expired"));

    let past = app
        .gql(
            &app.admin_key,
            "mutation($at: DateTime!) { createApiKey(input: { name: \"x\", scopes: [\"admin\"], expiresAt: $at }) { key } }",
            json!({ "at": (Utc::now() - Duration::minutes(1)).to_rfc3339() }),
        )
        .await;
    assert_eq!(past.code(), "VALIDATION_FAILED");

    // A key that expires later works until then and says when.
    let future = app
        .gql(
            &app.admin_key,
            "mutation($at: DateTime!) { createApiKey(input: { name: \"soon\", scopes: [\"integrations:read\"], expiresAt: $at }) { key apiKey { status expiresAt } } }",
            json!({ "at": (Utc::now() + Duration::hours(1)).to_rfc3339() }),
        )
        .await;
    let created = &future.data()["createApiKey"];
    assert_eq!(created["apiKey"]["status"], "ACTIVE");
    app.gql(
        created["key"].as_str().unwrap(),
        "{ projects { id } }",
        json!({}),
    )
    .await
    .data();

    let wrong_scheme = app
        .client
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("authorization", format!("Basic {}", app.admin_key))
        .body(r#"{"query":"{ projects { id } }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_scheme.status(), 401);
    assert_eq!(wrong_scheme.headers()["www-authenticate"], "Bearer");
    app.stop().await;
}

async fn both_headers_are_accepted(backend: Backend) {
    let app = TestApp::start(backend).await;
    for (name, value) in [
        ("x-api-key", app.admin_key.clone()),
        ("authorization", format!("bearer {}", app.admin_key)),
    ] {
        let response = app
            .client
            .post(app.graphql_url())
            .header("content-type", "application/json")
            .header(name, value)
            .body(r#"{"query":"{ projects { id } }"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, json!({ "data": { "projects": [] } }), "{name}");
    }
    app.stop().await;
}

/// Each mutation with a key that holds every scope but the one it needs.
async fn each_mutation_needs_its_scope(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "P").await;
    let integration = app.register_github(&admin, &project, "g", "tok").await;
    let (key_id, _) = app.key_with(&["integrations:read"]).await;
    let all_but = |missing: &str| -> Vec<&'static str> {
        Scope::ALL
            .iter()
            .map(|s| s.as_str())
            .filter(|s| *s != missing && *s != "admin")
            .collect()
    };
    let cases = [
        (
            "integrations:write",
            "mutation { createProject(input: { name: \"x\" }) { id } }".to_string(),
        ),
        (
            "integrations:write",
            format!(
                "mutation {{ updateProject(id: \"{project}\", input: {{ name: \"y\" }}) {{ id }} }}"
            ),
        ),
        (
            "integrations:write",
            format!("mutation {{ deleteProject(id: \"{project}\") }}"),
        ),
        (
            "integrations:write",
            format!(
                "mutation {{ registerIntegration(input: {{ projectId: \"{project}\", provider: \"github\", name: \"n\", config: {{}} }}) {{ id }} }}"
            ),
        ),
        (
            "credentials:write",
            format!(
                "mutation {{ registerIntegration(input: {{ projectId: \"{project}\", provider: \"github\", name: \"n\", config: {{}}, credentials: {{ token: \"t\" }} }}) {{ id }} }}"
            ),
        ),
        (
            "integrations:write",
            format!(
                "mutation {{ updateIntegration(id: \"{integration}\", input: {{ name: \"z\" }}) {{ id }} }}"
            ),
        ),
        (
            "integrations:write",
            format!(
                "mutation {{ setIntegrationEnabled(id: \"{integration}\", enabled: false) {{ id }} }}"
            ),
        ),
        (
            "credentials:write",
            format!(
                "mutation {{ rotateIntegrationCredentials(id: \"{integration}\", credentials: {{ token: \"t2\" }}) {{ id }} }}"
            ),
        ),
        (
            "integrations:write",
            format!("mutation {{ deleteIntegration(id: \"{integration}\") }}"),
        ),
        (
            "api_keys:write",
            "mutation { createApiKey(input: { name: \"k\", scopes: [\"logs:read\"] }) { key } }"
                .to_string(),
        ),
        (
            "api_keys:write",
            format!("mutation {{ revokeApiKey(id: \"{key_id}\") {{ id }} }}"),
        ),
        (
            "admin",
            "mutation { resealCredentials { resealed } }".to_string(),
        ),
    ];
    for (scope, mutation) in &cases {
        let (_, key) = app.key_with(&all_but(scope)).await;
        let answer = app.gql(&key, mutation, json!({})).await;
        assert_eq!(
            answer.code(),
            "FORBIDDEN",
            "{mutation} without {scope}: {}",
            answer.body
        );
        assert!(answer.message().contains(scope), "{}", answer.message());
    }
    // Nothing changed.
    let still = app
        .gql(
            &admin,
            "query($id: ID!) { integration(id: $id) { name enabled } }",
            json!({ "id": integration }),
        )
        .await;
    assert_eq!(
        still.data()["integration"],
        json!({ "name": "g", "enabled": true })
    );
    let keys = app.gql(&admin, "{ apiKeys { status } }", json!({})).await;
    assert!(
        keys.data()["apiKeys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["status"] == "ACTIVE")
    );

    // A key cannot mint a key with more than it holds.
    let (_, key_admin) = app.key_with(&["api_keys:write"]).await;
    let escalate = app
        .gql(
            &key_admin,
            "mutation { createApiKey(input: { name: \"k\", scopes: [\"admin\"] }) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(escalate.code(), "FORBIDDEN");
    let own = app
        .gql(&key_admin, "mutation { createApiKey(input: { name: \"k\", scopes: [\"api_keys:write\"] }) { key } }", json!({}))
        .await;
    own.data();
    app.stop().await;
}

async fn each_query_needs_its_scope(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "P").await;
    let integration = app.register_github(&admin, &project, "g", "tok").await;
    let (key_id, only_logs) = app.key_with(&["logs:read"]).await;
    let cases = [
        "{ providers { key } }".to_string(),
        "{ provider(key: \"jira\") { key } }".to_string(),
        "{ projects { id } }".to_string(),
        format!("{{ project(id: \"{project}\") {{ id }} }}"),
        format!("{{ integrations(projectId: \"{project}\") {{ edges {{ cursor }} }} }}"),
        format!("{{ integration(id: \"{integration}\") {{ id }} }}"),
        "{ apiKeys { id } }".to_string(),
        format!("{{ apiKey(id: \"{key_id}\") {{ id }} }}"),
    ];
    for query in &cases {
        let answer = app.gql(&only_logs, query, json!({})).await;
        assert_eq!(answer.code(), "FORBIDDEN", "{query}");
    }
    app.stop().await;
}
