//! Calling through integrations against local upstreams the tests start: each provider's
//! auth scheme and health request as the upstream received them, execute and batch, retries,
//! timeouts, the circuit breaker and the SSRF guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(
    each_provider_is_called_its_own_way,
    execute_and_batch,
    retries_timeouts_and_the_circuit,
    ssrf_guard,
    changes_reach_calls_at_once,
);

pub const TEST_CONNECTION: &str = "mutation($id: ID!) { testConnection(integrationId: $id) { ok status error integration { status lastError } } }";
pub const EXECUTE: &str = "mutation($id: ID!, $input: ExecuteRequestInput!) { executeRequest(integrationId: $id, input: $input) { status ok headers body bodyText attempts durationMs correlationId } }";

/// Registers an integration of `provider` and returns its id.
pub async fn register(
    app: &TestApp,
    project: &str,
    provider: &str,
    name: &str,
    config: Value,
    credentials: Value,
) -> String {
    let answer = app
        .gql(
            &app.admin_key,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": provider, "name": name, "config": config, "credentials": credentials } }),
        )
        .await;
    answer.data()["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn upstream(request: &Recorded) -> Reply {
    match request.path.as_str() {
        "/auth.test" => Reply::json(200, &json!({ "ok": true, "team": "acme" })),
        "/lib/api/xmlrpc/v1/xmlrpc.php" => Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: b"<?xml version=\"1.0\"?><methodResponse><params><param><value><boolean>1</boolean></value></param></params></methodResponse>".to_vec(),
            delay: None,
        },
        "/qcbin/authentication-point/alm-authenticate" => {
            Reply::text(200, "").with_header("set-cookie", "LWSSO_COOKIE_KEY=session123; Path=/")
        }
        "/graphql" => Reply::json(200, &json!({ "data": { "__typename": "Query" } })),
        _ => Reply::json(200, &json!({ "path": request.path })),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

async fn each_provider_is_called_its_own_way(backend: Backend) {
    let server = Receiver::start(upstream).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let base = server.url.clone();
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "jira",
            json!({ "baseUrl": base }),
            json!({ "email": "ci@acme.test", "apiToken": "jira-tok" }),
            "/rest/api/3/myself",
        ),
        (
            "github",
            json!({ "baseUrl": base }),
            json!({ "token": "ghp-tok" }),
            "/user",
        ),
        (
            "gitlab",
            json!({ "baseUrl": base }),
            json!({ "token": "glpat-tok" }),
            "/api/v4/user",
        ),
        (
            "slack",
            json!({ "baseUrl": base }),
            json!({ "botToken": "xoxb-tok" }),
            "/auth.test",
        ),
        (
            "azure_devops",
            json!({ "baseUrl": base, "organization": "acme" }),
            json!({ "personalAccessToken": "ado-pat" }),
            "/acme/_apis/projects",
        ),
        (
            "testlink",
            json!({ "baseUrl": base }),
            json!({ "devKey": "tl-devkey" }),
            "/lib/api/xmlrpc/v1/xmlrpc.php",
        ),
        (
            "zephyr_scale",
            json!({ "baseUrl": format!("{base}/v2") }),
            json!({ "apiToken": "zs-tok" }),
            "/v2/healthcheck",
        ),
        (
            "alm",
            json!({ "baseUrl": base, "domain": "D", "project": "P" }),
            json!({ "username": "bot", "password": "alm-pass" }),
            "/qcbin/authentication-point/alm-authenticate",
        ),
        (
            "teams",
            json!({ "baseUrl": base }),
            json!({ "accessToken": "teams-tok" }),
            "/me",
        ),
        (
            "generic_rest",
            json!({ "baseUrl": base, "authType": "header", "authHeader": "X-Api-Token", "healthCheckPath": "/status" }),
            json!({ "token": "generic-tok" }),
            "/status",
        ),
        (
            "graphql",
            json!({ "baseUrl": format!("{base}/graphql"), "authType": "bearer" }),
            json!({ "token": "gql-tok" }),
            "/graphql",
        ),
    ];
    for (provider, config, credentials, path) in &cases {
        let id = register(
            &app,
            &project,
            provider,
            provider,
            config.clone(),
            credentials.clone(),
        )
        .await;
        let before = server.count();
        let answer = app
            .gql(&app.admin_key, TEST_CONNECTION, json!({ "id": id }))
            .await;
        let result = &answer.data()["testConnection"];
        assert_eq!(result["ok"], true, "{provider}: {result}");
        assert_eq!(result["integration"]["status"], "CONNECTED", "{provider}");
        let requests = server.requests();
        let request = &requests[before];
        assert_eq!(request.path, *path, "{provider}");
        let auth = request.header("authorization").map(str::to_string);
        match *provider {
            "jira" => assert_eq!(
                auth.as_deref(),
                Some(basic("ci@acme.test", "jira-tok").as_str())
            ),
            "github" => assert_eq!(auth.as_deref(), Some("Bearer ghp-tok")),
            "gitlab" => assert_eq!(request.header("private-token"), Some("glpat-tok")),
            "slack" => {
                assert_eq!(auth.as_deref(), Some("Bearer xoxb-tok"));
                assert_eq!(request.method, "POST");
            }
            "azure_devops" => {
                assert_eq!(auth.as_deref(), Some(basic("", "ado-pat").as_str()));
                assert_eq!(request.query, "api-version=7.1");
            }
            "testlink" => {
                let body = request.body_text();
                assert!(
                    body.contains("<methodName>tl.checkDevKey</methodName>")
                        && body.contains("tl-devkey"),
                    "{body}"
                );
            }
            "zephyr_scale" => assert_eq!(auth.as_deref(), Some("Bearer zs-tok")),
            "alm" => {
                let body = request.body_text();
                assert!(
                    body.contains("<user>bot</user>")
                        && body.contains("<password>alm-pass</password>"),
                    "{body}"
                );
            }
            "teams" => assert_eq!(auth.as_deref(), Some("Bearer teams-tok")),
            "generic_rest" => assert_eq!(request.header("x-api-token"), Some("generic-tok")),
            "graphql" => {
                assert_eq!(auth.as_deref(), Some("Bearer gql-tok"));
                assert_eq!(
                    serde_json::from_slice::<Value>(&request.body).unwrap(),
                    json!({ "query": "{ __typename }" })
                );
            }
            _ => unreachable!(),
        }
        assert!(
            request.header("x-request-id").is_some(),
            "{provider}: correlation id sent"
        );
    }

    // Slack says ok:false with a 200: the credentials are wrong, and the status says so.
    let refusing =
        Receiver::start(|_| Reply::json(200, &json!({ "ok": false, "error": "invalid_auth" })))
            .await;
    let slack = register(
        &app,
        &project,
        "slack",
        "bad slack",
        json!({ "baseUrl": refusing.url }),
        json!({ "botToken": "xoxb-bad" }),
    )
    .await;
    let answer = app
        .gql(&app.admin_key, TEST_CONNECTION, json!({ "id": slack }))
        .await;
    let result = &answer.data()["testConnection"];
    assert_eq!(result["ok"], false);
    assert_eq!(result["integration"]["status"], "ERROR");
    assert!(result["error"].as_str().unwrap().contains("invalid_auth"));

    // ALM calls carry the session cookie from the sign-in.
    let alm = register(
        &app,
        &project,
        "alm",
        "alm2",
        json!({ "baseUrl": server.url, "domain": "D", "project": "P" }),
        json!({ "username": "bot", "password": "alm-pass" }),
    )
    .await;
    app.gql(
        &app.admin_key,
        EXECUTE,
        json!({ "id": alm, "input": { "method": "GET", "path": "/qcbin/rest/domains" } }),
    )
    .await
    .data();
    let last = server.requests().pop().unwrap();
    assert_eq!(last.path, "/qcbin/rest/domains");
    assert_eq!(last.header("cookie"), Some("LWSSO_COOKIE_KEY=session123"));
    app.stop().await;
}

