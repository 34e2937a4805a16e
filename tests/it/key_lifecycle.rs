//! API keys over their life: limits to named resources, rolling with a grace period, changes
//! that take effect at once, and usage counts written in batches.

use std::time::Duration;

use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(
    resource_limits,
    roll_with_grace_period,
    update_takes_effect_at_once,
    usage_is_counted
);

const CREATE: &str = "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { key apiKey { id allowedProjectIds allowedIntegrationIds } } }";

async fn resource_limits(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let a = app.create_project(&admin, "A").await;
    let b = app.create_project(&admin, "B").await;
    let a1 = app.register_github(&admin, &a, "a1", "t").await;
    let b1 = app.register_github(&admin, &b, "b1", "t").await;
    let b2 = app.register_github(&admin, &b, "b2", "t").await;
    let scopes = json!([
        "integrations:read",
        "integrations:write",
        "credentials:write",
        "api_keys:read",
        "api_keys:write"
    ]);

    // Limited to project A.
    let created = app
        .gql(
            &admin,
            CREATE,
            json!({ "input": { "name": "A only", "scopes": scopes, "allowedProjectIds": [a] } }),
        )
        .await;
    let for_a = created.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        created.data()["createApiKey"]["apiKey"]["allowedProjectIds"],
        json!([a])
    );
    let projects = app.gql(&for_a, "{ projects { id } }", json!({})).await;
    assert_eq!(projects.data()["projects"], json!([{ "id": a }]));
    for query in [
        format!("{{ project(id: \"{b}\") {{ id }} }}"),
        format!("{{ integration(id: \"{b1}\") {{ id }} }}"),
        format!("{{ integrations(projectId: \"{b}\") {{ edges {{ cursor }} }} }}"),
        format!("mutation {{ setIntegrationEnabled(id: \"{b1}\", enabled: false) {{ id }} }}"),
        format!("mutation {{ deleteProject(id: \"{b}\") }}"),
    ] {
        assert_eq!(
            app.gql(&for_a, &query, json!({})).await.code(),
            "NOT_FOUND",
            "{query}"
        );
    }
    let into_b = app
        .gql(
            &for_a,
            REGISTER,
            json!({ "input": { "projectId": b, "provider": "github", "name": "x", "config": {} } }),
        )
        .await;
    assert_eq!(into_b.code(), "NOT_FOUND");
    app.gql(
        &for_a,
        &format!("{{ integration(id: \"{a1}\") {{ id }} }}"),
        json!({}),
    )
    .await
    .data();
    app.gql(
        &for_a,
        REGISTER,
        json!({ "input": { "projectId": a, "provider": "github", "name": "new", "config": {} } }),
    )
    .await
    .data();
    let create_project = app
        .gql(
            &for_a,
            "mutation { createProject(input: { name: \"C\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(create_project.code(), "FORBIDDEN");
    // It cannot mint a key that reaches further than itself.
    let wider = app
        .gql(&for_a, CREATE, json!({ "input": { "name": "wider", "scopes": ["integrations:read"], "allowedProjectIds": [a, b] } }))
        .await;
    assert_eq!(wider.code(), "FORBIDDEN");
    let unlimited = app
        .gql(
            &for_a,
            CREATE,
            json!({ "input": { "name": "wider", "scopes": ["integrations:read"] } }),
        )
        .await;
    assert_eq!(unlimited.code(), "FORBIDDEN");
    app.gql(&for_a, CREATE, json!({ "input": { "name": "same", "scopes": ["integrations:read"], "allowedProjectIds": [a] } }))
        .await
        .data();

    // Limited to one integration of project B: sees it alone.
    let created = app
        .gql(&admin, CREATE, json!({ "input": { "name": "b2 only", "scopes": scopes, "allowedIntegrationIds": [b2] } }))
        .await;
    let for_b2 = created.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = app
        .gql(
            &for_b2,
            &format!("{{ integrations(projectId: \"{b}\") {{ edges {{ node {{ name }} }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(
        listed.data()["integrations"]["edges"],
        json!([{ "node": { "name": "b2" } }])
    );
    assert_eq!(
        app.gql(
            &for_b2,
            &format!("{{ integration(id: \"{b1}\") {{ id }} }}"),
            json!({})
        )
        .await
        .code(),
        "NOT_FOUND"
    );
    app.gql(
        &for_b2,
        &format!("mutation {{ setIntegrationEnabled(id: \"{b2}\", enabled: false) {{ id }} }}"),
        json!({}),
    )
    .await
    .data();
    let no_projects = app.gql(&for_b2, "{ projects { id } }", json!({})).await;
    assert_eq!(no_projects.data()["projects"], json!([]));

    // Limits must name this team's objects.
    let (_, other_admin) = app.new_team("other").await;
    let foreign = app
        .gql(&other_admin, CREATE, json!({ "input": { "name": "x", "scopes": ["integrations:read"], "allowedProjectIds": [a] } }))
        .await;
    assert_eq!(foreign.code(), "VALIDATION_FAILED");
    app.stop().await;
}

const ROLL: &str = "mutation($id: ID!, $grace: Int) { rollApiKey(id: $id, gracePeriodSeconds: $grace) { key apiKey { prefix previousSecretExpiresAt } } }";

async fn roll_with_grace_period(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let (id, old) = app.key_with(&["integrations:read"]).await;

    let rolled = app.gql(&admin, ROLL, json!({ "id": id, "grace": 3 })).await;
    let rolled = rolled.data()["rollApiKey"].clone();
    let new = rolled["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(
        new.starts_with(rolled["apiKey"]["prefix"].as_str().unwrap()),
        "same key, new secret"
    );
    assert!(rolled["apiKey"]["previousSecretExpiresAt"].is_string());
    // Both work during the grace period...
    app.gql(&old, "{ projects { id } }", json!({})).await.data();
    app.gql(&new, "{ projects { id } }", json!({})).await.data();
    // ...then only the new one.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let answer = app.gql(&old, "{ projects { id } }", json!({})).await;
    assert_eq!((answer.status, answer.code()), (401, "UNAUTHENTICATED"));
    app.gql(&new, "{ projects { id } }", json!({})).await.data();

    // A roll without grace ends the old secret at once.
    let newer = app.gql(&admin, ROLL, json!({ "id": id, "grace": 0 })).await;
    let newer = newer.data()["rollApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.gql(&new, "{ projects { id } }", json!({})).await.code(),
        "UNAUTHENTICATED"
    );
    app.gql(&newer, "{ projects { id } }", json!({}))
        .await
        .data();

    let bad = app
        .gql(&admin, ROLL, json!({ "id": id, "grace": -1 }))
        .await;
    assert_eq!(bad.code(), "VALIDATION_FAILED");
    app.gql(
        &admin,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await
    .data();
    let revoked = app.gql(&admin, ROLL, json!({ "id": id })).await;
    assert_eq!(revoked.code(), "CONFLICT");
    app.stop().await;
}

async fn update_takes_effect_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let (id, key) = app.key_with(&["integrations:read"]).await;
    app.gql(&key, "{ projects { id } }", json!({})).await.data();
    assert_eq!(
        app.gql(&key, "{ apiKeys { id } }", json!({})).await.code(),
        "FORBIDDEN"
    );

    let updated = app
        .gql(
            &admin,
            "mutation($id: ID!) { updateApiKey(id: $id, input: { name: \"renamed\", scopes: [\"api_keys:read\"], rateLimit: { requests: 50, periodSeconds: 10 } }) { name scopes rateLimit { requests periodSeconds burst } updatedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        updated.data()["updateApiKey"]["rateLimit"],
        json!({ "requests": 50, "periodSeconds": 10, "burst": 50 })
    );
    // The cached credential was dropped: the new scopes apply to the very next request.
    assert_eq!(
        app.gql(&key, "{ projects { id } }", json!({})).await.code(),
        "FORBIDDEN"
    );
    let viewer = app
        .gql(
            &key,
            "{ viewer { scopes rateLimit { limit policy } } apiKeys { name } }",
            json!({}),
        )
        .await;
    assert_eq!(viewer.data()["viewer"]["scopes"], json!(["api_keys:read"]));
    assert_eq!(
        viewer.data()["viewer"]["rateLimit"]["policy"],
        "50;w=10;burst=50"
    );

    let escalate = app
        .gql(
            &key,
            "mutation($id: ID!) { updateApiKey(id: $id, input: { scopes: [\"admin\"] }) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(escalate.code(), "FORBIDDEN");
    let cleared = app
        .gql(&admin, "mutation($id: ID!) { updateApiKey(id: $id, input: { rateLimit: null, expiresAt: null }) { rateLimit { requests } expiresAt } }", json!({ "id": id }))
        .await;
    assert_eq!(
        cleared.data()["updateApiKey"],
        json!({ "rateLimit": null, "expiresAt": null })
    );
    app.stop().await;
}

async fn usage_is_counted(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (id, key) = app.key_with(&["integrations:read"]).await;
    for _ in 0..5 {
        app.gql(&key, "{ projects { id } }", json!({})).await.data();
    }
    // Written in batches (every 100 ms in tests): poll until the flush lands.
    let mut seen = json!(null);
    for _ in 0..50 {
        let answer = app
            .gql(
                &app.admin_key,
                "query($id: ID!) { apiKey(id: $id) { usageCount lastUsedAt } }",
                json!({ "id": id }),
            )
            .await;
        seen = answer.data()["apiKey"].clone();
        if seen["usageCount"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["usageCount"], 5, "{seen}");
    assert!(seen["lastUsedAt"].is_string());
    app.stop().await;
}
