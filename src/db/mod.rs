//! The database: one pool type over PostgreSQL or SQLite, a macro that runs one diesel query
//! body on either backend, and the embedded migrations of each.

pub mod group;
pub mod journal;
pub mod journal_sqlite;
pub mod lease;
pub mod reader;
pub mod rows;
pub mod schema;

use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use crate::error::AppError;

/// diesel-async's SQLite connection, running its statements on the blocking pool (pooled
/// connections) or on the calling thread (a thread's readers, see [`reader`]).
pub type SqliteConnection = SyncConnectionWrapper<diesel::SqliteConnection, reader::Hop>;

pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Pragmas every SQLite connection needs: concurrent readers next to one writer, waiting
/// (up to the database timeout) instead of failing on a busy database, and enforced foreign
/// keys.
pub(crate) fn sqlite_pragmas(timeout: Duration) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {}; \
         PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
        timeout.as_millis()
    )
}

#[derive(Clone)]
pub enum DbPool {
    Postgres(Pool<AsyncPgConnection>, Statements),
    /// The pool, the file it opens and the wait bound (for connections of their own, like
    /// the journal's and the threads' readers).
    Sqlite(
        Pool<SqliteConnection>,
        std::sync::Arc<str>,
        Duration,
        Statements,
    ),
}

/// How many statements this pool's connections (and the SQLite readers and journal opened
/// beside it) have run: `hub_db_statements_total`, and how a test sees that a query's
/// statements do not grow with its page.
#[derive(Clone, Default)]
pub struct Statements(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Statements {
    pub fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a connection's statements (set on every connection when it opens).
    pub fn instrumentation(&self) -> impl diesel::connection::Instrumentation + use<> {
        use diesel::connection::InstrumentationEvent;
        let counter = self.0.clone();
        move |event: InstrumentationEvent<'_>| {
            if matches!(event, InstrumentationEvent::StartQuery { .. }) {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// A connection checked out of the pool; store functions take `&mut DbConn`.
// Checked-out connections are few and short-lived; boxing would only add a hop.
#[allow(clippy::large_enum_variant)]
pub enum DbConn {
    Postgres(Object<AsyncPgConnection>),
    Sqlite(SqliteHandle),
}

/// A SQLite connection from the pool, or one of the calling thread's readers.
pub enum SqliteHandle {
    Pooled(Object<SqliteConnection>),
    Reader(reader::Reader),
}

impl std::ops::Deref for SqliteHandle {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            SqliteHandle::Pooled(conn) => conn,
            SqliteHandle::Reader(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for SqliteHandle {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            SqliteHandle::Pooled(conn) => conn,
            SqliteHandle::Reader(conn) => conn,
        }
    }
}

pub use crate::config::{DatabaseUrl, redact_url};

/// A connection that could not be had (checked out, opened): UNAVAILABLE, which callers may
/// retry.
pub(crate) fn unavailable(err: impl std::fmt::Display) -> AppError {
    AppError::Unavailable(format!("database unavailable: {err}"))
}

/// The SQLite file (created here when missing) and its `-wal`/`-shm` files are readable by
/// the owner only: they hold sealed credentials, key hashes and logs. SQLite creates the
/// `-wal` and `-shm` files with the database file's mode; files left by an older version are
/// tightened.
#[cfg(unix)]
fn private_files(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.starts_with(':') || path.starts_with("file:") {
        return Ok(());
    }
    let file = std::path::Path::new(path);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)?;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{path}{suffix}");
        if std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_files(_path: &str) -> std::io::Result<()> {
    Ok(())
}

/// Runs `$body` with `$c` bound to the concrete connection of whichever backend `$conn` holds.
/// The body is compiled once per backend, so one diesel query serves both.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Postgres(pooled) => {
                let $c: &mut diesel_async::AsyncPgConnection = &mut **pooled;
                $body
            }
            $crate::db::DbConn::Sqlite(pooled) => {
                let $c: &mut $crate::db::SqliteConnection = &mut **pooled;
                $body
            }
        }
    };
}

