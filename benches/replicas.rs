//! The cross-replica event stream (run on demand: `cargo bench --bench replicas`). Two
//! replicas (A and B) on one fresh PostgreSQL database (`BENCH_POSTGRES_URL`, default local
//! trust auth), in this process; events are published on B's bus and read from A's, so
//! what is measured is the relay: B's NOTIFY sender, PostgreSQL, A's listener. Prints:
//! 1. latency from B's publish to A's bus at a steady 500 events/s (goal p99 ≤ 50 ms);
//! 2. events per second carried at rising offered rates, with loss (goal ≥ 20,000/s);
//!    each event is a request log of a realistic size (≈ 450 bytes as JSON);
//! 3. with Redis (`BENCH_REDIS_URL`, default local): a key's quota across three replicas
//!    hammered for 5 s, admitted ÷ what the quota allows in that time (goal within ±5 %).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use integration_hub::app;
use integration_hub::config::Config;
use integration_hub::context::AppState;
use integration_hub::crypto::Keyring;
use integration_hub::db::rows::RequestLogRow;
use integration_hub::events::{Event, EventKind};
use tokio::sync::broadcast::error::RecvError;

mod support;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn admin_url() -> String {
    std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn run() {
    let name = format!("ihub_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let mut conn = AsyncPgConnection::establish(&admin)
        .await
        .expect("PostgreSQL at BENCH_POSTGRES_URL");
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let redis =
        std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = Config {
        redis_url: Some(redis),
        redis_timeout_ms: 200,
        rate_limit_api_key: "1000000/1s".into(),
        database_url: url,
        bind: "127.0.0.1:0".into(),
        encryption_keys: Some(Keyring::generate_spec("bench")),
        health_interval_secs: 0,
        event_buffer: 1 << 17,
        ..Config::default()
    };
    let prepared = app::prepare(config.clone()).await.unwrap();
    let admin = prepared.first_start.expect("a fresh database").admin_key;
    let a = prepared.state;
    let b = app::prepare(config.clone()).await.unwrap().state;
    let c = app::prepare(config).await.unwrap().state;
    let servers = [
        app::start(a.clone()).unwrap(),
        app::start(b.clone()).unwrap(),
        app::start(c.clone()).unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;

    latency(&a, &b).await;
    for rate in [10_000, 20_000, 40_000, 80_000] {
        throughput(&a, &b, rate).await;
    }
    let bases: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.addr))
        .collect();
    quotas(&bases, &admin).await;

    for server in servers {
        server.stop().await;
    }
    drop((a, b, c));
    let _ = conn
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await;
}

fn log_event(run: &str, i: usize) -> Event {
    let at = Utc::now().naive_utc();
    let row = RequestLogRow {
        id: uuid::Uuid::now_v7().to_string(),
        team_id: "team-bench".into(),
        project_id: "project-bench".into(),
        integration_id: format!("{run}-{i}"),
        level: "INFO".into(),
        method: "GET".into(),
        path: "/repos/acme/widgets/issues?state=open&per_page=100".into(),
        status: Some(200),
        duration_ms: 42,
        bytes_in: 0,
        bytes_out: 18_302,
        error: None,
        actor: "api_key:0192f5c4-8a57-7a1e-9c1e-3b2f1d4e5a6b".into(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        created_at: at,
    };
    Event {
        kind: EventKind::IntegrationRequest,
        team_id: row.team_id.clone(),
        project_id: Some(row.project_id.clone()),
        subject_id: row.integration_id.clone(),
        payload: serde_json::Value::Null,
        request_log: Some(Arc::new(row)),
        at,
    }
}

/// Reads A's bus until `want` events of `run` arrived or `quiet` passes without one: the
/// latency of each (ms) and how many the bus said were missed.
async fn collect(
    receiver: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    run: &str,
    want: usize,
    quiet: Duration,
) -> (Vec<f64>, u64) {
    let mut latencies = Vec::with_capacity(want);
    let mut missed = 0;
    while latencies.len() < want {
        match tokio::time::timeout(quiet, receiver.recv()).await {
            Ok(Ok(event)) if event.subject_id.starts_with(run) => {
                let lag = Utc::now().naive_utc() - event.at;
                latencies.push(lag.num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => missed += n,
            Ok(Err(RecvError::Closed)) | Err(_) => break,
        }
    }
    (latencies, missed)
}

async fn latency(a: &AppState, b: &AppState) {
    const EVENTS: usize = 2_500;
    let mut receiver = a.events.subscribe();
    let bus = b.events.clone();
    let publisher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        for i in 0..EVENTS {
            tick.tick().await;
            bus.publish(log_event("lat", i));
        }
    });
    let (mut latencies, missed) =
        collect(&mut receiver, "lat", EVENTS, Duration::from_secs(5)).await;
    publisher.await.unwrap();
    latencies.sort_by(f64::total_cmp);
    println!(
        "cross-replica latency at 500 events/s: {} of {EVENTS} arrived (missed {missed}), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= 50 ms)",
        latencies.len(),
        support::percentile(&latencies, 0.50),
        support::percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
    );
}

async fn throughput(a: &AppState, b: &AppState, rate: usize) {
    const SECONDS: usize = 4;
    let run = format!("t{rate}");
    let total = rate * SECONDS;
    let mut receiver = a.events.subscribe();
    let bus = b.events.clone();
    let tag = run.clone();
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        // 1 ms ticks, each publishing its share.
        let per_tick = rate / 1000;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0;
        while sent < total {
            tick.tick().await;
            for _ in 0..per_tick.min(total - sent) {
                bus.publish(log_event(&tag, sent));
                sent += 1;
            }
        }
        started.elapsed()
    });
    let (mut latencies, missed) = collect(&mut receiver, &run, total, Duration::from_secs(3)).await;
    let published_in = publisher.await.unwrap();
    let received = latencies.len();
    let took = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "offered {rate}/s for {SECONDS} s (published in {:.2} s): received {received} of {total} ({:.1} % lost, {missed} missed on A's bus), carried {:.0} events/s, lag p50 {:.1} ms p99 {:.1} ms",
        published_in.as_secs_f64(),
        100.0 * (total - received) as f64 / total as f64,
        received as f64 / took.max(published_in.as_secs_f64()),
        support::percentile(&latencies, 0.50),
        support::percentile(&latencies, 0.99),
    );
}

