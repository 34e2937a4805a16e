//! Calling a provider through an integration: the request built under its base URL, signed
//! per its auth scheme, sent through the one outbound client, logged (redacted) and measured.
//! The same path serves `executeRequest`, `batchExecute`, `testConnection` and the health
//! monitor.

use std::time::Instant;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::target::{apply_auth, apply_template_auth, base_url, bearer, join, secret_values};
use crate::context::AppState;
use crate::error::{AppError, AppResult, FieldProblem};
use crate::http::{OutboundError, OutboundRequest, OutboundResponse};
use crate::integrations::model::IntegrationRow;
use crate::logs::{self, CallRecord};
use crate::oauth::refresh::{self, EXPIRY_SKEW, Token, Want};
use crate::providers::{self, AuthScheme, Provider};

/// A call as a client describes it.
#[derive(Debug, Clone)]
pub struct CallInput {
    pub method: Method,
    pub path: String,
    pub query: Option<Map<String, Value>>,
    pub headers: Option<Map<String, Value>>,
    pub body: Option<CallBody>,
}

#[derive(Debug, Clone)]
pub enum CallBody {
    Json(Value),
    Text(String),
}

/// What came back, ready for a client.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub json: Option<Value>,
    pub text: Option<String>,
    pub duration_ms: i64,
    pub attempts: u32,
    pub correlation_id: String,
}

/// Request headers a client may not set: the hub owns authentication and framing.
const FORBIDDEN_HEADERS: [&str; 12] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "private-token",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-host",
];

/// Response headers never passed back.
const HIDDEN_RESPONSE_HEADERS: [&str; 8] = [
    "set-cookie",
    "set-cookie2",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "alt-svc",
];

pub fn parse_method(text: &str) -> AppResult<Method> {
    match text.to_ascii_uppercase().as_str() {
        "GET" => Ok(Method::GET),
        "POST" => Ok(Method::POST),
        "PUT" => Ok(Method::PUT),
        "PATCH" => Ok(Method::PATCH),
        "DELETE" => Ok(Method::DELETE),
        "HEAD" => Ok(Method::HEAD),
        "OPTIONS" => Ok(Method::OPTIONS),
        other => Err(AppError::validation(format!(
            "unsupported method `{other}`"
        ))),
    }
}

/// At most this many headers a call may set, each value at most this long.
pub const MAX_CALL_HEADERS: usize = 50;
pub const MAX_HEADER_VALUE_BYTES: usize = 8192;

fn client_headers(headers: Option<&Map<String, Value>>) -> AppResult<HeaderMap> {
    let mut out = HeaderMap::new();
    if headers.is_some_and(|h| h.len() > MAX_CALL_HEADERS) {
        return Err(AppError::Validation {
            message: format!("at most {MAX_CALL_HEADERS} headers"),
            problems: vec![FieldProblem {
                path: "headers".into(),
                message: format!("at most {MAX_CALL_HEADERS}"),
            }],
        });
    }
    for (name, value) in headers.into_iter().flatten() {
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(AppError::validation(format!(
                "the header `{name}` is set by the hub"
            )));
        }
        let value = value
            .as_str()
            .ok_or_else(|| AppError::validation(format!("the header `{name}` must be a string")))?;
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(AppError::validation(format!(
                "the header `{name}` is longer than {MAX_HEADER_VALUE_BYTES} bytes"
            )));
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| AppError::validation(format!("`{name}` is not a header name")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            AppError::validation(format!("the header `{name}` has an invalid value"))
        })?;
        out.append(name, value);
    }
    Ok(out)
}

