//! Live-operations benchmarks (run on demand: `cargo bench --bench live`). The hub runs as
//! its own process (the release binary, temporary SQLite database), so its memory is measured
//! alone. Prints:
//! 1. `executeRequest` through the hub vs the same call straight to the same local upstream:
//!    added p50 latency (target ≤ 1 ms) and throughput ratio (target ≥ 0.5×), with two
//!    references: `{ __typename }` through the hub, and a bare forwarder (the most any proxy
//!    could do here);
//! 2. live-log fan-out to many WebSocket subscribers (`BENCH_SUBSCRIBERS`, default 10,000):
//!    time to connect (target ≤ 5 s), event-to-delivery p99 (target ≤ 250 ms), hub RSS per
//!    subscriber (target ≤ 10 KB), events dropped
//!    (target none).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod support;

use support::{Hub, cpu_seconds, gql, percentile, rss_mb, start_hub};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    // A local upstream answering a small JSON document.
    let upstream = HttpServer::new(|| {
        App::new().default_service(web::to(|req: actix_web::HttpRequest| async move {
            // `/slow/...` answers after 20 ms, like a hosted API would.
            if req.path().starts_with("/slow/") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            HttpResponse::Ok()
                .content_type("application/json")
                .body(r#"{"id":1,"name":"item"}"#)
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let upstream_url = format!("http://{}", upstream.addrs()[0]);
    tokio::spawn(upstream.run());

    let hub = start_hub(&[]).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let project = gql(
        &client,
        &hub,
        "mutation { createProject(input: { name: \"bench\" }) { id } }",
        json!({}),
    )
    .await;
    let project = project["data"]["createProject"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let integration = gql(
        &client,
        &hub,
        "mutation($input: RegisterIntegrationInput!) { registerIntegration(input: $input) { id } }",
        json!({ "input": { "projectId": project, "provider": "github", "name": "gh", "config": { "baseUrl": upstream_url }, "credentials": { "token": "bench-token" } } }),
    )
    .await;
    let integration = integration["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // BENCH_ONLY=execute or BENCH_ONLY=fanout runs one part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only != "fanout" {
        execute(&client, &hub, &upstream_url, &integration).await;
    }
    if only != "execute" {
        fan_out(&client, &hub, &integration).await;
    }
}

const EXECUTE: &str = "mutation($id: ID!) { executeRequest(integrationId: $id, input: { method: \"GET\", path: \"/items/1\" }) { status } }";

async fn execute(client: &reqwest::Client, hub: &Hub, upstream_url: &str, integration: &str) {
    // 1a. Latency, one call at a time.
    let samples = 500;
    let mut direct = Vec::with_capacity(samples);
    let mut through = Vec::with_capacity(samples);
    for _ in 0..50 {
        client
            .get(format!("{upstream_url}/items/1"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        gql(client, hub, EXECUTE, json!({ "id": integration })).await;
    }
    for _ in 0..samples {
        let t = Instant::now();
        client
            .get(format!("{upstream_url}/items/1"))
            .bearer_auth("bench-token")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let answer = gql(client, hub, EXECUTE, json!({ "id": integration })).await;
        through.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
    }
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    let (d50, t50) = (percentile(&direct, 0.5), percentile(&through, 0.5));
    println!(
        "execute latency p50: direct {d50:.3} ms, through the hub {t50:.3} ms, added {:.3} ms (target ≤ 1 ms); p99 direct {:.3} ms, hub {:.3} ms",
        t50 - d50,
        percentile(&direct, 0.99),
        percentile(&through, 0.99)
    );

    // 1b. Throughput with 32 concurrent callers for 5 s each, against an upstream that answers
    // at once (the hub's own cost is all there is to see), then against one that takes 20 ms.
    let (direct_rps, hub_rps, cpu_per_call) =
        compare_throughput(client, hub, upstream_url, integration, "/items/1").await;
    let (instant_direct_rps, instant_hub_rps) = (direct_rps, hub_rps);
    println!(
        "execute throughput: direct {direct_rps:.0} req/s, through the hub {hub_rps:.0} req/s, ratio {:.2}; hub CPU {cpu_per_call:.0} µs per call",
        hub_rps / direct_rps
    );
    let (direct_rps, hub_rps, _) =
        compare_throughput(client, hub, upstream_url, integration, "/slow/1").await;
    println!(
        "execute throughput, upstream answering in 20 ms: direct {direct_rps:.0} req/s, through the hub {hub_rps:.0} req/s, ratio {:.2}",
        hub_rps / direct_rps
    );

    // 1c. For reference, the floor under every call: HTTP in, the key, a GraphQL operation.
    let cpu_before = cpu_seconds(hub.child.id().unwrap());
    let floor_rps = throughput(callers(), Duration::from_secs(5), {
        let (client, url, key) = (
            client.clone(),
            format!("http://{}/graphql", hub.addr),
            hub.key.clone(),
        );
        move || {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            async move {
                client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "query": "{ __typename }" }))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        }
    })
    .await;
    let cpu = cpu_seconds(hub.child.id().unwrap()) - cpu_before;
    println!(
        "reference, `{{ __typename }}` with the key: {floor_rps:.0} req/s, hub CPU {:.0} µs per request",
        cpu * 1e6 / (floor_rps * 5.0).max(1.0)
    );

    // 1d. For reference, the ceiling of any proxy here: a bare forwarder (actix-web in, one
    // reqwest client per worker out, nothing else: no GraphQL, no key, no log) in this process.
    let forwarder = HttpServer::new({
        let upstream_url = upstream_url.to_string();
        move || {
            let (client, upstream_url) = (reqwest::Client::new(), upstream_url.clone());
            App::new().default_service(web::to(move |req: actix_web::HttpRequest| {
                let (client, url) = (client.clone(), format!("{upstream_url}{}", req.path()));
                async move {
                    match client.get(url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response.bytes().await.unwrap_or_default();
                            HttpResponse::build(
                                actix_web::http::StatusCode::from_u16(status).unwrap(),
                            )
                            .content_type("application/json")
                            .body(body)
                        }
                        Err(_) => HttpResponse::BadGateway().finish(),
                    }
                }
            }))
        }
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .unwrap();
    let forwarder_url = format!("http://{}/items/1", forwarder.addrs()[0]);
    let forwarder = forwarder.run();
    let forwarder_handle = forwarder.handle();
    tokio::spawn(forwarder);
    let forward = {
        let client = client.clone();
        move || get_ok(client.clone(), forwarder_url.clone())
    };
    let forwarded_rps = throughput(callers(), Duration::from_secs(5), forward.clone()).await;
    println!(
        "reference, a bare forwarder (actix-web + reqwest, nothing else): {forwarded_rps:.0} req/s, {:.2}× direct; the hub makes {:.2}× of it",
        forwarded_rps / instant_direct_rps,
        instant_hub_rps / forwarded_rps
    );
    // 1e. The share of the forwarder, measured in alternating 3 s rounds (forwarder, hub,
    // forwarder, hub...): the machine's drift over the phases above does not enter the ratio.
    let mut shares = Vec::new();
    for _ in 0..ROUNDS {
        let forwarded = throughput(callers(), Duration::from_secs(3), forward.clone()).await;
        let through = throughput(
            callers(),
            Duration::from_secs(3),
            hub_call(client, hub, EXECUTE, integration),
        )
        .await;
        shares.push(through / forwarded.max(1.0));
    }
    forwarder_handle.stop(false).await;
    let rounds: Vec<String> = shares.iter().map(|s| format!("{s:.2}")).collect();
    shares.sort_by(f64::total_cmp);
    println!(
        "execute share of a bare forwarder, alternating rounds: median {:.2} (target ≥ 0.5; rounds {})",
        percentile(&shares, 0.5),
        rounds.join(", ")
    );
}

/// Alternating forwarder/hub rounds for the share of the forwarder.
const ROUNDS: usize = 5;

async fn fan_out(client: &reqwest::Client, hub: &Hub, integration: &str) {
    // 2. Live-log fan-out.
    let subscribers: usize = std::env::var("BENCH_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let events: usize = 20;
    let rss_before = rss_mb(hub.child.id().unwrap());
    let mut sent: Vec<Option<Instant>> = vec![None; events];
    let missed = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let connect_started = Instant::now();
    let mut tasks = Vec::new();
    let limiter = Arc::new(tokio::sync::Semaphore::new(200));
    for _ in 0..subscribers {
        let (addr, key, integration) = (hub.addr.clone(), hub.key.clone(), integration.to_string());
        let (missed, ready, limiter) = (missed.clone(), ready.clone(), limiter.clone());
        let (refused, failed) = (refused.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let permit = limiter.acquire_owned().await.unwrap();
            let mut request = format!("ws://{addr}/graphql").into_client_request().unwrap();
            request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
            // tungstenite zero-fills its whole read buffer (128 KiB by default) on every read;
            // live-log frames are small, and 10,000 clients share the hub's 2 cores.
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let mut socket = match tokio_tungstenite::connect_async_with_config(request, Some(config), false).await {
                Ok((socket, _)) => socket,
                Err(err) => {
                    // Beyond the hub's cap: 503 "try again later" (counted apart).
                    let refused_here = matches!(&err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 503);
                    if refused_here { &refused } else { &failed }.fetch_add(1, Ordering::SeqCst);
                    return (Vec::new(), None);
                }
            };
            let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } });
            socket.send(Message::text(init.to_string())).await.unwrap();
            let _ack = socket.next().await;
            let subscribe = json!({ "id": "1", "type": "subscribe", "payload": {
                "query": "subscription($i: ID) { integrationLogs(integrationId: $i) { ... on RequestLog { path } ... on EventsMissed { count } } }",
                "variables": { "i": integration } } });
            socket.send(Message::text(subscribe.to_string())).await.unwrap();
            ready.fetch_add(1, Ordering::SeqCst);
            drop(permit);
            let mut got = 0;
            let mut arrivals: Vec<(usize, Instant)> = Vec::with_capacity(events);
            // One deadline for the whole run, not a timer per message.
            let deadline = tokio::time::sleep(Duration::from_secs(180));
            tokio::pin!(deadline);
            while got < events {
                let message = tokio::select! {
                    message = socket.next() => message,
                    _ = &mut deadline => None,
                };
                let Some(Ok(message)) = message else {
                    break;
                };
                let at = Instant::now();
                let Message::Text(text) = message else { continue };
                // Cheap parsing: the clients share this process's cores with the measurement.
                if text.contains("\"ping\"") {
                    let _ = socket.send(Message::text(json!({ "type": "pong" }).to_string())).await;
                    continue;
                }
                if text.contains("\"count\"") {
                    let value: Value = serde_json::from_str(&text).unwrap_or_default();
                    let count = value["payload"]["data"]["integrationLogs"]["count"].as_u64().unwrap_or(0);
                    missed.fetch_add(count, Ordering::SeqCst);
                    got += count as usize;
                    continue;
                }
                let Some(pos) = text.find("\"/e/") else { continue };
                let digits: String = text[pos + 4..].chars().take_while(char::is_ascii_digit).collect();
                let Ok(index) = digits.parse::<usize>() else { continue };
                arrivals.push((index, at));
                got += 1;
            }
            // The socket stays open until every client is done: 10,000 hang-ups at once would
            // slow the deliveries still under way.
            (arrivals, Some(socket))
        }));
    }
    let settled = || {
        (ready.load(Ordering::SeqCst)
            + refused.load(Ordering::SeqCst)
            + failed.load(Ordering::SeqCst)) as usize
    };
    while settled() < subscribers && connect_started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = ready.load(Ordering::SeqCst);
    println!(
        "{connected} of {subscribers} subscribers connected in {:.1} s (target ≤ 5 s); {} refused with 503 beyond the hub's cap, {} failed otherwise",
        connect_started.elapsed().as_secs_f64(),
        refused.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // let the last subscriptions register
    let rss_subscribed = rss_mb(hub.child.id().unwrap());
    let cpu_before = cpu_seconds(hub.child.id().unwrap());
    let clients_cpu_before = cpu_seconds(std::process::id());
    for (index, sent_at) in sent.iter_mut().enumerate() {
        *sent_at = Some(Instant::now());
        let path = format!("/e/{index}");
        gql(
            client,
            hub,
            "mutation($id: ID!, $path: String!) { executeRequest(integrationId: $id, input: { method: \"GET\", path: $path }) { status } }",
            json!({ "id": integration, "path": path }),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rss_peak = rss_mb(hub.child.id().unwrap());
    let cpu_events = cpu_seconds(hub.child.id().unwrap()) - cpu_before;
    let clients_cpu = cpu_seconds(std::process::id()) - clients_cpu_before;
    let mut latencies = Vec::new();
    let mut per_event: Vec<Vec<f64>> = vec![Vec::new(); events];
    let mut sockets = Vec::new();
    for task in tasks {
        if let Ok(Ok((arrivals, socket))) =
            tokio::time::timeout(Duration::from_secs(120), task).await
        {
            sockets.push(socket);
            for (index, at) in arrivals {
                if let Some(Some(start)) = sent.get(index) {
                    let ms = (at - *start).as_secs_f64() * 1000.0;
                    latencies.push(ms);
                    per_event[index].push(ms);
                }
            }
        }
    }
    let last_delivery: Vec<String> = per_event
        .iter_mut()
        .map(|l| {
            l.sort_by(f64::total_cmp);
            format!("{:.0}", percentile(l, 1.0))
        })
        .collect();
    println!(
        "last delivery of each event, ms: {}",
        last_delivery.join(" ")
    );
    drop(sockets);
    latencies.sort_by(f64::total_cmp);
    let expected = connected * events as u64;
    let received = latencies.len();
    println!(
        "fan-out to {connected} subscribers, {events} events: delivered {received} of {expected}, missed notices {}, latency p50 {:.1} ms, p99 {:.1} ms (target ≤ 250 ms)",
        missed.load(Ordering::SeqCst),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "CPU during the events: hub {cpu_events:.2} s ({:.1} µs per delivery), subscriber clients {clients_cpu:.2} s ({:.1} µs per delivery), on 2 shared cores",
        cpu_events * 1e6 / expected.max(1) as f64,
        clients_cpu * 1e6 / expected.max(1) as f64
    );
    println!(
        "hub RSS: {rss_before:.0} MB before, {rss_subscribed:.0} MB with {connected} subscribers ({:.1} KB each, target ≤ 10 KB), {rss_peak:.0} MB after the events",
        (rss_subscribed - rss_before) * 1024.0 / connected.max(1) as f64
    );
}

/// Calls per second straight to the upstream and through the hub (32 callers, 5 s each), and
/// the hub's CPU time per call.
async fn compare_throughput(
    client: &reqwest::Client,
    hub: &Hub,
    upstream_url: &str,
    integration: &str,
    path: &str,
) -> (f64, f64, f64) {
    let direct_rps = throughput(callers(), Duration::from_secs(5), {
        let (client, url) = (client.clone(), format!("{upstream_url}{path}"));
        move || get_ok(client.clone(), url.clone())
    })
    .await;
    let query = format!(
        "mutation($id: ID!) {{ executeRequest(integrationId: $id, input: {{ method: \"GET\", path: \"{path}\" }}) {{ status }} }}"
    );
    let cpu_before = cpu_seconds(hub.child.id().unwrap());
    let hub_rps = throughput(
        callers(),
        Duration::from_secs(5),
        hub_call(client, hub, &query, integration),
    )
    .await;
    let cpu = cpu_seconds(hub.child.id().unwrap()) - cpu_before;
    (direct_rps, hub_rps, cpu * 1e6 / (hub_rps * 5.0).max(1.0))
}

/// A call for [`throughput`]: `query` (an `executeRequest` mutation) through the hub with
/// `id`, successful when it answers 200.
fn hub_call(
    client: &reqwest::Client,
    hub: &Hub,
    query: &str,
    id: &str,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
+ Clone
+ Send
+ 'static {
    let (client, url, key) = (
        client.clone(),
        format!("http://{}/graphql", hub.addr),
        hub.key.clone(),
    );
    let body = json!({ "query": query, "variables": { "id": id } });
    move || {
        let (client, url, key, body) = (client.clone(), url.clone(), key.clone(), body.clone());
        Box::pin(async move {
            client
                .post(&url)
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
    }
}

/// A call for [`throughput`]: GET `url`, successful when it answers 200.
async fn get_ok(client: reqwest::Client, url: String) -> bool {
    client
        .get(&url)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Concurrent callers in the throughput runs (`BENCH_CALLERS`, default 32).
fn callers() -> usize {
    std::env::var("BENCH_CALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// Successful calls per second from `callers` concurrent loops over `duration`.
async fn throughput<F, Fut>(callers: usize, duration: Duration, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (call, done) = (call.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if call().await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}
