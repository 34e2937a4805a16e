//! Cost limits refuse abusive documents before anything runs, with QUERY_TOO_COMPLEX.

use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    depth_and_complexity_in_our_words,
    abusive_documents_are_refused,
    production_switches,
    every_error_has_a_code,
    a_validated_document_still_refuses_variables_that_do_not_fit
);

async fn abusive_documents_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let aliases: String = (0..101).map(|i| format!("a{i}: __typename ")).collect();
    let duplicated = format!("{{ projects {{ {} }} }}", "id ".repeat(500));
    let mut deep = String::from("{ __type(name: \"Query\") { ");
    for _ in 0..20 {
        deep.push_str("ofType { ");
    }
    deep.push_str("name");
    deep.push_str(&" }".repeat(22));
    let fragment_bomb = "query { ...A } fragment A on Query { a1: __typename a2: __typename ...B ...B ...B ...B } fragment B on Query { b1: __typename b2: __typename b3: __typename b4: __typename }";
    let directives = format!("{{ __typename {} }}", "@include(if: true) ".repeat(11));
    let cases = [
        ("101 aliases", format!("{{ {aliases} }}")),
        ("500 duplicated fields", duplicated),
        ("deep nesting", deep),
        ("aliases hidden in fragments", fragment_bomb.to_string()),
        ("11 directives on a field", directives),
    ];
    for (what, query) in &cases {
        let answer = app.gql(&key, query, json!({})).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.body);
        assert_eq!(
            answer.code(),
            "QUERY_TOO_COMPLEX",
            "{what}: {}",
            answer.body
        );
        assert!(answer.body.get("data").is_none());
    }

    // Circular fragments never run (refused by validation).
    let circular = app
        .gql(
            &key,
            "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
            json!({}),
        )
        .await;
    assert_eq!(circular.status, 400);
    assert!(circular.body.get("data").is_none());

    // No mutation in a refused document ran.
    let refused = app
        .gql(
            &key,
            &format!(
                "mutation {{ createProject(input: {{ name: \"x\" }}) {{ {} }} }}",
                "id ".repeat(300)
            ),
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{}", refused.body);
    assert_eq!(
        app.gql(&key, "{ projects { id } }", json!({})).await.data()["projects"],
        json!([])
    );

    // A huge batch.
    let batch: Vec<_> = (0..11)
        .map(|_| json!({ "query": "{ __typename }" }))
        .collect();
    let response = app
        .client
        .post(app.graphql_url())
        .header("authorization", format!("Bearer {key}"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX");

    // A 2 MiB body.
    let huge = format!(
        r#"{{"query":"{{ __typename }}","variables":{{"pad":"{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let response = app
        .client
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX");

    // GraphiQL's own introspection query stays within the limits.
    let introspection = app.gql(&key, INTROSPECTION, json!({})).await;
    assert!(
        introspection.data()["__schema"]["types"]
            .as_array()
            .unwrap()
            .len()
            > 20
    );
    app.stop().await;
}

async fn production_switches(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.introspection = false;
        config.field_suggestions = false;
    })
    .await;
    let key = app.admin_key.clone();
    let introspection = app
        .gql(&key, "{ __schema { types { name } } }", json!({}))
        .await;
    assert!(
        introspection.body["data"]["__schema"].is_null()
            || introspection.body.get("errors").is_some(),
        "introspection is off: {}",
        introspection.body
    );
    let typo = app.gql(&key, "{ projets { id } }", json!({})).await;
    assert!(
        !typo.message().contains("projects"),
        "no suggestion: {}",
        typo.message()
    );
    app.stop().await;

    let app = TestApp::start(backend).await;
    let typo = app
        .gql(&app.admin_key, "{ projets { id } }", json!({}))
        .await;
    assert!(
        typo.message().contains("projects"),
        "suggestions on by default: {}",
        typo.message()
    );
    app.stop().await;
}

/// The introspection query GraphiQL sends.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

/// Errors async-graphql raises itself carry `extensions.code` too: single requests, each item
/// of a batch, and whatever the content type negotiated.
async fn every_error_has_a_code(backend: Backend) {
    let app = TestApp::start(backend).await;
    let cases = [
        (
            "undefined variable",
            "query { project(id: $n) { id } }",
            json!({}),
        ),
        (
            "Int overflow",
            "query { integrations(projectId: \"x\", first: 99999999999) { edges { cursor } } }",
            json!({}),
        ),
        (
            "Int overflow in a variable",
            "query($n: Int) { integrations(projectId: \"x\", first: $n) { edges { cursor } } }",
            json!({ "n": 99999999999u64 }),
        ),
        (
            "DateTime parse",
            "query($t: DateTime) { auditLog(filter: { since: $t }) { edges { cursor } } }",
            json!({ "t": "yesterday" }),
        ),
        (
            "DateTime literal",
            "query { auditLog(filter: { since: \"yesterday\" }) { edges { cursor } } }",
            json!({}),
        ),
        ("syntax", "query {", json!({})),
    ];
    let mut batch = Vec::new();
    for (what, query, variables) in &cases {
        let answer = app.gql(&app.admin_key, query, variables.clone()).await;
        let errors = answer.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {}", answer.body));
        for error in errors {
            assert!(
                error["extensions"]["code"].is_string(),
                "{what}: {}",
                answer.body
            );
        }
        batch.push(json!({ "query": query, "variables": variables }));
    }
    let answer = app
        .client
        .post(app.graphql_url())
        .header("authorization", format!("Bearer {}", app.admin_key))
        .json(&batch)
        .send()
        .await
        .unwrap();
    let items: Vec<serde_json::Value> = answer.json().await.unwrap();
    assert_eq!(items.len(), cases.len());
    for (item, (what, ..)) in items.iter().zip(&cases) {
        let errors = item["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {item}"));
        for error in errors {
            assert!(
                error["extensions"]["code"].is_string(),
                "batch {what}: {item}"
            );
        }
    }
    app.stop().await;
}

