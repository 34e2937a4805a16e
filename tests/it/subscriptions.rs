//! Live logs over WebSocket with a real client, on both subprotocols: authentication in
//! `connection_init`, level filters, order, revocation, limits, team confinement, and the
//! integration and health event streams.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::calls::{EXECUTE, TEST_CONNECTION, register};
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    live_logs_on_both_protocols,
    refused_revoked_limited_and_confined,
    integration_and_health_events,
    jwt_subscription_ends_when_the_token_expires,
);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    TransportWs,
    LegacyWs,
}

struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: Protocol,
}

impl WsClient {
    /// Connects and sends `connection_init`; Err with what the server said if it refuses.
    async fn connect(app: &TestApp, protocol: Protocol, payload: Value) -> Result<Self, String> {
        let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        let name = match protocol {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        };
        request
            .headers_mut()
            .insert("sec-websocket-protocol", name.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| e.to_string())?;
        let mut client = Self { socket, protocol };
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        match client.next(Duration::from_secs(10)).await {
            Some(message) if message["type"] == "connection_ack" => Ok(client),
            other => Err(format!("{other:?}")),
        }
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = match self.protocol {
            Protocol::TransportWs => "subscribe",
            Protocol::LegacyWs => "start",
        };
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } })).await;
    }

    /// The next protocol message (keep-alives answered or skipped); None on close or timeout.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).ok()?;
                    match value["type"].as_str() {
                        Some("ka") | Some("pong") => continue,
                        Some("ping") => {
                            self.send(json!({ "type": "pong" })).await;
                            continue;
                        }
                        _ => return Some(value),
                    }
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The data of the next event for subscription `id`.
    async fn next_data(&mut self, id: &str, wait: Duration) -> Option<Value> {
        let message = self.next(wait).await?;
        let data_type = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::LegacyWs => "data",
        };
        (message["id"] == id && message["type"] == data_type)
            .then(|| message["payload"]["data"].clone())
    }
}

const LIVE_LOGS: &str = "subscription($i: ID, $p: ID, $level: LogLevel) {
    integrationLogs(integrationId: $i, projectId: $p, minLevel: $level) {
        __typename
        ... on RequestLog { path status level actor }
        ... on EventsMissed { count }
    }
}";

fn upstream() -> impl Fn(&crate::support::receiver::Recorded) -> Reply + Send + Sync + 'static {
    |request| match request.path.as_str() {
        "/ok" => Reply::json(200, &json!({ "ok": true })),
        "/missing" => Reply::text(404, "missing"),
        _ => Reply::text(500, "broken"),
    }
}

/// Makes `path` calls until the subscription delivers one (it is then surely live).
async fn until_live(
    app: &TestApp,
    client: &mut WsClient,
    integration: &str,
    id: &str,
    path: &str,
) -> Value {
    for _ in 0..50 {
        app.gql(
            &app.admin_key,
            EXECUTE,
            json!({ "id": integration, "input": { "method": "POST", "path": path } }),
        )
        .await
        .data();
        if let Some(data) = client.next_data(id, Duration::from_millis(300)).await {
            return data;
        }
    }
    panic!("the subscription never delivered");
}

