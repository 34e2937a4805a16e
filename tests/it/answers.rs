//! Whole answers to repeated queries of stored fields (`graphql::answers`): on SQLite a
//! repeated read costs one statement (the team's data version), and whatever changes the rows
//! — a mutation, another connection's SQL — the next read shows it; an answer is never given
//! to another caller. On PostgreSQL concurrent reads share the version's round trip, and a
//! read that starts after a write ends — on any replica — shows it.

use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::process::gql;
use crate::support::{Backend, TestApp};

on_both_backends!(
    kept_answers_are_never_stale,
    kept_answers_stay_with_their_caller,
    reads_under_load_see_every_write_on_any_replica,
    one_teams_writers_on_two_replicas_all_commit
);

const RENAME: &str = "mutation($id: ID!, $name: String!) { updateIntegration(id: $id, input: { name: $name }) { name } }";

const LIST: &str = "query($p: ID!) { integrations(projectId: $p, first: 20) { nodes { id name status enabled config credentials { isSet fields keyId updatedAt } } } }";

/// The answer to `query`, read five times, and the fewest statements one read ran (a
/// background write — usage counts, the webhook worker — may land inside one).
async fn read(app: &TestApp, key: &str, query: &str, variables: Value) -> (Value, u64) {
    let statements = app.state.pool.statements();
    let mut fewest = u64::MAX;
    let mut answer = Value::Null;
    for _ in 0..5 {
        let before = statements.count();
        let body = app.gql(key, query, variables.clone()).await.body;
        fewest = fewest.min(statements.count() - before);
        if !answer.is_null() {
            assert_eq!(body, answer, "the same read answered differently");
        }
        answer = body;
    }
    (answer, fewest)
}

