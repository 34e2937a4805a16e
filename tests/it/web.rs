//! What browser apps and GraphQL clients meet on the wire: CORS (and the WebSocket origin
//! check), compression, request ids and `traceparent`, automatic persisted queries, and
//! error messages that read as one line.

use std::io::Read;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::calls::{EXECUTE, TEST_CONNECTION, register};
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    cors_for_listed_origins_only,
    larger_answers_are_compressed,
    request_ids_and_traceparent,
    automatic_persisted_queries,
    errors_read_as_one_line,
    health_counts_what_is_the_integrations_fault,
    connections_have_nodes_and_total_count,
    websockets_beyond_the_cap_are_told_to_come_back,
    upgrades_are_answered_like_requests,
);

const APP_ORIGIN: &str = "http://localhost:5173";

/// Opens a WebSocket to the hub with this `Origin` (None: no header); the HTTP status the
/// upgrade got (101 when it was accepted).
async fn upgrade_status(app: &TestApp, origin: Option<&str>) -> u16 {
    let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("upgrade failed: {err}"),
    }
}

async fn cors_for_listed_origins_only(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.cors_origins = format!("{APP_ORIGIN}, https://admin.example.com");
    })
    .await;
    let url = app.graphql_url();
    // The browser's preflight for a POST with a key.
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", APP_ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-request-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], APP_ORIGIN);
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["authorization", "content-type", "x-request-id"] {
        assert!(allowed.contains(header), "{header} not allowed: {allowed}");
    }
    assert!(headers.contains_key("access-control-max-age"));

    // The request itself: answered, readable by the page, with the headers it needs exposed.
    let answer = app
        .client
        .post(&url)
        .header("origin", APP_ORIGIN)
        .header("content-type", "application/json")
        .bearer_auth(&app.admin_key)
        .body(r#"{"query":"{ viewer { kind } }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], APP_ORIGIN);
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["x-request-id", "ratelimit-remaining", "retry-after"] {
        assert!(exposed.contains(header), "{header} not exposed: {exposed}");
    }

    // Another origin gets no CORS headers (the browser keeps the answer from its page).
    for origin in ["http://evil.example", "http://localhost:5174"] {
        let preflight = app
            .client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(
            !preflight
                .headers()
                .contains_key("access-control-allow-origin"),
            "{origin}"
        );
    }

    // WebSockets: listed origins, the hub's own (its GraphiQL) and non-browsers connect.
    assert_eq!(upgrade_status(&app, Some(APP_ORIGIN)).await, 101);
    assert_eq!(upgrade_status(&app, Some(&app.base)).await, 101);
    assert_eq!(upgrade_status(&app, None).await, 101);
    assert_eq!(upgrade_status(&app, Some("http://evil.example")).await, 403);
    app.stop().await;

    // Without HUB_CORS_ORIGINS there are no CORS headers for anyone.
    let app = TestApp::start(backend).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.graphql_url())
        .header("origin", APP_ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert_eq!(upgrade_status(&app, Some("http://evil.example")).await, 101);
    app.stop().await;
}

const INTROSPECTION: &str = r#"{"query":"{ __schema { types { name fields { name } } } }"}"#;

async fn post_encoded(app: &TestApp, body: &'static str, encoding: &str) -> reqwest::Response {
    app.client
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("accept-encoding", encoding)
        .bearer_auth(&app.admin_key)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn larger_answers_are_compressed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let plain = post_encoded(&app, INTROSPECTION, "identity").await;
    assert!(
        plain
            .headers()
            .get("content-encoding")
            .is_none_or(|e| e == "identity")
    );
    let plain: Value = plain.json().await.unwrap();
    let plain_len = plain.to_string().len();
    assert!(plain_len > 10_000, "introspection is large ({plain_len})");

    let gzip = post_encoded(&app, INTROSPECTION, "gzip").await;
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let bytes = gzip.bytes().await.unwrap();
    assert!(
        bytes.len() * 3 < plain_len,
        "{} of {plain_len}",
        bytes.len()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), plain);

    for (accept, expected) in [("br", "br"), ("zstd", "zstd"), ("gzip, br, zstd", "zstd")] {
        let answer = post_encoded(&app, INTROSPECTION, accept).await;
        let encoding = answer.headers()["content-encoding"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            encoding == expected || (accept.contains(',') && encoding != "identity"),
            "{accept}: {encoding}"
        );
        let size = answer.bytes().await.unwrap().len();
        assert!(size * 3 < plain_len, "{accept}: {size} of {plain_len}");
    }

    // A small answer is sent as it is.
    let small = post_encoded(&app, r#"{"query":"{ __typename }"}"#, "gzip, br, zstd").await;
    assert!(
        small
            .headers()
            .get("content-encoding")
            .is_none_or(|e| e == "identity")
    );
    let body: Value = small.json().await.unwrap();
    assert_eq!(body["data"]["__typename"], "Query");
    app.stop().await;
}

