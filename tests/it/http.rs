use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(graphql_over_http, health_and_readiness);

async fn graphql_over_http(backend: Backend) {
    let app = TestApp::start(backend).await;
    let url = app.graphql_url();
    let key = format!("Bearer {}", app.admin_key);
    let post = |accept: &'static str, body: &'static str| {
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", accept)
            .header("authorization", &key)
            .body(body)
            .send()
    };

    // application/graphql-response+json: a parse error is a 400 with no `data`.
    let response = post(
        "application/graphql-response+json",
        r#"{"query":"{ projects { id "}"#,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/graphql-response+json")
    );
    let body: Value = response.json().await.unwrap();
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_FAILED");

    // A validation error (unknown field) likewise.
    let response = post(
        "application/graphql-response+json",
        r#"{"query":"{ nope }"}"#,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);

    // application/json: the same errors with 200, as the spec asks for legacy clients.
    let response = post("application/json", r#"{"query":"{ projects { id "}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );

    // A body that is not a GraphQL request.
    let response = post("application/json", r#"{"nothing": true}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Nothing acceptable to answer with.
    let response = post("text/csv", r#"{"query":"{ __typename }"}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 406);

    // Unsupported request media type.
    let response = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .header("authorization", &key)
        .body("{ __typename }")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // GET runs queries...
    let response = app
        .client
        .get(&url)
        .query(&[
            ("query", "query($n: String!) { provider(key: $n) { key } }"),
            ("variables", r#"{"n":"jira"}"#),
        ])
        .header("authorization", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "data": { "provider": { "key": "jira" } } }));

    // ...but never mutations.
    let response = app
        .client
        .get(&url)
        .query(&[(
            "query",
            "mutation { createProject(input: { name: \"via-get\" }) { id } }",
        )])
        .header("authorization", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let projects = app
        .gql(&app.admin_key, "{ projects { name } }", json!({}))
        .await;
    assert_eq!(projects.data()["projects"], json!([]));

    // Batches run each operation.
    let response = post(
        "application/json",
        r#"[{"query":"{ provider(key: \"jira\") { key } }"},{"query":"{ provider(key: \"github\") { key } }"}]"#,
    )
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body[1]["data"]["provider"]["key"], "github");

    // The body limit (1 MiB by default) is enforced before parsing.
    let huge = format!(
        r#"{{"query":"{{ __typename }}","variables":{{"pad":"{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let response = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Unauthenticated `{ __typename }` is answered (nothing of a team's is reachable).
    let response = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"query":"{ __typename }"}"#)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "data": { "__typename": "Query" } }));

    // Browsers get GraphiQL.
    let response = app
        .client
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );

    let response = app.client.put(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    app.stop().await;
}

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::start(backend).await;
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // Without HUB_METRICS_TOKEN there is no /metrics to find.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .bearer_auth("anything-at-all-long")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 404);
    app.stop().await;
}
