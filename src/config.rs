//! One typed configuration: defaults, then an optional TOML file (`HUB_CONFIG`), then
//! environment variables (`HUB_*`, plus the conventional `DATABASE_URL`). Validated once at
//! start; anything wrong stops the process with a message naming the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://PATH` (default, created on first start) or `postgres://...`.
    pub database_url: String,
    /// Address the HTTP server listens on.
    pub bind: String,
    /// Sealing keys for credentials: `id:base64key,...`, the first one active. When unset, a
    /// key file is used (and created on first start).
    pub encryption_keys: Option<String>,
    /// Where the generated key file lives when `encryption_keys` is unset. Default: beside the
    /// SQLite database file, or `integration-hub.key` in the working directory.
    pub key_file: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Database pool size.
    pub db_pool_size: usize,
    /// Longest wait on the database: pool checkout, connecting, SQLite's busy wait and
    /// PostgreSQL's statement timeout. Past it the request is answered UNAVAILABLE (503).
    pub db_timeout_ms: u64,
    /// Journal rows (request logs, call audit rows) that may wait for the database; once
    /// that many wait, calls are refused with UNAVAILABLE before they are made.
    pub journal_max_pending: usize,
    /// `queued` (calls answer before their log row is committed; a crash loses what is
    /// queued) or `committed` (calls answer after it is committed).
    pub journal_durability: String,
    /// Under load, how long (ms) the journal lets a batch of rows nobody waits for fill
    /// before committing it (rows someone waits for are committed within 1 ms): a commit
    /// writes about as many pages for one row as for dozens.
    pub journal_linger_ms: u64,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Serve GraphiQL on GET /graphql for browsers.
    pub graphiql: bool,
    /// `text` or `json` log lines (level from `RUST_LOG`, default `info`).
    pub log_format: String,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Bearer token for `GET /metrics` (Prometheus); unset, /metrics is not served.
    pub metrics_token: Option<String>,
    /// Operation names that get their own `operation` label in the GraphQL metrics
    /// (comma-separated, at most 100); every other operation is counted as `other`.
    pub metrics_operations: String,
    /// Origins browser apps may call from (`scheme://host[:port]`, comma-separated, or `*`);
    /// empty: no CORS headers.
    pub cors_origins: String,

    /// JWT: HS256 shared secret (at least 32 bytes).
    pub jwt_hs256_secret: Option<String>,
    /// JWT: PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    pub jwt_public_key_file: Option<PathBuf>,
    /// JWT: JWKS URL (RS256/ES256 keys by `kid`), cached and refreshed.
    pub jwt_jwks_url: Option<String>,
    /// JWT: required `iss`.
    pub jwt_issuer: Option<String>,
    /// JWT: required `aud`.
    pub jwt_audience: Option<String>,
    /// JWT: the claim naming the caller's team (a team id).
    pub jwt_team_claim: String,
    /// JWT: the claim listing the caller's roles.
    pub jwt_roles_claim: String,
    /// JWT: clock leeway for `exp`/`nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// JWKS: refresh period, in seconds.
    pub jwt_jwks_refresh_secs: u64,
    /// JWKS: at most one refetch per this many seconds when a token names an unknown `kid`.
    pub jwt_jwks_min_refetch_secs: u64,
    /// Role name → scopes granted to JWT callers with that role.
    pub jwt_roles: BTreeMap<String, Vec<String>>,

    /// How long a verified API key or token is trusted before it is checked again, in seconds.
    /// Revocations on this replica take effect at once; other replicas see them within this.
    pub credential_cache_secs: u64,
    /// How long a replica keeps an integration opened for calls (row, configuration, opened
    /// credentials), in seconds. Changes on this replica take effect at once; other replicas
    /// see them within this. 0: read and open the integration on every call.
    pub integration_cache_secs: u64,
    /// Default grace period of a rolled key's old secret, in seconds.
    pub api_key_roll_grace_secs: u64,
    /// How often usage counts are written to the database, in milliseconds.
    pub usage_flush_ms: u64,

    /// Default quota of an API key (`requests/period[,burst=n]`).
    pub rate_limit_api_key: String,
    /// Quota of each JWT subject.
    pub rate_limit_user: String,
    /// Quota of each client IP for requests without credentials.
    pub rate_limit_anonymous: String,

    /// Largest query depth.
    pub max_depth: usize,
    /// Largest query complexity (each field counts 1).
    pub max_complexity: usize,
    /// Most aliases in one document.
    pub max_aliases: usize,
    /// Most field selections in one document (fragments expanded, introspection aside).
    pub max_fields: usize,
    /// Most directives on one field.
    pub max_directives: usize,
    /// Most operations in one batch request.
    pub max_batch: usize,
    /// Answer introspection queries (turn off in production).
    pub introspection: bool,
    /// Suggest field names in validation errors (turn off in production).
    pub field_suggestions: bool,

    /// Outbound: connect timeout, in milliseconds.
    pub outbound_connect_timeout_ms: u64,
    /// Outbound: total timeout of one attempt, in milliseconds.
    pub outbound_timeout_ms: u64,
    /// Outbound: retries of idempotent calls on timeouts, 429, 502, 503, 504.
    pub outbound_max_retries: u32,
    /// Outbound: first backoff delay, in milliseconds (doubles, with jitter).
    pub outbound_retry_base_ms: u64,
    /// Outbound: longest backoff delay, in milliseconds.
    pub outbound_retry_max_ms: u64,
    /// Outbound: the longest `Retry-After` honoured, in seconds.
    pub outbound_max_retry_after_secs: u64,
    /// Outbound: largest response body read, in bytes.
    pub outbound_max_response_bytes: usize,
    /// Outbound: comma-separated CIDRs the SSRF guard lets through (e.g. `10.0.0.0/8`).
    pub outbound_allow: String,
    /// Outbound: quota per integration (`requests/period[,burst=n]`); calls wait for it.
    pub outbound_rate_limit: String,
    /// Redis for quotas shared by every replica (`redis://host:6379`); unset: each replica
    /// counts its own.
    pub redis_url: Option<String>,
    /// How long a quota check waits for Redis before this replica's own limiter decides.
    pub redis_timeout_ms: u64,
    /// Consecutive failures that open an integration's circuit.
    pub breaker_threshold: u32,
    /// Seconds an open circuit waits before a trial call.
    pub breaker_cooldown_secs: u64,
    /// Most calls in one `batchExecute`.
    pub batch_max_calls: usize,
    /// Calls of one batch in flight at once.
    pub batch_concurrency: usize,
    /// Request logs older than this many days are pruned.
    pub log_retention_days: u64,
    /// At most this many request logs are kept per integration.
    pub log_retention_per_integration: i64,
    /// Seconds between health checks of each enabled integration (0: no monitor).
    pub health_interval_secs: u64,
    /// Window for uptime and error rate, in seconds.
    pub health_window_secs: u64,
    /// Health checks in flight at once.
    pub health_concurrency: usize,
    /// Events buffered per subscriber before it is told it missed some.
    pub event_buffer: usize,
    /// Open subscriptions per WebSocket connection.
    pub max_subscriptions_per_connection: usize,
    /// Seconds between keep-alive pings on a WebSocket; a client silent for two is closed.
    pub ws_keepalive_secs: u64,
    /// Frames queued per WebSocket connection before its subscriptions count events as missed.
    pub ws_send_buffer: usize,
    /// Writes of one sync run in flight at once.
    pub sync_write_concurrency: usize,
    /// Seconds between the scheduler's looks for due syncs (0: no scheduler).
    pub sync_scheduler_secs: u64,
    /// A running sync run renews its lease every third of this; one whose lease is older is
    /// marked interrupted (its process stopped, or lost the database that long).
    pub job_lease_secs: u64,
    /// Waits between a webhook delivery's attempts (`HUB_WEBHOOK_RETRY_SCHEDULE`): the first
    /// attempt is at once, then one more after each wait; after the last, the delivery fails.
    pub webhook_retry_schedule: String,
    /// How long one delivery attempt may take.
    pub webhook_timeout_ms: u64,
    /// An endpoint whose deliveries have only failed for this long is disabled.
    pub webhook_disable_after_secs: u64,
    /// Deliveries in flight at once on this replica, and to one endpoint.
    pub webhook_concurrency: usize,
    pub webhook_endpoint_concurrency: usize,
    /// How often the delivery worker looks for due deliveries when nothing woke it.
    pub webhook_poll_ms: u64,
    /// The hub's external base URL (inbound webhook URLs start with it); default
    /// `http://<the bound address>`.
    pub public_url: Option<String>,
    /// WebSocket connections open at once; beyond it upgrades are refused with 503 and
    /// `Retry-After` (0: derived from the open-file limit, with headroom for database and
    /// upstream sockets).
    pub max_connections: usize,
    /// Origins the OAuth callback may send a browser back to (`redirectAfter`),
    /// comma-separated `scheme://host[:port]`; empty: it shows a page instead.
    pub oauth_redirect_origins: String,
    /// OAuth access tokens are refreshed this many seconds before they expire.
    pub oauth_refresh_before_secs: u64,
    /// Seconds between the OAuth refresher's looks for expiring tokens (0: no background
    /// refresh; calls still refresh an expired token).
    pub oauth_refresh_scan_secs: u64,
    /// Memory for whole answers to repeated queries of stored fields (projects and
    /// integrations), served again while the team's data is unchanged (0: off).
    pub answer_cache_mb: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://integration-hub.db".into(),
            bind: "127.0.0.1:8080".into(),
            encryption_keys: None,
            key_file: None,
            max_body_bytes: 1024 * 1024,
            db_pool_size: 10,
            db_timeout_ms: 5000,
            journal_max_pending: 10_000,
            journal_durability: "queued".into(),
            journal_linger_ms: 5,
            workers: 0,
            graphiql: true,
            log_format: "text".into(),
            shutdown_timeout_secs: 30,
            metrics_token: None,
            metrics_operations: String::new(),
            cors_origins: String::new(),
            jwt_hs256_secret: None,
            jwt_public_key_file: None,
            jwt_jwks_url: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_team_claim: "team_id".into(),
            jwt_roles_claim: "roles".into(),
            jwt_leeway_secs: 30,
            jwt_jwks_refresh_secs: 300,
            jwt_jwks_min_refetch_secs: 30,
            jwt_roles: default_roles(),
            credential_cache_secs: 30,
            integration_cache_secs: 5,
            api_key_roll_grace_secs: 86_400,
            usage_flush_ms: 5_000,
            rate_limit_api_key: "600/1m,burst=100".into(),
            rate_limit_user: "600/1m,burst=100".into(),
            rate_limit_anonymous: "60/1m,burst=20".into(),
            max_depth: 15,
            max_complexity: 1_000,
            max_aliases: 15,
            max_fields: 250,
            max_directives: 10,
            max_batch: 10,
            introspection: true,
            field_suggestions: true,
            outbound_connect_timeout_ms: 5_000,
            outbound_timeout_ms: 30_000,
            outbound_max_retries: 3,
            outbound_retry_base_ms: 200,
            outbound_retry_max_ms: 5_000,
            outbound_max_retry_after_secs: 30,
            outbound_max_response_bytes: 5 * 1024 * 1024,
            outbound_allow: String::new(),
            outbound_rate_limit: "20/1s,burst=40".into(),
            redis_url: None,
            redis_timeout_ms: 50,
            breaker_threshold: 5,
            breaker_cooldown_secs: 30,
            batch_max_calls: 20,
            batch_concurrency: 4,
            log_retention_days: 7,
            log_retention_per_integration: 10_000,
            health_interval_secs: 300,
            health_window_secs: 3_600,
            health_concurrency: 4,
            event_buffer: 1_024,
            max_subscriptions_per_connection: 20,
            ws_keepalive_secs: 30,
            ws_send_buffer: 256,
            sync_write_concurrency: 4,
            sync_scheduler_secs: 5,
            job_lease_secs: 30,
            webhook_retry_schedule: "5s,5m,30m,2h,5h,10h,10h".into(),
            webhook_timeout_ms: 10_000,
            webhook_disable_after_secs: 5 * 24 * 3600,
            webhook_concurrency: 32,
            webhook_endpoint_concurrency: 8,
            webhook_poll_ms: 1000,
            public_url: None,
            oauth_redirect_origins: String::new(),
            oauth_refresh_before_secs: 300,
            oauth_refresh_scan_secs: 30,
            max_connections: 0,
            answer_cache_mb: 16,
        }
    }
}

