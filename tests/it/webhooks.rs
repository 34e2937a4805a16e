//! Outbound webhooks end to end: real receivers on loopback; signatures checked by the
//! Standard Webhooks algorithm written here from the spec (not the hub's code).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::on_both_backends;
use crate::subscriptions::{Protocol, WsClient};
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    deliveries_are_signed_and_retried_until_delivered,
    retry_after_is_honoured_and_410_disables,
    endpoints_failing_too_long_are_disabled_and_announced,
    rotation_signs_with_both_secrets_for_the_overlap,
    failed_deliveries_can_be_redelivered_and_replayed,
    endpoints_are_confined_to_their_team_and_reach,
    bad_endpoints_are_refused,
    test_events_stats_and_live_updates,
    webhook_secrets_follow_a_key_rotation,
);

const CREATE: &str = "mutation($input: CreateWebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { id secret enabled eventTypes headerNames } }";

const DELIVERIES: &str = "query($endpoint: ID!) {
    webhookDeliveries(endpointId: $endpoint) { totalCount nodes {
        id eventType status lastStatus lastError payload
        attempts { responseStatus error responseBody durationMs } } } }";

/// Start with a short retry schedule and a fast worker.
async fn app(backend: Backend, schedule: &str) -> TestApp {
    let schedule = schedule.to_string();
    TestApp::start_configured(backend, move |config| {
        config.webhook_retry_schedule = schedule;
        config.webhook_poll_ms = 50;
        config.webhook_timeout_ms = 2000;
    })
    .await
}

/// Verifies every `v1,` signature of a recorded delivery per the Standard Webhooks spec:
/// HMAC-SHA256 over `{id}.{timestamp}.{body}` with the base64 key after `whsec_`. Returns
/// which of the header's signatures `secret` made.
fn signed_by(secret: &str, request: &Recorded) -> Vec<bool> {
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    request
        .header("webhook-signature")
        .expect("webhook-signature")
        .split(' ')
        .map(|signature| signature == expected)
        .collect()
}

