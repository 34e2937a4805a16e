//! Read benchmarks (run on demand: `cargo bench --bench reads`). The hub runs as its own
//! process (the release binary; a temporary SQLite database, or PostgreSQL when
//! `BENCH_DATABASE_URL` names an empty database); the ceiling is a bare actix-web +
//! async-graphql server answering `{ hello }` in this process, with no auth and no
//! database, loaded the same way in the same run. For each query it prints req/s, p50, p99
//! and the share of the ceiling. `BENCH_CALLERS` (64) concurrent callers, `BENCH_SECS` (5)
//! per query; `BENCH_ONLY` runs only the queries whose name contains it. The dashboard read
//! (a project and its 20 integrations with their health and metrics) runs over integrations
//! that each have `BENCH_LOGS` (50) request logs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use serde_json::{Value, json};

mod support;

use support::{gql, percentile, start_hub};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

struct Hello;

#[Object]
impl Hello {
    async fn hello(&self) -> &str {
        "world"
    }

    /// The shape of the hub's `integrations(first: 20)` read, served from memory: what
    /// async-graphql alone costs for that answer (no auth, no database).
    async fn integrations(
        &self,
        #[graphql(name = "projectId")] _project_id: async_graphql::ID,
        first: i32,
    ) -> Page {
        Page(first.clamp(0, 20) as usize)
    }
}

struct Page(usize);

#[Object]
impl Page {
    async fn nodes(&self) -> Vec<Node> {
        (0..self.0).map(Node).collect()
    }
}

struct Node(usize);

#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
}

#[Object]
impl Node {
    async fn id(&self) -> async_graphql::ID {
        format!("0193b0c2-6a4e-7c1d-9f7e-{:012x}", self.0).into()
    }
    async fn name(&self) -> String {
        format!("gh {}", self.0)
    }
    async fn status(&self) -> Status {
        Status::Active
    }
    async fn config(&self) -> async_graphql::Json<Value> {
        async_graphql::Json(json!({ "owner": "acme", "baseUrl": "http://127.0.0.1:40000" }))
    }
    async fn credentials(&self) -> Credentials {
        Credentials
    }
}

struct Credentials;

#[Object]
impl Credentials {
    async fn is_set(&self) -> bool {
        true
    }
    async fn fields(&self) -> Vec<String> {
        vec!["token".to_string()]
    }
    async fn key_id(&self) -> &str {
        "k1"
    }
    async fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}

type Bare = Schema<Hello, EmptyMutation, EmptySubscription>;

