//! Several replicas on one PostgreSQL database (PostgreSQL only: with SQLite the hub is one
//! process). Replica B is a second server started in this test process on A's database.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::calls::{EXECUTE, register};
use crate::subscriptions::{Protocol, WsClient};
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

async fn post(app: &TestApp, url: &str, key: &str, query: &str, variables: Value) -> Value {
    app.client
        .post(url)
        .bearer_auth(key)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `check` holds on B's answer, at most `within`; how long it took.
async fn until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A key revoked on A is refused on B, and an integration disabled on A refuses calls on B,
/// within a second, although B cached both (cache periods of 5 minutes here): A's change
/// reaches B through PostgreSQL's NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_other_replicas_within_a_second() {
    let app = TestApp::start_configured(Backend::Postgres, |config| {
        config.credential_cache_secs = 300;
        config.integration_cache_secs = 300;
    })
    .await;
    let b = app.start_replica().await;
    let on_b = format!("http://{}/graphql", b.addr);

    // A key made on A, used on B (B caches it), revoked on A.
    let created = app
        .gql(
            &app.admin_key,
            "mutation { createApiKey(input: { name: \"ci\", scopes: [\"integrations:read\"] }) { key apiKey { id } } }",
            json!({}),
        )
        .await;
    let key = created.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let key_id = created.data()["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let projects = "{ projects { id } }";
    let used = post(&app, &on_b, &key, projects, json!({})).await;
    assert!(used["data"]["projects"].is_array(), "{used}");
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": key_id }),
    )
    .await
    .data();
    let refused = until(Duration::from_secs(1), || async {
        let answer = post(&app, &on_b, &key, projects, json!({})).await;
        answer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    })
    .await;
    assert!(refused.is_some(), "B still takes the revoked key after 1 s");

    // An integration called through B (B caches its call target), disabled on A.
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let project = app.create_project(&app.admin_key, "replicas").await;
    let integration = register(
        &app,
        &project,
        "generic_rest",
        "api",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "t" }),
    )
    .await;
    let call = json!({ "id": integration, "input": { "method": "GET", "path": "/x" } });
    let called = post(&app, &on_b, &app.admin_key, EXECUTE, call.clone()).await;
    assert_eq!(called["data"]["executeRequest"]["status"], 200, "{called}");
    app.gql(
        &app.admin_key,
        "mutation($id: ID!) { setIntegrationEnabled(id: $id, enabled: false) { id } }",
        json!({ "id": integration }),
    )
    .await
    .data();
    let disabled = until(Duration::from_secs(1), || async {
        let answer = post(&app, &on_b, &app.admin_key, EXECUTE, call.clone()).await;
        answer["errors"][0]["extensions"]["code"] == "INTEGRATION_DISABLED"
    })
    .await;
    assert!(
        disabled.is_some(),
        "B still calls the disabled integration after 1 s"
    );
    b.stop().await;
    app.stop().await;
}

/// Three replicas, each with its health monitor, and an integration whose health endpoint
/// answers in 0.9 s: each due check is claimed by one replica (a conditional update of the
/// integration's last check), so checks never start less than an interval less its jitter
/// apart, where unclaimed, replicas that found it due together each checked it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_check_an_integration_once_per_interval() {
    let upstream = Receiver::start(|_| {
        Reply::json(200, &json!({ "login": "bot" })).after(Duration::from_millis(900))
    })
    .await;
    let app = TestApp::start_configured(Backend::Postgres, |config| {
        config.health_interval_secs = 2;
        config.outbound_max_retries = 0;
    })
    .await;
    let replicas = [app.start_replica().await, app.start_replica().await];
    let project = app.create_project(&app.admin_key, "watched").await;
    register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "t" }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let mut starts: Vec<Instant> = upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/user")
        .map(|r| r.at)
        .collect();
    starts.sort();
    assert!(
        starts.len() >= 3,
        "the integration is checked: {}",
        starts.len()
    );
    for pair in starts.windows(2) {
        let apart = pair[1] - pair[0];
        // The interval (2 s) less at most 10 % jitter of 10 s: at least 1 s.
        assert!(
            apart >= Duration::from_millis(950),
            "two checks {} ms apart ({} checks in 9 s)",
            apart.as_millis(),
            starts.len()
        );
    }
    for replica in replicas {
        replica.stop().await;
    }
    app.stop().await;
}