async fn execute_and_batch(backend: Backend) {
    let server = Receiver::start(|request| match request.path.as_str() {
        "/json" => Reply::json(200, &json!({ "items": [1, 2], "query": request.query }))
            .with_header("set-cookie", "secret=1")
            .with_header("x-total", "2"),
        "/text" => Reply::text(200, "plain words"),
        "/echo" => Reply::json(
            201,
            &serde_json::from_slice::<Value>(&request.body).unwrap_or(json!(null)),
        ),
        "/missing" => Reply::json(404, &json!({ "error": "no such thing" })),
        _ => Reply::text(500, "boom"),
    })
    .await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": format!("{}/", server.url) }),
        json!({ "token": "ghp-secret-token" }),
    )
    .await;
    let (_, executor) = app
        .key_with(&["integrations:execute", "integrations:read"])
        .await;

    let answer = app
        .gql(&executor, EXECUTE, json!({ "id": id, "input": { "method": "GET", "path": "/json", "query": { "q": "a b", "page": 2 }, "headers": { "X-Trace": "t1" } } }))
        .await;
    let result = &answer.data()["executeRequest"];
    assert_eq!(result["status"], 200);
    assert_eq!(result["ok"], true);
    assert_eq!(result["body"]["items"], json!([1, 2]));
    assert_eq!(result["body"]["query"], "page=2&q=a+b");
    assert_eq!(result["headers"]["x-total"], "2");
    assert!(
        result["headers"].get("set-cookie").is_none(),
        "cookies are not passed back"
    );
    assert_eq!(result["attempts"], 1);
    let sent = server.requests().pop().unwrap();
    assert_eq!(sent.header("x-trace"), Some("t1"));
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer ghp-secret-token")
    );

    let text = app
        .gql(
            &executor,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/text" } }),
        )
        .await;
    assert_eq!(text.data()["executeRequest"]["bodyText"], "plain words");
    assert_eq!(text.data()["executeRequest"]["body"], json!(null));

    let echo = app
        .gql(&executor, EXECUTE, json!({ "id": id, "input": { "method": "POST", "path": "/echo", "body": { "title": "Bug", "n": 1 } } }))
        .await;
    assert_eq!(echo.data()["executeRequest"]["status"], 201);
    assert_eq!(
        echo.data()["executeRequest"]["body"],
        json!({ "title": "Bug", "n": 1 })
    );
    assert_eq!(
        server.requests().pop().unwrap().header("content-type"),
        Some("application/json")
    );
    let plain = app
        .gql(&executor, EXECUTE, json!({ "id": id, "input": { "method": "PUT", "path": "/echo", "bodyText": "<x/>", "headers": { "Content-Type": "application/xml" } } }))
        .await;
    plain.data();
    let sent = server.requests().pop().unwrap();
    assert_eq!(
        (sent.body_text().as_str(), sent.header("content-type")),
        ("<x/>", Some("application/xml"))
    );

    let before = server.count();
    for (input, code) in [
        (
            json!({ "method": "GET", "path": "/../admin" }),
            "VALIDATION_FAILED",
        ),
        (
            json!({ "method": "GET", "path": "https://evil.test/x" }),
            "VALIDATION_FAILED",
        ),
        (
            json!({ "method": "GET", "path": "//evil.test/x" }),
            "VALIDATION_FAILED",
        ),
        (
            json!({ "method": "GET", "path": "/json", "headers": { "Authorization": "Bearer mine" } }),
            "VALIDATION_FAILED",
        ),
        (
            json!({ "method": "TRACE", "path": "/json" }),
            "VALIDATION_FAILED",
        ),
    ] {
        let answer = app
            .gql(&executor, EXECUTE, json!({ "id": id, "input": input }))
            .await;
        assert_eq!(answer.code(), code, "{input}");
    }
    assert_eq!(server.count(), before, "refused calls never leave the hub");

    let batch = app
        .gql(
            &executor,
            "mutation($id: ID!, $calls: [ExecuteRequestInput!]!) { batchExecute(integrationId: $id, calls: $calls) { index result { status body } error { code message } } }",
            json!({ "id": id, "calls": [
                { "method": "GET", "path": "/json" },
                { "method": "GET", "path": "/missing" },
                { "method": "GET", "path": "/../x" },
                { "method": "POST", "path": "/boom" },
                { "method": "POST", "path": "/echo", "body": [1] },
            ] }),
        )
        .await;
    let results = batch.data()["batchExecute"].as_array().unwrap().clone();
    let summary: Vec<(i64, Option<i64>, Option<String>)> = results
        .iter()
        .map(|r| {
            (
                r["index"].as_i64().unwrap(),
                r["result"]["status"].as_i64(),
                r["error"]["code"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, Some(200), None),
            (1, Some(404), None),
            (2, None, Some("VALIDATION_FAILED".into())),
            (3, Some(500), None),
            (4, Some(201), None)
        ]
    );
    let too_many: Vec<Value> = (0..21)
        .map(|_| json!({ "method": "GET", "path": "/json" }))
        .collect();
    let refused = app
        .gql(&executor, "mutation($id: ID!, $calls: [ExecuteRequestInput!]!) { batchExecute(integrationId: $id, calls: $calls) { index } }", json!({ "id": id, "calls": too_many }))
        .await;
    assert_eq!(refused.code(), "VALIDATION_FAILED");

    // A GraphQL integration runs operations with variables.
    let gql_server = Receiver::start(|request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        Reply::json(
            200,
            &json!({ "data": { "echo": body["variables"]["name"] } }),
        )
    })
    .await;
    let gql = register(
        &app,
        &project,
        "graphql",
        "gql",
        json!({ "baseUrl": gql_server.url }),
        json!({}),
    )
    .await;
    let answer = app
        .gql(
            &executor,
            "mutation($id: ID!) { executeGraphql(integrationId: $id, query: \"query($name: String) { echo(name: $name) }\", variables: { name: \"zoe\" }) { status body } }",
            json!({ "id": gql }),
        )
        .await;
    assert_eq!(
        answer.data()["executeGraphql"]["body"],
        json!({ "data": { "echo": "zoe" } })
    );
    let not_graphql = app
        .gql(&executor, "mutation($id: ID!) { executeGraphql(integrationId: $id, query: \"{ a }\") { status } }", json!({ "id": id }))
        .await;
    assert_eq!(not_graphql.code(), "VALIDATION_FAILED");

    // Scope and state checks.
    let (_, reader) = app.key_with(&["integrations:read"]).await;
    let forbidden = app
        .gql(
            &reader,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/json" } }),
        )
        .await;
    assert_eq!(forbidden.code(), "FORBIDDEN");
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { setIntegrationEnabled(id: $id, enabled: false) { id } }",
        json!({ "id": id }),
    )
    .await
    .data();
    let disabled = app
        .gql(
            &executor,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/json" } }),
        )
        .await;
    assert_eq!(disabled.code(), "INTEGRATION_DISABLED");
    let (_, other_team) = app.new_team("other").await;
    let foreign = app
        .gql(
            &other_team,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/json" } }),
        )
        .await;
    assert_eq!(foreign.code(), "NOT_FOUND");
    app.stop().await;
}