async fn bare(schema: web::Data<Bare>, body: web::Json<async_graphql::Request>) -> HttpResponse {
    let response = schema.execute(body.into_inner()).await;
    HttpResponse::Ok().json(response)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Loads `url` with `body` from `callers` callers for `secs`: (req/s, p50 ms, p99 ms, non-2xx).
async fn load(url: &str, key: Option<&str>, body: &Value) -> (f64, f64, f64, u64) {
    let callers = env_or("BENCH_CALLERS", 64);
    let window = Duration::from_secs(env_or("BENCH_SECS", 5));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(callers as usize)
        .build()
        .unwrap();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, url, key, body) = (
            client.clone(),
            url.to_string(),
            key.map(str::to_string),
            body.to_string(),
        );
        let (latencies, refused) = (latencies.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while started.elapsed() < window {
                let t = Instant::now();
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                if let Some(key) = &key {
                    request = request.bearer_auth(key);
                }
                let response = request.send().await.unwrap();
                let ok = response.status().is_success();
                let _ = response.bytes().await;
                if ok {
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let mut all = latencies.lock().unwrap().clone();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        refused.load(std::sync::atomic::Ordering::Relaxed),
    )
}

async fn run() {
    let schema = web::Data::new(Schema::new(Hello, EmptyMutation, EmptySubscription));
    let ceiling_server = HttpServer::new(move || {
        App::new()
            .app_data(schema.clone())
            .route("/graphql", web::post().to(bare))
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .unwrap();
    let ceiling_url = format!("http://{}/graphql", ceiling_server.addrs()[0]);
    tokio::spawn(ceiling_server.run());

    let database = std::env::var("BENCH_DATABASE_URL").ok();
    let mut env = vec![
        ("HUB_HEALTH_INTERVAL_SECS", "0"),
        ("HUB_RATE_LIMIT_ANONYMOUS", "100000000/1s"),
    ];
    if let Some(url) = &database {
        env.push(("DATABASE_URL", url.as_str()));
    }
    let hub = start_hub(&env).await;
    let client = reqwest::Client::new();
    let project = gql(
        &client,
        &hub,
        "mutation { createProject(input: { name: \"reads\" }) { id } }",
        json!({}),
    )
    .await;
    let project = project["data"]["createProject"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An upstream answering at once, for the calls whose logs the dashboard aggregates.
    let upstream = HttpServer::new(|| {
        App::new().default_service(web::to(|| async { HttpResponse::Ok().json(json!({})) }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let upstream_url = format!("http://{}", upstream.addrs()[0]);
    tokio::spawn(upstream.run());
    let logs = env_or("BENCH_LOGS", 50);
    for i in 0..20 {
        let answer = gql(
            &client,
            &hub,
            "mutation($input: RegisterIntegrationInput!) { registerIntegration(input: $input) { id } }",
            json!({ "input": { "projectId": project, "provider": "github", "name": format!("gh {i}"),
                "config": { "owner": "acme", "baseUrl": upstream_url }, "credentials": { "token": format!("t{i}") } } }),
        )
        .await;
        let id = answer["data"]["registerIntegration"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        for _ in 0..logs {
            gql(
                &client,
                &hub,
                "mutation($id: ID!) { executeRequest(integrationId: $id, input: { method: \"GET\", path: \"/x\" }) { status } }",
                json!({ "id": id }),
            )
            .await;
        }
    }
    let hub_url = format!("http://{}/graphql", hub.addr);
    let (ceiling, c50, c99, _) = load(&ceiling_url, None, &json!({ "query": "{ hello }" })).await;
    println!(
        "backend {}; ceiling (bare actix-web + async-graphql, {{ hello }}): {ceiling:.0} req/s, p50 {c50:.2} ms, p99 {c99:.2} ms",
        if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let anonymous = "{ __typename } without a key";
    let queries = [
        (anonymous, "{ __typename }".to_string()),
        ("{ __typename }", "{ __typename }".to_string()),
        (
            "{ viewer { kind scopes } }",
            "{ viewer { kind scopes } }".to_string(),
        ),
        (
            "{ projects { id name } }",
            "{ projects { id name } }".to_string(),
        ),
        (
            "project(id)",
            format!("{{ project(id: \"{project}\") {{ id name }} }}"),
        ),
        (
            "integrations(first: 1) { id }",
            format!("{{ integrations(projectId: \"{project}\", first: 1) {{ nodes {{ id }} }} }}"),
        ),
        (
            "integrations(first: 20) with config and credentials",
            format!(
                "{{ integrations(projectId: \"{project}\", first: 20) {{ nodes {{ id name status config credentials {{ isSet fields keyId updatedAt }} }} }} }}"
            ),
        ),
        (
            "dashboard: project + 20 integrations with health and metrics",
            format!(
                "{{ project(id: \"{project}\") {{ id name }} integrations(projectId: \"{project}\", first: 20) {{ nodes {{ id name status health {{ status uptimePercent errorRate checksInWindow circuit }} metrics {{ totalRequests failedRequests averageResponseMs p95ResponseMs lastActivity }} }} }} }}"
            ),
        ),
    ];
    // The 20-integration read's shape from memory on the bare server: the ceiling for that
    // answer with async-graphql alone.
    let shape = format!(
        "{{ integrations(projectId: \"{project}\", first: 20) {{ nodes {{ id name status config credentials {{ isSet fields keyId updatedAt }} }} }} }}"
    );
    let mut shape_ceiling = None;
    if "integrations(first: 20) with config and credentials".contains(only.as_str()) {
        let (rate, p50, p99, _) = load(&ceiling_url, None, &json!({ "query": shape })).await;
        println!(
            "reference, the integrations(first: 20) answer from memory on the bare server (async-graphql alone): {rate:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms, share of the ceiling {:.2}",
            rate / ceiling
        );
        shape_ceiling = Some(rate);
    }
    let mut without_key = None;
    for (name, query) in queries {
        if !name.contains(only.as_str()) {
            continue;
        }
        let key = (name != anonymous).then_some(hub.key.as_str());
        let (rate, p50, p99, refused) = load(&hub_url, key, &json!({ "query": query })).await;
        if key.is_none() {
            without_key = Some(rate);
        }
        let versus = match (key, without_key) {
            (Some(_), Some(bare)) if name == "{ __typename }" => {
                format!(", {:.2} of the same without a key", rate / bare)
            }
            _ => match shape_ceiling {
                Some(bare) if query == shape => {
                    format!(", {:.2} of the same answer from memory", rate / bare)
                }
                _ => String::new(),
            },
        };
        println!(
            "{name}: {rate:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms, share of the ceiling {:.2}{versus}{}",
            rate / ceiling,
            if refused > 0 {
                format!(" ({refused} non-2xx!)")
            } else {
                String::new()
            }
        );
    }
}
