//! A database that is down, locked or too slow is an outage, not a bug: requests are answered
//! within `HUB_DB_TIMEOUT_MS` with `UNAVAILABLE` (HTTP 503, `Retry-After`), `/readyz` within a
//! second, and the hub recovers on its own once the database is back.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::json;

use crate::calls::{EXECUTE, register};
use crate::on_both_backends;
use crate::support::db::{hold_sqlite_write_lock, postgres_admin_url};
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Answer, Backend, TestApp};

on_both_backends!(
    a_locked_or_stopped_database_is_answered_unavailable,
    answered_calls_keep_their_logs_through_an_outage,
    a_run_that_loses_the_database_is_not_stuck,
    a_run_rides_out_a_short_outage,
);

const TIMEOUT_MS: u64 = 400;

async fn create_project(app: &TestApp, name: &str) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = app
        .gql(
            &app.admin_key,
            "mutation($n: String!) { createProject(input: { name: $n }) { id } }",
            json!({ "n": name }),
        )
        .await;
    (answer, started.elapsed())
}

fn assert_unavailable(answer: &Answer, took: Duration, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert_eq!(answer.code(), "UNAVAILABLE", "{what}");
    assert_eq!(answer.header("retry-after"), Some("1"), "{what}");
    assert_eq!(
        answer.message(),
        "service temporarily unavailable",
        "no internals"
    );
    // Answered once the database wait ran out, not after whatever the outage lasts (the
    // bound is loose: it tells a bounded wait from a hang on a shared, noisy machine).
    assert!(
        took < Duration::from_millis(TIMEOUT_MS * 10),
        "{what} took {took:?}"
    );
}

async fn readyz(app: &TestApp) -> (u16, Duration) {
    let started = Instant::now();
    let status = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (status, started.elapsed())
}

async fn a_locked_or_stopped_database_is_answered_unavailable(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| config.db_timeout_ms = TIMEOUT_MS).await;
    create_project(&app, "before").await.0.data();
    match backend {
        Backend::Sqlite => {
            // Another process holds SQLite's write lock.
            let path = app.db.url.strip_prefix("sqlite://").unwrap();
            let mut holder = hold_sqlite_write_lock(path.as_ref()).await;
            let (answer, took) = create_project(&app, "while locked").await;
            assert_unavailable(&answer, took, "write behind a held lock");
            diesel::connection::SimpleConnection::batch_execute(&mut holder, "ROLLBACK").unwrap();
        }
        Backend::Postgres => {
            // Another session holds a lock on the table the mutation writes.
            let mut holder = AsyncPgConnection::establish(&app.db.url).await.unwrap();
            holder
                .batch_execute("BEGIN; LOCK TABLE projects IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            let (answer, took) = create_project(&app, "while locked").await;
            assert_unavailable(&answer, took, "write behind a held lock");
            holder.batch_execute("ROLLBACK").await.unwrap();

            // The database stops taking connections and drops the ones it has.
            let outage = Outage::begin(&app).await;
            let (answer, took) = create_project(&app, "while stopped").await;
            assert_unavailable(&answer, took, "database refusing connections");
            let started = Instant::now();
            let read = app
                .gql(&app.admin_key, "{ projects { id } }", json!({}))
                .await;
            assert_unavailable(&read, started.elapsed(), "read while stopped");
            let (status, took) = readyz(&app).await;
            assert_eq!(status, 503);
            assert!(took < Duration::from_secs(3), "/readyz took {took:?}");
            outage.end().await;
        }
    }
    // Back without a restart.
    let (status, _) = readyz(&app).await;
    assert_eq!(status, 200);
    create_project(&app, "after").await.0.data();
    let projects = app
        .gql(&app.admin_key, "{ projects { name } }", json!({}))
        .await;
    let names: Vec<&str> = projects.data()["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before", "after"], "nothing half-written");
    app.stop().await;
}