fn names(answer: &Value) -> Vec<(String, String, bool)> {
    answer["data"]["integrations"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
                n["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn sql(app: &TestApp, statement: &str) {
    let mut conn = app.state.pool.get().await.unwrap();
    integration_hub::with_conn!(&mut conn, |c| diesel_async::RunQueryDsl::execute(
        diesel::sql_query(statement),
        c
    )
    .await)
    .unwrap();
}

async fn kept_answers_are_never_stale(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "Dash").await;
    let first = app
        .register_github(&admin, &project, "one", "ghp_one")
        .await;
    let second = app
        .register_github(&admin, &project, "two", "ghp_two")
        .await;
    let vars = json!({ "p": project });

    let (answer, statements) = read(&app, &admin, LIST, vars.clone()).await;
    let pending = "PENDING".to_string();
    assert_eq!(
        names(&answer),
        [
            ("one".to_string(), pending.clone(), true),
            ("two".to_string(), pending.clone(), true)
        ]
    );
    // Kept: the version is all a repeated read asks.
    assert_eq!(statements, 1, "a kept answer reads only the data version");

    // A mutation.
    app.gql(
        &admin,
        "mutation($id: ID!) { updateIntegration(id: $id, input: { name: \"uno\" }) { id } }",
        json!({ "id": first }),
    )
    .await
    .data();
    let (answer, _) = read(&app, &admin, LIST, vars.clone()).await;
    assert_eq!(names(&answer)[0].0, "uno");

    // Another connection's SQL, as an operator or another process would write.
    sql(
        &app,
        &format!("UPDATE integrations SET status = 'error' WHERE id = '{second}'"),
    )
    .await;
    let (answer, _) = read(&app, &admin, LIST, vars.clone()).await;
    assert_eq!(names(&answer)[1].1, "ERROR");

    app.gql(
        &admin,
        "mutation($id: ID!) { setIntegrationEnabled(id: $id, enabled: false) { id } }",
        json!({ "id": second }),
    )
    .await
    .data();
    let (answer, _) = read(&app, &admin, LIST, vars.clone()).await;
    assert!(!names(&answer)[1].2);

    // Credentials rotated: the `updatedAt` the list shows moves.
    let before = answer["data"]["integrations"]["nodes"][0]["credentials"]["updatedAt"].clone();
    sql(
        &app,
        &format!(
            "UPDATE integrations SET credentials_updated_at = '2030-01-01 00:00:00' WHERE id = '{first}'"
        ),
    )
    .await;
    let (answer, _) = read(&app, &admin, LIST, vars.clone()).await;
    let after = &answer["data"]["integrations"]["nodes"][0]["credentials"]["updatedAt"];
    assert_ne!(*after, before);
    assert!(after.as_str().unwrap().starts_with("2030-01-01"), "{after}");

    // Deleted and registered.
    app.gql(
        &admin,
        "mutation($id: ID!) { deleteIntegration(id: $id) }",
        json!({ "id": second }),
    )
    .await
    .data();
    let (answer, _) = read(&app, &admin, LIST, vars.clone()).await;
    assert_eq!(names(&answer).len(), 1);
    app.register_github(&admin, &project, "three", "ghp_three")
        .await;
    let (answer, statements) = read(&app, &admin, LIST, vars.clone()).await;
    assert_eq!(names(&answer).len(), 2);
    assert_eq!(statements, 1);

    // Projects: renamed by a mutation, then by SQL.
    let project_query =
        "query($p: ID!) { project(id: $p) { id name description } projects { name } }";
    let (answer, _) = read(&app, &admin, project_query, vars.clone()).await;
    assert_eq!(answer["data"]["project"]["name"], "Dash");
    app.gql(
        &admin,
        "mutation($id: ID!) { updateProject(id: $id, input: { name: \"Board\" }) { id } }",
        json!({ "id": project }),
    )
    .await
    .data();
    let (answer, _) = read(&app, &admin, project_query, vars.clone()).await;
    assert_eq!(answer["data"]["project"]["name"], "Board");
    assert_eq!(answer["data"]["projects"], json!([{ "name": "Board" }]));
    sql(
        &app,
        &format!("UPDATE projects SET description = 'by SQL' WHERE id = '{project}'"),
    )
    .await;
    let (answer, _) = read(&app, &admin, project_query, vars.clone()).await;
    assert_eq!(answer["data"]["project"]["description"], "by SQL");

    // A read of anything else (here the health the logs make) is executed every time.
    let health =
        "query($p: ID!) { integrations(projectId: $p) { nodes { name health { status } } } }";
    let (_, statements) = read(&app, &admin, health, vars.clone()).await;
    assert!(statements >= 2, "{statements}");
    let with_viewer =
        "query($p: ID!) { viewer { kind } integrations(projectId: $p) { nodes { name } } }";
    let (answer, statements) = read(&app, &admin, with_viewer, vars).await;
    assert_eq!(answer["data"]["viewer"]["kind"], "API_KEY");
    assert!(statements >= 1, "{statements}");
    app.stop().await;
}

async fn kept_answers_stay_with_their_caller(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "Mine").await;
    let other_project = app.create_project(&admin, "Other").await;
    let id = app
        .register_github(&admin, &project, "kept", "ghp_kept")
        .await;
    let vars = json!({ "p": project });
    let (answer, _) = read(&app, &admin, LIST, vars.clone()).await;
    assert_eq!(names(&answer)[0].0, "kept");

    // Another team's admin, the same document and variables: not found, not the answer.
    let (_, stranger) = app.new_team("Strangers").await;
    let refused = app.gql(&stranger, LIST, vars.clone()).await;
    assert_eq!(refused.code(), "NOT_FOUND", "{}", refused.body);

    // A key of the same team without the scope: refused.
    let (_, logs_only) = app.key_with(&["logs:read"]).await;
    let refused = app.gql(&logs_only, LIST, vars.clone()).await;
    assert_eq!(refused.code(), "FORBIDDEN", "{}", refused.body);

    // A key limited to another project: not found.
    let limited = app
        .gql(
            &admin,
            "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { key } }",
            json!({ "input": { "name": "other", "scopes": ["integrations:read"],
                "allowedProjectIds": [other_project] } }),
        )
        .await;
    let limited = limited.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = app.gql(&limited, LIST, vars.clone()).await;
    assert_eq!(refused.code(), "NOT_FOUND", "{}", refused.body);

    // A key limited to the integration sees it; its scopes narrowed later, it is refused.
    let (reader_id, reader) = app.key_with(&["integrations:read"]).await;
    let (answer, _) = read(&app, &reader, LIST, vars.clone()).await;
    assert_eq!(answer["data"]["integrations"]["nodes"][0]["id"], json!(id));
    app.gql(
        &admin,
        "mutation($id: ID!) { updateApiKey(id: $id, input: { scopes: [\"logs:read\"] }) { id } }",
        json!({ "id": reader_id }),
    )
    .await
    .data();
    let refused = app.gql(&reader, LIST, vars.clone()).await;
    assert_eq!(refused.code(), "FORBIDDEN", "{}", refused.body);

    // A revoked key is refused before any answer.
    app.gql(
        &admin,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": reader_id }),
    )
    .await;
    let refused = app.gql(&reader, LIST, vars).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    app.stop().await;
}

