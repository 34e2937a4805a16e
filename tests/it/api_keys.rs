use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(create_list_read_revoke);

async fn create_list_read_revoke(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let created = app
        .gql(
            &admin,
            "mutation { createApiKey(input: { name: \"ci\", scopes: [\"integrations:read\", \"logs:read\"] }) {
                key apiKey { id name prefix scopes status createdBy usageCount expiresAt revokedAt }
            } }",
            json!({}),
        )
        .await;
    let created = created.data()["createApiKey"].clone();
    let key = created["key"].as_str().unwrap();
    let node = &created["apiKey"];
    assert!(key.starts_with("ihk_"));
    assert!(key.starts_with(node["prefix"].as_str().unwrap()));
    assert_eq!(node["scopes"], json!(["integrations:read", "logs:read"]));
    assert_eq!(node["status"], "ACTIVE");
    assert!(node["createdBy"].as_str().unwrap().starts_with("api_key:"));
    let id = node["id"].as_str().unwrap();

    // The new key works, with its scopes only.
    app.gql(key, "{ projects { id } }", json!({})).await.data();
    assert_eq!(
        app.gql(key, "{ apiKeys { id } }", json!({})).await.code(),
        "FORBIDDEN"
    );

    let list = app
        .gql(&admin, "{ apiKeys { id name prefix } }", json!({}))
        .await;
    let keys = list.data()["apiKeys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "the admin key and the new one");
    assert!(
        !list.body.to_string().contains(key),
        "the full key is shown once only"
    );

    let one = app
        .gql(
            &admin,
            "query($id: ID!) { apiKey(id: $id) { name } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(one.data()["apiKey"]["name"], "ci");

    let unknown_scope = app
        .gql(&admin, "mutation { createApiKey(input: { name: \"x\", scopes: [\"integrations:delete\"] }) { key } }", json!({}))
        .await;
    assert_eq!(unknown_scope.code(), "VALIDATION_FAILED");
    assert!(unknown_scope.message().contains("integrations:delete"));
    let no_scope = app
        .gql(
            &admin,
            "mutation { createApiKey(input: { name: \"x\", scopes: [] }) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(no_scope.code(), "VALIDATION_FAILED");

    let revoked = app
        .gql(
            &admin,
            "mutation($id: ID!) { revokeApiKey(id: $id) { status revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    let first_revoked_at = revoked.data()["revokeApiKey"]["revokedAt"].clone();
    assert!(first_revoked_at.is_string());
    let twice = app
        .gql(
            &admin,
            "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        twice.data()["revokeApiKey"]["revokedAt"],
        first_revoked_at,
        "revoking again keeps the first time"
    );
    let missing = app
        .gql(
            &admin,
            "mutation { revokeApiKey(id: \"nope\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(missing.code(), "NOT_FOUND");
    app.stop().await;
}
