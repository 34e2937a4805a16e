//! Gateway benchmarks (run on demand: `cargo bench --bench gateway`). Prints:
//! 1. throughput of `{ __typename }` with an API key ÷ without credentials (target ≥ 0.95);
//! 2. requests admitted under 4× overload ÷ the key's quota (target within ±2 %).
//!
//! The hub runs in this process on a temporary SQLite database; load comes from reqwest
//! clients on a runtime of their own. Rounds alternate between the two cases so that drift
//! in the machine's load hits both alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use integration_hub::app;
use integration_hub::config::Config;
use integration_hub::crypto::Keyring;
use serde_json::json;

const CONCURRENCY: usize = 32;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 4;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        bind: "127.0.0.1:0".into(),
        encryption_keys: Some(Keyring::generate_spec("bench")),
        rate_limit_api_key: "100000000/1s".into(),
        rate_limit_anonymous: "100000000/1s".into(),
        ..Config::default()
    };
    let prepared = app::prepare(config).await.expect("prepare");
    let admin = prepared.first_start.expect("fresh database").admin_key;
    let server = app::start(prepared.state).expect("start");
    let url = format!("http://{}/graphql", server.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    // 1. Authentication overhead.
    let mut with_key = 0.0;
    let mut without = 0.0;
    for round in 0..ROUNDS {
        let (a, b) = if round % 2 == 0 {
            (Some(admin.as_str()), None)
        } else {
            (None, Some(admin.as_str()))
        };
        let first = throughput(&client, &url, a).await;
        let second = throughput(&client, &url, b).await;
        let (keyed, anonymous) = if round % 2 == 0 {
            (first, second)
        } else {
            (second, first)
        };
        println!("round {round}: with key {keyed:.0} req/s, without {anonymous:.0} req/s");
        with_key += keyed;
        without += anonymous;
    }
    println!(
        "throughput with API key ÷ without auth: {:.3} (target ≥ 0.95; {:.0} vs {:.0} req/s over {ROUNDS} rounds)",
        with_key / without,
        with_key / ROUNDS as f64,
        without / ROUNDS as f64
    );

    // 2. Rate-limit accuracy: a key of 100/s (burst 100) offered 400/s for 10 s.
    let created: serde_json::Value = client
        .post(&url)
        .bearer_auth(&admin)
        .json(&json!({ "query": "mutation { createApiKey(input: { name: \"bench\", scopes: [\"integrations:read\"], rateLimit: { requests: 100, periodSeconds: 1, burst: 100 } }) { key } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let duration = Duration::from_secs(10);
    let offered_per_sec = 400u64;
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / offered_per_sec));
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let (client, url, key, admitted, refused) = (
            client.clone(),
            url.clone(),
            key.clone(),
            admitted.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let status = client
                .post(&url)
                .bearer_auth(&key)
                .json(&json!({ "query": "{ __typename }" }))
                .send()
                .await
                .map(|r| r.status().as_u16());
            match status {
                Ok(200) => admitted.fetch_add(1, Ordering::Relaxed),
                Ok(_) | Err(_) => refused.fetch_add(1, Ordering::Relaxed),
            };
        }));
    }
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    let quota = 100.0 + 100.0 * elapsed;
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    println!(
        "admitted under 4x overload ÷ quota: {:.4} (target 0.98–1.02; admitted {admitted:.0}, refused {}, quota {quota:.0} = burst 100 + 100/s × {elapsed:.2} s)",
        admitted / quota,
        refused.load(Ordering::Relaxed)
    );
    server.stop().await;
}

/// Requests per second of `{ __typename }` with CONCURRENCY clients for one round.
async fn throughput(client: &reqwest::Client, url: &str, key: Option<&str>) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + ROUND;
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, key, done) = (
            client.clone(),
            url.to_string(),
            key.map(str::to_string),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let mut request = client
                    .post(&url)
                    .json(&json!({ "query": "{ __typename }" }));
                if let Some(key) = &key {
                    request = request.bearer_auth(key);
                }
                if let Ok(response) = request.send().await
                    && response.status() == 200
                    && response.bytes().await.is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / ROUND.as_secs_f64()
}