async fn live_logs_on_both_protocols(backend: Backend) {
    let server = Receiver::start(upstream()).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let integration = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": server.url }),
        json!({ "token": "SECRET-live-token" }),
    )
    .await;
    let (_, watcher) = app.key_with(&["logs:subscribe"]).await;

    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        // The key name in the payload is case-insensitive.
        let mut client = WsClient::connect(
            &app,
            protocol,
            json!({ "authorization": format!("Bearer {watcher}") }),
        )
        .await
        .unwrap_or_else(|e| panic!("{protocol:?}: {e}"));
        client
            .subscribe("1", LIVE_LOGS, json!({ "i": integration, "level": "WARN" }))
            .await;
        let first = until_live(&app, &mut client, &integration, "1", "/missing").await;
        assert_eq!(first["integrationLogs"]["level"], "WARN");

        for path in ["/ok", "/missing", "/ok", "/boom", "/missing"] {
            app.gql(
                &app.admin_key,
                EXECUTE,
                json!({ "id": integration, "input": { "method": "POST", "path": path } }),
            )
            .await
            .data();
        }
        let mut received = Vec::new();
        for _ in 0..3 {
            let data = client
                .next_data("1", Duration::from_secs(5))
                .await
                .expect("an event");
            let log = &data["integrationLogs"];
            assert_eq!(log["__typename"], "RequestLog");
            received.push((
                log["path"].as_str().unwrap().to_string(),
                log["status"].as_i64().unwrap(),
            ));
        }
        assert_eq!(
            received,
            [
                ("/missing".to_string(), 404),
                ("/boom".to_string(), 500),
                ("/missing".to_string(), 404)
            ],
            "{protocol:?}: warn and error only, in order"
        );
        assert_eq!(
            client.next_data("1", Duration::from_millis(300)).await,
            None,
            "no info-level events"
        );
    }

    // Project-wide subscription sees every level.
    let mut client = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {watcher}") }),
    )
    .await
    .unwrap();
    client
        .subscribe("p", LIVE_LOGS, json!({ "p": project }))
        .await;
    let data = until_live(&app, &mut client, &integration, "p", "/ok").await;
    assert_eq!(data["integrationLogs"]["level"], "INFO");
    assert!(!data.to_string().contains("SECRET-live-token"));
    app.stop().await;
}