async fn retries_timeouts_and_the_circuit(backend: Backend) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let server = Receiver::start(move |request| match request.path.as_str() {
        "/flaky" => {
            // 503, then 429 with Retry-After: 1, then success.
            match counter.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::text(503, "busy"),
                1 => Reply::text(429, "slow down").with_header("retry-after", "1"),
                _ => Reply::json(200, &json!({ "ok": true })),
            }
        }
        "/slow" => Reply::text(200, "late").after(Duration::from_millis(1500)),
        "/down" => Reply::text(500, "down"),
        "/blocked" => Reply::text(302, "").with_header("location", "http://127.0.0.2:9/inside"),
        _ => Reply::json(200, &json!({ "ok": true })),
    })
    .await;
    let app = TestApp::start_configured(backend, |config| {
        config.outbound_timeout_ms = 400;
        config.outbound_max_retries = 2;
        config.breaker_threshold = 3;
        config.breaker_cooldown_secs = 1;
    })
    .await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": server.url }),
        json!({ "token": "t0k3n" }),
    )
    .await;
    let call =
        |method: &str, path: &str| json!({ "id": id, "input": { "method": method, "path": path } });

    let started = Instant::now();
    let flaky = app
        .gql(&app.admin_key, EXECUTE, call("GET", "/flaky"))
        .await;
    assert_eq!(flaky.data()["executeRequest"]["status"], 200);
    assert_eq!(flaky.data()["executeRequest"]["attempts"], 3);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "the upstream saw every attempt"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "Retry-After was honoured"
    );

    // POST is not idempotent: no retry.
    hits.store(0, Ordering::SeqCst);
    let post = app
        .gql(&app.admin_key, EXECUTE, call("POST", "/flaky"))
        .await;
    assert_eq!(post.data()["executeRequest"]["status"], 503);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Timeouts (retried, then given up).
    let slow = app.gql(&app.admin_key, EXECUTE, call("GET", "/slow")).await;
    assert_eq!(slow.code(), "UPSTREAM_TIMEOUT");

    // A dead upstream opens the circuit: calls then fail without reaching it.
    let fresh = register(
        &app,
        &project,
        "github",
        "gh2",
        json!({ "baseUrl": server.url }),
        json!({ "token": "t0k3n" }),
    )
    .await;
    let call2 = |path: &str| json!({ "id": fresh, "input": { "method": "POST", "path": path } });
    for _ in 0..3 {
        let down = app.gql(&app.admin_key, EXECUTE, call2("/down")).await;
        assert_eq!(down.data()["executeRequest"]["status"], 500);
    }
    let before = server.count();
    let open = app.gql(&app.admin_key, EXECUTE, call2("/down")).await;
    assert_eq!(open.code(), "UPSTREAM_ERROR");
    assert!(
        open.message().contains("circuit open"),
        "{}",
        open.message()
    );
    assert_eq!(server.count(), before, "no call while the circuit is open");
    let health = app
        .gql(
            &app.admin_key,
            "query($id: ID!) { integrationHealth(integrationId: $id) { circuit } }",
            json!({ "id": fresh }),
        )
        .await;
    assert_eq!(health.data()["integrationHealth"]["circuit"], "OPEN");
    // After the cooldown one trial goes through. A failed trial opens the circuit again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let trial = app.gql(&app.admin_key, EXECUTE, call2("/down")).await;
    assert_eq!(trial.data()["executeRequest"]["status"], 500);
    let open = app.gql(&app.admin_key, EXECUTE, call2("/ok")).await;
    assert!(open.message().contains("circuit open"), "{}", open.body);
    // A trial the SSRF guard stops (a redirect to a blocked address) says nothing about the
    // upstream: the circuit stays half-open and the next call is the trial.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let blocked = app.gql(&app.admin_key, EXECUTE, call2("/blocked")).await;
    assert_eq!(blocked.code(), "UPSTREAM_BLOCKED");
    // A successful trial closes the circuit.
    app.gql(&app.admin_key, EXECUTE, call2("/ok")).await.data();
    app.gql(&app.admin_key, EXECUTE, call2("/ok")).await.data();
    let health = app
        .gql(
            &app.admin_key,
            "query($id: ID!) { integrationHealth(integrationId: $id) { circuit } }",
            json!({ "id": fresh }),
        )
        .await;
    assert_eq!(health.data()["integrationHealth"]["circuit"], "CLOSED");
    app.stop().await;
}

