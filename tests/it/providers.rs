use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(catalogue_lists_providers_with_schemas);

async fn catalogue_lists_providers_with_schemas(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, reader) = app.key_with(&["integrations:read"]).await;
    let all = app
        .gql(
            &reader,
            "{ providers { key category authScheme defaultBaseUrl healthCheck { method path } configSchema credentialsSchema } }",
            json!({}),
        )
        .await;
    let providers = all.data()["providers"].as_array().unwrap();
    let keys: Vec<&str> = providers
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "jira",
            "github",
            "gitlab",
            "slack",
            "azure_devops",
            "testlink",
            "zephyr_scale",
            "alm",
            "teams",
            "generic_rest",
            "graphql"
        ]
    );
    let jira = &providers[0];
    assert_eq!(jira["category"], "PROJECT_MANAGEMENT");
    assert_eq!(jira["authScheme"], "BASIC");
    assert_eq!(jira["healthCheck"]["path"], "/rest/api/3/myself");
    assert_eq!(
        jira["credentialsSchema"]["required"],
        json!(["email", "apiToken"])
    );
    assert_eq!(jira["configSchema"]["type"], "object");

    let vcs = app
        .gql(
            &reader,
            "{ providers(category: VERSION_CONTROL) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(
        vcs.data()["providers"],
        json!([{ "key": "github" }, { "key": "gitlab" }])
    );

    let one = app
        .gql(
            &reader,
            "{ provider(key: \"gitlab\") { authScheme defaultBaseUrl } }",
            json!({}),
        )
        .await;
    assert_eq!(
        one.data()["provider"],
        json!({ "authScheme": "HEADER", "defaultBaseUrl": "https://gitlab.com" })
    );
    let none = app
        .gql(&reader, "{ provider(key: \"nope\") { key } }", json!({}))
        .await;
    assert_eq!(none.data()["provider"], json!(null));

    let (_, no_scope) = app.key_with(&["api_keys:read"]).await;
    let refused = app.gql(&no_scope, "{ providers { key } }", json!({})).await;
    assert_eq!(refused.code(), "FORBIDDEN");
    app.stop().await;
}