async fn request_ids_and_traceparent(backend: Backend) {
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "t0k3n" }),
    )
    .await;
    let send = |request_id: Option<&'static str>, traceparent: Option<&'static str>| {
        let mut request = app
            .client
            .post(app.graphql_url())
            .header("content-type", "application/json")
            .bearer_auth(&app.admin_key)
            .json(&json!({ "query": EXECUTE, "variables": { "id": id, "input": { "method": "GET", "path": "/user" } } }));
        if let Some(value) = request_id {
            request = request.header("x-request-id", value);
        }
        if let Some(value) = traceparent {
            request = request.header("traceparent", value);
        }
        request.send()
    };

    // A client's id is echoed; without one the hub makes one; a bad one is replaced.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = send(Some("client-id-42"), Some(traceparent)).await.unwrap();
    assert_eq!(answer.headers()["x-request-id"], "client-id-42");
    let made = send(None, None).await.unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made_id.len(), 32, "{made_id}");
    let bad = send(Some("has spaces and \"quotes\""), None).await.unwrap();
    assert_ne!(bad.headers()["x-request-id"], "has spaces and \"quotes\"");
    // Every answer carries one, errors and other routes included.
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert!(health.headers().contains_key("x-request-id"));

    // The caller's traceparent goes on to the upstream; none is made up when it sent none.
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].header("traceparent"), Some(traceparent));
    assert_eq!(seen[1].header("traceparent"), None);

    // The audit event of a mutation names its request.
    let answer = app
        .client
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("x-request-id", "rename-7")
        .bearer_auth(&app.admin_key)
        .json(&json!({ "query": "mutation($id: ID!) { updateProject(id: $id, input: { name: \"Q\" }) { id } }", "variables": { "id": project } }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-request-id"], "rename-7");
    let log = app
        .gql(
            &app.admin_key,
            "{ auditLog(filter: { action: \"updateProject\" }) { edges { node { requestId } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        log.data()["auditLog"]["edges"][0]["node"]["requestId"],
        "rename-7"
    );
    app.stop().await;
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn automatic_persisted_queries(backend: Backend) {
    let app = TestApp::start(backend).await;
    let query = "{ viewer { kind scopes } }";
    let hash = sha256_hex(query);
    let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let post = |body: Value, key: String| {
        app.client
            .post(app.graphql_url())
            .header("content-type", "application/json")
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let admin = app.admin_key.clone();

    // Miss: the client is told to send the document.
    let miss: Value = post(json!({ "extensions": persisted }), admin.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(miss["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        miss["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    // Register (document and hash), then hits by hash alone, over POST and GET.
    let registered: Value = post(
        json!({ "query": query, "extensions": persisted }),
        admin.clone(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        registered["data"]["viewer"]["kind"], "API_KEY",
        "{registered}"
    );
    let hit: Value = post(json!({ "extensions": persisted }), admin.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hit["data"], registered["data"]);
    let get: Value = app
        .client
        .get(app.graphql_url())
        .query(&[("extensions", persisted.to_string())])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(get["data"], registered["data"]);

    // A hash that is not the document's is refused and not kept.
    let wrong = json!({ "persistedQuery": { "version": 1, "sha256Hash": "0".repeat(64) } });
    let refused: Value = post(
        json!({ "query": query, "extensions": wrong }),
        admin.clone(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "VALIDATION_FAILED"
    );

    // A document registered by one caller runs with the scopes of whoever sends its hash.
    let keys_query = "{ apiKeys { id } }";
    let keys = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(keys_query) } });
    post(
        json!({ "query": keys_query, "extensions": keys }),
        admin.clone(),
    )
    .await
    .unwrap();
    let (_, reader) = app.key_with(&["integrations:read"]).await;
    let forbidden: Value = post(json!({ "extensions": keys }), reader)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");
    // And a mutation by hash still cannot go over GET.
    let mutation = "mutation { createProject(input: { name: \"G\" }) { id } }";
    let by_hash = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(mutation) } });
    post(
        json!({ "query": mutation, "extensions": by_hash }),
        admin.clone(),
    )
    .await
    .unwrap();
    let over_get = app
        .client
        .get(app.graphql_url())
        .query(&[("extensions", by_hash.to_string())])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(over_get.status(), 405);
    app.stop().await;
}

async fn errors_read_as_one_line(backend: Backend) {
    let app = TestApp::start(backend).await;
    let send = |body: &'static str| {
        app.client
            .post(app.graphql_url())
            .header("content-type", "application/json")
            .bearer_auth(&app.admin_key)
            .body(body)
            .send()
    };
    // A syntax error: one line, with where it is.
    let parse: Value = send(r#"{"query":"{ viewer { kind "}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = parse["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.starts_with("syntax error at line 1, column "),
        "{message}"
    );
    assert_eq!(
        parse["errors"][0]["extensions"]["code"],
        "VALIDATION_FAILED"
    );
    // The same inside a batch item.
    let batch: Value = send(r#"[{"query":"{ __typename }"},{"query":"{ viewer { "}]"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batch[0]["data"]["__typename"], "Query");
    let message = batch[1]["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(
        batch[1]["errors"][0]["extensions"]["code"],
        "VALIDATION_FAILED"
    );
    // Bodies that are not requests say what is expected, in words.
    for body in ["null", "42", r#"{"qurey":"{ x }"}"#, "{"] {
        let answer: Value = send(body).await.unwrap().json().await.unwrap();
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(
            !message.contains("enum") && !message.contains('\n'),
            "{body}: {message}"
        );
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "VALIDATION_FAILED",
            "{body}"
        );
    }
    app.stop().await;
}

/// Callers' own 404s do not make an integration unwell; failures that are its fault (5xx,
/// no answer, credentials refused) do, and whenever it is not CONNECTED `lastError` says why.
async fn health_counts_what_is_the_integrations_fault(backend: Backend) {
    let upstream = Receiver::start(|request| match request.path.as_str() {
        "/boom" => Reply::json(500, &json!({ "message": "down" })),
        "/missing" => Reply::json(404, &json!({ "message": "Not Found" })),
        _ => Reply::json(200, &json!({ "login": "octocat" })),
    })
    .await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "t0k3n" }),
    )
    .await;
    let call = |path: &str| json!({ "id": id, "input": { "method": "GET", "path": path } });
    for _ in 0..5 {
        app.gql(&app.admin_key, EXECUTE, call("/missing"))
            .await
            .data();
    }
    let tested = app
        .gql(&app.admin_key, TEST_CONNECTION, json!({ "id": id }))
        .await;
    let integration = &tested.data()["testConnection"]["integration"];
    assert_eq!(integration["status"], "CONNECTED", "{integration}");
    assert!(integration["lastError"].is_null(), "{integration}");

    // Server errors are the integration's: 3 of 10 calls failed (fewer than would open the
    // circuit breaker), the status says so and why.
    for _ in 0..3 {
        app.gql(&app.admin_key, EXECUTE, call("/boom")).await.data();
    }
    let tested = app
        .gql(&app.admin_key, TEST_CONNECTION, json!({ "id": id }))
        .await;
    let data = tested.data();
    assert_eq!(data["testConnection"]["ok"], true);
    let integration = &data["testConnection"]["integration"];
    assert_eq!(integration["status"], "DEGRADED", "{integration}");
    let why = integration["lastError"].as_str().unwrap_or_default();
    assert!(why.contains("% of calls failed"), "{integration}");
    app.stop().await;
}