impl DbPool {
    /// Connections (in use, idle) of the pool.
    pub fn usage(&self) -> (usize, usize) {
        let status = match self {
            DbPool::Postgres(pool, _) => pool.status(),
            DbPool::Sqlite(pool, ..) => pool.status(),
        };
        let idle = status.available;
        (status.size.saturating_sub(idle), idle)
    }
}

impl DbPool {
    /// A pool whose every wait is bounded by `timeout`: checkout, connecting, recycling, and
    /// on the server PostgreSQL's `statement_timeout` or SQLite's busy wait.
    pub fn connect(
        url: &DatabaseUrl,
        max_size: usize,
        timeout: Duration,
    ) -> Result<Self, AppError> {
        match url {
            DatabaseUrl::Postgres(url) => {
                let statements = Statements::default();
                let counted = statements.clone();
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                // No `SELECT 1` round trip on every checkout: a connection whose socket the
                // server closed (a restart, `pg_terminate_backend`) is already known to be
                // closed and is replaced; one that fails in use fails its statement, which the
                // request reports as an outage (503, retry).
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(move |url| {
                    let url = url.to_string();
                    let counted = counted.clone();
                    async move {
                        let mut conn = AsyncPgConnection::establish(&url).await?;
                        conn.set_instrumentation(counted.instrumentation());
                        conn.batch_execute(&format!(
                            "SET statement_timeout = {}; SET lock_timeout = {0}",
                            timeout.as_millis()
                        ))
                        .await
                        .map_err(ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    url.as_str(),
                    config,
                );
                let pool = Pool::builder(manager)
                    .max_size(max_size)
                    .wait_timeout(Some(timeout))
                    .create_timeout(Some(timeout))
                    .recycle_timeout(Some(timeout))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(AppError::internal)?;
                Ok(Self::Postgres(pool, statements))
            }
            DatabaseUrl::Sqlite(path) => {
                private_files(path).map_err(|err| {
                    AppError::internal(anyhow::anyhow!(
                        "cannot secure the SQLite file {path}: {err}"
                    ))
                })?;
                let statements = Statements::default();
                let counted = statements.clone();
                let mut config = ManagerConfig::<SqliteConnection>::default();
                // A local file cannot go away under a connection: no test statement (and
                // blocking-pool hop) on every checkout.
                config.recycling_method = RecyclingMethod::Fast;
                let pragmas = sqlite_pragmas(timeout);
                config.custom_setup = Box::new(move |path| {
                    let path = path.to_string();
                    let pragmas = pragmas.clone();
                    let counted = counted.clone();
                    async move {
                        let mut conn = SqliteConnection::establish(&path).await?;
                        conn.set_instrumentation(counted.instrumentation());
                        conn.batch_execute(&pragmas)
                            .await
                            .map_err(ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::<SqliteConnection>::new_with_config(
                    path.as_str(),
                    config,
                );
                let pool = Pool::builder(manager)
                    .max_size(max_size)
                    .wait_timeout(Some(timeout))
                    .create_timeout(Some(timeout))
                    .recycle_timeout(Some(timeout))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(AppError::internal)?;
                Ok(Self::Sqlite(
                    pool,
                    path.as_str().into(),
                    timeout,
                    statements,
                ))
            }
        }
    }

    /// Statements run so far (see [`Statements`]).
    pub fn statements(&self) -> &Statements {
        match self {
            Self::Postgres(_, statements) | Self::Sqlite(.., statements) => statements,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(..) => "postgres",
            Self::Sqlite(..) => "sqlite",
        }
    }

    pub async fn get(&self) -> Result<DbConn, AppError> {
        match self {
            Self::Postgres(pool, _) => pool.get().await.map(DbConn::Postgres),
            Self::Sqlite(pool, ..) => pool
                .get()
                .await
                .map(|c| DbConn::Sqlite(SqliteHandle::Pooled(c))),
        }
        .map_err(unavailable)
    }

    /// A connection for short reads: on SQLite one of the calling thread's read-only
    /// connections, whose statements run inline (see [`reader`]); on PostgreSQL one from the
    /// pool.
    pub async fn read(&self) -> Result<DbConn, AppError> {
        match self {
            Self::Sqlite(_, path, timeout, statements) => {
                reader::Reader::take(path, *timeout, statements)
                    .map(|r| DbConn::Sqlite(SqliteHandle::Reader(r)))
            }
            Self::Postgres(..) => self.get().await,
        }
    }

    /// Runs `read` — statements that may visit many rows, like aggregates over logs — off the
    /// request threads: on SQLite on a blocking-pool thread with that thread's reader (its
    /// statements inline, one hop for all of them and no pool slot held); on PostgreSQL with
    /// a pooled connection.
    pub async fn scan<T, F>(&self, read: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut DbConn,
            ) -> futures_util::future::BoxFuture<'c, Result<T, AppError>>
            + Send
            + 'static,
    {
        match self {
            Self::Sqlite(_, path, timeout, statements) => {
                let (path, timeout, statements) = (path.clone(), *timeout, statements.clone());
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let reader = reader::Reader::take(&path, timeout, &statements)?;
                    let mut conn = DbConn::Sqlite(SqliteHandle::Reader(reader));
                    runtime.block_on(read(&mut conn))
                })
                .await
                .map_err(|err| AppError::internal(anyhow::anyhow!("a read stopped: {err}")))?
            }
            Self::Postgres(..) => {
                let mut conn = self.get().await?;
                read(&mut conn).await
            }
        }
    }

    /// Connections from the pool itself (what the migration harness takes).
    async fn pooled_sqlite(&self) -> Result<Object<SqliteConnection>, AppError> {
        match self {
            Self::Sqlite(pool, ..) => pool.get().await.map_err(unavailable),
            Self::Postgres(..) => Err(AppError::internal(anyhow::anyhow!("not a SQLite pool"))),
        }
    }

    async fn pooled_postgres(&self) -> Result<Object<AsyncPgConnection>, AppError> {
        match self {
            Self::Postgres(pool, _) => pool.get().await.map_err(unavailable),
            Self::Sqlite(..) => Err(AppError::internal(anyhow::anyhow!("not a PostgreSQL pool"))),
        }
    }

    /// Applies pending migrations. Uses `block_in_place`: call it from a multi-thread runtime,
    /// never from an actix worker.
    pub async fn migrate(&self) -> Result<usize, AppError> {
        let applied = match self {
            DbPool::Postgres(..) => {
                // Migrations are not requests: they get ten minutes per statement, not the
                // request timeout, and the connection leaves the pool afterwards (its session
                // keeps that setting).
                let mut conn = self.pooled_postgres().await?;
                conn.batch_execute("SET statement_timeout = '10min'; SET lock_timeout = '10min'")
                    .await?;
                let mut harness = AsyncMigrationHarness::new(conn);
                let applied = harness
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.len());
                let _ = Object::take(harness.into_inner());
                applied
            }
            DbPool::Sqlite(..) => AsyncMigrationHarness::new(self.pooled_sqlite().await?)
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.len()),
        };
        applied.map_err(|err| AppError::internal(anyhow::anyhow!("migration failed: {err}")))
    }

    /// Reverts every applied migration (newest first); used by the migration tests.
    pub async fn revert_all(&self) -> Result<usize, AppError> {
        let reverted = match self {
            DbPool::Postgres(..) => AsyncMigrationHarness::new(self.pooled_postgres().await?)
                .revert_all_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len()),
            DbPool::Sqlite(..) => AsyncMigrationHarness::new(self.pooled_sqlite().await?)
                .revert_all_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.len()),
        };
        reverted.map_err(|err| AppError::internal(anyhow::anyhow!("revert failed: {err}")))
    }

    /// `SELECT 1` through the pool: what /readyz reports.
    pub async fn ping(&self) -> Result<(), AppError> {
        let mut conn = self.get().await?;
        with_conn!(&mut conn, |c| c.batch_execute("SELECT 1").await)?;
        Ok(())
    }
}

/// What a list query fetches: a page (the rows after a cursor's id, at most `limit`) or only
/// how many rows its filters match. One function applies a list's filters for both, so the
/// count can never disagree with the pages.
#[derive(Clone, Copy)]
pub enum Fetch<'a> {
    Page { after: Option<&'a str>, limit: i64 },
    Count,
}

/// What a [`Fetch`] got.
pub enum Listed<R> {
    Rows(Vec<R>),
    Count(i64),
}

impl<R> Listed<R> {
    pub fn rows(self) -> Vec<R> {
        match self {
            Listed::Rows(rows) => rows,
            Listed::Count(_) => Vec::new(),
        }
    }