async fn wait_for(what: &str, wait: Duration, mut done: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn endpoint(app: &TestApp, key: &str, input: Value) -> (String, String) {
    let answer = app.gql(key, CREATE, json!({ "input": input })).await;
    let created = &answer.data()["createWebhookEndpoint"];
    (
        created["id"].as_str().expect("endpoint id").to_string(),
        created["secret"].as_str().expect("secret").to_string(),
    )
}

async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let answer = app
        .gql(&app.admin_key, DELIVERIES, json!({ "endpoint": endpoint }))
        .await;
    answer.data()["webhookDeliveries"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A receiver that answers `replies` in turn (the last one from then on).
async fn scripted(replies: Vec<(u16, Option<&'static str>)>) -> Receiver {
    let calls = Arc::new(AtomicUsize::new(0));
    Receiver::start(move |_| {
        let n = calls.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
        let (status, retry_after) = replies[n];
        let reply = Reply::text(status, &format!("answer {n}"));
        match retry_after {
            Some(seconds) => reply.with_header("retry-after", seconds),
            None => reply,
        }
    })
    .await
}

async fn deliveries_are_signed_and_retried_until_delivered(backend: Backend) {
    let app = app(backend, "100ms,200ms,300ms").await;
    let receiver = scripted(vec![(500, None), (500, None), (200, None)]).await;
    let project = app.create_project(&app.admin_key, "hooks").await;
    let (endpoint_id, secret) = endpoint(
        &app,
        &app.admin_key,
        json!({ "projectId": project, "url": receiver.url("/hook"),
                "eventTypes": ["integration.created"],
                "headers": { "X-Team-Token": "s3cret-value" } }),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    let integration = app
        .register_github(&app.admin_key, &project, "gh", "tok")
        .await;
    wait_for("three attempts", Duration::from_secs(10), async || {
        receiver.count() >= 3
    })
    .await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "delivered once it succeeded, not again");
    let id = requests[0].header("webhook-id").unwrap().to_string();
    assert!(id.starts_with("msg_"));
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.header("webhook-id"),
            Some(id.as_str()),
            "id stable across retries"
        );
        assert_eq!(signed_by(&secret, request), [true]);
        assert_eq!(request.header("x-team-token"), Some("s3cret-value"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["type"], "integration.created");
        assert_eq!(body["data"]["id"], integration);
        assert_eq!(body["data"]["projectId"], project);
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    // A body changed in transit would not verify.
    let mut forged = requests[0].clone();
    forged.body = br#"{"type":"integration.deleted"}"#.to_vec();
    assert_eq!(signed_by(&secret, &forged), [false]);

    wait_for(
        "the delivery delivered",
        Duration::from_secs(5),
        async || deliveries(&app, &endpoint_id).await[0]["status"] == "DELIVERED",
    )
    .await;
    let list = deliveries(&app, &endpoint_id).await;
    assert_eq!(list.len(), 1, "only integration.created was asked for");
    let attempts = list[0]["attempts"].as_array().unwrap();
    let statuses: Vec<i64> = attempts
        .iter()
        .map(|a| a["responseStatus"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(attempts[0]["responseBody"], "answer 0");
    assert_eq!(list[0]["payload"]["type"], "integration.created");

    // The secret is shown once; the header values never.
    let shown = app
        .gql(
            &app.admin_key,
            "query($id: ID!) { webhookEndpoint(id: $id) { secret headerNames } }",
            json!({ "id": endpoint_id }),
        )
        .await;
    assert_eq!(shown.data()["webhookEndpoint"]["secret"], Value::Null);
    assert_eq!(
        shown.data()["webhookEndpoint"]["headerNames"],
        json!(["X-Team-Token"])
    );
    assert!(!shown.body.to_string().contains("s3cret-value"));
    app.stop().await;
}

async fn retry_after_is_honoured_and_410_disables(backend: Backend) {
    let app = app(backend, "100ms,100ms,100ms").await;
    let receiver = scripted(vec![(429, Some("1")), (410, None)]).await;
    let (endpoint_id, _) = endpoint(
        &app,
        &app.admin_key,
        json!({ "url": receiver.url("/gone"), "eventTypes": ["webhook.test"] }),
    )
    .await;
    let sent = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!) { sendTestWebhook(id: $id) { id status eventType } }",
            json!({ "id": endpoint_id }),
        )
        .await;
    assert_eq!(sent.data()["sendTestWebhook"]["eventType"], "webhook.test");
    wait_for("two attempts", Duration::from_secs(10), async || {
        receiver.count() >= 2
    })
    .await;
    let list = deliveries(&app, &endpoint_id).await;
    wait_for("the delivery failed", Duration::from_secs(5), async || {
        deliveries(&app, &endpoint_id).await[0]["status"] == "FAILED"
    })
    .await;
    let _ = list;
    let times = receiver.times();
    assert!(
        times[1] - times[0] >= Duration::from_millis(950),
        "Retry-After: 1 waited for, not the 100 ms schedule ({:?})",
        times[1] - times[0]
    );
    let shown = app
        .gql(
            &app.admin_key,
            "query($id: ID!) { webhookEndpoint(id: $id) { enabled disabledReason } }",
            json!({ "id": endpoint_id }),
        )
        .await;
    assert_eq!(shown.data()["webhookEndpoint"]["enabled"], false);
    assert!(
        shown.data()["webhookEndpoint"]["disabledReason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    // No more attempts once gone, though the schedule had more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 2);
    app.stop().await;
}

async fn endpoints_failing_too_long_are_disabled_and_announced(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.webhook_retry_schedule = "200ms,200ms,200ms,200ms,200ms,200ms".into();
        config.webhook_poll_ms = 50;
        config.webhook_disable_after_secs = 1;
    })
    .await;
    let failing = scripted(vec![(503, None)]).await;
    let watcher = scripted(vec![(204, None)]).await;
    let (failing_id, _) = endpoint(
        &app,
        &app.admin_key,
        json!({ "url": failing.url("/down"), "eventTypes": ["webhook.test"] }),
    )
    .await;
    let (watcher_id, watcher_secret) = endpoint(
        &app,
        &app.admin_key,
        json!({ "url": watcher.url("/ops"), "eventTypes": ["webhook.endpoint_disabled"] }),
    )
    .await;
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }",
        json!({ "id": failing_id }),
    )
    .await;
    wait_for("the announcement", Duration::from_secs(10), async || {
        watcher.count() >= 1
    })
    .await;
    let announced = &watcher.requests()[0];
    assert_eq!(signed_by(&watcher_secret, announced), [true]);
    let body: Value = serde_json::from_slice(&announced.body).unwrap();
    assert_eq!(body["type"], "webhook.endpoint_disabled");
    assert_eq!(body["data"]["id"], failing_id);
    assert!(
        body["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("failed for 1 s")
    );
    let attempts_then = failing.count();
    assert!(attempts_then >= 2, "it failed more than once first");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        failing.count(),
        attempts_then,
        "a disabled endpoint gets nothing more"
    );
    let _ = watcher_id;
    app.stop().await;
}

async fn rotation_signs_with_both_secrets_for_the_overlap(backend: Backend) {
    let app = app(backend, "100ms").await;
    let receiver = scripted(vec![(200, None)]).await;
    let (id, old) = endpoint(&app, &app.admin_key, json!({ "url": receiver.url("/r") })).await;
    let rotate = "mutation($id: ID!, $overlap: Int) {
        rotateWebhookSecret(id: $id, overlapSeconds: $overlap) { secret previousSecretExpiresAt } }";
    let rotated = app
        .gql(&app.admin_key, rotate, json!({ "id": id, "overlap": 3600 }))
        .await;
    let new = rotated.data()["rotateWebhookSecret"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    assert!(rotated.data()["rotateWebhookSecret"]["previousSecretExpiresAt"].is_string());
    let test = "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }";
    app.gql(&app.admin_key, test, json!({ "id": id })).await;
    wait_for("the test event", Duration::from_secs(5), async || {
        receiver.count() >= 1
    })
    .await;
    let first = &receiver.requests()[0];
    assert_eq!(
        signed_by(&new, first),
        [true, false],
        "new first, then the old"
    );
    assert_eq!(signed_by(&old, first), [false, true]);

    // Without overlap the old secret stops at once.
    let again = app.gql(&app.admin_key, rotate, json!({ "id": id })).await;
    let newest = again.data()["rotateWebhookSecret"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    app.gql(&app.admin_key, test, json!({ "id": id })).await;
    wait_for(
        "the second test event",
        Duration::from_secs(5),
        async || receiver.count() >= 2,
    )
    .await;
    let second = &receiver.requests()[1];
    assert_eq!(signed_by(&newest, second), [true]);
    assert_eq!(signed_by(&new, second), [false]);
    app.stop().await;
}

async fn failed_deliveries_can_be_redelivered_and_replayed(backend: Backend) {
    let app = app(backend, "50ms").await;
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let receiver = Receiver::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::text(200, "ok")
        } else {
            Reply::text(502, "down")
        }
    })
    .await;
    let (id, _) = endpoint(&app, &app.admin_key, json!({ "url": receiver.url("/r") })).await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let test = "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }";
    for _ in 0..3 {
        app.gql(&app.admin_key, test, json!({ "id": id })).await;
    }
    wait_for(
        "three failed deliveries",
        Duration::from_secs(10),
        async || {
            let list = deliveries(&app, &id).await;
            list.len() == 3 && list.iter().all(|d| d["status"] == "FAILED")
        },
    )
    .await;
    assert_eq!(
        receiver.count(),
        6,
        "two attempts each: at once, then after 50 ms"
    );
    healthy.store(true, Ordering::SeqCst);

    let list = deliveries(&app, &id).await;
    let one = list[0]["id"].as_str().unwrap().to_string();
    let redelivered = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id status } }",
            json!({ "id": one }),
        )
        .await;
    assert_eq!(redelivered.data()["redeliverWebhook"]["status"], "PENDING");
    wait_for("the redelivery", Duration::from_secs(5), async || {
        receiver.count() >= 7
    })
    .await;
    assert_eq!(
        receiver.requests()[6].header("webhook-id"),
        Some(one.as_str())
    );

    let replayed = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!, $since: DateTime!) { replayWebhooks(endpointId: $id, since: $since) }",
            json!({ "id": id, "since": started.to_rfc3339() }),
        )
        .await;
    wait_for("everything delivered", Duration::from_secs(5), async || {
        deliveries(&app, &id)
            .await
            .iter()
            .all(|d| d["status"] == "DELIVERED")
    })
    .await;
    assert_eq!(replayed.data()["replayWebhooks"], 2, "the two still failed");
    assert_eq!(receiver.count(), 9);
    app.stop().await;
}