async fn refused_revoked_limited_and_confined(backend: Backend) {
    let server = Receiver::start(upstream()).await;
    let app = TestApp::start_configured(backend, |config| {
        config.max_subscriptions_per_connection = 2
    })
    .await;
    let project = app.create_project(&app.admin_key, "P").await;
    let integration = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": server.url }),
        json!({ "token": "t" }),
    )
    .await;

    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        let (_, no_scope) = app.key_with(&["logs:read"]).await;
        for payload in [
            json!({}),
            json!({ "Authorization": "Bearer ihk_not_a_key" }),
            json!({ "Authorization": format!("Bearer {no_scope}") }),
        ] {
            assert!(
                WsClient::connect(&app, protocol, payload.clone())
                    .await
                    .is_err(),
                "{protocol:?} {payload}"
            );
        }
    }

    // A revoked key's subscription is closed.
    let (key_id, watcher) = app.key_with(&["logs:subscribe"]).await;
    let mut client = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {watcher}") }),
    )
    .await
    .unwrap();
    client
        .subscribe("1", LIVE_LOGS, json!({ "i": integration }))
        .await;
    until_live(&app, &mut client, &integration, "1", "/ok").await;
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": key_id }),
    )
    .await
    .data();
    let mut completed = false;
    for _ in 0..20 {
        match client.next(Duration::from_secs(5)).await {
            Some(message) if message["type"] == "complete" && message["id"] == "1" => {
                completed = true;
                break;
            }
            Some(_) => continue,
            None => {
                completed = true;
                break;
            }
        }
    }
    assert!(completed, "the revoked key's subscription ended");

    // At most two subscriptions per connection; another team's integration is not found.
    let (_, watcher) = app.key_with(&["logs:subscribe"]).await;
    let mut client = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {watcher}") }),
    )
    .await
    .unwrap();
    client
        .subscribe("a", LIVE_LOGS, json!({ "i": integration }))
        .await;
    client
        .subscribe("b", LIVE_LOGS, json!({ "p": project }))
        .await;
    client
        .subscribe("c", LIVE_LOGS, json!({ "i": integration }))
        .await;
    // The three start concurrently: whichever comes third is refused.
    let refused = client
        .next(Duration::from_secs(5))
        .await
        .expect("an answer");
    assert!(
        ["a", "b", "c"].contains(&refused["id"].as_str().unwrap()),
        "{refused}"
    );
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert!(
        refused.to_string().contains("at most 2 subscriptions"),
        "{refused}"
    );
    let ended = client
        .next(Duration::from_secs(5))
        .await
        .expect("the refused one completes");
    assert_eq!(
        (ended["type"].as_str(), ended["id"].as_str()),
        (Some("complete"), refused["id"].as_str())
    );
    assert_eq!(
        client.next(Duration::from_millis(300)).await,
        None,
        "the other two run quietly"
    );

    let (_, other_team) = app.new_team("other").await;
    let (_, foreign_watcher) = {
        let answer = app
            .gql(&other_team, "mutation { createApiKey(input: { name: \"w\", scopes: [\"logs:subscribe\"] }) { key apiKey { id } } }", json!({}))
            .await;
        let data = answer.data()["createApiKey"].clone();
        (
            data["apiKey"]["id"].as_str().unwrap().to_string(),
            data["key"].as_str().unwrap().to_string(),
        )
    };
    let mut foreign = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {foreign_watcher}") }),
    )
    .await
    .unwrap();
    foreign
        .subscribe("x", LIVE_LOGS, json!({ "i": integration }))
        .await;
    let answer = foreign
        .next(Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(
        answer["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{answer}"
    );
    app.stop().await;
}

async fn integration_and_health_events(backend: Backend) {
    let server = Receiver::start(|_| Reply::json(200, &json!({ "login": "bot" }))).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let (_, watcher) = app.key_with(&["logs:subscribe"]).await;
    let mut client = WsClient::connect(
        &app,
        Protocol::LegacyWs,
        json!({ "Authorization": format!("Bearer {watcher}") }),
    )
    .await
    .unwrap();
    client
        .subscribe(
            "events",
            "subscription($p: ID!) { integrationEvents(projectId: $p) { ... on IntegrationEvent { kind name providerKey } } }",
            json!({ "p": project }),
        )
        .await;
    client
        .subscribe(
            "health",
            "subscription($p: ID!) { integrationHealthChanged(projectId: $p) { ... on HealthChange { previous status } } }",
            json!({ "p": project }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": server.url }),
        json!({ "token": "t" }),
    )
    .await;
    let created = client
        .next_data("events", Duration::from_secs(5))
        .await
        .expect("created event");
    assert_eq!(
        created["integrationEvents"],
        json!({ "kind": "CREATED", "name": "gh", "providerKey": "github" })
    );
    app.gql(&app.admin_key, TEST_CONNECTION, json!({ "id": id }))
        .await
        .data();
    let changed = client
        .next_data("health", Duration::from_secs(5))
        .await
        .expect("health event");
    assert_eq!(
        changed["integrationHealthChanged"],
        json!({ "previous": "PENDING", "status": "CONNECTED" })
    );
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { deleteIntegration(id: $id) }",
        json!({ "id": id }),
    )
    .await
    .data();
    let deleted = client
        .next_data("events", Duration::from_secs(5))
        .await
        .expect("deleted event");
    assert_eq!(deleted["integrationEvents"]["kind"], "DELETED");
    app.stop().await;
}

async fn jwt_subscription_ends_when_the_token_expires(backend: Backend) {
    const SECRET: &str = "a subscription secret of 32+ bytes!!";
    let app = TestApp::start_configured(backend, |config| {
        config.jwt_hs256_secret = Some(SECRET.into());
        config.jwt_issuer = Some("https://idp.test".into());
        config.jwt_audience = Some("hub".into());
        config.jwt_leeway_secs = 0;
    })
    .await;
    let project = app.create_project(&app.admin_key, "P").await;
    let claims = json!({
        "sub": "viewer-1", "iss": "https://idp.test", "aud": "hub", "team_id": app.team_id,
        "roles": ["viewer"], "exp": chrono::Utc::now().timestamp() + 2,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut client = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {token}") }),
    )
    .await
    .expect("a viewer may subscribe");
    client
        .subscribe("1", LIVE_LOGS, json!({ "p": project }))
        .await;
    let started = std::time::Instant::now();
    let ended = client.next(Duration::from_secs(10)).await;
    assert!(
        ended.is_none() || (ended.as_ref().unwrap()["type"] == "complete"),
        "{ended:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "ended at the token's expiry"
    );
    app.stop().await;
}
