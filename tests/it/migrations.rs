use integration_hub::db::{DatabaseUrl, DbPool, describe_tables};

use crate::support::{Backend, TestDb};

async fn pool_for(db: &TestDb) -> DbPool {
    DbPool::connect(&DatabaseUrl::parse(&db.url).unwrap(), 2)
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

crate::on_both_backends!(down_reverts_up);