/// One event stream across replicas: a subscriber on A receives every log of the calls made
/// on B and C, once each and in the order each replica made them, as well as its own
/// replica's; an event larger than one NOTIFY (an inbound push of 30 KB received on B)
/// reaches A's subscribers whole, and the outbound webhook it causes is delivered once (by
/// B, which received it), not once per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_subscribers_on_every_replica() {
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let hooks = Receiver::start(|_| Reply::text(200, "ok")).await;
    let app = TestApp::start_configured(Backend::Postgres, |config| {
        config.webhook_poll_ms = 50;
    })
    .await;
    let (b, c) = (app.start_replica().await, app.start_replica().await);
    let (on_b, on_c) = (
        format!("http://{}/graphql", b.addr),
        format!("http://{}/graphql", c.addr),
    );
    let project = app.create_project(&app.admin_key, "replicas").await;
    let integration = register(
        &app,
        &project,
        "generic_rest",
        "api",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "t" }),
    )
    .await;

    let mut watcher = WsClient::connect(
        &app,
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {}", app.admin_key) }),
    )
    .await
    .unwrap();
    watcher
        .subscribe(
            "logs",
            "subscription($p: ID) { integrationLogs(projectId: $p) { __typename ... on RequestLog { path } } }",
            json!({ "p": project }),
        )
        .await;
    // A call on A itself shows the subscription is live.
    let call =
        |path: String| json!({ "id": integration, "input": { "method": "GET", "path": path } });
    let mut live = false;
    for _ in 0..50 {
        app.gql(&app.admin_key, EXECUTE, call("/a".into()))
            .await
            .data();
        if let Some(data) = watcher.next_data("logs", Duration::from_millis(300)).await {
            assert_eq!(data["integrationLogs"]["path"], "/a");
            live = true;
            break;
        }
    }
    assert!(live, "the subscription never delivered");

    const CALLS: usize = 40;
    let calls_on = |url: String, prefix: &'static str| {
        let app = &app;
        let call = &call;
        async move {
            for i in 0..CALLS {
                let answer = post(
                    app,
                    &url,
                    &app.admin_key,
                    EXECUTE,
                    call(format!("/{prefix}/{i}")),
                )
                .await;
                assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
            }
        }
    };
    tokio::join!(calls_on(on_b.clone(), "b"), calls_on(on_c, "c"));
    let mut seen = Vec::new();
    while let Some(data) = watcher.next_data("logs", Duration::from_secs(3)).await {
        let log = &data["integrationLogs"];
        assert_eq!(log["__typename"], "RequestLog", "nothing missed: {log}");
        seen.push(log["path"].as_str().unwrap().to_string());
    }
    let from = |prefix: &str| -> Vec<usize> {
        seen.iter()
            .filter_map(|p| p.strip_prefix(&format!("/{prefix}/"))?.parse().ok())
            .collect()
    };
    let expected: Vec<usize> = (0..CALLS).collect();
    assert_eq!(
        from("b"),
        expected,
        "B's calls, each once, in order: {seen:?}"
    );
    assert_eq!(
        from("c"),
        expected,
        "C's calls, each once, in order: {seen:?}"
    );
    assert_eq!(seen.len(), 2 * CALLS, "{seen:?}");

    // A push of 30 KB received on B: A's subscribers see it; one outbound delivery.
    let github =
        crate::inbound::register(&app, &project, "github", json!({}), json!({ "token": "t" }))
            .await;
    app.gql(
        &app.admin_key,
        "mutation($url: String!) { createWebhookEndpoint(input: { url: $url, eventTypes: [\"webhook.received\"] }) { id } }",
        json!({ "url": hooks.url("/out") }),
    )
    .await
    .data();
    let (hook_url, secret) = crate::inbound::enable(&app, &github, None).await;
    let hook_on_b = hook_url.replace(&app.base, &format!("http://{}", b.addr));
    watcher
        .subscribe(
            "events",
            "subscription($p: ID!) { integrationEvents(projectId: $p) { __typename ... on IntegrationEvent { kind webhookDeliveryId } } }",
            json!({ "p": project }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = serde_json::to_vec(
        &json!({ "ref": "refs/heads/main", "commits": [], "note": "é".repeat(15_000) }),
    )
    .unwrap();
    let headers = crate::inbound::github_headers(&secret, &body, "big-1");
    let (status, text) = crate::inbound::post(&hook_on_b, &headers, &body).await;
    assert!(status < 300, "{status} {text}");
    let mut pushed = None;
    while let Some(message) = watcher.next_data("events", Duration::from_secs(3)).await {
        let event = &message["integrationEvents"];
        if event["kind"] == "WEBHOOK_RECEIVED" {
            pushed = Some(event.clone());
            break;
        }
    }
    let pushed = pushed.expect("A's subscriber saw the push B received");
    assert_eq!(pushed["webhookDeliveryId"], "big-1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = hooks.requests().iter().filter(|r| r.path == "/out").count();
    assert_eq!(
        delivered, 1,
        "the push is forwarded once, not once per replica"
    );

    b.stop().await;
    c.stop().await;
    app.stop().await;
}

/// Periodic jobs (pruning) are done by one replica at a time: the first to claim a job's
/// lease holds it and renews it; the others are refused until it runs out, and then one of
/// them takes it over. Claims race through single statements: of 12 concurrent claims of a
/// free job, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_jobs_are_held_by_one_replica_at_a_time() {
    use integration_hub::db::lease::claim;
    let app = TestApp::start(Backend::Postgres).await;
    let at = chrono::Utc::now().naive_utc();
    let minute = chrono::Duration::seconds(60);
    let mut conn = app.state.pool.get().await.unwrap();
    assert!(claim(&mut conn, "job", "a", at, at + minute).await.unwrap());
    assert!(
        !claim(&mut conn, "job", "b", at, at + minute).await.unwrap(),
        "held by a"
    );
    assert!(
        claim(&mut conn, "job", "a", at + minute / 2, at + minute * 2)
            .await
            .unwrap(),
        "a renews its own"
    );
    let later = at + minute * 3;
    assert!(
        claim(&mut conn, "job", "b", later, later + minute)
            .await
            .unwrap(),
        "b takes it over once a's hold ran out"
    );
    assert!(
        !claim(&mut conn, "job", "a", later, later + minute)
            .await
            .unwrap()
    );
    drop(conn);

    let claims = (0..12).map(|i| {
        let pool = app.state.pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.unwrap();
            claim(&mut conn, "race", &format!("r{i}"), at, at + minute)
                .await
                .unwrap()
        })
    });
    let won = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .filter(|won| *won.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);

    // The hub's own pruning claims its job under this replica's name.
    assert!(
        app.state
            .claim_job("prune-logs", std::time::Duration::from_secs(60))
            .await
    );
    app.stop().await;
}