/// `admin` → everything; `viewer` → every read scope (and live logs).
fn default_roles() -> BTreeMap<String, Vec<String>> {
    let read = [
        "integrations:read",
        "logs:read",
        "logs:subscribe",
        "api_keys:read",
        "sync:read",
        "webhooks:read",
        "templates:read",
        "audit:read",
    ];
    BTreeMap::from([
        ("admin".to_string(), vec!["admin".to_string()]),
        (
            "viewer".to_string(),
            read.iter().map(|s| s.to_string()).collect(),
        ),
    ])
}

impl Config {
    /// Defaults → `HUB_CONFIG` TOML file (if set) → `HUB_*` / `DATABASE_URL` environment.
    pub fn load() -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Ok(path) = std::env::var("HUB_CONFIG") {
            if !std::path::Path::new(&path).is_file() {
                return Err(format!("HUB_CONFIG: no such file `{path}`"));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only our own settings are read from HUB_*: other tools use that prefix too.
        let known: Vec<String> = serde_json::to_value(Config::default())
            .ok()
            .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
            .unwrap_or_default();
        let figment = figment.merge(Env::raw().only(&["DATABASE_URL"])).merge(
            Env::prefixed("HUB_").filter(move |key| known.iter().any(|k| key == k.as_str())),
        );
        let config: Config = figment
            .extract()
            .map_err(|err| format!("invalid configuration: {err}"))?;
        config.validate()?;
        Ok(config)
    }

    pub fn db_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.db_timeout_ms)
    }

    pub fn validate(&self) -> Result<(), String> {
        DatabaseUrl::parse(&self.database_url)?;
        self.bind_addr()?;
        if self.max_body_bytes < 1024 {
            return Err("HUB_MAX_BODY_BYTES must be at least 1024".into());
        }
        if self.db_pool_size == 0 {
            return Err("HUB_DB_POOL_SIZE must be at least 1".into());
        }
        if !(100..=600_000).contains(&self.db_timeout_ms) {
            return Err("HUB_DB_TIMEOUT_MS must be 100 to 600000".into());
        }
        webhook_schedule(&self.webhook_retry_schedule)?;
        oauth_origins(&self.oauth_redirect_origins)?;
        if let Some(url) = &self.public_url {
            let parsed =
                url::Url::parse(url).map_err(|err| format!("HUB_PUBLIC_URL: not a URL ({err})"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("HUB_PUBLIC_URL must be an http or https URL".into());
            }
        }
        if self.webhook_timeout_ms == 0
            || self.webhook_concurrency == 0
            || self.webhook_endpoint_concurrency == 0
            || self.webhook_poll_ms == 0
        {
            return Err("HUB_WEBHOOK_TIMEOUT_MS, HUB_WEBHOOK_CONCURRENCY, HUB_WEBHOOK_ENDPOINT_CONCURRENCY and HUB_WEBHOOK_POLL_MS must be at least 1".into());
        }
        if self.job_lease_secs == 0 {
            return Err("HUB_JOB_LEASE_SECS must be at least 1".into());
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.len() < 16 || t.chars().any(|c| c.is_whitespace()))
        {
            return Err("HUB_METRICS_TOKEN must be at least 16 characters without spaces".into());
        }
        cors_origins(&self.cors_origins)?;
        let names: Vec<&str> = self.metrics_operations().collect();
        if names.len() > 100 {
            return Err("HUB_METRICS_OPERATIONS lists at most 100 operation names".into());
        }
        if let Some(bad) = names.iter().find(|n| {
            n.len() > 64
                || n.starts_with(|c: char| c.is_ascii_digit())
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return Err(format!(
                "HUB_METRICS_OPERATIONS: `{bad}` is not a GraphQL operation name (letters, digits and _, at most 64)"
            ));
        }
        if self.journal_max_pending == 0 {
            return Err("HUB_JOURNAL_MAX_PENDING must be at least 1".into());
        }
        if !(1..=100).contains(&self.journal_linger_ms) {
            return Err(format!(
                "HUB_JOURNAL_LINGER_MS must be between 1 and 100 (got {})",
                self.journal_linger_ms
            ));
        }
        if !matches!(self.journal_durability.as_str(), "queued" | "committed") {
            return Err(format!(
                "HUB_JOURNAL_DURABILITY must be `queued` or `committed` (got `{}`)",
                self.journal_durability
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "HUB_LOG_FORMAT must be `text` or `json` (got `{}`)",
                self.log_format
            ));
        }
        for (name, spec) in [
            ("HUB_RATE_LIMIT_API_KEY", &self.rate_limit_api_key),
            ("HUB_RATE_LIMIT_USER", &self.rate_limit_user),
            ("HUB_RATE_LIMIT_ANONYMOUS", &self.rate_limit_anonymous),
        ] {
            crate::ratelimit::RateSpec::parse(spec).map_err(|err| format!("{name}: {err}"))?;
        }
        if self.jwt_enabled() {
            if self.jwt_issuer.is_none() || self.jwt_audience.is_none() {
                return Err("JWT verification needs HUB_JWT_ISSUER and HUB_JWT_AUDIENCE (RFC 8725: check iss and aud)".into());
            }
            if self.jwt_hs256_secret.as_ref().is_some_and(|s| s.len() < 32) {
                return Err("HUB_JWT_HS256_SECRET must be at least 32 bytes".into());
            }
        }
        if self.max_batch == 0 || self.max_depth == 0 || self.max_complexity == 0 {
            return Err(
                "HUB_MAX_BATCH, HUB_MAX_DEPTH and HUB_MAX_COMPLEXITY must be at least 1".into(),
            );
        }
        self.outbound_allow_list()
            .map_err(|err| format!("HUB_OUTBOUND_ALLOW: {err}"))?;
        crate::ratelimit::RateSpec::parse(&self.outbound_rate_limit)
            .map_err(|err| format!("HUB_OUTBOUND_RATE_LIMIT: {err}"))?;
        if self.batch_max_calls == 0 || self.batch_concurrency == 0 || self.health_concurrency == 0
        {
            return Err("HUB_BATCH_MAX_CALLS, HUB_BATCH_CONCURRENCY and HUB_HEALTH_CONCURRENCY must be at least 1".into());
        }
        if self.outbound_timeout_ms == 0 || self.outbound_connect_timeout_ms == 0 {
            return Err("outbound timeouts must be positive".into());
        }
        if let Some(keys) = &self.encryption_keys {
            crate::crypto::Keyring::parse(keys)
                .map_err(|err| format!("HUB_ENCRYPTION_KEYS: {err}"))?;
        }
        Ok(())
    }

    /// The SSRF guard's allow-list.
    /// The operation names `HUB_METRICS_OPERATIONS` registers.
    pub fn metrics_operations(&self) -> impl Iterator<Item = &str> {
        self.metrics_operations
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
    }

    /// The `operation` label of an operation named `name`: its name when registered, `other`
    /// otherwise (so a caller cannot add series).
    pub fn operation_label(&self, name: Option<&str>) -> std::borrow::Cow<'static, str> {
        match name {
            Some(name) if self.metrics_operations().any(|n| n == name) => name.to_string().into(),
            _ => "other".into(),
        }
    }

    pub fn outbound_allow_list(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.outbound_allow
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{s}` is not an address or CIDR"))
            })
            .collect()
    }

    pub fn jwt_enabled(&self) -> bool {
        self.jwt_hs256_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_url.is_some()
    }

    pub fn database(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.database_url).expect("validated at load")
    }

    /// HTTP worker threads: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, String> {
        self.bind.parse().map_err(|_| {
            format!(
                "HUB_BIND must be an address like 127.0.0.1:8080 (got `{}`)",
                self.bind
            )
        })
    }

    /// The key file used when no keys come from the environment.
    pub fn key_file_path(&self) -> PathBuf {
        if let Some(path) = &self.key_file {
            return path.clone();
        }
        match self.database() {
            DatabaseUrl::Sqlite(db) => {
                let db = PathBuf::from(db);
                let dir = db.parent().map(PathBuf::from).unwrap_or_default();
                let stem = db
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "integration-hub".into());
                dir.join(format!("{stem}.key"))
            }
            DatabaseUrl::Postgres(_) => PathBuf::from("integration-hub.key"),
        }
    }
}

/// The origins in `HUB_OAUTH_REDIRECT_ORIGINS` (checked at start: `scheme://host[:port]`).
pub fn oauth_origins(setting: &str) -> Result<Vec<String>, String> {
    if setting.split(',').any(|o| o.trim() == "*") {
        return Err("HUB_OAUTH_REDIRECT_ORIGINS: name each origin; `*` would let anyone's page receive the browser".into());
    }
    cors_origins(setting)
        .map_err(|err| err.replace("HUB_CORS_ORIGINS", "HUB_OAUTH_REDIRECT_ORIGINS"))
}

/// The origins in `HUB_CORS_ORIGINS` (checked at start: `scheme://host[:port]`, or `*`).
pub fn cors_origins(setting: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in setting.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            origins.push(origin.to_string());
            continue;
        }
        let url = url::Url::parse(origin)
            .map_err(|err| format!("HUB_CORS_ORIGINS: `{origin}` is not an origin: {err}"))?;
        let canonical = url.origin().ascii_serialization();
        if !matches!(url.scheme(), "http" | "https") || canonical != origin.trim_end_matches('/') {
            return Err(format!(
                "HUB_CORS_ORIGINS: `{origin}` is not an origin (scheme://host[:port], no path)"
            ));
        }
        origins.push(canonical);
    }
    Ok(origins)
}

