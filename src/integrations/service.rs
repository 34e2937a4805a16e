//! Rules for integrations: validation against the provider's schemas, sealing of
//! credentials, and re-sealing under the active key.

use serde_json::Value;

use super::model::{IntegrationChanges, IntegrationRow, IntegrationStatus};
use super::store;
use crate::crypto::Keyring;
use crate::db::{DbConn, new_id, now};
use crate::error::{AppError, AppResult};
use crate::providers::{self, Provider};

pub struct NewIntegration {
    pub project_id: String,
    pub provider: String,
    pub name: String,
    pub config: Value,
    pub credentials: Option<Value>,
    pub enabled: bool,
    /// Connect through this OAuth app of the team (then no credentials are given).
    pub oauth_app_id: Option<String>,
}

fn check_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::validation(
            "integration name must be 1 to 100 characters",
        ));
    }
    Ok(name.to_string())
}

/// What sealing credentials produces for a row.
struct Sealed {
    text: String,
    key_id: String,
    fields: String,
}

fn seal_credentials(
    keyring: &Keyring,
    kind: &Kind,
    integration_id: &str,
    credentials: &Value,
) -> AppResult<Sealed> {
    kind.validate_credentials(credentials)?;
    let mut fields: Vec<&str> = credentials
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k.as_str())
                .collect()
        })
        .unwrap_or_default();
    fields.sort_unstable();
    let (key_id, text) = keyring.seal(credentials.to_string().as_bytes(), integration_id)?;
    Ok(Sealed {
        text,
        key_id,
        fields: serde_json::to_string(&fields)?,
    })
}

/// What an integration is validated against: a built-in provider, or a template version.
pub enum Kind {
    Builtin(&'static Provider),
    Template {
        template_id: String,
        version: i32,
        doc: Box<crate::templates::TemplateDoc>,
    },
}

impl Kind {
    /// The provider key `key` names for the team (a template's pinned `version`, or its latest).
    pub async fn of(
        conn: &mut DbConn,
        team_id: &str,
        key: &str,
        version: Option<i32>,
    ) -> AppResult<Self> {
        match crate::templates::resolve(conn, team_id, key, version).await? {
            Some((row, version, doc)) => Ok(Self::Template {
                template_id: row.id,
                version,
                doc: Box::new(doc),
            }),
            None => Ok(Self::Builtin(providers::require(key)?)),
        }
    }

    pub fn validate_config(&self, config: &Value) -> AppResult<()> {
        match self {
            Self::Builtin(provider) => provider.validate_config(config),
            Self::Template { doc, .. } => {
                crate::templates::check_against(&doc.config_schema, config, "configuration")
            }
        }
    }

    /// The origin (scheme, host, port) the integration's credentials are sent to with this
    /// configuration; None when it has no usable base URL yet.
    pub fn origin(&self, config: &Value) -> Option<String> {
        let url = match self {
            Self::Builtin(provider) => {
                url::Url::parse(config["baseUrl"].as_str().or(provider.default_base_url)?).ok()?
            }
            Self::Template { doc, .. } => doc.base_url_for(config).ok()?,
        };
        Some(url.origin().ascii_serialization())
    }

