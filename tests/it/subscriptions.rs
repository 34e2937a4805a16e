//! Live logs over WebSocket with a real client, on both subprotocols: authentication in
//! `connection_init`, level filters, order, revocation, limits, team confinement, and the
//! integration and health event streams.

use std::sync::Arc;
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
    a_stopping_replica_hands_over,
    live_logs_on_both_protocols,
    refused_revoked_limited_and_confined,
    integration_and_health_events,
    jwt_subscription_ends_when_the_token_expires,
    subscribers_asking_the_same_share_one_execution,
    a_subscriber_that_stops_reading_is_told_what_it_missed,
    protocol_errors_close_with_their_codes,
    guessed_keys_are_throttled_like_on_http,
    every_error_over_the_socket_has_a_code,
);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Protocol {
    TransportWs,
    LegacyWs,
}

pub(crate) struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: Protocol,
}

impl WsClient {
    /// Connects and sends `connection_init`; Err with what the server said if it refuses.
    pub(crate) async fn connect(
        app: &TestApp,
        protocol: Protocol,
        payload: Value,
    ) -> Result<Self, String> {
        Self::connect_to(&app.base, protocol, payload).await
    }

    /// As `connect`, to the server at `base` (`http://host:port`).
    pub(crate) async fn connect_to(
        base: &str,
        protocol: Protocol,
        payload: Value,
    ) -> Result<Self, String> {
        let url = format!("{}/graphql", base.replace("http://", "ws://"));
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

    /// Opens a socket without `connection_init`.
    async fn open(app: &TestApp, protocol: Protocol) -> Self {
        let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        let name = match protocol {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        };
        request
            .headers_mut()
            .insert("sec-websocket-protocol", name.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Self { socket, protocol }
    }

    /// Reads until the server closes; its close code (None if it never does).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
    }

    pub(crate) async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
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
    pub(crate) async fn next_data(&mut self, id: &str, wait: Duration) -> Option<Value> {
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

/// A project, and a GitHub integration in it that calls `base_url` with `token`.
async fn project_with_github(app: &TestApp, base_url: &str, token: &str) -> (String, String) {
    let project = app.create_project(&app.admin_key, "P").await;
    let integration = register(
        app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": base_url }),
        json!({ "token": token }),
    )
    .await;
    (project, integration)
}

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
    let (project, integration) = project_with_github(&app, &server.url, "SECRET-live-token").await;
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
    let (project, integration) = project_with_github(&app, &server.url, "t").await;

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
    // It ends with an `error` saying UNAUTHENTICATED (not a plain `complete`), and the
    // connection closes with 4403.
    let ended = loop {
        match client.next(Duration::from_secs(5)).await {
            Some(message) if message["id"] == "1" && message["type"] != "next" => break message,
            Some(_) => continue,
            None => panic!("the revoked key's subscription did not end with an error"),
        }
    };
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(
        ended["payload"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{ended}"
    );
    assert_eq!(client.close_code().await, Some(4403));

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
    // Refused before it runs: the protocol's `error` message.
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert!(
        refused.to_string().contains("at most 2 subscriptions"),
        "{refused}"
    );
    // `error` ends the operation: no `complete` follows, and the other two run quietly.
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
    // The integration's logs are watched until it is deleted; then that subscription completes.
    client
        .subscribe("logs", LIVE_LOGS, json!({ "i": id }))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { deleteIntegration(id: $id) }",
        json!({ "id": id }),
    )
    .await
    .data();
    let (mut deleted, mut logs_completed) = (None, false);
    while deleted.is_none() || !logs_completed {
        let message = client
            .next(Duration::from_secs(5))
            .await
            .expect("the deletion's event and the logs' end");
        match (message["id"].as_str(), message["type"].as_str()) {
            (Some("events"), Some("data")) => deleted = Some(message["payload"]["data"].clone()),
            (Some("logs"), Some("complete")) => logs_completed = true,
            _ => {}
        }
    }
    assert_eq!(deleted.unwrap()["integrationEvents"]["kind"], "DELETED");
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

/// Polls until the hub runs `groups` distinct subscriptions for `members` subscribers.
async fn until_running(app: &TestApp, groups: usize, members: usize) {
    for _ in 0..100 {
        // Each execution listens to the event bus once its start (the scope check) is done.
        if app.fanout_counts() == (groups, members) && app.state.events.listeners() == groups {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {groups} executions for {members} subscribers, the hub runs {:?}",
        app.fanout_counts()
    );
}

async fn subscribers_asking_the_same_share_one_execution(backend: Backend) {
    let server = Receiver::start(upstream()).await;
    let app = TestApp::start(backend).await;
    let (project, integration) = project_with_github(&app, &server.url, "t").await;
    let (_, first_key) = app.key_with(&["logs:subscribe"]).await;
    let (_, second_key) = app.key_with(&["logs:subscribe"]).await;
    let mut clients = Vec::new();
    // Three alike, one with other variables, one with another key: three executions.
    for (key, variables) in [
        (&first_key, json!({ "i": integration })),
        (&first_key, json!({ "i": integration })),
        (&first_key, json!({ "i": integration })),
        (&first_key, json!({ "p": project })),
        (&second_key, json!({ "i": integration })),
    ] {
        let protocol = if clients.len() % 2 == 0 {
            Protocol::TransportWs
        } else {
            Protocol::LegacyWs
        };
        let mut client = WsClient::connect(
            &app,
            protocol,
            json!({ "Authorization": format!("Bearer {key}") }),
        )
        .await
        .unwrap();
        client.subscribe("s", LIVE_LOGS, variables).await;
        clients.push(client);
    }
    until_running(&app, 3, 5).await;

    app.gql(
        &app.admin_key,
        EXECUTE,
        json!({ "id": integration, "input": { "method": "GET", "path": "/ok" } }),
    )
    .await
    .data();
    for client in &mut clients {
        let data = client
            .next_data("s", Duration::from_secs(5))
            .await
            .expect("every subscriber receives the event");
        assert_eq!(data["integrationLogs"]["path"], "/ok");
        assert_eq!(data["integrationLogs"]["__typename"], "RequestLog");
    }

    // Leaving: by `complete`, and by hanging up; the last one out ends the execution.
    let kind = match clients[0].protocol {
        Protocol::TransportWs => "complete",
        Protocol::LegacyWs => "stop",
    };
    clients[0].send(json!({ "id": "s", "type": kind })).await;
    until_running(&app, 3, 4).await;
    drop(clients.drain(1..3));
    until_running(&app, 2, 2).await;
    // A new subscriber with the same key and query starts it again.
    let mut again = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {first_key}") }),
    )
    .await
    .unwrap();
    again
        .subscribe("s", LIVE_LOGS, json!({ "i": integration }))
        .await;
    until_running(&app, 3, 3).await;
    drop(clients);
    drop(again);
    until_running(&app, 0, 0).await;
    app.stop().await;
}

/// Publishes a request log of `integration` on the hub's bus, as a call through it would.
fn publish_log(app: &TestApp, project: &str, integration: &str, path: String) {
    use integration_hub::events::{Event, EventKind};
    let row = app.log_row(project, integration, &path, integration_hub::db::now());
    app.state.events.publish(Event {
        kind: EventKind::IntegrationRequest,
        team_id: app.team_id.clone(),
        project_id: Some(project.to_string()),
        subject_id: integration.to_string(),
        payload: Value::Null,
        at: row.created_at,
        request_log: Some(Arc::new(row)),
    });
}

/// Reads subscription `id` until `total` events are accounted for (received or reported
/// missed); returns the indexes received, in order, and the sum of the missed notices.
async fn account(client: &mut WsClient, id: &str, total: usize) -> (Vec<usize>, usize, usize) {
    let (mut received, mut missed, mut notices) = (Vec::new(), 0, 0);
    while received.len() + missed < total {
        let Some(data) = client.next_data(id, Duration::from_secs(20)).await else {
            break;
        };
        let item = &data["integrationLogs"];
        if item["__typename"] == "EventsMissed" {
            missed += item["count"].as_u64().unwrap() as usize;
            notices += 1;
        } else {
            let path = item["path"].as_str().unwrap();
            let index = path.split('/').nth(2).unwrap().parse().unwrap();
            received.push(index);
        }
    }
    (received, missed, notices)
}

async fn a_subscriber_that_stops_reading_is_told_what_it_missed(backend: Backend) {
    // The bus holds every event (the shared execution never misses one); each connection
    // queues at most 16 frames.
    let app = TestApp::start_configured(backend, |config| {
        config.event_buffer = 100_000;
        config.ws_send_buffer = 16;
    })
    .await;
    let project = app.create_project(&app.admin_key, "P").await;
    let integration = app
        .register_github(&app.admin_key, &project, "gh", "t")
        .await;
    let (_, key) = app.key_with(&["logs:subscribe"]).await;
    let auth = json!({ "Authorization": format!("Bearer {key}") });
    let mut reader = WsClient::connect(&app, Protocol::TransportWs, auth.clone())
        .await
        .unwrap();
    let mut sleeper = WsClient::connect(&app, Protocol::TransportWs, auth)
        .await
        .unwrap();
    let variables = json!({ "i": integration });
    reader.subscribe("r", LIVE_LOGS, variables.clone()).await;
    sleeper.subscribe("s", LIVE_LOGS, variables).await;
    until_running(&app, 1, 2).await;

    // 500 events of 24 KB: far more than the sleeper's socket buffers and its queue hold.
    const TOTAL: usize = 500;
    let reading = tokio::spawn(async move {
        let result = account(&mut reader, "r", TOTAL).await;
        (reader, result)
    });
    let padding = "x".repeat(24_000);
    for index in 0..TOTAL {
        publish_log(
            &app,
            &project,
            &integration,
            format!("/burst/{index}/{padding}"),
        );
        if index % 8 == 7 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The reader may fall behind too (a debug build parses slowly): then it is told as well.
    let (mut reader, (received, missed, notices)) = reading.await.unwrap();
    assert_eq!(
        received.len() + missed,
        TOTAL,
        "the reader accounts for every event ({missed} missed in {notices} notices)"
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");

    // The sleeper wakes up: what it gets plus what it is told it missed is everything.
    let (received, missed, notices) = account(&mut sleeper, "s", TOTAL).await;
    assert!(
        missed > 0 && notices > 0,
        "the sleeper was told it missed events"
    );
    assert_eq!(
        received.len() + missed,
        TOTAL,
        "received {} + missed {missed}",
        received.len()
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order");

    // Caught up, it receives events again, like the reader.
    publish_log(&app, &project, &integration, format!("/burst/{TOTAL}/"));
    for (client, id) in [(&mut reader, "r"), (&mut sleeper, "s")] {
        let (received, _, _) = account(client, id, 1).await;
        assert_eq!(received, vec![TOTAL], "subscription {id}");
    }
    app.stop().await;
}

async fn protocol_errors_close_with_their_codes(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| config.ws_keepalive_secs = 1).await;
    let auth = json!({ "Authorization": format!("Bearer {}", app.admin_key) });
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { integrationEvents(projectId: \"x\") { __typename } }" } });

    // A subprotocol is required.
    let url = format!("{}/graphql", app.base.replace("http://", "ws://"));
    let refused = tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await;
    assert!(refused.is_err(), "no subprotocol offered");

    // subscribe before connection_ack: 4401.
    let mut client = WsClient::open(&app, Protocol::TransportWs).await;
    client.send(subscribe.clone()).await;
    assert_eq!(client.close_code().await, Some(4401));

    // Not a protocol message: 4400.
    let mut client = WsClient::open(&app, Protocol::TransportWs).await;
    client
        .socket
        .send(Message::text("{ not json"))
        .await
        .unwrap();
    assert_eq!(client.close_code().await, Some(4400));
    // The legacy protocol's `start` is not a graphql-transport-ws message: 4400.
    let mut client = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {}", app.admin_key) }),
    )
    .await
    .unwrap();
    client
        .send(json!({ "id": "1", "type": "start", "payload": { "query": "{ __typename }" } }))
        .await;
    assert_eq!(client.close_code().await, Some(4400));

    // A refused credential: 4403.
    let mut client = WsClient::open(&app, Protocol::TransportWs).await;
    client
        .send(
            json!({ "type": "connection_init", "payload": { "Authorization": "Bearer ihk_nope" } }),
        )
        .await;
    assert_eq!(client.close_code().await, Some(4403));

    // A second connection_init: 4429.
    let mut client = WsClient::connect(&app, Protocol::TransportWs, auth.clone())
        .await
        .unwrap();
    client
        .send(json!({ "type": "connection_init", "payload": auth }))
        .await;
    assert_eq!(client.close_code().await, Some(4429));

    // An id already in use: 4409.
    let project = app.create_project(&app.admin_key, "P").await;
    let mut client = WsClient::connect(&app, Protocol::TransportWs, auth.clone())
        .await
        .unwrap();
    let live = json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription($p: ID!) { integrationEvents(projectId: $p) { __typename } }", "variables": { "p": project } } });
    client.send(live.clone()).await;
    client.send(live).await;
    assert_eq!(client.close_code().await, Some(4409));

    // Queries run over the socket too: one result, then complete.
    let mut client = WsClient::connect(&app, Protocol::LegacyWs, auth.clone())
        .await
        .unwrap();
    client
        .send(
            json!({ "id": "q", "type": "start", "payload": { "query": "{ projects { name } }" } }),
        )
        .await;
    let data = client
        .next_data("q", Duration::from_secs(5))
        .await
        .expect("the query's result");
    assert_eq!(data["projects"][0]["name"], "P", "{data}");
    let done = client.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (done["type"].as_str(), done["id"].as_str()),
        (Some("complete"), Some("q"))
    );
    // ...and mutations, audited like any other.
    client
        .send(json!({ "id": "m", "type": "start", "payload": { "query": "mutation { createProject(input: { name: \"over ws\" }) { id } }" } }))
        .await;
    let created = client
        .next_data("m", Duration::from_secs(5))
        .await
        .expect("the mutation's result");
    let created = created["createProject"]["id"].as_str().unwrap().to_string();
    let audit = app
        .gql(
            &app.admin_key,
            "{ auditLog(filter: { action: \"createProject\" }) { edges { node { targetId outcome } } } }",
            json!({}),
        )
        .await;
    assert!(
        audit.data()["auditLog"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"]["targetId"] == created.as_str() && e["node"]["outcome"] == "SUCCESS"),
        "{:?}",
        audit.data()
    );

    // A client that answers nothing, not even the pings, is closed after two periods (1 s
    // each): the close is there to read at 2.6 s (reading earlier would answer the pings).
    let mut silent = WsClient::connect(&app, Protocol::TransportWs, auth)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    assert_eq!(silent.close_code().await, Some(3008));
    app.stop().await;
}

/// Bad credentials in `connection_init` draw from the address's anonymous quota, as bad HTTP
/// credentials do; once it is spent the socket is closed 4429 before any key is looked up,
/// and HTTP from that address is throttled too.
async fn guessed_keys_are_throttled_like_on_http(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.rate_limit_anonymous = "5/1h".into();
    })
    .await;
    let (_, unused) = app.key_with(&["logs:subscribe"]).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let protocol = if i % 2 == 0 {
            Protocol::TransportWs
        } else {
            Protocol::LegacyWs
        };
        let mut client = WsClient::open(&app, protocol).await;
        let guess = format!("ihk_guess{i:011}_{}", "x".repeat(43));
        let payload = if i == 3 {
            json!({})
        } else {
            json!({ "Authorization": format!("Bearer {guess}") })
        };
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        codes.push(client.close_code().await);
    }
    assert_eq!(
        codes,
        [4403, 4403, 4403, 4403, 4403, 4429, 4429, 4429].map(Some),
        "five failures spend the quota (a missing credential counts too)"
    );
    let http = app.gql("ihk_bad", "{ __typename }", json!({})).await;
    assert_eq!((http.status, http.code()), (429, "RATE_LIMITED"));
    assert_eq!(app.gql("", "{ __typename }", json!({})).await.status, 429);
    // A throttled address is refused before a credential is looked up, valid or not; only
    // one this replica already verified (held in memory, so no guess) still passes.
    let mut client = WsClient::open(&app, Protocol::TransportWs).await;
    client
        .send(json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {unused}") } }))
        .await;
    assert_eq!(client.close_code().await, Some(4429));
    assert_eq!(
        app.gql(&unused, "{ __typename }", json!({})).await.status,
        429
    );
    app.gql(&app.admin_key, "{ projects { id } }", json!({}))
        .await
        .data();
    app.stop().await;
}

/// Errors async-graphql raises itself (undefined variables, values that do not fit) carry
/// `extensions.code` over the socket too, for subscriptions and queries alike.
async fn every_error_over_the_socket_has_a_code(backend: Backend) {
    let app = TestApp::start(backend).await;
    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        let mut client = WsClient::connect(
            &app,
            protocol,
            json!({ "Authorization": format!("Bearer {}", app.admin_key) }),
        )
        .await
        .unwrap();
        // (q2's bad DateTime and q3's Int overflow in literal arguments are found while the
        // field runs: execution errors, `next`.)
        for (id, query, variables) in [
            (
                "s1",
                "subscription { integrationLogs(integrationId: $nope) { __typename } }",
                json!({}),
            ),
            (
                "s2",
                "subscription($n: Int) { integrationLogs(integrationId: \"x\") { __typename } }",
                json!({ "n": 99999999999u64 }),
            ),
            ("q1", "query { project(id: $nope) { id } }", json!({})),
            (
                "q2",
                "query($t: DateTime) { auditLog(filter: { since: $t }) { edges { cursor } } }",
                json!({ "t": "not a date" }),
            ),
            (
                "q3",
                "query { integrations(projectId: \"x\", first: 99999999999) { edges { cursor } } }",
                json!({}),
            ),
        ] {
            client.subscribe(id, query, variables).await;
            let message = loop {
                let message = client.next(Duration::from_secs(10)).await.unwrap();
                if message["id"] == id && message["type"] != "complete" {
                    break message;
                }
            };
            // A document that does not validate is refused with the protocol's `error`
            // message (a list of errors; the legacy protocol's first error).
            let expected = match (["q2", "q3"].contains(&id), protocol) {
                (false, _) => "error",
                (true, Protocol::TransportWs) => "next",
                (true, Protocol::LegacyWs) => "data",
            };
            assert_eq!(message["type"], expected, "{protocol:?} {id}: {message}");
            let errors = match &message["payload"] {
                Value::Array(errors) => errors.clone(),
                payload if payload["errors"].is_array() => {
                    payload["errors"].as_array().cloned().unwrap_or_default()
                }
                payload => vec![payload.clone()],
            };
            assert!(!errors.is_empty(), "{protocol:?} {id}: {message}");
            for error in &errors {
                assert!(
                    error["extensions"]["code"].is_string(),
                    "{protocol:?} {id}: {message}"
                );
            }
        }
    }
    app.stop().await;
}

/// When a replica begins to stop, `/readyz` turns false first (a load balancer sends new
/// clients elsewhere) and every WebSocket is closed with 1012 (service restart: its client
/// reconnects, to another replica), while plain requests are still answered until the stop.
async fn a_stopping_replica_hands_over(backend: Backend) {
    let app = TestApp::start(backend).await;
    let auth = json!({ "Authorization": format!("Bearer {}", app.admin_key) });
    let mut transport = WsClient::connect(&app, Protocol::TransportWs, auth.clone())
        .await
        .unwrap();
    let mut legacy = WsClient::connect(&app, Protocol::LegacyWs, auth)
        .await
        .unwrap();
    let ready = |app: &TestApp| {
        let request = app.client.get(format!("{}/readyz", app.base));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(ready(&app).await.0, 200);
    app.state.going_away.send_replace(true);
    assert_eq!(transport.close_code().await, Some(1012));
    assert_eq!(legacy.close_code().await, Some(1012));
    assert_eq!(ready(&app).await, (503, "stopping".to_string()));
    app.gql(&app.admin_key, "{ viewer { kind } }", json!({}))
        .await
        .data();
    app.stop().await;
}