/// Readers keep every kept answer busy (on PostgreSQL their version reads share round trips,
/// one always in flight) while integrations are renamed, in turn through this server and
/// through a second replica on the same database. Every read that starts after a rename's
/// answer arrived shows the new name: no read is answered with a version read before it.
async fn reads_under_load_see_every_write_on_any_replica(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "Busy").await;
    let id = app
        .register_github(&admin, &project, "name-0", "ghp_busy")
        .await;
    let replica = app.start_replica().await;
    let vars = json!({ "p": project });
    let ask = move |addr: String, query: &'static str, variables: Value| {
        let key = admin.clone();
        async move { gql(&addr, &key, query, variables).await }
    };
    let home = app.base.trim_start_matches("http://").to_string();
    let elsewhere = replica.addr.to_string();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for _ in 0..6 {
        let (ask, home, vars, stop) = (ask.clone(), home.clone(), vars.clone(), stop.clone());
        background.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = ask(home.clone(), LIST, vars.clone()).await;
                assert!(answer["errors"].is_null(), "{answer}");
                reads += 1;
            }
            reads
        }));
    }
    for round in 1..=12 {
        let name = format!("name-{round}");
        let writer = if round % 2 == 0 { &home } else { &elsewhere };
        let renamed = ask(writer.clone(), RENAME, json!({ "id": id, "name": name })).await;
        assert_eq!(
            renamed["data"]["updateIntegration"]["name"],
            json!(name),
            "{renamed}"
        );
        let reads = (0..12).map(|_| ask(home.clone(), LIST, vars.clone()));
        for answer in futures_util::future::join_all(reads).await {
            assert_eq!(
                answer["data"]["integrations"]["nodes"][0]["name"],
                json!(name),
                "a read after rename {round} answered {answer}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in background {
        assert!(reader.await.unwrap() > 0);
    }
    replica.stop().await;
    app.stop().await;
}

/// Every write of a team's projects and integrations bumps its data version (on PostgreSQL at
/// commit, on one counter row): many concurrent writers of one team, through two replicas,
/// all commit — none fails on the shared row — and the version moved once for each.
async fn one_teams_writers_on_two_replicas_all_commit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let project = app.create_project(&admin, "Crowd").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            app.register_github(&admin, &project, &format!("w{i}"), "ghp_w")
                .await,
        );
    }
    let replica = app.start_replica().await;
    let addrs = [
        app.base.trim_start_matches("http://").to_string(),
        replica.addr.to_string(),
    ];
    let version = || async {
        let mut conn = app.state.pool.get().await.unwrap();
        integration_hub::with_conn!(&mut conn, |c| {
            use diesel::prelude::*;
            use integration_hub::db::schema::data_versions;
            diesel_async::RunQueryDsl::get_result::<i64>(
                data_versions::table
                    .find(&app.team_id)
                    .select(data_versions::version),
                c,
            )
            .await
        })
        .unwrap()
    };
    let before = version().await;
    let rounds = 5;
    let writers = ids.iter().enumerate().map(|(i, id)| {
        let (admin, addr, id) = (admin.clone(), addrs[i % 2].clone(), id.clone());
        async move {
            for round in 0..rounds {
                let answer = gql(
                    &addr,
                    &admin,
                    RENAME,
                    json!({ "id": id, "name": format!("w{i}-{round}") }),
                )
                .await;
                assert!(
                    answer["errors"].is_null(),
                    "writer {i}, round {round}: {answer}"
                );
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let after = version().await;
    assert!(
        after - before >= (ids.len() * rounds) as i64,
        "{} writes moved the version by {}",
        ids.len() * rounds,
        after - before
    );
    let (answer, _) = read(&app, &admin, LIST, json!({ "p": project })).await;
    let mut shown: Vec<String> = names(&answer).into_iter().map(|(n, ..)| n).collect();
    shown.sort();
    let mut expected: Vec<String> = (0..ids.len())
        .map(|i| format!("w{i}-{}", rounds - 1))
        .collect();
    expected.sort();
    assert_eq!(shown, expected);
    replica.stop().await;
    app.stop().await;
}