/// Three replicas, each with its delivery worker, share the webhook queue: 1,000 test events
/// sent through the three make 1,000 deliveries, each delivered once (deliveries are claimed
/// with `FOR UPDATE SKIP LOCKED` and a lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_each_webhook_once() {
    const EVENTS: usize = 1_000;
    let hooks = Receiver::start(|_| Reply::text(200, "ok")).await;
    let app = TestApp::start_configured(Backend::Postgres, |config| {
        config.webhook_poll_ms = 50;
    })
    .await;
    let replicas = [app.start_replica().await, app.start_replica().await];
    let mut servers = vec![app.graphql_url()];
    servers.extend(
        replicas
            .iter()
            .map(|r| format!("http://{}/graphql", r.addr)),
    );
    let created = app
        .gql(
            &app.admin_key,
            "mutation($url: String!) { createWebhookEndpoint(input: { url: $url, eventTypes: [\"webhook.test\"] }) { id } }",
            json!({ "url": hooks.url("/in") }),
        )
        .await;
    let endpoint = created.data()["createWebhookEndpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let send = "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }";
    let sends = (0..EVENTS).map(|i| {
        let (app, server, endpoint) = (&app, servers[i % 3].clone(), endpoint.clone());
        async move {
            let answer = post(
                app,
                &server,
                &app.admin_key,
                send,
                json!({ "id": endpoint }),
            )
            .await;
            assert!(
                answer["data"]["sendTestWebhook"]["id"].is_string(),
                "{answer}"
            );
        }
    });
    futures_util::stream::iter(sends)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let delivered = until(Duration::from_secs(60), || async {
        hooks.count() >= EVENTS
    })
    .await;
    assert!(
        delivered.is_some(),
        "{} of {EVENTS} delivered",
        hooks.count()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids: Vec<String> = hooks
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), EVENTS, "no delivery twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS);
    for replica in replicas {
        replica.stop().await;
    }
    app.stop().await;
}