/// An outage while calls go on: calls keep being answered, their logs wait in the journal
/// (none is dropped), and once `HUB_JOURNAL_MAX_PENDING` rows wait, calls are refused with
/// UNAVAILABLE before they reach the upstream. When the database is back every answered
/// call's log is stored.
async fn answered_calls_keep_their_logs_through_an_outage(backend: Backend) {
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let app = TestApp::start_configured(backend, |config| {
        config.db_timeout_ms = TIMEOUT_MS;
        config.journal_max_pending = 8;
        config.integration_cache_secs = 60;
        config.metrics_token = Some(METRICS_TOKEN.into());
    })
    .await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "github",
        "gh",
        json!({ "baseUrl": upstream.url }),
        json!({ "token": "t0k3n" }),
    )
    .await;
    let call = json!({ "id": id, "input": { "method": "GET", "path": "/repos" } });
    app.gql(&app.admin_key, EXECUTE, call.clone()).await.data();

    // The outage: SQLite's write lock held elsewhere; PostgreSQL refusing connections.
    let outage = Outage::begin(&app).await;
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..20 {
        let reached = upstream.count();
        let answer = app.gql(&app.admin_key, EXECUTE, call.clone()).await;
        if answer.body.get("errors").is_none() {
            answered += 1;
        } else {
            assert_eq!(answer.code(), "UNAVAILABLE", "{}", answer.body);
            assert_eq!(upstream.count(), reached, "a refused call is not made");
            refused += 1;
        }
    }
    assert!(answered >= 2, "calls go on during the outage ({answered})");
    assert!(
        refused >= 1,
        "the journal's bound refuses calls ({answered} answered)"
    );
    assert_eq!(upstream.count(), 1 + answered);
    // Operators see the rows waiting (the scrape needs no database).
    let waiting = metric(&app, "hub_journal_pending_rows").await;
    assert!(
        waiting >= answered as f64,
        "{waiting} rows reported waiting"
    );
    assert_eq!(metric(&app, "hub_journal_max_pending_rows").await, 8.0);

    // The database is back: every answered call's log is stored.
    outage.end().await;
    let mut stored = 0;
    for _ in 0..100 {
        let logs = app
            .gql(
                &app.admin_key,
                "query($id: ID!) { integrationLogs(integrationId: $id, first: 100) { edges { cursor } } }",
                json!({ "id": id }),
            )
            .await;
        if logs.body.get("errors").is_none() {
            stored = logs.data()["integrationLogs"]["edges"]
                .as_array()
                .unwrap()
                .len();
            if stored == 1 + answered {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 1 + answered, "every answered call's log is stored");
    assert_eq!(metric(&app, "hub_journal_pending_rows").await, 0.0);
    app.stop().await;
}

const METRICS_TOKEN: &str = "metrics-token-for-tests";

/// A value from `GET /metrics` (the scrape is refused without the token).
async fn metric(app: &TestApp, name: &str) -> f64 {
    let url = format!("{}/metrics", app.base);
    let refused = app.client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let text = app
        .client
        .get(&url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the scrape:\n{text}"))
}

/// The database held (SQLite) or refusing connections (PostgreSQL) for longer than
/// `HUB_JOB_LEASE_SECS`.
struct Outage {
    sqlite: Option<diesel::SqliteConnection>,
    pg_name: Option<String>,
}

impl Outage {
    async fn begin(app: &TestApp) -> Self {
        match app.db.backend {
            Backend::Sqlite => {
                let path = app.db.url.strip_prefix("sqlite://").unwrap();
                let holder = hold_sqlite_write_lock(path.as_ref()).await;
                Self {
                    sqlite: Some(holder),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let name = app.db.pg_name().unwrap().to_string();
                let mut admin = AsyncPgConnection::establish(&postgres_admin_url())
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!(
                        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
                         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                    ))
                    .await
                    .unwrap();
                Self {
                    sqlite: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    async fn end(self) {
        if let Some(mut holder) = self.sqlite {
            diesel::connection::SimpleConnection::batch_execute(&mut holder, "ROLLBACK").unwrap();
        }
        if let Some(name) = self.pg_name {
            let mut admin = AsyncPgConnection::establish(&postgres_admin_url())
                .await
                .unwrap();
            admin
                .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
                .await
                .unwrap();
        }
    }
}

/// A sync from a source answering two records after `delay` to a target that accepts
/// writes: (app config id, target).
async fn slow_sync(app: &TestApp, source: &Receiver, target: &Receiver) -> String {
    let project = app.create_project(&app.admin_key, "P").await;
    let from = register(
        app,
        &project,
        "generic_rest",
        "source",
        json!({ "baseUrl": source.url }),
        json!({}),
    )
    .await;
    let to = register(
        app,
        &project,
        "generic_rest",
        "target",
        json!({ "baseUrl": target.url }),
        json!({}),
    )
    .await;
    let created = app
        .gql(
            &app.admin_key,
            "mutation($input: SyncConfigInput!) { createSyncConfig(input: $input) { id } }",
            json!({ "input": { "projectId": project, "name": "s", "sourceIntegrationId": from,
                "targetIntegrationId": to, "sourceRead": { "path": "/items" },
                "targetWrite": { "createPath": "/items" }, "sourceKey": "key", "targetKey": "key",
                "mappings": [{ "target": "key", "source": "key" }] } }),
        )
        .await;
    created.data()["createSyncConfig"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

const RUN: &str = "mutation($id: ID!) { runSync(configId: $id) { id } }";

/// Starts a run of `config`; its id.
async fn run_sync(app: &TestApp, config: &str) -> String {
    let started = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    started.data()["runSync"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The run once it has ended (status, error, records written); null if it does not end
/// within 10 s.
async fn ended_run(app: &TestApp, config: &str, run_id: &str) -> serde_json::Value {
    for _ in 0..100 {
        let runs = app
            .gql(
                &app.admin_key,
                "query($id: ID!) { syncRuns(configId: $id) { edges { node { id status error recordsWritten attempts } } } }",
                json!({ "id": config }),
            )
            .await;
        if runs.body.get("errors").is_none() {
            let node = runs.data()["syncRuns"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone())
                .find(|n| n["id"] == json!(run_id))
                .unwrap();
            if node["status"] != "RUNNING" && node["status"] != "QUEUED" {
                return node;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    json!(null)
}

/// A source that answers two records after 1.5 s, and a target that accepts writes.
async fn slow_source_and_target() -> (Receiver, Receiver) {
    let source = Receiver::start(|_| {
        Reply::json(200, &json!([{ "key": "a" }, { "key": "b" }]))
            .after(Duration::from_millis(1500))
    })
    .await;
    let target = Receiver::start(|_| Reply::json(201, &json!({}))).await;
    (source, target)
}

/// A sync run whose process loses the database for longer than its lease does not stay
/// RUNNING: once the database is back it ends — failed with the reason, or, when even that
/// result could not be stored (the run still RUNNING with its lease run out), taken over and
/// resumed to its end — and the config runs again.
async fn a_run_that_loses_the_database_is_not_stuck(backend: Backend) {
    let (source, target) = slow_source_and_target().await;
    let app = TestApp::start_configured(backend, |config| {
        config.db_timeout_ms = 300;
        config.job_lease_secs = 2;
        config.integration_cache_secs = 60;
    })
    .await;
    let config = slow_sync(&app, &source, &target).await;
    let run_id = run_sync(&app, &config).await;

    // The database goes away while the run reads its (slow) source, and stays away for
    // longer than the lease.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outage = Outage::begin(&app).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    outage.end().await;

    let ended = ended_run(&app, &config, &run_id).await;
    match ended["status"].as_str() {
        Some("FAILED" | "INTERRUPTED") => assert!(
            ended["error"].as_str().is_some_and(|e| !e.is_empty()),
            "with a reason: {ended}"
        ),
        Some("SUCCEEDED") => assert_eq!(ended["attempts"], 2, "resumed: {ended}"),
        _ => panic!("the run ended: {ended}"),
    }
    // The config is not blocked: it runs again.
    let again = app.gql(&app.admin_key, RUN, json!({ "id": config })).await;
    assert!(again.data()["runSync"]["id"].is_string());
    app.stop().await;
}

/// A database outage shorter than half the lease costs a run nothing: its database steps
/// (reading what it synced before, recording each write) wait and retry, and it succeeds.
async fn a_run_rides_out_a_short_outage(backend: Backend) {
    let (source, target) = slow_source_and_target().await;
    let app = TestApp::start_configured(backend, |config| {
        config.db_timeout_ms = 300;
        config.job_lease_secs = 10;
        config.integration_cache_secs = 60;
    })
    .await;
    let config = slow_sync(&app, &source, &target).await;
    let run_id = run_sync(&app, &config).await;

    // The database goes away while the run reads its source (answering after 1.5 s), and
    // comes back 2 s later: the run's first database step after the read meets the outage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outage = Outage::begin(&app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    outage.end().await;

    let ended = ended_run(&app, &config, &run_id).await;
    assert_eq!(ended["status"], "SUCCEEDED", "{ended}");
    assert_eq!(ended["recordsWritten"], 2, "{ended}");
    assert_eq!(target.count(), 2);
    app.stop().await;
}