/// The integration's `defaultHeaders` (generic REST), where the caller did not set the same
/// header. They pass the same rules as a caller's headers, and the credentials are applied
/// after them, so they can never replace what the hub injects.
fn add_default_headers(config: &Value, headers: &mut HeaderMap) -> AppResult<()> {
    let defaults = client_headers(config["defaultHeaders"].as_object())?;
    for (name, value) in &defaults {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    Ok(())
}

/// Everything needed to call one integration: its row, provider, parsed configuration and
/// opened credentials. Kept by the replica's call-target cache between calls.
pub struct Prepared {
    pub integration: IntegrationRow,
    provider: &'static Provider,
    config: Value,
    credentials: Value,
    secrets: Vec<String>,
    /// The base URL, parsed once (none when it is missing or invalid: calls then say why).
    base: Option<url::Url>,
    /// The template version of a `template:<key>` integration.
    pub template: Option<std::sync::Arc<crate::templates::Runtime>>,
}

impl Prepared {
    fn base_url(&self) -> AppResult<url::Url> {
        match (&self.base, &self.template) {
            (Some(base), _) => Ok(base.clone()),
            (None, Some(template)) => template.base_url(&self.config),
            (None, None) => base_url(self.provider, &self.config),
        }
    }

    /// Signs a request: the template's auth scheme, or the provider's.
    fn sign(
        &self,
        url: &mut url::Url,
        headers: &mut HeaderMap,
        session: Option<&str>,
    ) -> AppResult<()> {
        match &self.template {
            Some(template) => {
                apply_template_auth(&template.doc.auth, &self.credentials, url, headers)
            }
            None => apply_auth(
                self.provider,
                &self.config,
                &self.credentials,
                url,
                headers,
                session,
            ),
        }
    }
}

/// Opens an integration for calling (disabled ones too: [`ensure_enabled`] refuses them at
/// call time, so a cached target follows enabling and disabling).
pub async fn prepare(state: &AppState, integration: IntegrationRow) -> AppResult<Prepared> {
    let template = match &integration.template_id {
        Some(template_id) => Some(
            template_runtime(
                state,
                template_id,
                integration.template_version.unwrap_or(1),
            )
            .await?,
        ),
        None => None,
    };
    // A template integration is sent like a generic REST one (and counted as one).
    let provider = match &template {
        Some(_) => providers::require("generic_rest")?,
        None => providers::require(&integration.provider_key)?,
    };
    let config: Value = serde_json::from_str(&integration.config)?;
    let credentials = crate::integrations::service::open_credentials(&state.keyring, &integration)?
        .unwrap_or(json!({}));
    let secrets = secret_values(Some(&credentials));
    let base = match &template {
        Some(template) => template.base_url(&config).ok(),
        None => base_url(provider, &config).ok(),
    };
    Ok(Prepared {
        integration,
        provider,
        config,
        credentials,
        secrets,
        base,
        template,
    })
}

/// A template version opened for calls (its document parsed, its parameter schemas
/// compiled). Versions never change, so the replica keeps them for the call-target cache
/// period: a sync's writes do not compile them again for every record.
async fn template_runtime(
    state: &AppState,
    template_id: &str,
    version: i32,
) -> AppResult<std::sync::Arc<crate::templates::Runtime>> {
    let key = format!("template-version:{template_id}:{version}");
    let targets = &state.call_targets;
    if let Some(runtime) = targets.get::<crate::templates::Runtime>(&key) {
        return Ok(runtime);
    }
    let generation = targets.generation();
    let stored =
        crate::templates::store::version(&mut state.pool.get().await?, template_id, version)
            .await?;
    let doc = crate::templates::TemplateDoc::parse(&stored.document)?;
    let runtime = std::sync::Arc::new(crate::templates::Runtime::new(template_id, version, doc)?);
    // Kept under the template's id: dropped with it, never with a project.
    targets.insert_keyed(generation, &key, template_id, "", runtime.clone());
    Ok(runtime)
}

/// The OAuth access token to send, for an integration that connects through an app: the
/// one opened with it while it is valid, else a valid one from the token life cycle
/// (refreshed once however many calls ask at the same time).
async fn oauth_token(state: &AppState, prepared: &Prepared) -> AppResult<Option<Token>> {
    let row = &prepared.integration;
    if row.oauth_app_id.is_none() {
        return Ok(None);
    }
    let skew = chrono::Duration::from_std(EXPIRY_SKEW).unwrap_or_default();
    let valid = row.oauth_status.as_deref() == Some("connected")
        && row
            .oauth_expires_at
            .is_none_or(|at| at > crate::db::now() + skew);
    if valid && let Some(access) = prepared.credentials["accessToken"].as_str() {
        return Ok(Some(Token {
            access: access.to_string(),
            generation: row.oauth_generation,
        }));
    }
    Ok(Some(
        // Boxed, like the other waits only some calls make (a session, a refusal): every
        // call's future would otherwise carry their state.
        Box::pin(refresh::token(state, &row.id, Want::ValidFor(EXPIRY_SKEW))).await?,
    ))
}

/// After a 401 with `used`: a newer token (one refresh for every call refused with it).
async fn token_after_refusal(
    state: &AppState,
    prepared: &Prepared,
    used: &Token,
) -> AppResult<Token> {
    refresh::token(
        state,
        &prepared.integration.id,
        Want::NewerThan(used.generation),
    )
    .await
}

/// The secrets to redact from an answer: the integration's, and the token sent if new.
fn secrets_with<'a>(
    prepared: &'a Prepared,
    token: Option<&Token>,
) -> std::borrow::Cow<'a, [String]> {
    match token {
        Some(token) if !prepared.secrets.contains(&token.access) => {
            let mut secrets = prepared.secrets.clone();
            secrets.push(token.access.clone());
            std::borrow::Cow::Owned(secrets)
        }
        _ => std::borrow::Cow::Borrowed(&prepared.secrets),
    }
}