/// A new document runs on the schema with extensions, a known one on the schema without
/// them (`graphql::FastSchema`): queries and mutations refuse depth and complexity beyond the
/// limits with QUERY_TOO_COMPLEX, and every other error is tagged with its code on both.
async fn depth_and_complexity_in_our_words(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.max_depth = 3;
        config.max_complexity = 6;
    })
    .await;
    let key = app.admin_key.clone();
    let deep = "{ integrations(projectId: \"p\", first: 1) { nodes { health { status } } } }";
    let refused = app.gql(&key, deep, json!({})).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{}", refused.body);
    assert!(
        refused.message().contains("levels deep") && refused.message().contains('3'),
        "{}",
        refused.body
    );
    let wide = "{ viewer { kind scopes } projects { id name createdAt } }";
    let refused = app.gql(&key, wide, json!({})).await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{}", refused.body);
    assert!(refused.message().contains("complexity"), "{}", refused.body);
    // The same limits on a mutation (the schema with extensions).
    let mutation = app
        .gql(
            &key,
            "mutation { createProject(input: { name: \"p\" }) { id name description createdAt updatedAt again: id } }",
            json!({}),
        )
        .await;
    assert_eq!(mutation.code(), "QUERY_TOO_COMPLEX", "{}", mutation.body);
    assert!(
        mutation.message().contains("complexity"),
        "{}",
        mutation.body
    );
    // Within the limits a query runs; an error found while it runs carries its code, the
    // first time (validated in full) and after (a known document).
    for _ in 0..2 {
        let fine = app.gql(&key, "{ projects { id } }", json!({})).await;
        assert_eq!(fine.data()["projects"], json!([]));
        let missing = app
            .gql(
                &key,
                "query($id: ID!) { project(id: $id) { id } }",
                json!({ "id": "00000000-0000-0000-0000-000000000000" }),
            )
            .await;
        assert_eq!(missing.code(), "NOT_FOUND", "{}", missing.body);
        let renamed = app
            .gql(
                &key,
                "mutation($id: ID!) { updateProject(id: $id, input: { name: \"n\" }) { id } }",
                json!({ "id": "00000000-0000-0000-0000-000000000000" }),
            )
            .await;
        assert_eq!(renamed.code(), "NOT_FOUND", "{}", renamed.body);
    }
    let unknown = app.gql(&key, "{ nothing }", json!({})).await;
    assert_eq!(unknown.code(), "VALIDATION_FAILED", "{}", unknown.body);
    app.stop().await;
}

/// A document is validated in full once; later requests with the same text reuse that result
/// when their variables fit (see `graphql::validated`). Every variable that does not fit is
/// still refused by the full validation, in the same words, code, locations and status as
/// the first time the document is seen; variables that fit run as before.
async fn a_validated_document_still_refuses_variables_that_do_not_fit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let create = "mutation($input: CreateProjectInput!, $fallback: String = \"d\") { \
                  createProject(input: $input) { name } \
                  other: createProject(input: { name: $fallback }) { name } }";
    let fits = |name: &str| json!({ "input": { "name": name }, "fallback": format!("{name}-2") });
    // Validated in full the first time, then reused: each run creates what it names.
    for name in ["first", "second", "third"] {
        let answer = app.gql(&key, create, fits(name)).await;
        assert_eq!(
            answer.data()["createProject"]["name"],
            json!(name),
            "{}",
            answer.body
        );
        assert_eq!(answer.data()["other"]["name"], json!(format!("{name}-2")));
    }
    let cases = [
        ("a number for a String", json!({ "input": { "name": 5 } })),
        (
            "an unknown field",
            json!({ "input": { "name": "x", "bogus": 1 } }),
        ),
        (
            "a required field missing",
            json!({ "input": { "description": "x" } }),
        ),
        // async-graphql's validation takes these; ours refuses them before anything runs
        // (the second field would have created a project first).
        ("a list for an object", json!({ "input": [] })),
        ("a String for an object", json!({ "input": "x" })),
        ("null for a required input", json!({ "input": null })),
        (
            "null for a variable with a default, where null is not allowed",
            json!({ "input": { "name": "x" }, "fallback": null }),
        ),
        (
            "a bad value next to a good one",
            json!({ "input": { "name": "x", "description": [1] } }),
        ),
    ];
    for (index, (what, variables)) in cases.iter().enumerate() {
        // The same document under a text never validated (trailing blanks keep the positions).
        let fresh = format!("{create}{}", " ".repeat(index + 1));
        let first = app.gql(&key, &fresh, variables.clone()).await;
        let again = app.gql(&key, create, variables.clone()).await;
        assert_eq!(first.status, 400, "{what}: {}", first.body);
        assert!(first.body.get("data").is_none(), "{what}: {}", first.body);
        assert_eq!(
            (again.status, &again.body),
            (first.status, &first.body),
            "{what}: a validated document answers as a new one"
        );
        assert_eq!(first.code(), "VALIDATION_FAILED", "{what}: {}", first.body);
        if what.ends_with("for an object") {
            assert!(first.message().contains("$input"), "{}", first.body);
        }
    }
    // Nothing refused was created: the three runs above made six projects.
    let projects = app.gql(&key, "{ projects { name } }", json!({})).await;
    assert_eq!(
        projects.data()["projects"].as_array().map(Vec::len),
        Some(6),
        "{}",
        projects.body
    );
    app.stop().await;
}