/// A key allowed `RATE`/s (burst `RATE`) hammered through three replicas for `SECONDS`
/// by 24 callers: admitted ÷ (burst + rate × elapsed).
async fn quotas(bases: &[String], admin: &str) {
    const RATE: u64 = 200;
    const SECONDS: u64 = 5;
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{}/graphql", bases[0]))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "query": format!("mutation {{ createApiKey(input: {{ name: \"bench\", scopes: [\"integrations:read\"], rateLimit: {{ requests: {RATE}, periodSeconds: 1 }} }}) {{ key }} }}") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    let started = Instant::now();
    let until = started + Duration::from_secs(SECONDS);
    let callers = (0..24).map(|i| {
        let (client, key) = (client.clone(), key.clone());
        let url = format!("{}/graphql", bases[i % bases.len()]);
        tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u64, 0u64);
            while Instant::now() < until {
                let answer = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&serde_json::json!({ "query": "{ __typename }" }))
                    .send()
                    .await
                    .unwrap();
                match answer.status().as_u16() {
                    200 => admitted += 1,
                    429 => refused += 1,
                    other => panic!("status {other}"),
                }
            }
            (admitted, refused)
        })
    });
    let (mut admitted, mut refused) = (0, 0);
    for caller in futures_util::future::join_all(callers).await {
        let (a, r) = caller.unwrap();
        admitted += a;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = RATE as f64 + RATE as f64 * elapsed;
    println!(
        "global quota {RATE}/s across {} replicas for {elapsed:.2} s: admitted {admitted} of {} requests; the quota allows {allowed:.0}: ratio {:.3} (goal 0.95-1.05)",
        bases.len(),
        admitted + refused,
        admitted as f64 / allowed,
    );
}
