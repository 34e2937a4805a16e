//! The built binary, run the way the README says: no environment needed on SQLite, a
//! `DATABASE_URL` for PostgreSQL. Also checks what it logs and that a restart keeps all.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::on_both_backends;
use crate::support::db::hold_sqlite_write_lock;
use crate::support::process::{
    admin_key_in, command, create_project, create_sync, ended_run, gql, keys_written, kill,
    project_with, run_sync, start, start_with, stop,
};
use crate::support::{Backend, TestDb};

on_both_backends!(
    binary_first_start_restart_and_cli,
    output_that_cannot_be_written_never_stops_the_server,
    committed_durability_loses_nothing_at_kill_9,
    a_sync_killed_mid_page_resumes_writing_again_only_what_was_in_flight,
    a_call_cut_by_the_shutdown_is_logged,
    webhooks_queued_at_kill_9_are_delivered_after_restart
);

/// A graphql-transport-ws connection, initialised with `key` and running a subscription.
async fn open_socket(
    addr: &str,
    key: &str,
    project: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    let ack = socket.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    let subscribe = json!({ "id": "1", "type": "subscribe",
        "payload": { "query": "subscription($p: ID!) { integrationEvents(projectId: $p) { __typename } }",
                     "variables": { "p": project } } });
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    socket
}

