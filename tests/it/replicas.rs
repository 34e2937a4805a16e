//! Several replicas on one PostgreSQL database (PostgreSQL only: with SQLite the hub is one
//! process). `three_processes_on_one_database` runs three processes of the built binary; the
//! other tests start replicas as second servers in this test process on A's database.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::calls::{EXECUTE, register};
use crate::subscriptions::{Protocol, WsClient};
use crate::support::process::{admin_key_in, create_sync, gql, project_with, start_with, stop};
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp, TestDb};

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
    let (home, on_b, on_c) = (
        app.base.trim_start_matches("http://").to_string(),
        b.addr.to_string(),
        c.addr.to_string(),
    );
    logs_of_calls_elsewhere_reach(
        &mut watcher,
        &app.admin_key,
        &integration,
        &home,
        &[(&on_b, "b"), (&on_c, "c")],
    )
    .await;

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

/// Subscribes `watcher` (connected to the replica at `home`, `host:port`) to the
/// integration's request logs and proves it live with calls made there; then makes `CALLS` calls on each
/// of `others` (`(host:port, prefix)`) at once and checks the watcher received each call's
/// log once, in the order each replica made them, and nothing else.
async fn logs_of_calls_elsewhere_reach(
    watcher: &mut WsClient,
    admin: &str,
    integration: &str,
    home: &str,
    others: &[(&str, &str)],
) {
    const CALLS: usize = 40;
    watcher
        .subscribe(
            "logs",
            "subscription($i: ID) { integrationLogs(integrationId: $i) { __typename ... on RequestLog { path } } }",
            json!({ "i": integration }),
        )
        .await;
    let call =
        |path: String| json!({ "id": integration, "input": { "method": "GET", "path": path } });
    let mut live = false;
    for _ in 0..50 {
        let answer = gql(home, admin, EXECUTE, call("/home".into())).await;
        assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
        if let Some(data) = watcher.next_data("logs", Duration::from_millis(300)).await {
            assert_eq!(data["integrationLogs"]["path"], "/home");
            live = true;
            break;
        }
    }
    assert!(live, "the subscription never delivered");
    let calls_on = |addr: &str, prefix: &str| {
        let (addr, prefix, call) = (addr.to_string(), prefix.to_string(), &call);
        async move {
            for i in 0..CALLS {
                let answer = gql(&addr, admin, EXECUTE, call(format!("/{prefix}/{i}"))).await;
                assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
            }
        }
    };
    futures_util::future::join_all(others.iter().map(|(addr, prefix)| calls_on(addr, prefix)))
        .await;
    // Until all have come (or 3 s without one), and then 300 ms for any duplicate.
    let mut seen = Vec::new();
    let wanted = others.len() * CALLS;
    loop {
        let wait = if seen.len() < wanted { 3_000 } else { 300 };
        let Some(data) = watcher.next_data("logs", Duration::from_millis(wait)).await else {
            break;
        };
        let log = &data["integrationLogs"];
        assert_eq!(log["__typename"], "RequestLog", "nothing missed: {log}");
        seen.push(log["path"].as_str().unwrap().to_string());
        assert!(seen.len() <= wanted, "more logs than calls: {seen:?}");
    }
    let expected: Vec<usize> = (0..CALLS).collect();
    for (_, prefix) in others {
        let from: Vec<usize> = seen
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("/{prefix}/"))?.parse().ok())
            .collect();
        assert_eq!(
            from, expected,
            "the calls on {prefix}, each once, in order: {seen:?}"
        );
    }
    assert_eq!(seen.len(), others.len() * CALLS, "{seen:?}");
}