/// Every connection has Relay's `nodes` beside `edges`, and `totalCount`: everything its
/// filters match, on every page.
async fn connections_have_nodes_and_total_count(backend: Backend) {
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(
            register(
                &app,
                &project,
                "github",
                name,
                json!({ "baseUrl": upstream.url }),
                json!({ "token": "t" }),
            )
            .await,
        );
    }
    for _ in 0..3 {
        let call = json!({ "id": ids[0], "input": { "method": "GET", "path": "/x" } });
        app.gql(&app.admin_key, EXECUTE, call).await.data();
    }
    let page = app
        .gql(
            &app.admin_key,
            "query($p: ID!, $after: String) {
                integrations(projectId: $p, first: 2, after: $after) {
                    totalCount nodes { id } edges { node { id } } pageInfo { hasNextPage endCursor }
                }
            }",
            json!({ "p": project }),
        )
        .await;
    let list = &page.data()["integrations"];
    assert_eq!(list["totalCount"], 3, "{list}");
    assert_eq!(list["nodes"], json!([{ "id": ids[0] }, { "id": ids[1] }]));
    assert_eq!(
        list["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect::<Vec<_>>(),
        list["nodes"].as_array().unwrap().clone()
    );
    // The second page counts the same total.
    let second = app
        .gql(
            &app.admin_key,
            "query($p: ID!, $after: String) { integrations(projectId: $p, first: 2, after: $after) { totalCount nodes { id } } }",
            json!({ "p": project, "after": list["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(second.data()["integrations"]["totalCount"], 3);
    assert_eq!(
        second.data()["integrations"]["nodes"],
        json!([{ "id": ids[2] }])
    );
    // Filters count too.
    let disabled = app
        .gql(
            &app.admin_key,
            "query($p: ID!) { integrations(projectId: $p, filter: { enabled: false }) { totalCount nodes { id } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(disabled.data()["integrations"]["totalCount"], 0);

    let logs = app
        .gql(
            &app.admin_key,
            "query($i: ID!) { integrationLogs(integrationId: $i, first: 1) { totalCount nodes { path } } }",
            json!({ "i": ids[0] }),
        )
        .await;
    assert_eq!(logs.data()["integrationLogs"]["totalCount"], 3);
    assert_eq!(
        logs.data()["integrationLogs"]["nodes"],
        json!([{ "path": "/x" }])
    );

    let audit = app
        .gql(
            &app.admin_key,
            "{ auditLog(first: 1, filter: { action: \"registerIntegration\" }) { totalCount nodes { action } } }",
            json!({}),
        )
        .await;
    assert_eq!(audit.data()["auditLog"]["totalCount"], 3);
    assert_eq!(
        audit.data()["auditLog"]["nodes"],
        json!([{ "action": "registerIntegration" }])
    );

    let runs = app
        .gql(
            &app.admin_key,
            "query($p: ID!) { syncRuns(projectId: $p) { totalCount nodes { id } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(
        runs.data()["syncRuns"],
        json!({ "totalCount": 0, "nodes": [] })
    );
    app.stop().await;
}

async fn websockets_beyond_the_cap_are_told_to_come_back(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| config.max_connections = 2).await;
    let open = async || {
        let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        tokio_tungstenite::connect_async(request).await
    };
    let first = open().await.expect("first");
    let _second = open().await.expect("second");
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("5")
            );
        }
        other => panic!(
            "a third socket over the cap of 2: {:?}",
            other.map(|r| r.1.status())
        ),
    }
    // Plain HTTP is unaffected.
    app.gql(&app.admin_key, "{ viewer { kind } }", json!({}))
        .await
        .data();
    // A closed socket frees its place.
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(socket) = open().await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "the place of a closed socket is given back"
    );
    app.stop().await;
}