/// Which database a `DATABASE_URL` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    /// A file path (the `sqlite://` prefix removed).
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_string()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "DATABASE_URL sqlite:// needs a file path, e.g. sqlite://integration-hub.db"
                        .into(),
                );
            }
            Ok(Self::Sqlite(path.to_string()))
        } else {
            Err(format!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got `{}`)",
                redact_url(url)
            ))
        }
    }
}

/// A URL with any password replaced, safe for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// `HUB_WEBHOOK_RETRY_SCHEDULE`: waits like `5s,5m,30m,2h` (s, m, h; ms for tests), at most
/// 20 of them, each at most a day.
pub fn webhook_schedule(setting: &str) -> Result<Vec<std::time::Duration>, String> {
    let bad = |part: &str| {
        format!("HUB_WEBHOOK_RETRY_SCHEDULE: `{part}` is not a wait like 5s, 5m or 2h")
    };
    let mut waits = Vec::new();
    for part in setting.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (number, unit_ms) = if let Some(n) = part.strip_suffix("ms") {
            (n, 1)
        } else if let Some(n) = part.strip_suffix('s') {
            (n, 1000)
        } else if let Some(n) = part.strip_suffix('m') {
            (n, 60_000)
        } else if let Some(n) = part.strip_suffix('h') {
            (n, 3_600_000)
        } else {
            return Err(bad(part));
        };
        let n: u64 = number.trim().parse().map_err(|_| bad(part))?;
        let ms = n
            .checked_mul(unit_ms)
            .filter(|ms| *ms <= 86_400_000)
            .ok_or_else(|| bad(part))?;
        waits.push(std::time::Duration::from_millis(ms));
    }
    if waits.len() > 20 {
        return Err("HUB_WEBHOOK_RETRY_SCHEDULE: at most 20 waits".into());
    }
    Ok(waits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.key_file_path(), PathBuf::from("integration-hub.key"));
    }

    #[test]
    fn bad_values_are_named() {
        let config = Config {
            bind: "nowhere".into(),
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().contains("HUB_BIND"));
        let config = Config {
            database_url: "mysql://x".into(),
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().contains("DATABASE_URL"));
        let config = Config {
            encryption_keys: Some("k1:short".into()),
            ..Config::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("HUB_ENCRYPTION_KEYS")
        );
    }

    #[test]
    fn origins_are_checked() {
        assert_eq!(
            cors_origins("http://localhost:5173, https://app.example.com").unwrap(),
            vec!["http://localhost:5173", "https://app.example.com"]
        );
        assert!(cors_origins("http://localhost:5173/app").is_err());
        assert!(cors_origins("localhost:5173").is_err());
        assert!(cors_origins("").unwrap().is_empty());
    }
}
