//! `GET /oauth/callback?code&state`: where a provider sends the user back after consent. The
//! `state` is taken (single use, 10 minutes), the code exchanged with the PKCE verifier kept
//! for it, the tokens stored sealed, the integration set CONNECTED, and the browser sent to
//! the `redirectAfter` given at the start (an origin of `HUB_OAUTH_REDIRECT_ORIGINS`) or
//! shown a short page. Every failure ends in a page saying what happened and, once the
//! attempt is known, in the integration's `lastError`; no token is stored.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::flow::{self, Grant};
use super::refresh;
use super::store;
use crate::context::AppState;
use crate::db::rows::AuditEventRow;
use crate::db::{new_id, now};
use crate::events::EventKind;
use crate::integrations::model::IntegrationRow;

/// Query parameters longer than this are refused before any work.
const MAX_PARAM: usize = 4096;

pub async fn callback(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if req.query_string().len() > 4 * MAX_PARAM {
        return page(StatusCode::BAD_REQUEST, "The request is too long.");
    }
    let mut code = None;
    let mut state_value = None;
    let mut error = None;
    let mut description = None;
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()).take(20) {
        if value.len() > MAX_PARAM {
            return page(StatusCode::BAD_REQUEST, "A parameter is too long.");
        }
        match name.as_ref() {
            "code" => code = Some(value.into_owned()),
            "state" => state_value = Some(value.into_owned()),
            "error" => error = Some(value.into_owned()),
            "error_description" => description = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(state_value) = state_value.filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "The provider sent no state: this is not the answer to a connection started here.",
        );
    };
    let taken = match state.pool.get().await {
        Ok(mut conn) => store::take_state(&mut conn, &flow::sha256_b64(&state_value)).await,
        Err(err) => Err(err),
    };
    let attempt = match taken {
        Ok(Some(attempt)) => attempt,
        Ok(None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "This connection link is unknown or was already used. Start the connection again.",
            );
        }
        Err(err) => {
            tracing::warn!(code = err.code(), "OAuth callback could not read its state");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The hub could not check this connection right now. Try again.",
            );
        }
    };
    let integration = match state.pool.get().await {
        Ok(mut conn) => store::integration(&mut conn, &attempt.integration_id).await,
        Err(err) => Err(err),
    };
    let Ok(integration) = integration else {
        return page(StatusCode::NOT_FOUND, "The integration no longer exists.");
    };
    if attempt.expires_at < now() {
        return refuse(
            &state,
            &integration,
            "the connection attempt expired (10 minutes); start it again",
        )
        .await;
    }
    if let Some(error) = error {
        let said = match description {
            Some(d) => format!("{} ({})", clip(&error), clip(&d)),
            None => clip(&error),
        };
        return refuse(
            &state,
            &integration,
            &format!("the provider refused the authorization: {said}"),
        )
        .await;
    }
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        return refuse(
            &state,
            &integration,
            "the provider sent no authorization code",
        )
        .await;
    };
    match exchange(&state, &integration, &attempt, &code).await {
        Ok(()) => {}
        Err(message) => return refuse(&state, &integration, &message).await,
    }
    audit(&state, &integration, "success").await;
    match attempt
        .redirect_after
        .filter(|url| super::graphql::redirect_allowed(&state.config, url))
    {
        Some(url) => HttpResponse::SeeOther()
            .insert_header(("location", url))
            .insert_header(("cache-control", "no-store"))
            .insert_header(("referrer-policy", "no-referrer"))
            .finish(),
        None => page(
            StatusCode::OK,
            &format!(
                "Connected: {} is connected. You can close this window.",
                integration.name
            ),
        ),
    }
}

/// Exchanges the code and stores the tokens; an error is a message for the page and
/// `lastError` (never a token).
async fn exchange(
    state: &AppState,
    integration: &IntegrationRow,
    attempt: &store::StateRow,
    code: &str,
) -> Result<(), String> {
    let internal = |err: crate::error::AppError| {
        tracing::warn!(code = err.code(), "OAuth callback failed");
        "the hub could not complete the connection; try again".to_string()
    };
    let app_id = integration
        .oauth_app_id
        .as_deref()
        .ok_or("the integration no longer connects through an OAuth app")?;
    let app = store::get(
        &mut state.pool.get().await.map_err(internal)?,
        &integration.team_id,
        app_id,
    )
    .await
    .map_err(|_| "the integration's OAuth app no longer exists".to_string())?;
    let secret = flow::open(
        state,
        &app.client_secret_sealed,
        &flow::secret_context(&app.id),
    )
    .map_err(internal)?;
    let verifier = flow::open(
        state,
        &attempt.verifier_sealed,
        &flow::verifier_context(&integration.id),
    )
    .map_err(internal)?;
    let redirect_uri = super::redirect_uri(state);
    let pkce = crate::providers::oauth::spec(&app.provider_key).is_none_or(|s| s.pkce);
    let granted = flow::request_tokens(
        state,
        &app,
        &secret,
        Grant::Code {
            code,
            redirect_uri: &redirect_uri,
            verifier: pkce.then_some(verifier.as_str()),
        },
    )
    .await
    .map_err(|failure| failure.message())?;
    refresh::save(
        state,
        integration,
        &granted,
        granted.refresh_token.as_deref(),
        false,
    )
    .await
    .map_err(internal)?;
    refresh::publish(
        state,
        EventKind::IntegrationConnected,
        integration,
        "connected",
        None,
    );
    Ok(())
}

/// Records why the connection failed and answers with a page saying it.
async fn refuse(state: &AppState, integration: &IntegrationRow, message: &str) -> HttpResponse {
    if let Ok(mut conn) = state.pool.get().await {
        let recorded = record_failure(&mut conn, integration, message).await;
        if let Err(err) = recorded {
            tracing::warn!(code = err.code(), "OAuth callback failure not recorded");
        }
    }
    state.changed(crate::context::peers::Change::Integration(
        integration.id.clone(),
    ));
    audit(state, integration, "failure").await;
    page(
        StatusCode::BAD_REQUEST,
        &format!("The connection of {} failed: {message}.", integration.name),
    )
}

/// The integration's `lastError` (and the connection's) say why; its status is left alone
/// (a failed attempt does not break a connection that works).
async fn record_failure(
    conn: &mut crate::db::DbConn,
    integration: &IntegrationRow,
    message: &str,
) -> crate::error::AppResult<()> {
    store::record_problem(conn, &integration.id, None, message, false).await?;
    crate::integrations::store::set_last_error(conn, &integration.id, message).await
}

/// An audit event for the callback (its actor is the provider's redirect).
async fn audit(state: &AppState, integration: &IntegrationRow, outcome: &str) {
    let row = AuditEventRow {
        id: new_id(),
        team_id: integration.team_id.clone(),
        actor: "system:oauth-callback".into(),
        action: "oauthCallback".into(),
        target_type: Some("integration".into()),
        target_id: Some(integration.id.clone()),
        outcome: outcome.into(),
        error_code: (outcome != "success").then(|| "UPSTREAM_ERROR".into()),
        created_at: now(),
        request_id: None,
    };
    if let Err(err) = state.journal.audit(row).await {
        tracing::warn!(code = err.code(), "OAuth callback audit event not recorded");
    }
}

fn clip(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A short page: no script, nothing loaded, not cached, no referrer.
fn page(status: StatusCode, message: &str) -> HttpResponse {
    let title = if status.is_success() {
        "Connected"
    } else {
        "Connection failed"
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", "default-src 'none'"))
        .insert_header(("cache-control", "no-store"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{}</p></body></html>",
            escape(message)
        ))
}
