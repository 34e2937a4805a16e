//! A database of the test's own: a SQLite file in a temporary folder, or a PostgreSQL
//! database created on the server at `TEST_POSTGRES_URL` (default: local trust auth) and
//! dropped when the test ends. A PostgreSQL that cannot be reached fails the test.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The admin URL with its database name replaced.
fn postgres_url_for(name: &str) -> String {
    let admin = postgres_admin_url();
    let (base, _) = admin
        .rsplit_once('/')
        .expect("TEST_POSTGRES_URL names a database");
    format!("{base}/{name}")
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("hub.db").display());
                Self {
                    backend,
                    url,
                    dir,
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let name = format!("ihub_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = AsyncPgConnection::establish(&postgres_admin_url())
                    .await
                    .unwrap_or_else(|err| {
                        panic!(
                            "PostgreSQL is required for the postgres tests ({}): {err}",
                            postgres_admin_url()
                        )
                    });
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                Self {
                    backend,
                    url: postgres_url_for(&name),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// The PostgreSQL database's name (None on SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// The SQLite database file (and its WAL), for tests that read the raw bytes.
    pub fn sqlite_files(&self) -> Vec<std::path::PathBuf> {
        ["hub.db", "hub.db-wal"]
            .iter()
            .map(|f| self.dir.path().join(f))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Another process's hold on SQLite's write lock, taken as a second process would: it waits
/// out a write the hub has in flight (up to 10 s) instead of failing with "database is
/// locked". Dropping the connection (or `ROLLBACK`) releases it.
pub async fn hold_sqlite_write_lock(path: &std::path::Path) -> diesel::SqliteConnection {
    let path = path.to_str().expect("a UTF-8 path").to_string();
    tokio::task::spawn_blocking(move || {
        use diesel::connection::SimpleConnection;
        let mut holder = <diesel::SqliteConnection as diesel::Connection>::establish(&path)
            .expect("open the SQLite file");
        holder
            .batch_execute("PRAGMA busy_timeout = 10000; BEGIN EXCLUSIVE")
            .expect("take the write lock");
        holder
    })
    .await
    .unwrap()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside async context: a thread of its own with a small runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = AsyncPgConnection::establish(&postgres_admin_url()).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
