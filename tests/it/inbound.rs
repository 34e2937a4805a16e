//! Inbound webhooks end to end: providers' pushes signed here the way each provider signs
//! (written from their documentation, not the hub's code), over real HTTP.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(
    github_pushes_are_verified_stored_once_and_forwarded,
    slack_gitlab_and_generic_are_verified_their_way,
    a_push_starts_the_syncs_that_run_on_it,
);

const ENABLE: &str = "mutation($id: ID!, $secret: String) {
    enableInboundWebhook(integrationId: $id, secret: $secret) { url secret verification } }";

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

pub(crate) async fn register(
    app: &TestApp,
    project: &str,
    provider: &str,
    config: Value,
    credentials: Value,
) -> String {
    let answer = app
        .gql(
            &app.admin_key,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": provider,
                "name": format!("{provider} {}", uuid::Uuid::new_v4()),
                "config": config, "credentials": credentials } }),
        )
        .await;
    answer.data()["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) async fn enable(
    app: &TestApp,
    integration: &str,
    secret: Option<&str>,
) -> (String, String) {
    let answer = app
        .gql(
            &app.admin_key,
            ENABLE,
            json!({ "id": integration, "secret": secret }),
        )
        .await;
    let hook = &answer.data()["enableInboundWebhook"];
    (
        hook["url"].as_str().unwrap().to_string(),
        hook["secret"].as_str().unwrap().to_string(),
    )
}

pub(crate) async fn post(url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn events(app: &TestApp, integration: &str) -> Vec<Value> {
    let answer = app
        .gql(
            &app.admin_key,
            "query($id: ID!) { inboundWebhookEvents(integrationId: $id) { totalCount nodes { eventType deliveryId provider payload } } }",
            json!({ "id": integration }),
        )
        .await;
    answer.data()["inboundWebhookEvents"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn github_headers(
    secret: &str,
    body: &[u8],
    delivery: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", "push".into()),
        ("x-github-delivery", delivery.into()),
        ("content-type", "application/json".into()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(mac(secret.as_bytes(), &[body]))),
        ),
    ]
}

async fn github_pushes_are_verified_stored_once_and_forwarded(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.webhook_retry_schedule = "100ms".into();
        config.webhook_poll_ms = 50;
    })
    .await;
    let receiver = Receiver::start(|_| Reply::text(200, "ok")).await;
    let project = app.create_project(&app.admin_key, "p").await;
    let github = register(&app, &project, "github", json!({}), json!({ "token": "t" })).await;
    app.gql(
        &app.admin_key,
        "mutation($url: String!) { createWebhookEndpoint(input: { url: $url, eventTypes: [\"webhook.received\"] }) { id } }",
        json!({ "url": receiver.url("/out") }),
    )
    .await
    .data();
    let (url, secret) = enable(&app, &github, None).await;
    assert!(
        url.starts_with(&app.base) && url.contains("/hooks/"),
        "{url}"
    );
    let body = br#"{"ref":"refs/heads/main","commits":[]}"#;

    // A forged or unsigned push is refused and stores nothing.
    let mut forged = github_headers("not-the-secret", body, "d-0");
    let (status, _) = post(&url, &forged, body).await;
    assert_eq!(status, 401);
    forged.retain(|(name, _)| *name != "x-hub-signature-256");
    assert_eq!(post(&url, &forged, body).await.0, 401);
    assert_eq!(
        post(
            &format!("{url}x"),
            &github_headers(&secret, body, "d-0"),
            body
        )
        .await
        .0,
        404
    );
    assert!(events(&app, &github).await.is_empty());

    // Signed: accepted at once, stored once per delivery id.
    let signed = github_headers(&secret, body, "d-1");
    assert_eq!(post(&url, &signed, body).await.0, 202);
    let (status, text) = post(&url, &signed, body).await;
    assert_eq!(status, 200);
    assert!(text.contains("duplicate"));
    let stored = events(&app, &github).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["eventType"], "push");
    assert_eq!(stored[0]["deliveryId"], "d-1");
    assert_eq!(stored[0]["payload"]["ref"], "refs/heads/main");

    // Forwarded to outbound endpoints as webhook.received.
    let until = Instant::now() + Duration::from_secs(5);
    while receiver.count() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out: Value = serde_json::from_slice(&receiver.requests()[0].body).unwrap();
    assert_eq!(out["type"], "webhook.received");
    assert_eq!(out["data"]["eventType"], "push");
    assert_eq!(out["data"]["deliveryId"], "d-1");
    assert_eq!(out["data"]["payload"]["ref"], "refs/heads/main");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.count(), 1, "the duplicate was not forwarded");

    // Too large: 413 before it is read.
    let big = vec![b'x'; 1024 * 1024 + 1];
    assert_eq!(
        post(&url, &github_headers(&secret, &big, "d-2"), &big)
            .await
            .0,
        413
    );

    // Disabled: the URL is gone.
    let disabled = app
        .gql(
            &app.admin_key,
            "mutation($id: ID!) { disableInboundWebhook(integrationId: $id) }",
            json!({ "id": github }),
        )
        .await;
    assert_eq!(disabled.data()["disableInboundWebhook"], true);
    assert_eq!(
        post(&url, &github_headers(&secret, body, "d-3"), body)
            .await
            .0,
        404
    );

    // Another team cannot open or read this integration's hook.
    let (_, other) = app.new_team("other").await;
    let refused = app.gql(&other, ENABLE, json!({ "id": github })).await;
    assert_eq!(refused.code(), "NOT_FOUND");
    app.stop().await;
}

