//! Webhook benchmarks (run on demand: `cargo bench --bench webhooks`). The hub runs as its
//! own process (the release binary, temporary SQLite database; `DATABASE_URL` for
//! PostgreSQL). Prints:
//! 1. outbound deliveries per second to a local receiver answering at once (goal ≥ 1,000/s
//!    on SQLite): 3,000 deliveries queued at once (a replay) and drained;
//! 2. event-to-delivery latency at 100 events/s for 10 s: p50 and p99 (goal p99 ≤ 100 ms);
//! 3. inbound pushes accepted per second with GitHub signatures, `BENCH_SENDERS` (16)
//!    senders, and p99 (goal ≥ 5,000/s, p99 ≤ 10 ms).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

mod support;

use support::{gql, percentile, start_hub};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// What the receiver saw: how many deliveries, and each one's delay after its event.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    delays_ms: Mutex<Vec<f64>>,
    healthy: AtomicBool,
}

async fn receive(req: HttpRequest, body: web::Bytes, seen: web::Data<Arc<Seen>>) -> HttpResponse {
    let _ = req;
    let arrived = chrono::Utc::now();
    seen.count.fetch_add(1, Ordering::SeqCst);
    if let Some(at) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["timestamp"].as_str().map(str::to_string))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
    {
        let delay = (arrived - at.with_timezone(&chrono::Utc))
            .num_microseconds()
            .unwrap_or(0);
        seen.delays_ms.lock().unwrap().push(delay as f64 / 1000.0);
    }
    if seen.healthy.load(Ordering::SeqCst) {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::InternalServerError().finish()
    }
}

/// Queues a `webhook.test` to the endpoint.
async fn send_test(client: &reqwest::Client, hub_addr: &str, key: &str, endpoint: &str) {
    let query = "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }";
    client
        .post(format!("http://{hub_addr}/graphql"))
        .bearer_auth(key)
        .json(&json!({ "query": query, "variables": { "id": endpoint } }))
        .send()
        .await
        .unwrap();
}

/// A string in an answer, by JSON Pointer.
fn field(answer: &Value, pointer: &str) -> String {
    answer
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {answer}"))
        .to_string()
}

async fn wait_for_count(seen: &Seen, target: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    while seen.count.load(Ordering::SeqCst) < target && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn run() {
    let seen = Arc::new(Seen::default());
    let data = web::Data::new(seen.clone());
    let receiver = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(receive))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let receiver_url = format!("http://{}/hook", receiver.addrs()[0]);
    tokio::spawn(receiver.run());

    // No retries: a failed attempt fails its delivery (so the replay below queues them all).
    let hub = start_hub(&[
        ("HUB_WEBHOOK_RETRY_SCHEDULE", ""),
        ("HUB_WEBHOOK_POLL_MS", "200"),
    ])
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let created = gql(
        &client,
        &hub,
        "mutation($url: String!) { createWebhookEndpoint(input: { url: $url, eventTypes: [\"webhook.test\"] }) { id } }",
        json!({ "url": receiver_url }),
    )
    .await;
    let endpoint = created["data"]["createWebhookEndpoint"]["id"]
        .as_str()
        .expect("endpoint")
        .to_string();

    // 1. Throughput: queue 3,000 failures, then replay them all at once to a healthy receiver.
    let total: u64 = 3000;
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let queued_at = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (client, hub_addr, key, endpoint) = (
            client.clone(),
            hub.addr.clone(),
            hub.key.clone(),
            endpoint.clone(),
        );
        senders.push(tokio::spawn(async move {
            for _ in 0..total / 16 {
                send_test(&client, &hub_addr, &key, &endpoint).await;
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let queue_secs = queued_at.elapsed().as_secs_f64();
    let queued = total / 16 * 16;
    wait_for_count(&seen, queued, Duration::from_secs(120)).await;
    println!(
        "queued {queued} test events through the API in {queue_secs:.1} s ({:.0}/s); each failed once",
        queued as f64 / queue_secs
    );
    seen.healthy.store(true, Ordering::SeqCst);
    seen.count.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let replayed = gql(
        &client,
        &hub,
        "mutation($id: ID!, $since: DateTime!) { replayWebhooks(endpointId: $id, since: $since) }",
        json!({ "id": endpoint, "since": since.to_rfc3339() }),
    )
    .await;
    let replayed = replayed["data"]["replayWebhooks"].as_u64().unwrap_or(0);
    let took = wait_for_count(&seen, replayed, Duration::from_secs(120)).await;
    println!(
        "outbound: {replayed} deliveries replayed and delivered in {:.2} s: {:.0} deliveries/s (goal ≥ 1,000/s)",
        took.as_secs_f64(),
        replayed as f64 / took.as_secs_f64().max(1e-9)
    );
    let _ = started;

    // 2. Latency at 100 events/s.
    seen.delays_ms.lock().unwrap().clear();
    seen.count.store(0, Ordering::SeqCst);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let events = 1000;
    for _ in 0..events {
        tick.tick().await;
        let (client, hub_addr, key, endpoint) = (
            client.clone(),
            hub.addr.clone(),
            hub.key.clone(),
            endpoint.clone(),
        );
        tokio::spawn(async move {
            send_test(&client, &hub_addr, &key, &endpoint).await;
        });
    }
    wait_for_count(&seen, events, Duration::from_secs(30)).await;
    let mut delays = seen.delays_ms.lock().unwrap().clone();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "event to delivery at 100 events/s: {} delivered, p50 {:.1} ms, p99 {:.1} ms (goal p99 ≤ 100 ms)",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99)
    );

    // 3. Inbound pushes, GitHub-signed.
    let project = gql(
        &client,
        &hub,
        "mutation { createProject(input: { name: \"in\" }) { id } }",
        json!({}),
    )
    .await;
    let project = field(&project, "/data/createProject/id");
    let github = gql(
        &client,
        &hub,
        "mutation($p: ID!) { registerIntegration(input: { projectId: $p, provider: \"github\", name: \"gh\", config: {}, credentials: { token: \"t\" } }) { id } }",
        json!({ "p": project }),
    )
    .await;
    let github = field(&github, "/data/registerIntegration/id");
    let hook = gql(
        &client,
        &hub,
        "mutation($id: ID!) { enableInboundWebhook(integrationId: $id) { url secret } }",
        json!({ "id": github }),
    )
    .await;
    let url = field(&hook, "/data/enableInboundWebhook/url");
    let secret = field(&hook, "/data/enableInboundWebhook/secret");
    let body = br#"{"ref":"refs/heads/main","commits":[{"id":"abc"}]}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let accepted = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs(5);
    let started = Instant::now();
    let mut pushers = Vec::new();
    let senders: usize = std::env::var("BENCH_SENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    for _ in 0..senders {
        let (client, url, signature) = (client.clone(), url.clone(), signature.clone());
        let (accepted, latencies, counter) = (accepted.clone(), latencies.clone(), counter.clone());
        pushers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while started.elapsed() < window {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("bench-{n}"))
                    .header("x-hub-signature-256", &signature)
                    .body(body.to_vec())
                    .send()
                    .await
                    .unwrap();
                if response.status().as_u16() == 202 {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                let _ = response.bytes().await;
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for pusher in pushers {
        pusher.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "inbound: {} pushes from {senders} senders accepted in {secs:.1} s: {:.0}/s (goal ≥ 5,000/s), p50 {:.2} ms, p99 {:.2} ms (goal ≤ 10 ms)",
        accepted.load(Ordering::SeqCst),
        accepted.load(Ordering::SeqCst) as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}