async fn ssrf_guard(backend: Backend) {
    let target = Receiver::start(|_| Reply::json(200, &json!({ "reached": true }))).await;
    let port = target.url.rsplit(':').next().unwrap().to_string();
    let redirect_to = format!("http://127.0.0.2:{port}/inside");
    let redirector =
        Receiver::start(move |_| Reply::text(302, "").with_header("location", &redirect_to)).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    for (name, base) in [
        ("private", "http://10.0.0.1".to_string()),
        ("metadata", "http://169.254.169.254".to_string()),
        ("unspecified", "http://0.0.0.0:80".to_string()),
        ("ipv6 loopback", "http://[::1]:80".to_string()),
        ("ipv4-compatible", format!("http://[::127.0.0.2]:{port}")),
        ("ipv4-mapped", format!("http://[::ffff:127.0.0.2]:{port}")),
        (
            "ipv4-compatible metadata",
            "http://[::169.254.169.254]".to_string(),
        ),
        ("nat64 metadata", "http://[64:ff9b::a9fe:a9fe]".to_string()),
        ("redirect to loopback", redirector.url.clone()),
    ] {
        let id = register(
            &app,
            &project,
            "generic_rest",
            name,
            json!({ "baseUrl": base }),
            json!({}),
        )
        .await;
        let answer = app
            .gql(
                &app.admin_key,
                EXECUTE,
                json!({ "id": id, "input": { "method": "GET", "path": "/latest/meta-data" } }),
            )
            .await;
        assert_eq!(answer.code(), "UPSTREAM_BLOCKED", "{name}: {}", answer.body);
    }
    assert_eq!(target.count(), 0, "the redirect target was never reached");
    app.stop().await;

    // Without the allow-list even 127.0.0.1 is refused.
    let app =
        TestApp::start_configured(backend, |config| config.outbound_allow = String::new()).await;
    let project = app.create_project(&app.admin_key, "P").await;
    for (name, base) in [
        ("local", target.url.clone()),
        ("ipv4-compatible", format!("http://[::127.0.0.1]:{port}")),
        ("ipv4-mapped", format!("http://[::ffff:127.0.0.1]:{port}")),
    ] {
        let id = register(
            &app,
            &project,
            "generic_rest",
            name,
            json!({ "baseUrl": base }),
            json!({}),
        )
        .await;
        let answer = app
            .gql(
                &app.admin_key,
                EXECUTE,
                json!({ "id": id, "input": { "method": "GET", "path": "/" } }),
            )
            .await;
        assert_eq!(answer.code(), "UPSTREAM_BLOCKED", "{name}");
    }
    assert_eq!(target.count(), 0);
    app.stop().await;
}