async fn slack_gitlab_and_generic_are_verified_their_way(backend: Backend) {
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "p").await;

    // Slack: the app's signing secret is given to the hub; url_verification is answered.
    let slack = register(
        &app,
        &project,
        "slack",
        json!({}),
        json!({ "botToken": "xoxb-1" }),
    )
    .await;
    let signing = "8f742231b10e8888abcd99yyyzzz85a5";
    let (url, secret) = enable(&app, &slack, Some(signing)).await;
    assert_eq!(secret, signing);
    let slack_post = async |body: &[u8], at: i64, key: &str| {
        let signature = format!(
            "v0={}",
            hex::encode(mac(key.as_bytes(), &[format!("v0:{at}:").as_bytes(), body]))
        );
        post(
            &url,
            &[
                ("x-slack-request-timestamp", at.to_string()),
                ("x-slack-signature", signature),
            ],
            body,
        )
        .await
    };
    let now = chrono::Utc::now().timestamp();
    let challenge = br#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#;
    let (status, text) = slack_post(challenge, now, signing).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    );
    let event =
        br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","text":"hi"}}"#;
    assert_eq!(
        slack_post(event, now - 600, signing).await.0,
        401,
        "a replayed old request"
    );
    assert_eq!(
        slack_post(event, now, "wrong-secret-wrong-secret").await.0,
        401
    );
    assert_eq!(slack_post(event, now, signing).await.0, 202);
    let stored = events(&app, &slack).await;
    assert_eq!(
        (
            stored[0]["eventType"].as_str(),
            stored[0]["deliveryId"].as_str()
        ),
        (Some("message"), Some("Ev1"))
    );

    // GitLab: the secret token comes back in X-Gitlab-Token.
    let gitlab = register(
        &app,
        &project,
        "gitlab",
        json!({}),
        json!({ "token": "glpat" }),
    )
    .await;
    let (url, secret) = enable(&app, &gitlab, None).await;
    let body = br#"{"object_kind":"push"}"#;
    let headers = |token: &str| {
        vec![
            ("x-gitlab-token", token.to_string()),
            ("x-gitlab-event", "Push Hook".to_string()),
            ("x-gitlab-event-uuid", "uuid-1".to_string()),
        ]
    };
    assert_eq!(post(&url, &headers("nope"), body).await.0, 401);
    assert_eq!(post(&url, &headers(&secret), body).await.0, 202);
    assert_eq!(events(&app, &gitlab).await[0]["eventType"], "Push Hook");

    // Azure DevOps: basic authentication with the secret as the password.
    let azure = register(
        &app,
        &project,
        "azure_devops",
        json!({ "organization": "acme" }),
        json!({ "personalAccessToken": "pat" }),
    )
    .await;
    let (url, secret) = enable(&app, &azure, None).await;
    let body = br#"{"id":"azure-1","eventType":"workitem.updated"}"#;
    let basic = |password: &str| {
        vec![(
            "authorization",
            format!("Basic {}", B64.encode(format!("hub:{password}"))),
        )]
    };
    assert_eq!(post(&url, &basic("wrong"), body).await.0, 401);
    assert_eq!(post(&url, &[], body).await.0, 401);
    assert_eq!(post(&url, &basic(&secret), body).await.0, 202);
    let stored = events(&app, &azure).await;
    assert_eq!(
        (
            stored[0]["eventType"].as_str(),
            stored[0]["deliveryId"].as_str()
        ),
        (Some("workitem.updated"), Some("azure-1"))
    );

    // Generic: Standard Webhooks, signed here from the spec.
    let generic = register(
        &app,
        &project,
        "generic_rest",
        json!({ "baseUrl": "http://127.0.0.1:9" }),
        json!({}),
    )
    .await;
    let (url, secret) = enable(&app, &generic, None).await;
    assert!(secret.starts_with("whsec_"));
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let body = br#"{"type":"order.created","data":{"id":7}}"#;
    let at = chrono::Utc::now().timestamp().to_string();
    let signature = format!(
        "v1,{}",
        B64.encode(mac(&key, &[b"msg_1.", at.as_bytes(), b".", body]))
    );
    let standard = |signature: String| {
        vec![
            ("webhook-id", "msg_1".to_string()),
            ("webhook-timestamp", at.clone()),
            ("webhook-signature", signature),
        ]
    };
    assert_eq!(post(&url, &standard("v1,AAAA".into()), body).await.0, 401);
    assert_eq!(
        post(&url, &standard(format!("v1,bogus {signature}")), body)
            .await
            .0,
        202
    );
    let stored = events(&app, &generic).await;
    assert_eq!(
        (
            stored[0]["eventType"].as_str(),
            stored[0]["deliveryId"].as_str()
        ),
        (Some("order.created"), Some("msg_1"))
    );
    app.stop().await;
}