async fn endpoints_are_confined_to_their_team_and_reach(backend: Backend) {
    let app = app(backend, "100ms").await;
    let ours = scripted(vec![(200, None)]).await;
    let theirs = scripted(vec![(200, None)]).await;
    let project = app.create_project(&app.admin_key, "ours").await;
    let other_project = app.create_project(&app.admin_key, "other").await;
    let (team_b, key_b) = app.new_team("b").await;
    let _ = team_b;
    let (our_id, _) = endpoint(&app, &app.admin_key, json!({ "url": ours.url("/a") })).await;
    let (their_id, _) = endpoint(&app, &key_b, json!({ "url": theirs.url("/b") })).await;
    app.register_github(&app.admin_key, &project, "gh", "tok")
        .await;
    wait_for("our delivery", Duration::from_secs(5), async || {
        ours.count() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        theirs.count(),
        0,
        "another team's endpoint hears nothing of ours"
    );

    // Another team sees and touches nothing of ours.
    for query in [
        "query($id: ID!) { webhookEndpoint(id: $id) { id } }",
        "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }",
        "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }",
        "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
        "mutation($id: ID!) { updateWebhookEndpoint(id: $id, input: { enabled: false }) { id } }",
        "query($id: ID!) { webhookStats(endpointId: $id) { attempted } }",
        "query($id: ID!) { webhookDeliveries(endpointId: $id) { totalCount } }",
    ] {
        let answer = app.gql(&key_b, query, json!({ "id": our_id })).await;
        assert_eq!(answer.code(), "NOT_FOUND", "{query}");
    }
    let listed = app
        .gql(&key_b, "{ webhookEndpoints { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        listed.data()["webhookEndpoints"]["nodes"],
        json!([{ "id": their_id }])
    );

    // A key limited to one project cannot make or see team-wide endpoints, nor other
    // projects' ones.
    let limited = app
        .gql(
            &app.admin_key,
            "mutation($p: [ID!]) { createApiKey(input: { name: \"limited\", scopes: [\"webhooks:read\", \"webhooks:write\", \"integrations:read\"], allowedProjectIds: $p }) { key } }",
            json!({ "p": [project] }),
        )
        .await;
    let limited = limited.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let team_wide = app
        .gql(
            &limited,
            CREATE,
            json!({ "input": { "url": ours.url("/x") } }),
        )
        .await;
    assert_eq!(team_wide.code(), "FORBIDDEN");
    let elsewhere = app
        .gql(
            &limited,
            CREATE,
            json!({ "input": { "url": ours.url("/x"), "projectId": other_project } }),
        )
        .await;
    assert_eq!(elsewhere.code(), "NOT_FOUND");
    let seen = app
        .gql(
            &limited,
            "query($id: ID!) { webhookEndpoint(id: $id) { id } }",
            json!({ "id": our_id }),
        )
        .await;
    assert_eq!(
        seen.code(),
        "NOT_FOUND",
        "a team-wide endpoint is beyond a limited key"
    );
    let (own, _) = endpoint(
        &app,
        &limited,
        json!({ "url": ours.url("/p"), "projectId": project }),
    )
    .await;
    assert!(!own.is_empty());

    // Scopes: reading needs webhooks:read, changing webhooks:write.
    let (_, reader) = app.key_with(&["webhooks:read"]).await;
    let refused = app
        .gql(
            &reader,
            CREATE,
            json!({ "input": { "url": ours.url("/y") } }),
        )
        .await;
    assert_eq!(refused.code(), "FORBIDDEN");
    let (_, nothing) = app.key_with(&["integrations:read"]).await;
    let refused = app
        .gql(&nothing, "{ webhookEventTypes { name } }", json!({}))
        .await;
    assert_eq!(refused.code(), "FORBIDDEN");
    app.stop().await;
}

async fn bad_endpoints_are_refused(backend: Backend) {
    let app = app(backend, "100ms").await;
    for (input, says) in [
        (json!({ "url": "ftp://example.com/x" }), "http or https"),
        (json!({ "url": "not a url" }), "url"),
        (
            json!({ "url": "http://user:pw@127.0.0.1/x" }),
            "credentials",
        ),
        (json!({ "url": "http://169.254.169.254/latest" }), "url"),
        (
            json!({ "url": "http://127.0.0.1/x", "eventTypes": ["nope"] }),
            "unknown event type",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "headers": { "webhook-signature": "x" } }),
            "set by the hub",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "headers": { "X-A": 5 } }),
            "string",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "rateLimitPerSecond": 0 }),
            "rateLimitPerSecond",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "integrationIds": ["nope"] }),
            "integration",
        ),
    ] {
        let answer = app
            .gql(&app.admin_key, CREATE, json!({ "input": input }))
            .await;
        assert!(
            matches!(answer.code(), "VALIDATION_FAILED" | "NOT_FOUND"),
            "{input}: {}",
            answer.body
        );
        assert!(
            answer.message().contains(says),
            "{input}: {}",
            answer.message()
        );
    }
    let listed = app
        .gql(
            &app.admin_key,
            "{ webhookEndpoints { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed.data()["webhookEndpoints"]["totalCount"],
        0,
        "nothing half-made"
    );
    app.stop().await;
}