/// Disabled integrations refuse calls.
pub fn ensure_enabled(integration: &IntegrationRow) -> AppResult<()> {
    if integration.enabled {
        Ok(())
    } else {
        Err(AppError::IntegrationDisabled(format!(
            "integration `{}` is disabled",
            integration.name
        )))
    }
}

/// Sends one request for the integration and writes its log; the outbound error, if any, is
/// returned after it is logged.
async fn send_logged(
    state: &AppState,
    prepared: &Prepared,
    actor: &str,
    request: OutboundRequest,
) -> AppResult<(String, i64, Result<OutboundResponse, OutboundError>)> {
    // Refused before it is made when its log could not be kept.
    state.journal.check_room()?;
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let mut request = request;
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        request
            .headers
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    let started = Instant::now();
    state
        .calls_in_flight
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut in_flight = InFlight {
        state,
        integration: &prepared.integration,
        started,
        call: Some(CallRecord {
            method: request.method.to_string(),
            path: logs::redact_url(&request.url, &prepared.secrets),
            status: None,
            duration_ms: 0,
            bytes_in: 0,
            bytes_out: request.body.as_ref().map_or(0, Vec::len) as i64,
            error: None,
            actor: actor.to_string(),
            correlation_id: correlation_id.clone(),
        }),
    };
    let outcome = state
        .outbound
        .send(&prepared.integration.id, prepared.provider.key, request)
        .await;
    let duration_ms = started.elapsed().as_millis() as i64;
    let call = in_flight.call.take().expect("taken once");
    let (status, bytes_in, error) = match &outcome {
        Ok(response) => (
            Some(response.status.as_u16()),
            response.body.len() as i64,
            None,
        ),
        Err(err) => (
            None,
            0,
            Some(logs::redact(&err.message(), &prepared.secrets)),
        ),
    };
    logs::record(
        state,
        &prepared.integration,
        CallRecord {
            status,
            duration_ms,
            bytes_in,
            error,
            ..call
        },
    )
    .await?;
    Ok((correlation_id, duration_ms, outcome))
}

/// Takes a call off the in-flight count when dropped (after its log is queued).
struct CountedOut<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for CountedOut<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A call on its way upstream. Dropped before its outcome is logged — the server stopped at
/// the end of its grace period, or the caller went away — it logs the call as cut: the
/// upstream may have received it, so it must not go unrecorded.
struct InFlight<'a> {
    state: &'a AppState,
    integration: &'a IntegrationRow,
    started: Instant,
    call: Option<CallRecord>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let _counted = CountedOut(&self.state.calls_in_flight);
        if let Some(call) = self.call.take() {
            logs::record_cut(
                self.state,
                self.integration,
                CallRecord {
                    duration_ms: self.started.elapsed().as_millis() as i64,
                    error: Some(
                        "the call was cut before it finished (the server stopped or the caller \
                         went away); the upstream may have received it"
                            .into(),
                    ),
                    ..call
                },
            );
        }
    }
}

