//! One typed configuration: defaults, then an optional TOML file (`HUB_CONFIG`), then
//! environment variables (`HUB_*`, plus the conventional `DATABASE_URL`). Validated once at
//! start; anything wrong stops the process with a message naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::db::DatabaseUrl;

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
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Serve GraphiQL on GET /graphql for browsers.
    pub graphiql: bool,
    /// `text` or `json` log lines (level from `RUST_LOG`, default `info`).
    pub log_format: String,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_timeout_secs: u64,
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
            workers: 0,
            graphiql: true,
            log_format: "text".into(),
            shutdown_timeout_secs: 30,
        }
    }
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

    pub fn validate(&self) -> Result<(), String> {
        DatabaseUrl::parse(&self.database_url)?;
        self.bind_addr()?;
        if self.max_body_bytes < 1024 {
            return Err("HUB_MAX_BODY_BYTES must be at least 1024".into());
        }
        if self.db_pool_size == 0 {
            return Err("HUB_DB_POOL_SIZE must be at least 1".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "HUB_LOG_FORMAT must be `text` or `json` (got `{}`)",
                self.log_format
            ));
        }
        if let Some(keys) = &self.encryption_keys {
            crate::crypto::Keyring::parse(keys)
                .map_err(|err| format!("HUB_ENCRYPTION_KEYS: {err}"))?;
        }
        Ok(())
    }

    pub fn database(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.database_url).expect("validated at load")
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
}