    pub fn count(self) -> i64 {
        match self {
            Listed::Count(count) => count,
            Listed::Rows(rows) => rows.len() as i64,
        }
    }
}

/// Ends a list query whose filters are applied (inside `with_conn!`): the count of what they
/// match, or the page after the cursor in id order (`lt`/`desc` for newest first,
/// `gt`/`asc` for oldest first).
#[macro_export]
macro_rules! page_or_count {
    ($query:ident, $c:ident, $fetch:expr, $row:ty, $id:expr, $cursor:ident, $order:ident) => {
        match $fetch {
            $crate::db::Fetch::Count => $query
                .count()
                .get_result($c)
                .await
                .map($crate::db::Listed::Count),
            $crate::db::Fetch::Page { after, limit } => {
                if let Some(after) = after {
                    $query = $query.filter($id.$cursor(after.to_string()));
                }
                $query
                    .select(<$row>::as_select())
                    .order($id.$order())
                    .limit(limit)
                    .load($c)
                    .await
                    .map($crate::db::Listed::Rows)
            }
        }
    };
}

/// Runs `step` with a connection from `pool` (it gives it back by dropping it); while the database is out (UNAVAILABLE) runs it
/// again with exponential backoff, for up to `window` of waiting, then gives the last error.
/// Any other error is returned at once. For background work that must not fail on a short
/// outage (a sync run's reads and progress).
pub async fn retry_outages<T, F>(
    pool: &DbPool,
    window: Duration,
    mut step: impl FnMut(DbConn) -> F,
) -> Result<T, AppError>
where
    F: std::future::Future<Output = Result<T, AppError>>,
{
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .with_total_delay(Some(window))
        .with_jitter()
        .build();
    loop {
        let outcome = match pool.get().await {
            Ok(conn) => step(conn).await,
            Err(err) => Err(err),
        };
        match (outcome, delays.next()) {
            (Err(AppError::Unavailable(detail)), Some(delay)) => {
                tracing::warn!(
                    detail,
                    retry_in_ms = delay.as_millis() as u64,
                    "database unavailable; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            (outcome, _) => return outcome,
        }
    }
}

impl DbConn {
    /// Opens a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`, waiting up to the busy timeout): a deferred transaction that reads
    /// first could not write after another writer committed.
    pub async fn begin_write(&mut self) -> Result<(), AppError> {
        match self {
            DbConn::Postgres(c) => {
                <AsyncPgConnection as AsyncConnection>::TransactionManager::begin_transaction(
                    &mut **c,
                )
                .await?
            }
            DbConn::Sqlite(c) => {
                c.spawn_blocking(|c| {
                    diesel::connection::AnsiTransactionManager::begin_transaction_sql(
                        c,
                        "BEGIN IMMEDIATE",
                    )
                })
                .await?
            }
        }
        Ok(())
    }

    /// Commits the transaction [`DbConn::begin_write`] opened.
    pub async fn commit(&mut self) -> Result<(), AppError> {
        match self {
            DbConn::Postgres(c) => {
                <AsyncPgConnection as AsyncConnection>::TransactionManager::commit_transaction(
                    &mut **c,
                )
                .await?
            }
            DbConn::Sqlite(c) => {
                <SqliteConnection as AsyncConnection>::TransactionManager::commit_transaction(
                    &mut **c,
                )
                .await?
            }
        }
        Ok(())
    }

    /// Rolls back the transaction [`DbConn::begin_write`] opened. A connection whose rollback
    /// fails stays marked as in a transaction, so the pool discards it.
    pub async fn rollback(&mut self) -> Result<(), AppError> {
        match self {
            DbConn::Postgres(c) => {
                <AsyncPgConnection as AsyncConnection>::TransactionManager::rollback_transaction(
                    &mut **c,
                )
                .await?
            }
            DbConn::Sqlite(c) => {
                <SqliteConnection as AsyncConnection>::TransactionManager::rollback_transaction(
                    &mut **c,
                )
                .await?
            }
        }
        Ok(())
    }
}

/// Tables and their columns as the database sees them (names only, sorted), to compare the
/// two migration sets.
pub async fn describe_tables(pool: &DbPool) -> Result<Vec<(String, Vec<String>)>, AppError> {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Column {
        #[diesel(sql_type = Text)]
        table_name: String,
        #[diesel(sql_type = Text)]
        column_name: String,
    }

    let mut conn = pool.get().await?;
    let columns: Vec<Column> = match &mut conn {
        DbConn::Postgres(c) => {
            diesel::sql_query(
                "SELECT table_name::text AS table_name, column_name::text AS column_name \
                 FROM information_schema.columns WHERE table_schema = current_schema()",
            )
            .load(&mut **c)
            .await?
        }
        DbConn::Sqlite(c) => {
            diesel::sql_query(
                "SELECT m.name AS table_name, p.name AS column_name \
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
            )
            .load(&mut **c)
            .await?
        }
    };
    let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for column in columns {
        if column.table_name != "__diesel_schema_migrations" {
            tables
                .entry(column.table_name)
                .or_default()
                .push(column.column_name);
        }
    }
    Ok(tables
        .into_iter()
        .map(|(table, mut columns)| {
            columns.sort();
            (table, columns)
        })
        .collect())
}

/// The current UTC time at microsecond precision (what PostgreSQL keeps), so values read back
/// from either database compare equal to what was written.
pub fn now() -> chrono::NaiveDateTime {
    use chrono::Timelike;
    let t = chrono::Utc::now().naive_utc();
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// A new time-ordered id (UUIDv7): ids sort by creation, which keyset pagination relies on.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The smallest id [`new_id`] can make at `at` or later: ids below it were made before `at`
/// (to the millisecond), so a time range becomes a range of the primary key.
pub fn first_id_at(at: chrono::NaiveDateTime) -> String {
    let millis = at.and_utc().timestamp_millis().max(0) as u64;
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10])
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.cargo/config.toml` builds the bundled SQLite with the query planner stability
    /// guarantee; without it every statement with a bound LIMIT is parsed again on each run.
    #[test]
    fn sqlite_keeps_its_statements_planned() {
        use diesel::connection::SimpleConnection;
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct CompileOption {
            #[diesel(sql_type = diesel::sql_types::Text)]
            compile_options: String,
        }
        let mut conn = diesel::SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute("SELECT 1").unwrap();
        let options: Vec<CompileOption> =
            diesel::sql_query("SELECT compile_options FROM pragma_compile_options")
                .load(&mut conn)
                .unwrap();
        assert!(
            options.iter().any(|o| o.compile_options == "ENABLE_QPSG"),
            "SQLite was built without SQLITE_ENABLE_QPSG (see .cargo/config.toml)"
        );
    }

    #[test]
    fn ids_sort_by_time_from_their_first() {
        let before = now();
        let id = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = now();
        // The id's clock reading lies between `before` (to the millisecond) and `later`.
        assert!(first_id_at(before - chrono::Duration::milliseconds(1)) <= id);
        assert!(id < first_id_at(later));
        assert!(first_id_at(before) < first_id_at(later));
        assert_eq!(first_id_at(before).len(), id.len());
    }
}