/// Sends `request` as raw HTTP/1.1 and reads the answer's head (until the blank line).
async fn raw_exchange(app: &TestApp, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).to_lowercase()
}

/// WebSocket upgrades are taken over from the HTTP server with their socket; they are still
/// answered as the App answered them: the client's request id on the 101, 404 off /graphql,
/// 400 for another protocol, the origin checked against the forwarded host.
async fn upgrades_are_answered_like_requests(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.cors_origins = APP_ORIGIN.to_string();
    })
    .await;
    let handshake = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: hub.internal:8080\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-protocol: graphql-transport-ws\r\n{extra}\r\n"
        )
    };
    let accepted = raw_exchange(
        &app,
        &handshake("/graphql", "x-request-id: ws-client-7\r\n"),
    )
    .await;
    assert!(accepted.starts_with("http/1.1 101"), "{accepted}");
    // The RFC 6455 example key's answer.
    assert!(
        accepted.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{accepted}"
    );
    assert!(
        accepted.contains("sec-websocket-protocol: graphql-transport-ws"),
        "{accepted}"
    );
    assert!(accepted.contains("x-request-id: ws-client-7"), "{accepted}");
    let elsewhere = raw_exchange(&app, &handshake("/graphiql", "")).await;
    assert!(elsewhere.starts_with("http/1.1 404"), "{elsewhere}");
    assert!(elsewhere.contains("x-request-id: "), "{elsewhere}");
    let h2c = raw_exchange(
        &app,
        "GET /graphql?query=%7B__typename%7D HTTP/1.1\r\nhost: hub\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    // curl --http2 on http:// asks this way: the upgrade is ignored, the query answered.
    assert!(h2c.starts_with("http/1.1 200"), "{h2c}");
    let other = raw_exchange(
        &app,
        "GET /graphql HTTP/1.1\r\nhost: hub\r\nconnection: upgrade\r\nupgrade: tls/1.3\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("http/1.1 400"), "{other}");
    let no_key = raw_exchange(
        &app,
        "GET /graphql HTTP/1.1\r\nhost: hub\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-protocol: graphql-ws\r\n\r\n",
    )
    .await;
    assert!(no_key.starts_with("http/1.1 400"), "{no_key}");
    // A page served by the hub itself behind a proxy: its origin is the forwarded host.
    let proxied = raw_exchange(
        &app,
        &handshake(
            "/graphql",
            "origin: https://hub.example.com\r\nx-forwarded-host: hub.example.com\r\n",
        ),
    )
    .await;
    assert!(proxied.starts_with("http/1.1 101"), "{proxied}");
    let foreign = raw_exchange(
        &app,
        &handshake("/graphql", "origin: https://evil.example\r\n"),
    )
    .await;
    assert!(foreign.starts_with("http/1.1 403"), "{foreign}");
    // Plain requests on the same server are untouched.
    app.gql(&app.admin_key, "{ viewer { kind } }", json!({}))
        .await
        .data();
    app.stop().await;
}
