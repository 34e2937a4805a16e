use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::integrations;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = integrations)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct IntegrationRow {
    pub id: String,
    pub team_id: String,
    pub project_id: String,
    pub provider_key: String,
    pub name: String,
    /// JSON text, valid against the provider's configuration schema.
    pub config: String,
    /// `base64(nonce || AES-256-GCM ciphertext)` of the credentials JSON.
    pub credentials_sealed: Option<String>,
    pub credentials_key_id: Option<String>,
    /// JSON array of the credential field names that are set (names only, never values).
    pub credential_fields: String,
    pub credentials_updated_at: Option<NaiveDateTime>,
    pub enabled: bool,
    pub status: String,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_check_at: Option<NaiveDateTime>,
    pub last_response_ms: Option<i64>,
    pub consecutive_failures: i32,
    /// The team's OAuth app the integration connects through (its credentials are then the
    /// tokens the connection obtained).
    pub oauth_app_id: Option<String>,
    /// `not_connected`, `connected`, `expired` or `failed` (null unless `oauth_app_id`).
    pub oauth_status: Option<String>,
    /// JSON array of the scopes the provider granted.
    pub oauth_scopes: Option<String>,
    pub oauth_expires_at: Option<NaiveDateTime>,
    pub oauth_refreshed_at: Option<NaiveDateTime>,
    pub oauth_error: Option<String>,
    /// Bumped each time the tokens change: a caller holding generation g knows a token of a
    /// higher generation is newer than the one it has.
    pub oauth_generation: i64,
    /// The custom template (`template:<key>` providers) and the version it is pinned to.
    pub template_id: Option<String>,
    pub template_version: Option<i32>,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = integrations)]
pub struct IntegrationChanges {
    pub name: Option<String>,
    pub config: Option<String>,
    pub enabled: Option<bool>,
    pub credentials_sealed: Option<Option<String>>,
    pub credentials_key_id: Option<Option<String>>,
    pub credential_fields: Option<String>,
    pub credentials_updated_at: Option<Option<NaiveDateTime>>,
    pub updated_at: Option<NaiveDateTime>,
    pub oauth_app_id: Option<Option<String>>,
    pub oauth_status: Option<Option<String>>,
    pub template_version: Option<Option<i32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum IntegrationStatus {
    Pending,
    Connected,
    Degraded,
    Disconnected,
    Error,
}

impl IntegrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Degraded => "degraded",
            Self::Disconnected => "disconnected",
            Self::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "connected" => Self::Connected,
            "degraded" => Self::Degraded,
            "disconnected" => Self::Disconnected,
            "error" => Self::Error,
            _ => Self::Pending,
        }
    }
}

/// List filters; `provider_keys` is already resolved from provider and category.
#[derive(Debug, Default, Clone)]
pub struct IntegrationFilter {
    pub provider_keys: Option<Vec<String>>,
    pub status: Option<IntegrationStatus>,
    pub enabled: Option<bool>,
    /// Only these integrations (a key limited to named integrations).
    pub only_ids: Option<Vec<String>>,
}