/// The multi-replica suite on three processes of the built binary (set `HUB_TEST_BINARY` to
/// run it on a release build) on one PostgreSQL database, with Redis:
/// - a subscriber on A receives every log of the calls made on B and C, in order;
/// - a key revoked on A is refused on B and C, and an integration disabled on A refuses
///   calls on C, within a second, although both are cached for 5 minutes;
/// - a sync scheduled every 2 s runs once per period across the three;
/// - 1,000 webhook events sent through the three make 1,000 deliveries, none twice;
/// - a key's quota holds across the three within ±5 %.
///
/// (A replica killed mid-sync is `binary::a_replica_killed_mid_sync_hands_the_run_to_another`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_database() {
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let records: Vec<Value> = (0..5).map(|i| json!({ "key": format!("r{i}") })).collect();
    let source = Receiver::start(move |_| Reply::json(200, &json!(records))).await;
    let target = Receiver::start(|_| Reply::json(201, &json!({}))).await;
    let hooks = Receiver::start(|_| Reply::text(200, "ok")).await;
    let db = TestDb::new(Backend::Postgres).await;
    let redis = crate::rate_limits::redis_url();
    let env = [
        ("HUB_OUTBOUND_ALLOW", "127.0.0.1/32"),
        ("HUB_OUTBOUND_RATE_LIMIT", "1000000/1s"),
        ("HUB_REDIS_URL", redis.as_str()),
        ("HUB_REDIS_TIMEOUT_MS", "1000"),
        // The admin key's own quota is global too: room for the 1,000 webhook sends.
        ("HUB_RATE_LIMIT_API_KEY", "100000/1s"),
        ("HUB_CREDENTIAL_CACHE_SECS", "300"),
        ("HUB_INTEGRATION_CACHE_SECS", "300"),
        ("HUB_SYNC_SCHEDULER_SECS", "1"),
        ("HUB_WEBHOOK_POLL_MS", "50"),
        ("HUB_HEALTH_INTERVAL_SECS", "0"),
        ("RUST_LOG", "warn"),
    ];
    let a = start_with(&db, &env).await;
    let admin = admin_key_in(&a.stdout).unwrap();
    let (b, c) = tokio::join!(start_with(&db, &env), start_with(&db, &env));
    let addrs = [a.addr.clone(), b.addr.clone(), c.addr.clone()];
    let (project, ids) = project_with(
        &addrs[0],
        &admin,
        &[
            ("generic_rest", "api", &upstream.url),
            ("generic_rest", "source", &source.url),
            ("generic_rest", "target", &target.url),
        ],
    )
    .await;
    // Scheduled from now on; its runs are counted at the end.
    let scheduled = create_sync(
        &addrs[0],
        &admin,
        &project,
        (&ids[1], &ids[2]),
        json!({ "scheduleSeconds": 2 }),
    )
    .await;
    let schedule_started = chrono::Utc::now();

    // One event stream.
    let mut watcher = WsClient::connect_to(
        &format!("http://{}", addrs[0]),
        Protocol::TransportWs,
        json!({ "Authorization": format!("Bearer {admin}") }),
    )
    .await
    .unwrap();
    logs_of_calls_elsewhere_reach(
        &mut watcher,
        &admin,
        &ids[0],
        &addrs[0],
        &[(&addrs[1], "b"), (&addrs[2], "c")],
    )
    .await;

    // Changes take effect everywhere within a second.
    let created = gql(
        &addrs[0],
        &admin,
        "mutation { createApiKey(input: { name: \"ci\", scopes: [\"integrations:read\"] }) { key apiKey { id } } }",
        json!({}),
    )
    .await;
    let key = created["data"]["createApiKey"]["key"].as_str().unwrap();
    let key_id = created["data"]["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap();
    let projects = "{ projects { id } }";
    for addr in &addrs[1..] {
        let used = gql(addr, key, projects, json!({})).await;
        assert!(used["data"]["projects"].is_array(), "{used}");
    }
    let revoked = gql(
        &addrs[0],
        &admin,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": key_id }),
    )
    .await;
    assert!(
        revoked["data"]["revokeApiKey"]["id"].is_string(),
        "{revoked}"
    );
    let refused = until(Duration::from_secs(1), || async {
        let mut everywhere = true;
        for addr in &addrs[1..] {
            let answer = gql(addr, key, projects, json!({})).await;
            everywhere &= answer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED";
        }
        everywhere
    })
    .await;
    assert!(
        refused.is_some(),
        "B or C still takes the revoked key after 1 s"
    );
    let call = json!({ "id": ids[0], "input": { "method": "GET", "path": "/x" } });
    let called = gql(&addrs[2], &admin, EXECUTE, call.clone()).await;
    assert_eq!(called["data"]["executeRequest"]["status"], 200, "{called}");
    gql(
        &addrs[0],
        &admin,
        "mutation($id: ID!) { setIntegrationEnabled(id: $id, enabled: false) { id } }",
        json!({ "id": ids[0] }),
    )
    .await;
    let disabled = until(Duration::from_secs(1), || async {
        let answer = gql(&addrs[2], &admin, EXECUTE, call.clone()).await;
        answer["errors"][0]["extensions"]["code"] == "INTEGRATION_DISABLED"
    })
    .await;
    assert!(
        disabled.is_some(),
        "C still calls the disabled integration after 1 s"
    );

    // Each webhook delivered once.
    const EVENTS: usize = 1_000;
    let created = gql(
        &addrs[0],
        &admin,
        "mutation($url: String!) { createWebhookEndpoint(input: { url: $url, eventTypes: [\"webhook.test\"] }) { id } }",
        json!({ "url": hooks.url("/in") }),
    )
    .await;
    let endpoint = created["data"]["createWebhookEndpoint"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    let sends = (0..EVENTS).map(|i| {
        let (addr, admin, endpoint) = (&addrs[i % 3], &admin, &endpoint);
        async move {
            let answer = gql(
                addr,
                admin,
                "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }",
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

    // A key's quota across the three, with Redis: admitted ÷ (burst + rate × time) ≈ 1.
    let ratio = quota_share(&addrs, &admin, 50, Duration::from_secs(4)).await;
    eprintln!("quota across three processes: admitted {ratio:.3} × what it allows");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "admitted {ratio:.3} × the quota across three replicas"
    );

    // No webhook delivered twice, now that any late duplicate would have arrived.
    let mut delivery_ids: Vec<String> = hooks
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(delivery_ids.len(), EVENTS, "no delivery twice");
    delivery_ids.sort();
    delivery_ids.dedup();
    assert_eq!(delivery_ids.len(), EVENTS);

    // One scheduled run per 2 s period across the three.
    let runs = gql(
        &addrs[0],
        &admin,
        "query($c: ID!) { syncRuns(configId: $c, first: 100) { nodes { trigger createdAt } } }",
        json!({ "c": scheduled }),
    )
    .await;
    let elapsed = (chrono::Utc::now() - schedule_started).num_milliseconds() as f64 / 1000.0;
    let mut started: Vec<chrono::DateTime<chrono::FixedOffset>> = runs["data"]["syncRuns"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{runs}"))
        .iter()
        .map(|run| {
            chrono::DateTime::parse_from_rfc3339(run["createdAt"].as_str().unwrap()).unwrap()
        })
        .collect();
    started.sort();
    assert!(
        started.len() >= 2 && started.len() as f64 <= elapsed / 2.0 + 1.0,
        "about one run per 2 s period in {elapsed:.1} s: {started:?}"
    );
    for pair in started.windows(2) {
        let apart = pair[1] - pair[0];
        assert!(
            apart >= chrono::Duration::milliseconds(1_990),
            "two runs in one period, {} ms apart: {started:?}",
            apart.num_milliseconds()
        );
    }
    for hub in [a, b, c] {
        stop(hub).await;
    }
}

/// A key allowed `rate`/s (burst `rate`) hammered round robin through `addrs` for `period`
/// by 12 callers: admitted ÷ what the quota allows in the time taken (burst + rate × time).
async fn quota_share(addrs: &[String], admin: &str, rate: u32, period: Duration) -> f64 {
    let created = gql(
        &addrs[0],
        admin,
        "mutation($n: Int!) { createApiKey(input: { name: \"metered\", scopes: [\"integrations:read\"], rateLimit: { requests: $n, periodSeconds: 1 } }) { key } }",
        json!({ "n": rate }),
    )
    .await;
    let key = created["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let callers = (0..12).map(|i| {
        let (client, key) = (client.clone(), key.clone());
        let url = format!("http://{}/graphql", addrs[i % addrs.len()]);
        async move {
            let mut admitted = 0u32;
            while started.elapsed() < period {
                let answer = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "query": "{ __typename }" }))
                    .send()
                    .await
                    .unwrap();
                match answer.status().as_u16() {
                    200 => admitted += 1,
                    429 => {}
                    other => panic!("status {other}"),
                }
            }
            admitted
        }
    });
    let admitted: u32 = futures_util::future::join_all(callers)
        .await
        .into_iter()
        .sum();
    let allowed = f64::from(rate) * (1.0 + started.elapsed().as_secs_f64());
    f64::from(admitted) / allowed
}
