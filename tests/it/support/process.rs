//! The built binary run as its own process, the way the README says: no environment needed
//! on SQLite, a `DATABASE_URL` for PostgreSQL. `HUB_TEST_BINARY` runs these tests on another
//! build of it (`cargo build --release && HUB_TEST_BINARY=target/release/integration-hub
//! cargo test --test it binary:: replicas::`).

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Backend, TestDb};

/// The binary the tests run: this build's, or `HUB_TEST_BINARY`.
pub fn binary() -> String {
    std::env::var("HUB_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_integration-hub").to_string())
}

pub struct Running {
    pub child: Child,
    pub addr: String,
    pub stdout: String,
    /// Reads the process's stderr (its logs) as it is written: a pipe nobody reads fills at
    /// 64 KiB, after which the hub's log writer waits and lines queued at exit are lost.
    stderr: tokio::task::JoinHandle<String>,
}

pub fn command(db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(db.dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("HUB_CONFIG")
        .env_remove("HUB_ENCRYPTION_KEYS")
        .env("HUB_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if db.backend == Backend::Postgres {
        cmd.env("DATABASE_URL", &db.url);
    }
    cmd
}

/// Starts `integration-hub` (serve) and waits for its "listening on" line.
pub async fn start(db: &TestDb) -> Running {
    start_with(db, &[]).await
}

/// Starts it with extra environment variables.
pub async fn start_with(db: &TestDb, env: &[(&str, &str)]) -> Running {
    let mut child = command(db, &[])
        .envs(env.iter().copied())
        .spawn()
        .expect("run the binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut errors = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut logs = String::new();
        let _ = errors.read_to_string(&mut logs).await;
        logs
    });
    let mut stdout = String::new();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
            if let Some(rest) = line.strip_prefix("integration-hub listening on http://") {
                return rest.trim_end_matches("/graphql").to_string();
            }
        }
        panic!("the binary exited before listening; stdout: {stdout}");
    })
    .await
    .expect("the binary starts listening");
    Running {
        child,
        addr,
        stdout,
        stderr,
    }
}

/// SIGTERM, then the exit status and everything it wrote to stderr (its logs).
pub async fn stop(mut running: Running) -> String {
    let pid = running.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), running.child.wait())
        .await
        .expect("graceful shutdown")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    tokio::time::timeout(Duration::from_secs(10), running.stderr)
        .await
        .expect("stderr ends with the process")
        .unwrap()
}

/// A GraphQL request to the hub at `addr` (`host:port`) with `key`; its JSON answer. A hub
/// that does not answer within 30 s fails the test rather than holding it.
pub async fn gql(addr: &str, key: &str, query: &str, variables: Value) -> Value {
    reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .timeout(Duration::from_secs(30))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn admin_key_in(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ihk_"))
        .map(str::to_string)
}
/// A new project named `P` through the API of the hub at `addr`; its id.
pub async fn create_project(addr: &str, admin: &str) -> String {
    let created = gql(
        addr,
        admin,
        "mutation { createProject(input: { name: \"P\" }) { id } }",
        json!({}),
    )
    .await;
    created["data"]["createProject"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string()
}

/// A project with integrations `(provider, name, base URL)`, made through the API of the hub
/// at `addr`; returns the project's id and the integrations' ids.
pub async fn project_with(
    addr: &str,
    admin: &str,
    integrations: &[(&str, &str, &str)],
) -> (String, Vec<String>) {
    let project = create_project(addr, admin).await;
    let mut ids = Vec::new();
    for (provider, name, url) in integrations {
        let registered = gql(
            addr,
            admin,
            "mutation($p: ID!, $k: String!, $n: String!, $u: String!) { registerIntegration(input: { projectId: $p, provider: $k, name: $n, config: { baseUrl: $u }, credentials: { token: \"t\" } }) { id } }",
            json!({ "p": project, "k": provider, "n": name, "u": url }),
        )
        .await;
        ids.push(
            registered["data"]["registerIntegration"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{registered}"))
                .to_string(),
        );
    }
    (project, ids)
}

/// kill -9: the process ends at once, with nothing given back.
pub fn kill(running: Running) {
    let pid = running.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    drop(running);
}

/// A one-way sync config from `source` to `target` keyed by `key` (records as
/// `{"key": ...}` read from `/items` and created at `/items`), with `extra` fields merged in;
/// returns its id.
pub async fn create_sync(
    addr: &str,
    admin: &str,
    project: &str,
    (source, target): (&str, &str),
    extra: Value,
) -> String {
    let mut input = json!({ "projectId": project, "name": "s", "sourceIntegrationId": source,
        "targetIntegrationId": target, "sourceRead": { "path": "/items" },
        "targetWrite": { "createPath": "/items" }, "sourceKey": "key", "targetKey": "key",
        "mappings": [{ "target": "key", "source": "key" }] });
    for (field, value) in extra.as_object().into_iter().flatten() {
        input[field] = value.clone();
    }
    let created = gql(
        addr,
        admin,
        "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id } }",
        json!({ "input": input }),
    )
    .await;
    created["data"]["createSyncConfig"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string()
}

/// Starts a run of `config`; its id.
pub async fn run_sync(addr: &str, admin: &str, config: &str) -> String {
    let started = gql(
        addr,
        admin,
        "mutation($id: ID!) { runSync(configId: $id) { id } }",
        json!({ "id": config }),
    )
    .await;
    started["data"]["runSync"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_string()
}

/// Polls the config's runs until its one run has ended (at most `within`); that run. There
/// must be exactly one run, however many replicas had it.
pub async fn ended_run(addr: &str, admin: &str, config: &str, within: Duration) -> Value {
    let started = std::time::Instant::now();
    loop {
        let runs = gql(
            addr,
            admin,
            "query($id: ID!) { syncRuns(configId: $id, first: 5) { edges { node { id status attempts recordsRead recordsWritten recordsSkipped recordsFailed errorSamples { key message } } } } }",
            json!({ "id": config }),
        )
        .await;
        let edges = runs["data"]["syncRuns"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{runs}"))
            .clone();
        assert_eq!(edges.len(), 1, "one run, taken over: {runs}");
        let run = edges[0]["node"].clone();
        if (run["status"] != "RUNNING" && run["status"] != "QUEUED") || started.elapsed() > within {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keys of the records the receiver `target` was sent, in order (with repeats).
pub fn keys_written(target: &super::receiver::Receiver) -> Vec<String> {
    target
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter_map(|body| body["key"].as_str().map(str::to_string))
        .collect()
}
