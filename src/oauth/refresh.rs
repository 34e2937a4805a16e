//! The token life cycle: an access token that is valid when a call needs it, refreshed once
//! however many calls (and replicas) find it expiring at the same moment.
//!
//! Single flight, in two layers: on a replica, the calls for one integration queue on an
//! async lock of that integration; across replicas, the one that refreshes holds a lease
//! (`job_leases`, `oauth-refresh:<id>`) while the others poll the row until its token
//! generation moves. Whoever gets the lock reads the row first, so a call that queued behind
//! a refresh finds the new token there and makes no token request of its own.

use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use futures_util::StreamExt;
use serde_json::json;

use super::flow::{self, Grant, TokenFailure};
use super::store::{self, NewTokens};
use super::{GrantType, OAuthStatus};
use crate::context::AppState;
use crate::context::peers::Change;
use crate::db::now;
use crate::error::{AppError, AppResult};
use crate::events::{Event, EventKind};
use crate::integrations::model::IntegrationRow;

/// A token this close to its expiry is treated as expired by calls.
pub const EXPIRY_SKEW: Duration = Duration::from_secs(5);
/// How long a replica holds the refresh of one integration: longer than a token request
/// with its retries may take (three attempts of at most 10 s, and their backoff).
const LEASE: Duration = Duration::from_secs(60);
/// How long a call waits for a refresh made by another call or replica.
const WAIT: Duration = Duration::from_secs(45);

/// What a caller needs.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    /// A token valid for at least this long.
    ValidFor(Duration),
    /// A token newer than this generation (the caller's was refused with 401, or it asks for
    /// a refresh).
    NewerThan(i64),
}

/// An access token and the generation it belongs to.
#[derive(Debug, Clone)]
pub struct Token {
    pub access: String,
    pub generation: i64,
}

fn expiring(row: &IntegrationRow, within: Duration) -> bool {
    let horizon = now() + ChronoDuration::from_std(within).unwrap_or(ChronoDuration::zero());
    row.oauth_expires_at.is_some_and(|at| at <= horizon)
}

fn status_of(row: &IntegrationRow) -> OAuthStatus {
    OAuthStatus::parse(row.oauth_status.as_deref().unwrap_or_default())
}

/// The access token in the row, if it is connected.
fn token_in(state: &AppState, row: &IntegrationRow) -> AppResult<Option<Token>> {
    let credentials = crate::integrations::service::open_credentials(&state.keyring, row)?;
    Ok(credentials
        .as_ref()
        .and_then(|c| c["accessToken"].as_str())
        .map(|access| Token {
            access: access.to_string(),
            generation: row.oauth_generation,
        }))
}

fn not_usable(row: &IntegrationRow) -> Option<AppError> {
    match status_of(row) {
        OAuthStatus::NotConnected => Some(AppError::validation(format!(
            "integration `{}` is not connected yet: startOAuthConnection",
            row.name
        ))),
        OAuthStatus::Failed => Some(AppError::UpstreamError(format!(
            "the OAuth connection of `{}` failed ({}); connect it again",
            row.name,
            row.oauth_error.as_deref().unwrap_or("no reason recorded")
        ))),
        _ => None,
    }
}

/// Whether `row` already answers `want`.
fn ready(state: &AppState, row: &IntegrationRow, want: Want) -> AppResult<Option<Token>> {
    if let Some(err) = not_usable(row) {
        return Err(err);
    }
    let fits = match want {
        Want::ValidFor(within) => {
            status_of(row) == OAuthStatus::Connected && !expiring(row, within)
        }
        Want::NewerThan(generation) => {
            row.oauth_generation > generation
                && status_of(row) == OAuthStatus::Connected
                && !expiring(row, Duration::ZERO)
        }
    };
    if fits { token_in(state, row) } else { Ok(None) }
}