    pub fn validate_credentials(&self, credentials: &Value) -> AppResult<()> {
        match self {
            Self::Builtin(provider) => provider.validate_credentials(credentials),
            Self::Template { doc, .. } => {
                crate::templates::check_against(&doc.credentials_schema, credentials, "credentials")
            }
        }
    }
}

pub async fn register(
    conn: &mut DbConn,
    keyring: &Keyring,
    team_id: &str,
    new: NewIntegration,
) -> AppResult<IntegrationRow> {
    let kind = Kind::of(conn, team_id, &new.provider, None).await?;
    if let Kind::Template { doc, .. } = &kind
        && doc.auth.kind == "oauth2"
        && new.oauth_app_id.is_none()
    {
        return Err(AppError::validation(
            "this template signs with OAuth 2.0: give `oauthAppId` (an app of `generic_rest`)",
        ));
    }
    let name = check_name(&new.name)?;
    kind.validate_config(&new.config)?;
    crate::projects::store::get(conn, team_id, &new.project_id).await?;
    if let Some(app_id) = &new.oauth_app_id {
        if new.credentials.is_some() {
            return Err(AppError::validation(
                "an integration connected through an OAuth app gets its credentials from the connection: give `oauthAppId` or `credentials`, not both",
            ));
        }
        super::oauth::usable_by(conn, team_id, app_id, &new.provider).await?;
    }
    let id = new_id();
    let sealed = new
        .credentials
        .as_ref()
        .map(|c| seal_credentials(keyring, &kind, &id, c))
        .transpose()?;
    let (provider_key, template_id, template_version) = match &kind {
        Kind::Builtin(provider) => (provider.key.to_string(), None, None),
        Kind::Template {
            template_id,
            version,
            doc,
        } => (
            format!("{}{}", crate::templates::PREFIX, doc.key),
            Some(template_id.clone()),
            Some(*version),
        ),
    };
    let at = now();
    let row = IntegrationRow {
        id,
        team_id: team_id.to_string(),
        project_id: new.project_id,
        provider_key,
        name,
        config: new.config.to_string(),
        credentials_key_id: sealed.as_ref().map(|s| s.key_id.clone()),
        credential_fields: sealed
            .as_ref()
            .map_or_else(|| "[]".into(), |s| s.fields.clone()),
        credentials_sealed: sealed.map(|s| s.text),
        credentials_updated_at: new.credentials.as_ref().map(|_| at),
        enabled: new.enabled,
        status: IntegrationStatus::Pending.as_str().into(),
        last_error: None,
        created_at: at,
        updated_at: at,
        last_check_at: None,
        last_response_ms: None,
        consecutive_failures: 0,
        oauth_status: new
            .oauth_app_id
            .as_ref()
            .map(|_| super::oauth::OAuthStatus::NotConnected.as_str().to_string()),
        oauth_app_id: new.oauth_app_id,
        oauth_scopes: None,
        oauth_expires_at: None,
        oauth_refreshed_at: None,
        oauth_error: None,
        oauth_generation: 0,
        template_id,
        template_version,
    };
    store::insert(conn, &row).await?;
    Ok(row)
}

pub struct IntegrationUpdate {
    pub name: Option<String>,
    /// Replaces the whole configuration; validated against the provider's schema.
    pub config: Option<Value>,
    /// Connect through this OAuth app from now on (the current credentials are dropped).
    pub oauth_app_id: Option<String>,
}

/// Refuses a change that would send the integration's stored credentials (or OAuth tokens)
/// to another origin, unless the caller may write credentials: pointing an integration
/// elsewhere is as good as reading its secrets.
fn check_move(
    current: &IntegrationRow,
    from: (&Kind, &Value),
    to: (&Kind, &Value),
    may_write_credentials: bool,
) -> AppResult<()> {
    if may_write_credentials || current.credentials_sealed.is_none() {
        return Ok(());
    }
    if from.0.origin(from.1) != to.0.origin(to.1) {
        return Err(AppError::Forbidden(
            "this change sends the integration's credentials to another origin (its base URL); that needs `credentials:write`".into(),
        ));
    }
    Ok(())
}

pub async fn update(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    update: IntegrationUpdate,
    may_write_credentials: bool,
) -> AppResult<IntegrationRow> {
    let current = store::get(conn, team_id, id).await?;
    let kind = Kind::of(
        conn,
        team_id,
        &current.provider_key,
        current.template_version,
    )
    .await?;
    if let Some(config) = &update.config {
        kind.validate_config(config)?;
        let old: Value = serde_json::from_str(&current.config)?;
        check_move(
            &current,
            (&kind, &old),
            (&kind, config),
            may_write_credentials,
        )?;
    }
    let mut changes = IntegrationChanges {
        name: update.name.as_deref().map(check_name).transpose()?,
        config: update.config.map(|c| c.to_string()),
        updated_at: Some(now()),
        ..Default::default()
    };
    if let Some(app_id) = update.oauth_app_id
        && current.oauth_app_id.as_deref() != Some(app_id.as_str())
    {
        super::oauth::usable_by(conn, team_id, &app_id, &current.provider_key).await?;
        // Tokens of another app (or pasted credentials) are not this app's: connect again.
        changes.oauth_app_id = Some(Some(app_id));
        changes.oauth_status = Some(Some(
            super::oauth::OAuthStatus::NotConnected.as_str().to_string(),
        ));
        changes.credentials_sealed = Some(None);
        changes.credentials_key_id = Some(None);
        changes.credential_fields = Some("[]".into());
        changes.credentials_updated_at = Some(None);
    }
    store::update(conn, team_id, id, &changes).await
}

pub async fn set_enabled(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    enabled: bool,
) -> AppResult<IntegrationRow> {
    let changes = IntegrationChanges {
        enabled: Some(enabled),
        updated_at: Some(now()),
        ..Default::default()
    };
    store::update(conn, team_id, id, &changes).await
}

/// Replaces the credentials with new ones, sealed under the active key.
pub async fn rotate_credentials(
    conn: &mut DbConn,
    keyring: &Keyring,
    team_id: &str,
    id: &str,
    credentials: &Value,
) -> AppResult<IntegrationRow> {
    let current = store::get(conn, team_id, id).await?;
    if current.oauth_app_id.is_some() {
        return Err(AppError::validation(
            "this integration's credentials come from its OAuth connection: use startOAuthConnection or refreshOAuthToken",
        ));
    }
    let kind = Kind::of(
        conn,
        team_id,
        &current.provider_key,
        current.template_version,
    )
    .await?;
    let sealed = seal_credentials(keyring, &kind, id, credentials)?;
    let at = now();
    let changes = IntegrationChanges {
        credentials_sealed: Some(Some(sealed.text)),
        credentials_key_id: Some(Some(sealed.key_id)),
        credential_fields: Some(sealed.fields),
        credentials_updated_at: Some(Some(at)),
        updated_at: Some(at),
        ..Default::default()
    };
    store::update(conn, team_id, id, &changes).await
}

/// The credentials in clear, for outbound calls only; never returned to a client.
pub fn open_credentials(keyring: &Keyring, row: &IntegrationRow) -> AppResult<Option<Value>> {
    let (Some(sealed), Some(key_id)) = (&row.credentials_sealed, &row.credentials_key_id) else {
        return Ok(None);
    };
    let bytes = keyring.open(key_id, sealed, &row.id)?;
    Ok(Some(serde_json::from_slice(&bytes)?))
}

/// Re-seals every credential not yet under the active key (one team's, or all teams' when
/// `team_id` is None). Returns how many were re-sealed. Safe to run while serving: each row
/// is replaced only if nobody rotated it meanwhile.
pub async fn reseal_all(
    conn: &mut DbConn,
    keyring: &Keyring,
    team_id: Option<&str>,
) -> AppResult<u64> {
    const BATCH: i64 = 200;
    let active = keyring.active_key_id().to_string();
    let mut count = 0;
    loop {
        let rows = store::sealed_under_other_keys(conn, team_id, &active, BATCH).await?;
        if rows.is_empty() {
            return Ok(count);
        }
        let mut progressed = false;
        for row in rows {
            let (Some(sealed), Some(old_key)) = (&row.credentials_sealed, &row.credentials_key_id)
            else {
                continue;
            };
            let clear = keyring.open(old_key, sealed, &row.id)?;
            let (new_key, resealed) = keyring.seal(&clear, &row.id)?;
            if store::replace_sealed(conn, &row.id, old_key, &new_key, &resealed).await? {
                count += 1;
                progressed = true;
            }
        }
        if !progressed {
            return Ok(count);
        }
    }
}

/// Moves a template integration to another version of its template, after checking its
/// configuration (and credentials, when set) against that version's schemas.
pub async fn upgrade(
    conn: &mut DbConn,
    keyring: &Keyring,
    team_id: &str,
    id: &str,
    version: i32,
    may_write_credentials: bool,
) -> AppResult<IntegrationRow> {
    let current = store::get(conn, team_id, id).await?;
    if current.template_id.is_none() {
        return Err(AppError::validation(
            "only integrations of a template (`template:<key>`) have versions",
        ));
    }
    let kind = Kind::of(conn, team_id, &current.provider_key, Some(version)).await?;
    let config: Value = serde_json::from_str(&current.config)?;
    kind.validate_config(&config)?;
    let pinned = Kind::of(
        conn,
        team_id,
        &current.provider_key,
        current.template_version,
    )
    .await?;
    check_move(
        &current,
        (&pinned, &config),
        (&kind, &config),
        may_write_credentials,
    )?;
    if current.oauth_app_id.is_none()
        && let Some(credentials) = open_credentials(keyring, &current)?
    {
        kind.validate_credentials(&credentials)?;
    }
    let changes = IntegrationChanges {
        template_version: Some(Some(version)),
        updated_at: Some(now()),
        ..Default::default()
    };
    store::update(conn, team_id, id, &changes).await
}
