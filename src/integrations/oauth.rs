//! What an integration knows of its OAuth connection: the connection's status and the
//! `Integration.oauth` view, and whether an app of the team may serve it. The connection
//! flow and the token life cycle are the `oauth` domain's.

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::model::IntegrationRow;
use crate::db::DbConn;
use crate::db::schema::oauth_apps;
use crate::error::{AppError, AppResult};
use crate::with_conn;

/// An OAuth connection's state, as `Integration.oauth.status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
#[graphql(name = "OAuthStatus")]
pub enum OAuthStatus {
    /// No tokens yet (or disconnected): `startOAuthConnection`.
    NotConnected,
    Connected,
    /// The token expired and could not be refreshed yet (the token endpoint kept failing).
    Expired,
    /// The provider refused the grant (`invalid_grant`: consent revoked): connect again.
    Failed,
}

impl OAuthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Connected => "connected",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "connected" => Self::Connected,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            _ => Self::NotConnected,
        }
    }
}

/// An integration's OAuth connection (never a token).
#[derive(SimpleObject)]
#[graphql(name = "IntegrationOAuth")]
pub struct OAuthInfo {
    pub app_id: ID,
    pub status: OAuthStatus,
    /// The scopes the provider granted.
    pub scopes: Vec<String>,
    /// When the access token expires (null: the provider gave no expiry).
    pub expires_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// The last OAuth problem (a refused or failed refresh, a failed connection attempt).
    pub last_error: Option<String>,
    /// Whether a refresh token is held.
    pub refreshable: bool,
}

/// `Integration.oauth`: null unless the integration connects through an OAuth app.
pub fn info(row: &IntegrationRow) -> Option<OAuthInfo> {
    let app_id = row.oauth_app_id.clone()?;
    let fields: Vec<String> = serde_json::from_str(&row.credential_fields).unwrap_or_default();
    Some(OAuthInfo {
        app_id: ID(app_id),
        status: OAuthStatus::parse(row.oauth_status.as_deref().unwrap_or_default()),
        scopes: row
            .oauth_scopes
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
        expires_at: row.oauth_expires_at.map(|t| t.and_utc()),
        last_refreshed_at: row.oauth_refreshed_at.map(|t| t.and_utc()),
        last_error: row.oauth_error.clone(),
        refreshable: fields.iter().any(|f| f == "refreshToken"),
    })
}

/// Whether an integration of `provider_key` may connect through the app: the team's, for the
/// same provider (or, for a generic provider or a template, a generic app).
pub async fn usable_by(
    conn: &mut DbConn,
    team_id: &str,
    app_id: &str,
    provider_key: &str,
) -> AppResult<()> {
    let app_provider: String = with_conn!(conn, |c| oauth_apps::table
        .filter(oauth_apps::team_id.eq(team_id))
        .filter(oauth_apps::id.eq(app_id))
        .select(oauth_apps::provider_key)
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("OAuth app"))?;
    let generic = |key: &str| {
        matches!(key, "generic_rest" | "graphql") || key.starts_with(crate::templates::PREFIX)
    };
    if app_provider != provider_key && !(generic(&app_provider) && generic(provider_key)) {
        return Err(AppError::validation(format!(
            "the OAuth app is for `{app_provider}`, the integration's provider is `{provider_key}`"
        )));
    }
    Ok(())
}