async fn test_events_stats_and_live_updates(backend: Backend) {
    let app = app(backend, "100ms").await;
    let receiver = scripted(vec![(500, None), (200, None)]).await;
    let types = app
        .gql(
            &app.admin_key,
            "{ webhookEventTypes { name description example } }",
            json!({}),
        )
        .await;
    let names: Vec<&str> = types.data()["webhookEventTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"integration.request_failed") && names.contains(&"webhook.test"));
    assert_eq!(
        types.data()["webhookEventTypes"][0]["example"]["type"],
        names[0]
    );

    let (id, _) = endpoint(&app, &app.admin_key, json!({ "url": receiver.url("/s") })).await;
    let mut socket = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {}", app.admin_key) }),
    )
    .await
    .unwrap();
    socket
        .subscribe(
            "1",
            "subscription($id: ID) { webhookDeliveryUpdates(endpointId: $id) { ... on WebhookDelivery { id status lastStatus } } }",
            json!({ "id": id }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    let mut seen = Vec::new();
    while seen
        .last()
        .map(|u: &Value| u["status"] != "DELIVERED")
        .unwrap_or(true)
    {
        let next = socket
            .next_data("1", Duration::from_secs(5))
            .await
            .expect("a delivery update");
        seen.push(next["webhookDeliveryUpdates"].clone());
    }
    let statuses: Vec<(&str, i64)> = seen
        .iter()
        .map(|u| {
            (
                u["status"].as_str().unwrap(),
                u["lastStatus"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [("PENDING", 500), ("DELIVERED", 200)]);

    let stats = app
        .gql(
            &app.admin_key,
            "query($id: ID!) { webhookStats(endpointId: $id) { attempted delivered failed successRate p50LatencyMs p95LatencyMs } }",
            json!({ "id": id }),
        )
        .await;
    let stats = &stats.data()["webhookStats"];
    assert_eq!(stats["attempted"], 2);
    assert_eq!(stats["delivered"], 1);
    assert_eq!(stats["failed"], 0);
    assert_eq!(stats["successRate"], 0.5);
    assert!(stats["p95LatencyMs"].as_i64().unwrap() >= stats["p50LatencyMs"].as_i64().unwrap());
    app.stop().await;
}

async fn webhook_secrets_follow_a_key_rotation(backend: Backend) {
    let app = app(backend, "100ms").await;
    let receiver = scripted(vec![(200, None)]).await;
    let (id, secret) = endpoint(
        &app,
        &app.admin_key,
        json!({ "url": receiver.url("/k"), "headers": { "X-Token": "kept" } }),
    )
    .await;
    let old_keys = app.state.config.encryption_keys.clone().unwrap();
    let new_key = integration_hub::crypto::Keyring::generate_spec("test2");

    // Without the key the secrets are sealed under, the hub does not start.
    let mut new_only = integration_hub::config::Config::clone(&app.state.config);
    new_only.encryption_keys = Some(new_key.clone());
    let refused = integration_hub::app::prepare(new_only.clone()).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("`test1`"), "{message}");

    // Rotate: new key in front, reseal, then the new key alone.
    let mut both = integration_hub::config::Config::clone(&app.state.config);
    both.encryption_keys = Some(format!("{new_key},{old_keys}"));
    let app = app.restart(both).await;
    let resealed = app
        .gql(
            &app.admin_key,
            "mutation { resealCredentials { resealed } }",
            json!({}),
        )
        .await;
    assert_eq!(
        resealed.data()["resealCredentials"]["resealed"],
        2,
        "secret and headers"
    );
    let app = app.restart(new_only).await;
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await
    .data();
    wait_for("the delivery", Duration::from_secs(5), async || {
        receiver.count() >= 1
    })
    .await;
    let delivered = &receiver.requests()[0];
    assert_eq!(
        signed_by(&secret, delivered),
        [true],
        "the same secret signs"
    );
    assert_eq!(delivered.header("x-token"), Some("kept"));
    app.stop().await;
}
