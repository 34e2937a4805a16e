use integration_hub::db::{DatabaseUrl, DbPool, describe_tables};

use crate::support::{Backend, TestDb};

async fn pool_for(db: &TestDb) -> DbPool {
    DbPool::connect(
        &DatabaseUrl::parse(&db.url).unwrap(),
        2,
        std::time::Duration::from_secs(5),
    )
    .map_err(|e| e.message())
    .unwrap()
}

/// Both migration sets produce the same tables and columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_migrations_agree() {
    let sqlite_db = TestDb::new(Backend::Sqlite).await;
    let pg_db = TestDb::new(Backend::Postgres).await;
    let sqlite = pool_for(&sqlite_db).await;
    let pg = pool_for(&pg_db).await;
    assert!(sqlite.migrate().await.map_err(|e| e.message()).unwrap() > 0);
    assert!(pg.migrate().await.map_err(|e| e.message()).unwrap() > 0);
    let sqlite_tables = describe_tables(&sqlite)
        .await
        .map_err(|e| e.message())
        .unwrap();
    let pg_tables = describe_tables(&pg).await.map_err(|e| e.message()).unwrap();
    assert!(sqlite_tables.iter().any(|(t, _)| t == "integrations"));
    assert_eq!(sqlite_tables, pg_tables);
}

/// Each down.sql reverts its up.sql: after reverting everything no table is left, and
/// migrating again gives the same schema.
async fn down_reverts_up(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pool = pool_for(&db).await;
    pool.migrate().await.map_err(|e| e.message()).unwrap();
    let first = describe_tables(&pool)
        .await
        .map_err(|e| e.message())
        .unwrap();
    let reverted = pool.revert_all().await.map_err(|e| e.message()).unwrap();
    assert!(reverted > 0);
    assert_eq!(
        describe_tables(&pool)
            .await
            .map_err(|e| e.message())
            .unwrap(),
        vec![]
    );
    pool.migrate().await.map_err(|e| e.message()).unwrap();
    assert_eq!(
        describe_tables(&pool)
            .await
            .map_err(|e| e.message())
            .unwrap(),
        first
    );
}

/// `2026-11-22-000004_lean_journal` rebuilds the journal tables on SQLite (and drops an index
/// on PostgreSQL): logs and audit events written before it are all there after it, and after
/// its down.sql, and deleting their integration still deletes its logs.
async fn the_lean_journal_keeps_what_was_written(backend: Backend) {
    use diesel::migration::MigrationSource;
    use diesel::sql_types::BigInt;
    use diesel_async::AsyncMigrationHarness;
    use diesel_migrations::MigrationHarness;
    use integration_hub::db::{DbConn, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    let db = TestDb::new(backend).await;
    let pool = pool_for(&db).await;
    // Every migration before the lean journal (both sets hold the same migrations), and how
    // many come from it on (it and those added after it).
    let all = MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS).unwrap();
    let steps = all
        .iter()
        .filter(|m| m.name().to_string().as_str() < "2026-11-22-000004")
        .count();
    let from_lean = all.len() - steps;
    match pool.get().await.map_err(|e| e.message()).unwrap() {
        DbConn::Postgres(c) => {
            let mut harness = AsyncMigrationHarness::new(c);
            for _ in 0..steps {
                harness.run_next_migration(POSTGRES_MIGRATIONS).unwrap();
            }
        }
        DbConn::Sqlite(c) => {
            let mut harness = AsyncMigrationHarness::new(c);
            for _ in 0..steps {
                harness.run_next_migration(SQLITE_MIGRATIONS).unwrap();
            }
        }
    }
    let run = |sql: String| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await.map_err(|e| e.message()).unwrap();
            integration_hub::with_conn!(&mut conn, |c| diesel_async::RunQueryDsl::execute(
                diesel::sql_query(sql.as_str()),
                c
            )
            .await)
            .unwrap();
        }
    };
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await.map_err(|e| e.message()).unwrap();
            let sql = format!("SELECT COUNT(*) AS n FROM {table}");
            let counted: Count = integration_hub::with_conn!(&mut conn, |c| {
                diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql.as_str()), c).await
            })
            .unwrap();
            counted.n
        }
    };
    let at = "'2026-11-20 10:00:00'";
    run(format!(
        "INSERT INTO teams (id, name, created_at) VALUES ('t', 'team', {at})"
    ))
    .await;
    run(format!(
        "INSERT INTO projects (id, team_id, name, created_at, updated_at) VALUES ('p', 't', 'P', {at}, {at})"
    ))
    .await;
    run(format!(
        "INSERT INTO integrations (id, team_id, project_id, provider_key, name, config, created_at, updated_at) \
         VALUES ('i', 't', 'p', 'github', 'gh', '{{}}', {at}, {at})"
    ))
    .await;
    for i in 0..5 {
        run(format!(
            "INSERT INTO request_logs (id, team_id, project_id, integration_id, level, method, path, status, \
             duration_ms, bytes_in, bytes_out, error, actor, correlation_id, created_at) \
             VALUES ('log-{i}', 't', 'p', 'i', 'info', 'GET', '/x/{i}', 200, {i}, 1, 2, NULL, 'test', 'c-{i}', {at})"
        ))
        .await;
        run(format!(
            "INSERT INTO audit_events (id, team_id, actor, action, target_type, target_id, outcome, error_code, created_at) \
             VALUES ('audit-{i}', 't', 'test', 'executeRequest', 'integration', 'i', 'success', NULL, {at})"
        ))
        .await;
    }

    assert_eq!(
        pool.migrate().await.map_err(|e| e.message()).unwrap(),
        from_lean
    );
    assert_eq!(count("request_logs").await, 5);
    assert_eq!(count("audit_events").await, 5);
    let durations = {
        let mut conn = pool.get().await.map_err(|e| e.message()).unwrap();
        let rows: Vec<Count> = integration_hub::with_conn!(&mut conn, |c| {
            diesel_async::RunQueryDsl::load(
                diesel::sql_query(
                    "SELECT duration_ms AS n FROM request_logs WHERE integration_id = 'i' ORDER BY id",
                ),
                c,
            )
            .await
        })
        .unwrap();
        rows.into_iter().map(|r| r.n).collect::<Vec<_>>()
    };
    assert_eq!(durations, [0, 1, 2, 3, 4]);

    // Down again (to before the lean journal), and up again: nothing lost either way.
    for _ in 0..from_lean {
        let reverted = match pool.get().await.map_err(|e| e.message()).unwrap() {
            DbConn::Postgres(c) => AsyncMigrationHarness::new(c)
                .revert_last_migration(POSTGRES_MIGRATIONS)
                .map(|_| ()),
            DbConn::Sqlite(c) => AsyncMigrationHarness::new(c)
                .revert_last_migration(SQLITE_MIGRATIONS)
                .map(|_| ()),
        };
        reverted.unwrap();
    }
    assert_eq!(count("request_logs").await, 5);
    assert_eq!(count("audit_events").await, 5);
    assert_eq!(
        pool.migrate().await.map_err(|e| e.message()).unwrap(),
        from_lean
    );

    // The foreign keys came through the rebuild: an integration's logs go with it.
    run("DELETE FROM integrations WHERE id = 'i'".into()).await;
    assert_eq!(count("request_logs").await, 0);
    assert_eq!(count("audit_events").await, 5);
}

crate::on_both_backends!(down_reverts_up, the_lean_journal_keeps_what_was_written);
