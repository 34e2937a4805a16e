//! The test app: the real server on a random loopback port over a real database of its own
//! (a temporary SQLite file, or a PostgreSQL database created for the test and dropped after).

pub mod browser;
pub mod db;
pub mod process;
pub mod receiver;

use std::time::Duration;

use integration_hub::app::{self, AppState, RunningServer};
use integration_hub::config::Config;
use integration_hub::crypto::Keyring;
use serde_json::{Value, json};

pub use db::{Backend, TestDb};

/// Generates `mod NAME { sqlite(), postgres() }` test pairs for `async fn NAME(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

pub struct TestApp {
    pub base: String,
    pub admin_key: String,
    pub team_id: String,
    pub state: AppState,
    pub client: reqwest::Client,
    server: Option<RunningServer>,
    pub db: TestDb,
}

/// A GraphQL answer: HTTP status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    /// `data` after asserting there were no errors.
    pub fn data(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {}",
            self.body
        );
        &self.body["data"]
    }

    /// The code of the first error.
    pub fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn message(&self) -> &str {
        self.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
    }
}

pub fn test_config(db: &TestDb) -> Config {
    Config {
        database_url: db.url.clone(),
        bind: "127.0.0.1:0".into(),
        encryption_keys: Some(Keyring::generate_spec("test1")),
        workers: 1,
        db_pool_size: 5,
        shutdown_timeout_secs: 1,
        usage_flush_ms: 100,
        // Generous quotas: the rate-limit tests set their own.
        rate_limit_api_key: "100000/1m".into(),
        rate_limit_user: "100000/1m".into(),
        rate_limit_anonymous: "100000/1m".into(),
        // Upstreams in tests are local servers; the health monitor runs only where a test
        // turns it on; retries back off briefly.
        outbound_allow: "127.0.0.1/32".into(),
        health_interval_secs: 0,
        outbound_retry_base_ms: 20,
        outbound_retry_max_ms: 200,
        outbound_rate_limit: "1000/1s".into(),
        webhook_poll_ms: 100,
        ..Config::default()
    }
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_configured(backend, |_| {}).await
    }

    /// Starts with the test configuration changed by `change`.
    pub async fn start_configured(backend: Backend, change: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(backend).await;
        let mut config = test_config(&db);
        change(&mut config);
        Self::start_with(db, config).await
    }

    pub async fn start_with(db: TestDb, config: Config) -> Self {
        let prepared = app::prepare(config).await.expect("prepare app");
        let first = prepared
            .first_start
            .expect("fresh database creates the first team");
        let state = prepared.state.clone();
        let server = app::start(prepared.state).expect("start server");
        let base = format!("http://{}", server.addr);
        let mut app = Self {
            base,
            admin_key: first.admin_key,
            team_id: String::new(),
            state,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            server: Some(server),
            db,
        };
        let viewer = app
            .gql(&app.admin_key.clone(), "{ apiKeys { id } }", json!({}))
            .await;
        viewer.data();
        app.team_id = app.team_of_admin().await;
        app
    }

    async fn team_of_admin(&self) -> String {
        let mut conn = self.state.pool.get().await.unwrap();
        let id = integration_hub::auth::api_key::public_id(&self.admin_key)
            .unwrap()
            .to_string();
        integration_hub::api_keys::store::find_by_public_id(&mut conn, &id)
            .await
            .unwrap()
            .unwrap()
            .team_id
    }

    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.base)
    }

    /// POSTs an operation with a key (empty string: no credentials).
    pub async fn gql(&self, key: &str, query: &str, variables: Value) -> Answer {
        let mut request = self
            .client
            .post(self.graphql_url())
            .header("content-type", "application/json")
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query, "variables": variables }));
        if !key.is_empty() {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let text = response.text().await.unwrap();
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A second team with its own admin key, made the way the CLI makes one.
    pub async fn new_team(&self, name: &str) -> (String, String) {
        let mut conn = self.state.pool.get().await.unwrap();
        let (team, key) = integration_hub::teams::create_with_admin_key(&mut conn, name)
            .await
            .map_err(|e| e.message())
            .unwrap();
        (team.id, key)
    }

    /// Creates an API key with these scopes through the API; returns (id, full key).
    pub async fn key_with(&self, scopes: &[&str]) -> (String, String) {
        let answer = self
            .gql(
                &self.admin_key,
                "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { key apiKey { id } } }",
                json!({ "input": { "name": "test", "scopes": scopes } }),
            )
            .await;
        let data = answer.data();
        (
            data["createApiKey"]["apiKey"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
            data["createApiKey"]["key"].as_str().unwrap().to_string(),
        )
    }

    pub async fn create_project(&self, key: &str, name: &str) -> String {
        let answer = self
            .gql(
                key,
                "mutation($name: String!) { createProject(input: { name: $name }) { id } }",
                json!({ "name": name }),
            )
            .await;
        answer.data()["createProject"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Registers a GitHub integration with a token; returns its id.
    pub async fn register_github(
        &self,
        key: &str,
        project_id: &str,
        name: &str,
        token: &str,
    ) -> String {
        let answer = self
            .gql(
                key,
                REGISTER,
                json!({ "input": {
                    "projectId": project_id,
                    "provider": "github",
                    "name": name,
                    "config": { "owner": "acme" },
                    "credentials": { "token": token }
                }}),
            )
            .await;
        answer.data()["registerIntegration"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A successful GET's request log for an integration of this app's team, made at `at`
    /// (its id carries that time, as the hub's UUIDv7 ids do).
    pub fn log_row(
        &self,
        project_id: &str,
        integration_id: &str,
        path: &str,
        at: chrono::NaiveDateTime,
    ) -> integration_hub::logs::RequestLogRow {
        let random: [u8; 10] = *uuid::Uuid::new_v4().as_bytes().first_chunk().unwrap();
        integration_hub::logs::RequestLogRow {
            id: uuid::Builder::from_unix_timestamp_millis(
                at.and_utc().timestamp_millis() as u64,
                &random,
            )
            .into_uuid()
            .to_string(),
            team_id: self.team_id.clone(),
            project_id: project_id.to_string(),
            integration_id: integration_id.to_string(),
            level: "info".into(),
            method: "GET".into(),
            path: path.to_string(),
            status: Some(200),
            duration_ms: 1,
            bytes_in: 0,
            bytes_out: 0,
            error: None,
            actor: "test".into(),
            correlation_id: path.to_string(),
            created_at: at,
        }
    }

    /// How many distinct subscriptions the server runs, for how many subscribers.
    pub fn fanout_counts(&self) -> (usize, usize) {
        self.server.as_ref().expect("running").fanout.counts()
    }

    /// Stops the server and starts a new one on the same database with `config` (e.g. other
    /// encryption keys): what a restart or a new replica sees.
    pub async fn restart(mut self, config: Config) -> Self {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let prepared = app::prepare(config).await.expect("prepare app");
        assert!(
            prepared.first_start.is_none(),
            "a restart creates no new team"
        );
        self.state = prepared.state.clone();
        self.server = Some(app::start(prepared.state).expect("start server"));
        self.base = format!("http://{}", self.server.as_ref().unwrap().addr);
        self
    }

    /// Another replica on this app's database, with its configuration (its own port): what
    /// a second `integration-hub` process behind the same load balancer is.
    pub async fn start_replica(&self) -> RunningServer {
        let prepared = app::prepare(Config::clone(&self.state.config))
            .await
            .expect("prepare a replica");
        app::start(prepared.state).expect("start a replica")
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

pub const REGISTER: &str = "mutation($input: RegisterIntegrationInput!) {
    registerIntegration(input: $input) {
        id name providerKey enabled status config
        credentials { isSet fields keyId }
    }
}";