/// The replica keeps integrations opened for calls; every change made through it is seen by
/// the very next call.
async fn changes_reach_calls_at_once(backend: Backend) {
    let first = Receiver::start(|_| Reply::json(200, &json!({ "server": "first" }))).await;
    let second = Receiver::start(|_| Reply::json(200, &json!({ "server": "second" }))).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": first.url }),
        json!({ "token": "tok-1" }),
    )
    .await;
    let call = || async {
        app.gql(
            &app.admin_key,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/x" } }),
        )
        .await
    };
    assert_eq!(
        call().await.data()["executeRequest"]["body"]["server"],
        "first"
    );
    assert_eq!(
        call().await.data()["executeRequest"]["body"]["server"],
        "first"
    );
    assert_eq!(
        first.requests()[1].header("authorization"),
        Some("Bearer tok-1")
    );

    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { rotateIntegrationCredentials(id: $id, credentials: { token: \"tok-2\" }) { id } }",
        json!({ "id": id }),
    )
    .await
    .data();
    call().await.data();
    assert_eq!(
        first.requests().last().unwrap().header("authorization"),
        Some("Bearer tok-2")
    );

    app.gql(
        &app.admin_key,
        "mutation($id: ID!, $url: String!) { updateIntegration(id: $id, input: { config: { baseUrl: $url } }) { id } }",
        json!({ "id": id, "url": second.url }),
    )
    .await
    .data();
    assert_eq!(
        call().await.data()["executeRequest"]["body"]["server"],
        "second"
    );
    assert_eq!(first.count(), 3);

    let set_enabled = |enabled: bool| {
        let id = id.clone();
        let app = &app;
        async move {
            app.gql(
                &app.admin_key,
                "mutation($id: ID!, $on: Boolean!) { setIntegrationEnabled(id: $id, enabled: $on) { id } }",
                json!({ "id": id, "on": enabled }),
            )
            .await
            .data();
        }
    };
    set_enabled(false).await;
    assert_eq!(call().await.code(), "INTEGRATION_DISABLED");
    set_enabled(true).await;
    assert_eq!(call().await.data()["executeRequest"]["status"], 200);

    // A key limited to another project cannot use what the replica has cached.
    let other = app.create_project(&app.admin_key, "Q").await;
    let limited = app
        .gql(
            &app.admin_key,
            "mutation($p: ID!) { createApiKey(input: { name: \"q\", scopes: [\"integrations:execute\"], allowedProjectIds: [$p] }) { key } }",
            json!({ "p": other }),
        )
        .await;
    let limited = limited.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = app
        .gql(
            &limited,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/x" } }),
        )
        .await;
    assert_eq!(refused.code(), "NOT_FOUND");

    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { deleteProject(id: $id) }",
        json!({ "id": project }),
    )
    .await
    .data();
    assert_eq!(call().await.code(), "NOT_FOUND");
    assert_eq!(second.count(), 2);
    app.stop().await;
}
