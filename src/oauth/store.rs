//! Queries on OAuth apps, connection attempts (`state`s) and the token columns of
//! integrations. What serves a caller is confined to its team.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::{integrations, oauth_apps, oauth_states};
use crate::db::{DbConn, now};
use crate::error::{AppError, AppResult};
use crate::integrations::model::IntegrationRow;
use crate::with_conn;

/// At most this many apps per team.
pub const MAX_APPS_PER_TEAM: i64 = 100;
/// At most this many connection attempts of one integration may be pending at once.
pub const MAX_PENDING_STATES: i64 = 20;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = oauth_apps)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct OAuthAppRow {
    pub id: String,
    pub team_id: String,
    pub provider_key: String,
    pub name: String,
    pub grant_type: String,
    pub client_id: String,
    /// `<key id>:<sealed>` of the client secret.
    pub client_secret_sealed: String,
    /// JSON array of the scopes asked for.
    pub scopes: String,
    pub authorize_url: Option<String>,
    pub token_url: String,
    pub revoke_url: Option<String>,
    /// JSON object of extra authorization URL parameters.
    pub authorize_params: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl OAuthAppRow {
    pub fn scopes(&self) -> Vec<String> {
        serde_json::from_str(&self.scopes).unwrap_or_default()
    }

    pub fn authorize_params(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&self.authorize_params).unwrap_or_default()
    }
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = oauth_apps)]
pub struct AppChanges {
    pub name: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_sealed: Option<String>,
    pub scopes: Option<String>,
    pub authorize_url: Option<Option<String>>,
    pub token_url: Option<String>,
    pub revoke_url: Option<Option<String>>,
    pub authorize_params: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
}

fn name_taken(name: &str) -> AppError {
    AppError::Conflict(format!("an OAuth app named `{name}` already exists"))
}

pub async fn insert(conn: &mut DbConn, row: &OAuthAppRow) -> AppResult<()> {
    let count: i64 = with_conn!(conn, |c| oauth_apps::table
        .filter(oauth_apps::team_id.eq(&row.team_id))
        .count()
        .get_result(c)
        .await)?;
    if count >= MAX_APPS_PER_TEAM {
        return Err(AppError::validation(format!(
            "a team has at most {MAX_APPS_PER_TEAM} OAuth apps"
        )));
    }
    let inserted = with_conn!(conn, |c| diesel::insert_into(oauth_apps::table)
        .values(row)
        .execute(c)
        .await)
    .map_err(AppError::from);
    match inserted {
        Err(AppError::Conflict(_)) => Err(name_taken(&row.name)),
        other => other.map(|_| ()),
    }
}

