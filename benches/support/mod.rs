//! What the benchmarks share: the hub started as its own process (the release binary on a
//! temporary SQLite database), its address and admin key, and its memory.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

#[allow(dead_code)]
pub struct Hub {
    /// Held for its id; the process is killed when this drops.
    #[allow(dead_code)]
    pub child: tokio::process::Child,
    pub addr: String,
    pub key: String,
    _dir: tempfile::TempDir,
}

/// Starts the hub with local upstreams allow-listed, quotas out of the way and the health
/// monitor off, plus `extra` environment.
#[allow(dead_code)]
pub async fn start_hub(extra: &[(&str, &str)]) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    // BENCH_HUB_BIN runs another build of the hub (an older commit's) under the same client.
    let binary = std::env::var("BENCH_HUB_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_integration-hub").to_string());
    let mut command = tokio::process::Command::new(binary);
    command
        .current_dir(dir.path())
        .env("HUB_BIND", "127.0.0.1:0")
        .env("HUB_OUTBOUND_ALLOW", "127.0.0.1/32")
        .env("HUB_OUTBOUND_RATE_LIMIT", "1000000/1s")
        .env("HUB_RATE_LIMIT_API_KEY", "100000000/1s")
        .env("HUB_HEALTH_INTERVAL_SECS", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("run the hub");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut key) = (String::new(), String::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.trim().starts_with("ihk_") {
            key = line.trim().to_string();
        }
        if let Some(rest) = line.strip_prefix("integration-hub listening on http://") {
            addr = rest.trim_end_matches("/graphql").to_string();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Hub {
        child,
        addr,
        key,
        _dir: dir,
    }
}

/// Resident memory of a process, in MB.
#[allow(dead_code)]
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) a process has used, in seconds.
#[allow(dead_code)]
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The `p` quantile of sorted figures.
#[allow(dead_code)]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One GraphQL request to the hub with its admin key.
#[allow(dead_code)]
pub async fn gql(
    client: &reqwest::Client,
    hub: &Hub,
    query: &str,
    variables: serde_json::Value,
) -> serde_json::Value {
    client
        .post(format!("http://{}/graphql", hub.addr))
        .bearer_auth(&hub.key)
        .json(&serde_json::json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