/// A token that answers `want` for integration `id`: the stored one if it does, else one
/// refreshed here (or by another call or replica, waited for).
pub async fn token(state: &AppState, id: &str, want: Want) -> AppResult<Token> {
    let lock = state.flights.lock_for(&format!("oauth:{id}"));
    let _held = tokio::time::timeout(WAIT, lock.lock()).await.map_err(|_| {
        AppError::Unavailable("the integration's OAuth token is being refreshed; try again".into())
    })?;
    let deadline = Instant::now() + WAIT;
    let lease = format!("oauth-refresh:{id}");
    loop {
        let row = store::integration(&mut state.pool.get().await?, id).await?;
        if let Some(token) = ready(state, &row, want)? {
            return Ok(token);
        }
        if state.claim_job(&lease, LEASE).await {
            let outcome = refresh(state, &row, want).await;
            state.release_job(&lease).await;
            return outcome;
        }
        if Instant::now() >= deadline {
            return Err(AppError::Unavailable(
                "another replica is refreshing the integration's OAuth token; try again".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Refreshes `row`'s token now (the caller holds the lock and the lease).
async fn refresh(state: &AppState, row: &IntegrationRow, want: Want) -> AppResult<Token> {
    let app_id = row
        .oauth_app_id
        .as_deref()
        .ok_or_else(|| AppError::validation("the integration does not connect through OAuth"))?;
    let app = store::get(&mut state.pool.get().await?, &row.team_id, app_id).await?;
    let secret = flow::open(
        state,
        &app.client_secret_sealed,
        &flow::secret_context(&app.id),
    )?;
    let credentials = crate::integrations::service::open_credentials(&state.keyring, row)?;
    let refresh_token = credentials
        .as_ref()
        .and_then(|c| c["refreshToken"].as_str())
        .map(str::to_string);
    let grant = match (GrantType::parse(&app.grant_type), &refresh_token) {
        (GrantType::ClientCredentials, _) => Grant::ClientCredentials,
        (GrantType::AuthorizationCode, Some(token)) => Grant::Refresh(token),
        (GrantType::AuthorizationCode, None) => {
            let message = "the token expired and the provider gave no refresh token; connect again";
            if expiring(row, Duration::ZERO) {
                fail(state, row, OAuthStatus::Failed, message).await;
            }
            return Err(AppError::UpstreamError(message.into()));
        }
    };
    match flow::request_tokens(state, &app, &secret, grant).await {
        Ok(granted) => {
            // A provider that does not rotate keeps the refresh token it had.
            let refresh = granted.refresh_token.clone().or(refresh_token);
            let token = save(state, row, &granted, refresh.as_deref(), true).await?;
            metrics::counter!("hub_oauth_refreshes_total", "outcome" => "refreshed").increment(1);
            Ok(token)
        }
        Err(failure) => {
            let message = failure.message();
            match &failure {
                TokenFailure::Refused { .. } => {
                    // A refresh token spent by another writer (one whose lease ran out while
                    // its token request was slow) is no reason to fail: theirs stands.
                    let current = store::integration(&mut state.pool.get().await?, &row.id).await?;
                    if current.oauth_generation != row.oauth_generation
                        && let Some(token) = ready(state, &current, want)?
                    {
                        return Ok(token);
                    }
                    metrics::counter!("hub_oauth_refreshes_total", "outcome" => "refused")
                        .increment(1);
                    fail(state, row, OAuthStatus::Failed, &message).await;
                }
                TokenFailure::Transient(_) => {
                    metrics::counter!("hub_oauth_refreshes_total", "outcome" => "transient")
                        .increment(1);
                    if expiring(row, Duration::ZERO) {
                        fail(state, row, OAuthStatus::Expired, &message).await;
                    } else {
                        // Not failed while the token still works: noted, tried again later.
                        note(state, &row.id, &message).await;
                        if let Want::ValidFor(_) = want
                            && let Some(token) = token_in(state, row)?
                        {
                            return Ok(token);
                        }
                    }
                }
            }
            Err(AppError::UpstreamError(format!(
                "the OAuth token could not be refreshed: {message}"
            )))
        }
    }
}

/// Stores what the token endpoint granted (over `row`'s generation) and tells every replica
/// to drop what it cached of the integration.
pub async fn save(
    state: &AppState,
    row: &IntegrationRow,
    granted: &flow::Granted,
    refresh_token: Option<&str>,
    refreshed: bool,
) -> AppResult<Token> {
    let doc = super::credentials_of(&granted.access_token, refresh_token);
    let (key_id, sealed) = state.keyring.seal(doc.to_string().as_bytes(), &row.id)?;
    let fields = if refresh_token.is_some() {
        r#"["accessToken","refreshToken","tokenType"]"#
    } else {
        r#"["accessToken","tokenType"]"#
    };
    let mut conn = state.pool.get().await?;
    let written = store::store_tokens(
        &mut conn,
        row,
        NewTokens {
            sealed: &sealed,
            key_id: &key_id,
            fields,
            expires_at: granted.expires_at(),
            scopes: granted.scopes_json(),
            refreshed,
        },
    )
    .await?;
    state.changed(Change::Integration(row.id.clone()));
    if !written {
        // Someone else stored tokens meanwhile (a lease that ran out): theirs stand.
        let current = store::integration(&mut conn, &row.id).await?;
        return token_in(state, &current)?
            .ok_or_else(|| AppError::UpstreamError("the integration was disconnected".into()));
    }
    Ok(Token {
        access: granted.access_token.clone(),
        generation: row.oauth_generation + 1,
    })
}

async fn note(state: &AppState, id: &str, message: &str) {
    if let Ok(mut conn) = state.pool.get().await
        && let Err(err) = store::record_problem(&mut conn, id, None, message, false).await
    {
        tracing::warn!(
            integration_id = id,
            code = err.code(),
            "OAuth note not recorded"
        );
    }
    state.changed(Change::Integration(id.to_string()));
}

/// Marks the connection failed (or expired) and the integration ERROR with `message`, and
/// publishes `integration.oauth_failed`.
pub async fn fail(state: &AppState, row: &IntegrationRow, status: OAuthStatus, message: &str) {
    let recorded = match state.pool.get().await {
        Ok(mut conn) => {
            store::record_problem(&mut conn, &row.id, Some(status), message, true).await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = recorded {
        tracing::warn!(integration_id = %row.id, code = err.code(), "OAuth failure not recorded");
    }
    tracing::warn!(integration_id = %row.id, reason = message, "OAuth connection failed");
    state.changed(Change::Integration(row.id.clone()));
    // Told once per failure, not at every retry of an expired token.
    if status_of(row) != status || row.status != "error" {
        publish(
            state,
            EventKind::IntegrationOAuthFailed,
            row,
            "error",
            Some(message),
        );
    }
}

/// Publishes an OAuth event of the integration (no token in it).
pub fn publish(
    state: &AppState,
    kind: EventKind,
    row: &IntegrationRow,
    status: &str,
    reason: Option<&str>,
) {
    state.events.publish(Event {
        kind,
        team_id: row.team_id.clone(),
        project_id: Some(row.project_id.clone()),
        subject_id: row.id.clone(),
        payload: json!({
            "name": row.name,
            "providerKey": row.provider_key,
            "enabled": row.enabled,
            "status": status,
            "reason": reason,
        }),
        request_log: None,
        at: now(),
    });
}

/// The background refresher: every `HUB_OAUTH_REFRESH_SCAN_SECS`, tokens that expire within
/// `HUB_OAUTH_REFRESH_BEFORE_SECS` are refreshed (a few at once; each once across replicas).
pub fn spawn(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let every = state.config.oauth_refresh_scan_secs;
    (every > 0).then(|| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(every)).await;
                refresh_due(&state).await;
            }
        })
    })
}

async fn refresh_due(state: &AppState) {
    let before_secs = state.config.oauth_refresh_before_secs;
    let before = now() + ChronoDuration::seconds(before_secs as i64);
    let due = match state.pool.get().await {
        Ok(mut conn) => store::due_for_refresh(&mut conn, before, 100).await,
        Err(err) => Err(err),
    };
    let due = match due {
        Ok(due) => due,
        Err(err) => {
            tracing::warn!(code = err.code(), "OAuth refresher could not list tokens");
            return;
        }
    };
    let within = Duration::from_secs(before_secs);
    futures_util::stream::iter(due)
        .for_each_concurrent(4, |id| async move {
            if let Err(err) = token(state, &id, Want::ValidFor(within)).await {
                tracing::warn!(integration_id = %id, code = err.code(), "OAuth token not refreshed");
            }
        })
        .await;
}