/// ALM: signs in and returns the session cookies for the calls that follow.
async fn alm_session(state: &AppState, prepared: &Prepared, actor: &str) -> AppResult<String> {
    let base = prepared.base_url()?;
    let url = join(&base, "/qcbin/authentication-point/alm-authenticate", None)?;
    let body = format!(
        "<alm-authentication><user>{}</user><password>{}</password></alm-authentication>",
        xml_escape(
            prepared.credentials["username"]
                .as_str()
                .unwrap_or_default()
        ),
        xml_escape(
            prepared.credentials["password"]
                .as_str()
                .unwrap_or_default()
        )
    );
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    let request = OutboundRequest {
        method: Method::POST,
        url,
        headers,
        body: Some(body.into_bytes()),
    };
    let (_, _, outcome) = send_logged(state, prepared, actor, request).await?;
    let response = outcome?;
    if !response.status.is_success() {
        return Err(AppError::UpstreamError(format!(
            "ALM sign-in failed with status {}",
            response.status.as_u16()
        )));
    }
    let cookies: Vec<String> = response
        .headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect();
    if cookies.is_empty() {
        return Err(AppError::UpstreamError(
            "ALM sign-in returned no session".into(),
        ));
    }
    Ok(cookies.join("; "))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn result_of(
    response: OutboundResponse,
    duration_ms: i64,
    correlation_id: String,
    secrets: &[String],
) -> CallResult {
    let headers = response
        .headers
        .iter()
        .filter(|(name, _)| !HIDDEN_RESPONSE_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((
                name.to_string(),
                logs::redact(value.to_str().ok()?, secrets),
            ))
        })
        .collect();
    let is_json = response
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let json = if is_json {
        serde_json::from_slice(&response.body).ok()
    } else {
        None
    };
    let text = json
        .is_none()
        .then(|| String::from_utf8_lossy(&response.body).into_owned());
    CallResult {
        status: response.status.as_u16(),
        headers,
        json,
        text,
        duration_ms,
        attempts: response.attempts,
        correlation_id,
    }
}

/// `executeRequest`: one call through the integration.
pub async fn execute(
    state: &AppState,
    integration: &IntegrationRow,
    actor: &str,
    input: CallInput,
) -> AppResult<CallResult> {
    ensure_enabled(integration)?;
    let prepared = prepare(state, integration.clone()).await?;
    execute_prepared(state, &prepared, actor, input).await
}