async fn binary_first_start_restart_and_cli(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key_file = db.dir.path().join(match backend {
        Backend::Sqlite => "integration-hub.key",
        Backend::Postgres => "integration-hub.key",
    });

    let first = start(&db).await;
    let admin = admin_key_in(&first.stdout).expect("first start prints the admin key");
    assert!(key_file.exists(), "key file created beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    if backend == Backend::Sqlite {
        assert!(
            db.dir.path().join("integration-hub.db").exists(),
            "default SQLite file created"
        );
    }
    let key_file_contents = std::fs::read_to_string(&key_file).unwrap();

    let project = create_project(&first.addr, &admin).await;
    let secret = "SECRET-binary-token-5e1f";
    let registered = gql(
        &first.addr,
        &admin,
        "mutation($p: ID!, $s: String!) { registerIntegration(input: { projectId: $p, provider: \"gitlab\", name: \"gl\", config: {}, credentials: { token: $s } }) { id } }",
        json!({ "p": project, "s": secret }),
    )
    .await;
    let integration = registered["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let created = gql(
        &first.addr,
        &admin,
        "mutation { createApiKey(input: { name: \"ci\", scopes: [\"integrations:read\"] }) { key } }",
        json!({}),
    )
    .await;
    let ci_key = created["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    #[cfg(unix)]
    if backend == Backend::Sqlite {
        // The database and its WAL files, written to by now, are the owner's only.
        use std::os::unix::fs::PermissionsExt;
        let mut checked = 0;
        for suffix in ["", "-wal", "-shm"] {
            let path = db.dir.path().join(format!("integration-hub.db{suffix}"));
            if let Ok(meta) = std::fs::metadata(&path) {
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    0o600,
                    "{}",
                    path.display()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 3, "the database runs in WAL mode");
    }
    // A request's id is on its log lines (the access line among them).
    let traced = reqwest::Client::new()
        .post(format!("http://{}/graphql", first.addr))
        .header("authorization", format!("Bearer {admin}"))
        .header("x-request-id", "trace-me-4711")
        .json(&json!({ "query": "{ viewer { kind } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-request-id"], "trace-me-4711");
    // SIGTERM with a WebSocket open: the socket is closed at once with 1012 (service restart)
    // and the process exits well before the 30 s grace period.
    let mut socket = open_socket(&first.addr, &admin, &project).await;
    let stopping = std::time::Instant::now();
    let closed = tokio::spawn(async move {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    let logs = stop(first).await;
    assert_eq!(
        closed.await.unwrap(),
        Some(1012),
        "close frame: service restart"
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "an open WebSocket held the stop for {:?}",
        stopping.elapsed()
    );
    assert!(logs.contains("request"), "request logs are written: {logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("request_id=trace-me-4711") && l.contains("status=200")),
        "the access line carries the request id: {logs}"
    );
    for s in [secret, admin.as_str(), ci_key.as_str()] {
        assert!(!logs.contains(s), "logs contain a secret");
    }

    // Restart: same data, same key file, the admin key still works, no new admin key printed.
    let second = start(&db).await;
    assert_eq!(admin_key_in(&second.stdout), None);
    let back = gql(
        &second.addr,
        &admin,
        "query($i: ID!) { projects { name } integration(id: $i) { name credentials { isSet fields } } }",
        json!({ "i": integration }),
    )
    .await;
    assert_eq!(
        back["data"],
        json!({ "projects": [{ "name": "P" }], "integration": { "name": "gl", "credentials": { "isSet": true, "fields": ["token"] } } })
    );
    let with_ci = gql(&second.addr, &ci_key, "{ projects { name } }", json!({})).await;
    assert_eq!(with_ci["data"]["projects"][0]["name"], "P");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key_file_contents
    );

    // The CLI makes a second team with its own admin key, usable at once.
    let out = command(&db, &["team", "create", "second"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let team_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("admin key: "))
        .expect("team create prints the key")
        .trim()
        .to_string();
    let theirs = gql(&second.addr, &team_key, "{ projects { name } }", json!({})).await;
    assert_eq!(theirs["data"]["projects"], json!([]));

    let out = command(
        &db,
        &[
            "api-key",
            "create",
            "--team",
            "second",
            "--scopes",
            "integrations:read,logs:read",
            "--name",
            "ci",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cli_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api key:"))
        .unwrap()
        .trim()
        .to_string();
    let keys = gql(
        &second.addr,
        &team_key,
        "{ apiKeys { name scopes } }",
        json!({}),
    )
    .await;
    assert!(
        keys["data"]["apiKeys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["scopes"] == json!(["integrations:read", "logs:read"]))
    );
    assert!(
        gql(&second.addr, &cli_key, "{ projects { name } }", json!({})).await["data"]["projects"]
            .is_array()
    );

    let bad = command(
        &db,
        &["api-key", "create", "--team", "second", "--scopes", "nope"],
    )
    .output()
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scopes: nope"));

    stop(second).await;

    // A missing key file stops the start, naming the key; no new key is made in its place
    // (it would not open the sealed credentials). A replaced key is refused too.
    let backup = key_file.with_extension("bak");
    std::fs::rename(&key_file, &backup).unwrap();
    let refused = |what: &'static str| {
        let mut cmd = command(&db, &[]);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("a refused start exits")
                .unwrap();
            assert!(!out.status.success(), "{what}: the start must fail");
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    };
    let stderr = refused("missing key file").await;
    assert!(
        stderr.contains("is missing") && stderr.contains("`k1`") && stderr.contains("Restore"),
        "{stderr}"
    );
    assert!(
        !key_file.exists(),
        "no key file made in place of the missing one"
    );
    std::fs::write(
        &key_file,
        integration_hub::crypto::Keyring::generate_spec("k1"),
    )
    .unwrap();
    let stderr = refused("replaced key").await;
    assert!(stderr.contains("does not open"), "{stderr}");
    std::fs::rename(&backup, &key_file).unwrap();
    let restored = start(&db).await;
    let back = gql(&restored.addr, &admin, "{ projects { name } }", json!({})).await;
    assert_eq!(back["data"]["projects"][0]["name"], "P");
    stop(restored).await;
}

/// A command whose standard output and error both go to /dev/full (every write fails).
fn to_full_disk(db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = command(db, args);
    let full = || {
        Stdio::from(
            std::fs::File::options()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
    };
    cmd.stdout(full()).stderr(full());
    cmd
}

/// Logs and messages that cannot be written never stop the server: a first start that cannot
/// show its admin key fails and leaves no key behind, and a server whose output is on a full
/// disk (with debug logging) still answers every request and stops cleanly.
async fn output_that_cannot_be_written_never_stops_the_server(backend: Backend) {
    let db = TestDb::new(backend).await;
    // (`output()` would capture the streams again: spawn and wait instead.)
    let mut child = to_full_disk(&db, &[]).spawn().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("a start that cannot show its admin key exits")
        .unwrap();
    assert!(
        !status.success(),
        "the key could not be shown: the start fails"
    );

    // Nothing unusable was left: the next start is a first start again and shows a key.
    let first = start(&db).await;
    let admin = admin_key_in(&first.stdout).expect("a new admin key is made and shown");
    stop(first).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = to_full_disk(&db, &[])
        .env("HUB_BIND", &addr)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("http://{addr}/healthz")).send().await {
            up = response.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server answers with its output on a full disk");
    for i in 0..20 {
        let created = gql(
            &addr,
            &admin,
            "mutation($n: String!) { createProject(input: { name: $n }) { id } }",
            json!({ "n": format!("p{i}") }),
        )
        .await;
        assert!(
            created["data"]["createProject"]["id"].is_string(),
            "{created}"
        );
    }
    let projects = gql(&addr, &admin, "{ projects { id } }", json!({})).await;
    assert_eq!(projects["data"]["projects"].as_array().unwrap().len(), 20);
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// With `HUB_JOURNAL_DURABILITY=committed` a call answers only once its log is committed: a
/// kill -9 in the middle of a burst of calls loses none of the answered calls' logs.
async fn committed_durability_loses_nothing_at_kill_9(backend: Backend) {
    use crate::support::receiver::{Receiver, Reply};
    let upstream = Receiver::start(|_| Reply::json(200, &json!({ "ok": true }))).await;
    let db = TestDb::new(backend).await;
    let env = [
        ("HUB_JOURNAL_DURABILITY", "committed"),
        ("HUB_OUTBOUND_ALLOW", "127.0.0.1/32"),
        ("RUST_LOG", "warn"),
    ];
    let running = start_with(&db, &env).await;
    let admin = admin_key_in(&running.stdout).unwrap();
    let addr = running.addr.clone();
    let (_, ids) = project_with(&addr, &admin, &[("github", "gh", &upstream.url)]).await;
    let integration = ids[0].clone();

    // 16 callers call as fast as they can; the process is killed while they do.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..16 {
        let (addr, admin, integration, answered) = (
            addr.clone(),
            admin.clone(),
            integration.clone(),
            answered.clone(),
        );
        callers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let response = client
                    .post(format!("http://{addr}/graphql"))
                    .header("authorization", format!("Bearer {admin}"))
                    .json(&json!({ "query": "mutation($i: ID!) { executeRequest(integrationId: $i, input: { method: \"GET\", path: \"/x\" }) { status } }", "variables": { "i": integration } }))
                    .send()
                    .await;
                let Ok(response) = response else { return };
                let Ok(body) = response.json::<Value>().await else { return };
                if body["data"]["executeRequest"]["status"] == 200 {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    // Then the log table stops taking writes (another session holds its lock): calls
    // answered from here on have rows that wait. The kill comes while they wait.
    // (At least 20 answered first: a fixed wait made too few on a loaded machine.)
    for _ in 0..300 {
        if answered.load(std::sync::atomic::Ordering::SeqCst) >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_lock = answered.load(std::sync::atomic::Ordering::SeqCst);
    let lock = hold_log_table(&db).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    kill(running);
    for caller in callers {
        let _ = caller.await;
    }
    drop(lock);
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(before_lock > 10, "the burst made calls ({before_lock})");

    // After a restart every answered call has its log.
    let back = start(&db).await;
    let mut stored = 0;
    let mut after = Value::Null;
    loop {
        let page = gql(
            &back.addr,
            &admin,
            "query($i: ID!, $a: String) { integrationLogs(integrationId: $i, first: 100, after: $a) { edges { cursor } pageInfo { hasNextPage endCursor } } }",
            json!({ "i": integration, "a": after }),
        )
        .await;
        let logs = &page["data"]["integrationLogs"];
        stored += logs["edges"].as_array().unwrap().len();
        if logs["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = logs["pageInfo"]["endCursor"].clone();
    }
    assert!(
        stored >= answered,
        "{answered} calls were answered but only {stored} logs survived the kill"
    );
    stop(back).await;
}

/// Another session holding the request-log table's write lock until dropped (the fields are
/// held for their drop: closing the connection, or telling the PostgreSQL task to let go).
#[allow(dead_code)]
enum LogTableLock {
    Sqlite(diesel::SqliteConnection),
    Postgres(tokio::sync::oneshot::Sender<()>),
}

async fn hold_log_table(db: &TestDb) -> LogTableLock {
    match db.backend {
        Backend::Sqlite => {
            let path = db.dir.path().join("integration-hub.db");
            LogTableLock::Sqlite(hold_sqlite_write_lock(&path).await)
        }
        Backend::Postgres => {
            use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
            conn.batch_execute("BEGIN; LOCK TABLE request_logs IN EXCLUSIVE MODE")
                .await
                .unwrap();
            let (release, released) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = released.await;
                let _ = conn.batch_execute("ROLLBACK").await;
            });
            LogTableLock::Postgres(release)
        }
    }
}

/// kill -9 in the middle of a sync page: the re-run writes again at most the writes that
/// were in flight (`HUB_SYNC_WRITE_CONCURRENCY`, 4), not the page.
async fn a_sync_killed_mid_page_resumes_writing_again_only_what_was_in_flight(backend: Backend) {
    use crate::support::receiver::{Receiver, Reply};
    let records: Vec<Value> = (0..300)
        .map(|i| json!({ "key": format!("r{i:03}") }))
        .collect();
    let source = Receiver::start(move |_| Reply::json(200, &json!(records))).await;
    let target =
        Receiver::start(|_| Reply::json(201, &json!({})).after(Duration::from_millis(20))).await;
    let db = TestDb::new(backend).await;
    let env = [
        ("HUB_OUTBOUND_ALLOW", "127.0.0.1/32"),
        ("HUB_OUTBOUND_RATE_LIMIT", "100000/1s"),
        ("HUB_JOB_LEASE_SECS", "2"),
        ("RUST_LOG", "warn"),
    ];
    let running = start_with(&db, &env).await;
    let admin = admin_key_in(&running.stdout).unwrap();
    let addr = running.addr.clone();
    let (project, ids) = project_with(
        &addr,
        &admin,
        &[
            ("generic_rest", "source", &source.url),
            ("generic_rest", "target", &target.url),
        ],
    )
    .await;
    let config = create_sync(&addr, &admin, &project, (&ids[0], &ids[1]), json!({})).await;
    let run_id = run_sync(&addr, &admin, &config).await;
    for _ in 0..500 {
        if target.count() >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(running);
    let before_kill = target.count();
    assert!(
        (60..300).contains(&before_kill),
        "killed mid-page ({before_kill} written)"
    );

    // Restart: once the cut run's lease (2 s here) has run out, the hub takes it over and
    // finishes it; until then a second run is refused.
    let back = start_with(&db, &env).await;
    let again = gql(
        &back.addr,
        &admin,
        "mutation($id: ID!) { runSync(configId: $id) { id } }",
        json!({ "id": config }),
    )
    .await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "CONFLICT",
        "{again}"
    );
    let resumed = ended_run(&back.addr, &admin, &config, Duration::from_secs(15)).await;
    assert_eq!(resumed["id"], run_id.as_str());
    assert_eq!(resumed["status"], "SUCCEEDED", "{resumed}");
    assert_eq!(resumed["attempts"], 2, "{resumed}");
    assert_eq!(resumed["recordsRead"], 300, "{resumed}");
    let (written, skipped) = (
        resumed["recordsWritten"].as_i64().unwrap(),
        resumed["recordsSkipped"].as_i64().unwrap(),
    );
    assert_eq!(written + skipped, 300, "{resumed}");
    // Whole writes only: one cut by the kill never reached the target as a record.
    let mut keys = keys_written(&target);
    let sent = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 300, "every record reached the target");
    assert!(
        sent - 300 <= 4,
        "{} records were written twice; at most the 4 in flight may be",
        sent - 300
    );
    stop(back).await;
}

/// A call still waiting for its upstream when the grace period ends is cut, and logged as
/// cut (the upstream received it).
async fn a_call_cut_by_the_shutdown_is_logged(backend: Backend) {
    use crate::support::receiver::{Receiver, Reply};
    let upstream =
        Receiver::start(|_| Reply::json(200, &json!({})).after(Duration::from_secs(6))).await;
    let db = TestDb::new(backend).await;
    let env = [
        ("HUB_OUTBOUND_ALLOW", "127.0.0.1/32"),
        ("HUB_SHUTDOWN_TIMEOUT_SECS", "1"),
        ("HUB_OUTBOUND_TIMEOUT_MS", "20000"),
    ];
    let running = start_with(&db, &env).await;
    let admin = admin_key_in(&running.stdout).unwrap();
    let addr = running.addr.clone();
    let (_, ids) = project_with(&addr, &admin, &[("github", "gh", &upstream.url)]).await;
    let integration = ids[0].clone();
    let call = {
        let (addr, admin, integration) = (addr.clone(), admin.clone(), integration.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{addr}/graphql"))
                .header("authorization", format!("Bearer {admin}"))
                .json(&json!({ "query": "mutation($i: ID!) { executeRequest(integrationId: $i, input: { method: \"POST\", path: \"/slow\" }) { status } }", "variables": { "i": integration } }))
                .send()
                .await
        })
    };
    for _ in 0..100 {
        if upstream.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.count(), 1, "the call reached the upstream");
    stop(running).await;
    assert!(call.await.unwrap().is_err(), "the call was cut");

    let back = start(&db).await;
    let logs = gql(
        &back.addr,
        &admin,
        "query($i: ID!) { integrationLogs(integrationId: $i) { edges { node { path error } } } }",
        json!({ "i": integration }),
    )
    .await;
    // (The restarted hub's health monitor logs checks of its own: only the call counts.)
    let edges: Vec<Value> = logs["data"]["integrationLogs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["path"] == "/slow")
        .cloned()
        .collect();
    assert_eq!(edges.len(), 1, "{logs}");
    assert!(
        edges[0]["node"]["error"].as_str().unwrap().contains("cut"),
        "{logs}"
    );
    stop(back).await;
}

/// kill -9 with webhook deliveries queued and in flight: after the restart every one is
/// delivered (at least once; the ones in flight at the kill may arrive twice).
async fn webhooks_queued_at_kill_9_are_delivered_after_restart(backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::support::receiver::{Receiver, Reply};
    let restarted = Arc::new(AtomicBool::new(false));
    let fast = restarted.clone();
    // Before the kill the receiver holds every delivery for 10 s (they are in flight or
    // waiting for the endpoint's slots when the process dies); after, it answers at once.
    let receiver = Receiver::start(move |_| {
        let reply = Reply::text(200, "ok");
        if fast.load(Ordering::SeqCst) {
            reply
        } else {
            reply.after(Duration::from_secs(10))
        }
    })
    .await;
    let db = TestDb::new(backend).await;
    let env = [
        ("HUB_OUTBOUND_ALLOW", "127.0.0.1/32"),
        ("HUB_WEBHOOK_TIMEOUT_MS", "15000"),
        ("HUB_JOB_LEASE_SECS", "2"),
        ("HUB_WEBHOOK_POLL_MS", "100"),
        ("RUST_LOG", "warn"),
    ];
    let running = start_with(&db, &env).await;
    let admin = admin_key_in(&running.stdout).unwrap();
    let created = gql(
        &running.addr,
        &admin,
        "mutation($url: String!) { createWebhookEndpoint(input: { url: $url }) { id } }",
        json!({ "url": format!("{}/hook", receiver.url) }),
    )
    .await;
    let endpoint = created["data"]["createWebhookEndpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut queued = Vec::new();
    for _ in 0..20 {
        let sent = gql(
            &running.addr,
            &admin,
            "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }",
            json!({ "id": endpoint }),
        )
        .await;
        queued.push(
            sent["data"]["sendTestWebhook"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for _ in 0..200 {
        if receiver.count() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        receiver.count() >= 1,
        "some deliveries were in flight at the kill"
    );
    kill(running);
    restarted.store(true, Ordering::SeqCst);
    let in_flight_at_kill = receiver.count();

    let back = start_with(&db, &env).await;
    let mut delivered = Vec::new();
    for _ in 0..300 {
        delivered = receiver
            .requests()
            .iter()
            .skip(in_flight_at_kill)
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect();
        delivered.sort();
        delivered.dedup();
        if delivered.len() == queued.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    queued.sort();
    assert_eq!(
        delivered, queued,
        "every queued delivery sent after the restart"
    );
    stop(back).await;
}

/// Two replicas on one PostgreSQL; the one running a 20,000-record sync is killed (-9) a
/// third of the way. Once the run's lease (2 s here) runs out, the other replica takes it over
/// and finishes it: every record reaches the target, and only the writes in flight at the
/// kill (at most `HUB_SYNC_WRITE_CONCURRENCY`, 16 here) are written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_sync_hands_the_run_to_another() {
    use crate::support::receiver::{Receiver, Reply};
    const RECORDS: usize = 20_000;
    let records: Vec<Value> = (0..RECORDS)
        .map(|i| json!({ "key": format!("r{i:05}") }))
        .collect();
    let source = Receiver::start(move |_| Reply::json(200, &json!(records))).await;
    let target = Receiver::start(|_| Reply::json(201, &json!({}))).await;
    let db = TestDb::new(Backend::Postgres).await;
    let env = [
        ("HUB_OUTBOUND_ALLOW", "127.0.0.1/32"),
        ("HUB_OUTBOUND_RATE_LIMIT", "1000000/1s"),
        ("HUB_JOB_LEASE_SECS", "2"),
        ("HUB_SYNC_WRITE_CONCURRENCY", "16"),
        ("HUB_HEALTH_INTERVAL_SECS", "0"),
        ("RUST_LOG", "warn"),
    ];
    let a = start_with(&db, &env).await;
    let admin = admin_key_in(&a.stdout).unwrap();
    let b = start_with(&db, &env).await;
    let (project, ids) = project_with(
        &a.addr,
        &admin,
        &[
            ("generic_rest", "source", &source.url),
            ("generic_rest", "target", &target.url),
        ],
    )
    .await;
    let config = create_sync(&a.addr, &admin, &project, (&ids[0], &ids[1]), json!({})).await;
    let run_id = run_sync(&a.addr, &admin, &config).await;
    for _ in 0..3000 {
        if target.count() >= RECORDS / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(a);
    let before_kill = target.count();
    assert!(
        (RECORDS / 3..RECORDS).contains(&before_kill),
        "killed mid-run ({before_kill} written)"
    );

    let run = ended_run(&b.addr, &admin, &config, Duration::from_secs(60)).await;
    assert_eq!(run["id"], run_id.as_str());
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(run["recordsRead"], RECORDS, "{run}");
    assert_eq!(run["recordsFailed"], 0, "{run}");
    let (written, skipped) = (
        run["recordsWritten"].as_i64().unwrap(),
        run["recordsSkipped"].as_i64().unwrap(),
    );
    assert_eq!(written + skipped, RECORDS as i64, "{run}");
    let mut keys = keys_written(&target);
    let sent = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), RECORDS, "every record reached the target");
    assert!(
        sent - RECORDS <= 16,
        "{} records were written twice; at most the 16 in flight may be",
        sent - RECORDS
    );
    stop(b).await;
}