pub async fn get(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<OAuthAppRow> {
    with_conn!(conn, |c| oauth_apps::table
        .filter(oauth_apps::team_id.eq(team_id))
        .filter(oauth_apps::id.eq(id))
        .select(OAuthAppRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("OAuth app"))
}

/// The team's apps, oldest first (at most [`MAX_APPS_PER_TEAM`]).
pub async fn list(conn: &mut DbConn, team_id: &str) -> AppResult<Vec<OAuthAppRow>> {
    Ok(with_conn!(conn, |c| oauth_apps::table
        .filter(oauth_apps::team_id.eq(team_id))
        .order(oauth_apps::id.asc())
        .limit(MAX_APPS_PER_TEAM)
        .select(OAuthAppRow::as_select())
        .load(c)
        .await)?)
}

pub async fn update(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    changes: &AppChanges,
) -> AppResult<OAuthAppRow> {
    let updated = with_conn!(conn, |c| diesel::update(
        oauth_apps::table
            .filter(oauth_apps::team_id.eq(team_id))
            .filter(oauth_apps::id.eq(id))
    )
    .set(changes)
    .execute(c)
    .await)
    .map_err(AppError::from);
    match updated {
        Err(AppError::Conflict(_)) => Err(name_taken(changes.name.as_deref().unwrap_or_default())),
        Ok(0) => Err(AppError::not_found("OAuth app")),
        Ok(_) => get(conn, team_id, id).await,
        Err(other) => Err(other),
    }
}

/// How many integrations connect through the app.
pub async fn users(conn: &mut DbConn, app_id: &str) -> AppResult<i64> {
    Ok(with_conn!(conn, |c| integrations::table
        .filter(integrations::oauth_app_id.eq(app_id))
        .count()
        .get_result(c)
        .await)?)
}

/// Deletes the app; CONFLICT while integrations use it.
pub async fn delete(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<()> {
    get(conn, team_id, id).await?;
    let used = users(conn, id).await?;
    if used > 0 {
        return Err(AppError::Conflict(format!(
            "the OAuth app is used by {used} integration(s); move or delete them first"
        )));
    }
    with_conn!(conn, |c| diesel::delete(
        oauth_apps::table
            .filter(oauth_apps::team_id.eq(team_id))
            .filter(oauth_apps::id.eq(id))
    )
    .execute(c)
    .await)?;
    Ok(())
}

/// A connection attempt in flight.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = oauth_states)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct StateRow {
    /// SHA-256 of the `state` sent to the provider (the value itself is never stored).
    pub state_hash: String,
    pub team_id: String,
    pub integration_id: String,
    /// `<key id>:<sealed>` of the PKCE verifier.
    pub verifier_sealed: String,
    pub redirect_after: Option<String>,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// Records an attempt, after dropping the expired ones; VALIDATION_FAILED when the
/// integration already has too many pending.
pub async fn insert_state(conn: &mut DbConn, row: &StateRow) -> AppResult<()> {
    let at = now();
    with_conn!(conn, |c| diesel::delete(
        oauth_states::table.filter(oauth_states::expires_at.lt(at))
    )
    .execute(c)
    .await)?;
    let pending: i64 = with_conn!(conn, |c| oauth_states::table
        .filter(oauth_states::integration_id.eq(&row.integration_id))
        .count()
        .get_result(c)
        .await)?;
    if pending >= MAX_PENDING_STATES {
        return Err(AppError::validation(format!(
            "the integration has {pending} connection attempts pending; finish one or wait until they expire (10 minutes)"
        )));
    }
    with_conn!(conn, |c| diesel::insert_into(oauth_states::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// Takes an attempt by its state's hash: it is deleted, so a second use finds nothing.
pub async fn take_state(conn: &mut DbConn, state_hash: &str) -> AppResult<Option<StateRow>> {
    let row: Option<StateRow> = with_conn!(conn, |c| oauth_states::table
        .filter(oauth_states::state_hash.eq(state_hash))
        .select(StateRow::as_select())
        .first(c)
        .await
        .optional())?;
    let Some(row) = row else {
        return Ok(None);
    };
    let deleted = with_conn!(conn, |c| diesel::delete(
        oauth_states::table.filter(oauth_states::state_hash.eq(state_hash))
    )
    .execute(c)
    .await)?;
    // Another request took it between the two statements: it is theirs.
    Ok((deleted == 1).then_some(row))
}

/// An integration by id alone (the token life cycle runs for whichever team owns it).
pub async fn integration(conn: &mut DbConn, id: &str) -> AppResult<IntegrationRow> {
    with_conn!(conn, |c| integrations::table
        .filter(integrations::id.eq(id))
        .select(IntegrationRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("integration"))
}

/// New tokens for an integration, written in one statement: the sealed credentials (access
/// and refresh token together, so a rotated refresh token is never stored apart from its
/// access token), expiry, scopes and status. Written only over `generation` (the tokens the
/// writer replaced); false if another writer got there first.
pub struct NewTokens<'a> {
    pub sealed: &'a str,
    pub key_id: &'a str,
    pub fields: &'a str,
    pub expires_at: Option<NaiveDateTime>,
    /// JSON array; None keeps the scopes already recorded.
    pub scopes: Option<String>,
    pub refreshed: bool,
}

pub async fn store_tokens(
    conn: &mut DbConn,
    row: &IntegrationRow,
    tokens: NewTokens<'_>,
) -> AppResult<bool> {
    let at = now();
    let scopes = tokens.scopes.or_else(|| row.oauth_scopes.clone());
    let refreshed_at = if tokens.refreshed {
        Some(at)
    } else {
        row.oauth_refreshed_at
    };
    // A working connection clears what an OAuth failure set; other states are the health
    // monitor's to judge.
    let (status, last_error) = match row.status.as_str() {
        "pending" | "error" | "disconnected" => ("connected".to_string(), None),
        other => (other.to_string(), row.last_error.clone()),
    };
    let written = with_conn!(conn, |c| diesel::update(
        integrations::table
            .filter(integrations::id.eq(&row.id))
            .filter(integrations::oauth_generation.eq(row.oauth_generation))
    )
    .set((
        integrations::credentials_sealed.eq(tokens.sealed),
        integrations::credentials_key_id.eq(tokens.key_id),
        integrations::credential_fields.eq(tokens.fields),
        integrations::credentials_updated_at.eq(at),
        integrations::oauth_status.eq("connected"),
        integrations::oauth_scopes.eq(&scopes),
        integrations::oauth_expires_at.eq(tokens.expires_at),
        integrations::oauth_refreshed_at.eq(refreshed_at),
        integrations::oauth_error.eq(None::<String>),
        integrations::oauth_generation.eq(row.oauth_generation + 1),
        integrations::status.eq(&status),
        integrations::last_error.eq(&last_error),
    ))
    .execute(c)
    .await)?;
    Ok(written == 1)
}

/// Records an OAuth problem. `status`: the connection's new state (None keeps it);
/// `integration_error`: also sets the integration ERROR with this reason.
pub async fn record_problem(
    conn: &mut DbConn,
    id: &str,
    status: Option<super::OAuthStatus>,
    message: &str,
    integration_error: bool,
) -> AppResult<()> {
    let message = message.chars().take(1000).collect::<String>();
    with_conn!(conn, |c| {
        let target = integrations::table.filter(integrations::id.eq(id));
        match (status, integration_error) {
            (Some(status), true) => {
                diesel::update(target)
                    .set((
                        integrations::oauth_status.eq(status.as_str()),
                        integrations::oauth_error.eq(&message),
                        integrations::status.eq("error"),
                        integrations::last_error.eq(&message),
                    ))
                    .execute(c)
                    .await
            }
            (Some(status), false) => {
                diesel::update(target)
                    .set((
                        integrations::oauth_status.eq(status.as_str()),
                        integrations::oauth_error.eq(&message),
                    ))
                    .execute(c)
                    .await
            }
            (None, true) => {
                diesel::update(target)
                    .set((
                        integrations::oauth_error.eq(&message),
                        integrations::status.eq("error"),
                        integrations::last_error.eq(&message),
                    ))
                    .execute(c)
                    .await
            }
            (None, false) => {
                diesel::update(target)
                    .set(integrations::oauth_error.eq(&message))
                    .execute(c)
                    .await
            }
        }
    })?;
    Ok(())
}

/// Forgets an integration's tokens (disconnected): status DISCONNECTED.
pub async fn clear_tokens(
    conn: &mut DbConn,
    id: &str,
    note: Option<&str>,
) -> AppResult<IntegrationRow> {
    let at = now();
    with_conn!(conn, |c| diesel::update(
        integrations::table.filter(integrations::id.eq(id))
    )
    .set((
        integrations::credentials_sealed.eq(None::<String>),
        integrations::credentials_key_id.eq(None::<String>),
        integrations::credential_fields.eq("[]"),
        integrations::credentials_updated_at.eq(at),
        integrations::oauth_status.eq(super::OAuthStatus::NotConnected.as_str()),
        integrations::oauth_scopes.eq(None::<String>),
        integrations::oauth_expires_at.eq(None::<NaiveDateTime>),
        integrations::oauth_error.eq(note),
        integrations::oauth_generation.eq(integrations::oauth_generation + 1),
        integrations::status.eq("disconnected"),
        integrations::last_error.eq(None::<String>),
        integrations::updated_at.eq(at),
    ))
    .execute(c)
    .await)?;
    integration(conn, id).await
}

/// Enabled OAuth integrations whose token expires before `before` and can be renewed, at
/// most `limit`, soonest first.
pub async fn due_for_refresh(
    conn: &mut DbConn,
    before: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<String>> {
    Ok(with_conn!(conn, |c| integrations::table
        .filter(integrations::oauth_app_id.is_not_null())
        .filter(integrations::enabled.eq(true))
        .filter(integrations::oauth_status.eq_any(["connected", "expired"]))
        .filter(integrations::oauth_expires_at.lt(before))
        .order(integrations::oauth_expires_at.asc())
        .limit(limit)
        .select(integrations::id)
        .load(c)
        .await)?)
}

/// Every app's sealed client secret (one team's, or all): (app id, `<key id>:<sealed>`).
pub async fn sealed_secrets(
    conn: &mut DbConn,
    team_id: Option<&str>,
) -> AppResult<Vec<(String, String)>> {
    Ok(with_conn!(conn, |c| {
        let mut query = oauth_apps::table
            .select((oauth_apps::id, oauth_apps::client_secret_sealed))
            .into_boxed();
        if let Some(team) = team_id {
            query = query.filter(oauth_apps::team_id.eq(team.to_string()));
        }
        query.load(c).await
    })?)
}

/// Replaces a sealed client secret if it is still `old` (a concurrent update wins).
pub async fn replace_secret(conn: &mut DbConn, id: &str, old: &str, new: &str) -> AppResult<bool> {
    let changed = with_conn!(conn, |c| diesel::update(
        oauth_apps::table
            .filter(oauth_apps::id.eq(id))
            .filter(oauth_apps::client_secret_sealed.eq(old))
    )
    .set(oauth_apps::client_secret_sealed.eq(new))
    .execute(c)
    .await)?;
    Ok(changed == 1)
}

/// Re-seals every app's client secret not under the active key (of one team, or all);
/// returns how many changed. A secret changed meanwhile is left to its writer.
pub async fn reseal_all(
    conn: &mut DbConn,
    keyring: &crate::crypto::Keyring,
    team_id: Option<&str>,
) -> AppResult<u64> {
    let active = keyring.active_key_id();
    let mut count = 0;
    for (id, stored) in sealed_secrets(conn, team_id).await? {
        let Some((key_id, sealed)) = stored.split_once(':') else {
            continue;
        };
        if key_id == active {
            continue;
        }
        let context = super::flow::secret_context(&id);
        let clear = keyring.open(key_id, sealed, &context)?;
        let (new_key, resealed) = keyring.seal(&clear, &context)?;
        if replace_secret(conn, &id, &stored, &format!("{new_key}:{resealed}")).await? {
            count += 1;
        }
    }
    Ok(count)
}