/// One call through an integration already opened for calling.
pub async fn execute_prepared(
    state: &AppState,
    prepared: &Prepared,
    actor: &str,
    input: CallInput,
) -> AppResult<CallResult> {
    ensure_enabled(&prepared.integration)?;
    let base = prepared.base_url()?;
    let mut url = join(&base, &input.path, input.query.as_ref())?;
    let mut headers = client_headers(input.headers.as_ref())?;
    add_default_headers(&prepared.config, &mut headers)?;
    let body = match input.body {
        Some(CallBody::Json(value)) => {
            headers
                .entry(CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            Some(value.to_string().into_bytes())
        }
        Some(CallBody::Text(text)) => {
            headers
                .entry(CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
            Some(text.into_bytes())
        }
        None => None,
    };
    let token = oauth_token(state, prepared).await?;
    if let Some(token) = &token {
        headers.insert(AUTHORIZATION, bearer(&token.access)?);
    } else {
        let session = match prepared.provider.auth_scheme {
            AuthScheme::Session if prepared.template.is_none() => {
                Some(Box::pin(alm_session(state, prepared, actor)).await?)
            }
            _ => None,
        };
        prepared.sign(&mut url, &mut headers, session.as_deref())?;
    }
    let request = OutboundRequest {
        method: input.method,
        url,
        headers,
        body,
    };
    // An OAuth call refused with 401 is sent once more with a refreshed token.
    let again = token.as_ref().map(|_| request.clone());
    let (correlation_id, duration_ms, outcome) =
        send_logged(state, prepared, actor, request).await?;
    if let (Some(used), Some(mut again), Ok(response)) = (&token, again, &outcome)
        && response.status.as_u16() == 401
    {
        let fresh = Box::pin(token_after_refusal(state, prepared, used)).await?;
        again.headers.insert(AUTHORIZATION, bearer(&fresh.access)?);
        let (correlation_id, duration_ms, outcome) =
            send_logged(state, prepared, actor, again).await?;
        return Ok(result_of(
            outcome?,
            duration_ms,
            correlation_id,
            &secrets_with(prepared, Some(&fresh)),
        ));
    }
    Ok(result_of(
        outcome?,
        duration_ms,
        correlation_id,
        &secrets_with(prepared, token.as_ref()),
    ))
}

/// The call a template integration's endpoint renders with `params` (checked against its
/// `paramsSchema`).
pub async fn endpoint_call(
    state: &AppState,
    integration: &IntegrationRow,
    endpoint: &str,
    params: &Value,
) -> AppResult<CallInput> {
    let prepared = prepare(state, integration.clone()).await?;
    render_endpoint(&prepared, endpoint, params)
}

/// The call a template endpoint renders for an integration already opened for calling.
pub fn render_endpoint(
    prepared: &Prepared,
    endpoint: &str,
    params: &Value,
) -> AppResult<CallInput> {
    let template = prepared.template.as_ref().ok_or_else(|| {
        AppError::validation(format!(
            "integration `{}` is not of a template: it has no endpoint `{endpoint}`",
            prepared.integration.name
        ))
    })?;
    let call = template.render_call(endpoint, params, &prepared.config)?;
    Ok(CallInput {
        method: parse_method(&call.method)?,
        path: call.path,
        query: (!call.query.is_empty()).then_some(call.query),
        headers: (!call.headers.is_empty()).then_some(call.headers),
        body: call.body.map(CallBody::Json),
    })
}

/// Calls a template integration's endpoint with `params` (`invokeEndpoint`, sync writes).
pub async fn execute_endpoint(
    state: &AppState,
    integration: &IntegrationRow,
    actor: &str,
    endpoint: &str,
    params: &Value,
) -> AppResult<CallResult> {
    ensure_enabled(integration)?;
    let prepared = prepare(state, integration.clone()).await?;
    let input = render_endpoint(&prepared, endpoint, params)?;
    execute_prepared(state, &prepared, actor, input).await
}

/// `executeGraphql`: an operation against a `graphql` integration's endpoint.
pub async fn execute_graphql(
    state: &AppState,
    prepared: &Prepared,
    actor: &str,
    query: String,
    variables: Option<Value>,
    operation_name: Option<String>,
) -> AppResult<CallResult> {
    if prepared.integration.provider_key != "graphql" {
        return Err(AppError::validation(
            "executeGraphql needs an integration of the `graphql` provider",
        ));
    }
    let mut body = json!({ "query": query });
    if let Some(variables) = variables {
        body["variables"] = variables;
    }
    if let Some(name) = operation_name {
        body["operationName"] = json!(name);
    }
    let mut headers = Map::new();
    headers.insert(
        "accept".into(),
        json!("application/graphql-response+json, application/json"),
    );
    execute_prepared(
        state,
        prepared,
        actor,
        CallInput {
            method: Method::POST,
            path: "/".into(),
            query: None,
            headers: Some(headers),
            body: Some(CallBody::Json(body)),
        },
    )
    .await
}

/// The outcome of a provider's health request.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub ok: bool,
    pub status: Option<u16>,
    pub duration_ms: i64,
    pub error: Option<String>,
    /// The credentials were refused (401/403, Slack `invalid_auth`...).
    pub auth_failed: bool,
}

/// The provider's own health request (Jira `/myself`, Slack `auth.test`, TestLink
/// `tl.checkDevKey`, ALM sign-in...), judged the provider's way.
pub async fn check(
    state: &AppState,
    integration: &IntegrationRow,
    actor: &str,
) -> AppResult<CheckOutcome> {
    ensure_enabled(integration)?;
    let prepared = prepare(state, integration.clone()).await?;
    let started = Instant::now();
    let token = match oauth_token(state, &prepared).await {
        Ok(token) => token,
        // Not connected, or the grant failed: the check says so.
        Err(err) => {
            return Ok(CheckOutcome {
                ok: false,
                status: None,
                duration_ms: started.elapsed().as_millis() as i64,
                error: Some(err.message()),
                auth_failed: true,
            });
        }
    };
    if token.is_none()
        && prepared.template.is_none()
        && prepared.provider.auth_scheme == AuthScheme::Session
    {
        let outcome = Box::pin(alm_session(state, &prepared, actor)).await;
        return Ok(CheckOutcome {
            ok: outcome.is_ok(),
            status: None,
            duration_ms: started.elapsed().as_millis() as i64,
            auth_failed: matches!(&outcome, Err(AppError::UpstreamError(m)) if m.contains("401") || m.contains("403")),
            error: outcome.err().map(|e| e.message()),
        });
    }
    let base = prepared.base_url()?;
    let (method, path, body, content_type, expect) = match &prepared.template {
        Some(template) => {
            let (method, path, expect) = template.health(&prepared.config)?;
            (parse_method(&method)?, path, None, None, Some(expect))
        }
        None => {
            let (method, path, body, content_type) =
                health_request(prepared.provider, &prepared.config, &prepared.credentials);
            (method, path, body, content_type, None)
        }
    };
    let mut url = join(&base, &path, None)?;
    let mut headers = HeaderMap::new();
    add_default_headers(&prepared.config, &mut headers)?;
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    match &token {
        Some(token) => {
            headers.insert(AUTHORIZATION, bearer(&token.access)?);
        }
        None => prepared.sign(&mut url, &mut headers, None)?,
    }
    let request = OutboundRequest {
        method,
        url,
        headers,
        body,
    };
    let again = token.as_ref().map(|_| request.clone());
    let (_, mut duration_ms, mut outcome) = send_logged(state, &prepared, actor, request).await?;
    if let (Some(used), Some(mut again), Ok(response)) = (&token, again, &outcome)
        && response.status.as_u16() == 401
        && let Ok(fresh) = Box::pin(token_after_refusal(state, &prepared, used)).await
    {
        again.headers.insert(AUTHORIZATION, bearer(&fresh.access)?);
        (_, duration_ms, outcome) = send_logged(state, &prepared, actor, again).await?;
    }
    let response = match outcome {
        Ok(response) => response,
        Err(err) => {
            return Ok(CheckOutcome {
                ok: false,
                status: None,
                duration_ms,
                error: Some(logs::redact(&err.message(), &prepared.secrets)),
                auth_failed: false,
            });
        }
    };
    let status = response.status.as_u16();
    let (ok, error, auth_failed) = match expect {
        Some(expect) if status != 401 && status != 403 => (
            status == expect,
            (status != expect)
                .then(|| format!("health request answered {status}, expected {expect}")),
            false,
        ),
        _ => judge(prepared.provider, status, &response.body),
    };
    Ok(CheckOutcome {
        ok,
        status: Some(status),
        duration_ms,
        error: error.map(|e| logs::redact(&e, &prepared.secrets)),
        auth_failed,
    })
}

/// Method, path, body and content type of a provider's health request.
fn health_request(
    provider: &Provider,
    config: &Value,
    credentials: &Value,
) -> (Method, String, Option<Vec<u8>>, Option<&'static str>) {
    match provider.key {
        "testlink" => {
            let body = format!(
                "<?xml version=\"1.0\"?><methodCall><methodName>tl.checkDevKey</methodName><params><param><value><struct><member><name>devKey</name><value><string>{}</string></value></member></struct></value></param></params></methodCall>",
                xml_escape(credentials["devKey"].as_str().unwrap_or_default())
            );
            (
                Method::POST,
                provider.health_check.path.clone(),
                Some(body.into_bytes()),
                Some("text/xml"),
            )
        }
        "graphql" => {
            let query = config["healthQuery"].as_str().unwrap_or("{ __typename }");
            (
                Method::POST,
                "/".into(),
                Some(json!({ "query": query }).to_string().into_bytes()),
                Some("application/json"),
            )
        }
        "generic_rest" => {
            let method = config["healthCheckMethod"]
                .as_str()
                .and_then(|m| parse_method(m).ok())
                .unwrap_or(Method::GET);
            (
                method,
                config["healthCheckPath"]
                    .as_str()
                    .unwrap_or("/")
                    .to_string(),
                None,
                None,
            )
        }
        "azure_devops" => {
            let organization = config["organization"].as_str().unwrap_or_default();
            let path = provider
                .health_check
                .path
                .replace("{organization}", organization);
            (Method::GET, path, None, None)
        }
        _ => {
            let method = parse_method(&provider.health_check.method).unwrap_or(Method::GET);
            (method, provider.health_check.path.clone(), None, None)
        }
    }
}

/// Healthy or not, the provider's way: a 2xx, and for some a body that says so.
fn judge(provider: &Provider, status: u16, body: &[u8]) -> (bool, Option<String>, bool) {
    if status == 401 || status == 403 {
        return (
            false,
            Some(format!("credentials refused (status {status})")),
            true,
        );
    }
    if !(200..300).contains(&status) {
        return (
            false,
            Some(format!("health request answered with status {status}")),
            false,
        );
    }
    match provider.key {
        "slack" => {
            let body: Value = serde_json::from_slice(body).unwrap_or_default();
            if body["ok"] == true {
                (true, None, false)
            } else {
                let error = body["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string();
                let auth = matches!(
                    error.as_str(),
                    "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive"
                );
                (
                    false,
                    Some(format!("Slack answered ok=false: {error}")),
                    auth,
                )
            }
        }
        "testlink" => {
            let text = String::from_utf8_lossy(body);
            if text.contains("<fault>") || !text.contains("<boolean>1</boolean>") {
                (
                    false,
                    Some("TestLink refused the developer key".into()),
                    true,
                )
            } else {
                (true, None, false)
            }
        }
        "graphql" => {
            let body: Value = serde_json::from_slice(body).unwrap_or_default();
            match body.get("errors") {
                Some(errors) if !errors.is_null() => (
                    false,
                    Some("the GraphQL endpoint answered with errors".into()),
                    false,
                ),
                _ => (true, None, false),
            }
        }
        _ => (true, None, false),
    }
}