async fn a_push_starts_the_syncs_that_run_on_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let source =
        Receiver::start(|_| Reply::json(200, &json!([{ "key": "a" }, { "key": "b" }]))).await;
    let target = Receiver::start(|_| Reply::json(201, &json!({}))).await;
    let project = app.create_project(&app.admin_key, "p").await;
    let from = register(
        &app,
        &project,
        "generic_rest",
        json!({ "baseUrl": source.url }),
        json!({}),
    )
    .await;
    let to = register(
        &app,
        &project,
        "generic_rest",
        json!({ "baseUrl": target.url }),
        json!({}),
    )
    .await;
    let created = app
        .gql(
            &app.admin_key,
            "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id runOnWebhook } }",
            json!({ "input": { "projectId": project, "name": "s", "sourceIntegrationId": from,
                "targetIntegrationId": to, "sourceRead": { "path": "/items" },
                "targetWrite": { "createPath": "/items" }, "sourceKey": "key", "targetKey": "key",
                "mappings": [{ "target": "key", "source": "key" }],
                "runOnWebhook": ["order.created"] } }),
        )
        .await;
    assert_eq!(
        created.data()["createSyncConfig"]["runOnWebhook"],
        json!(["order.created"])
    );
    let config = created.data()["createSyncConfig"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (url, secret) = enable(&app, &from, None).await;
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let push = async |id: &str, kind: &str| {
        let body = format!(r#"{{"type":"{kind}"}}"#);
        let at = chrono::Utc::now().timestamp().to_string();
        let signed = format!("{id}.{at}.{body}");
        let signature = format!("v1,{}", B64.encode(mac(&key, &[signed.as_bytes()])));
        post(
            &url,
            &[
                ("webhook-id", id.to_string()),
                ("webhook-timestamp", at),
                ("webhook-signature", signature),
            ],
            body.as_bytes(),
        )
        .await
        .0
    };
    let runs = async || {
        app.gql(
            &app.admin_key,
            "query($id: ID!) { syncRuns(configId: $id) { nodes { status trigger } } }",
            json!({ "id": config }),
        )
        .await
        .data()["syncRuns"]["nodes"]
            .as_array()
            .cloned()
            .unwrap()
    };
    assert_eq!(push("msg_other", "order.deleted").await, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(runs().await.is_empty(), "another event type starts nothing");
    assert_eq!(push("msg_go", "order.created").await, 202);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let list = runs().await;
        if list.first().is_some_and(|r| r["status"] == "SUCCEEDED") {
            assert_eq!(list.len(), 1);
            assert_eq!(list[0]["trigger"], "webhook");
            break;
        }
        assert!(Instant::now() < until, "the run did not finish: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        target.count(),
        2,
        "both records written by the run the push started"
    );
    app.stop().await;
}
