//! GraphQL over HTTP (the GraphQL Foundation spec): POST with `application/json`, GET for
//! queries only, content negotiation between `application/graphql-response+json` and
//! `application/json`, and the status codes each calls for. Credentials are checked here,
//! before any execution.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse, Request};
use std::sync::Arc;

use futures_util::StreamExt;

use super::answers::Lookup;
use super::authenticate::authenticate_from;
use super::{FastSchema, HubSchema};
use crate::audit::AuditTargets;
use crate::auth::Principal;
use crate::context::AppState;
use crate::context::unit::WriteUnit;
use crate::error::{AppError, UNAVAILABLE_RETRY_AFTER_SECS};
use crate::ratelimit::{Decision, Subject};
use crate::trace::RequestId;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// Which media type the client accepts for the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    GraphqlResponseJson,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            Format::Json => "application/json; charset=utf-8",
        }
    }
}

/// Picks the response format from `Accept`; None when nothing we serve is acceptable.
fn negotiate(headers: &HeaderMap) -> Option<Format> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Format::Json);
    };
    let mut json_ok = false;
    for part in accept.split(',') {
        let media = part
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            GRAPHQL_RESPONSE_JSON => return Some(Format::GraphqlResponseJson),
            JSON | "application/*" | "*/*" => json_ok = true,
            _ => {}
        }
    }
    json_ok.then_some(Format::Json)
}

fn error_response(err: AppError, format: Format) -> HttpResponse {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    if let Some(secs) = err.retry_after_secs() {
        response.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    response
        .content_type(format.content_type())
        .body(err.into_response_body().to_string())
}

fn bad_request(message: String, format: Format) -> HttpResponse {
    error_response(AppError::validation(message), format)
}

/// The credential a request presents: `Authorization: Bearer ...` or `X-API-Key`.
fn presented_credential(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AppError::Unauthenticated("malformed Authorization header".into()))?;
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AppError::Unauthenticated(
                "use `Authorization: Bearer <API key>`".into(),
            ));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AppError::Unauthenticated("empty bearer token".into()));
        }
        return Ok(Some(token.to_string()));
    }
    if let Some(value) = headers.get("x-api-key") {
        let token = value
            .to_str()
            .map_err(|_| AppError::Unauthenticated("malformed X-API-Key header".into()))?
            .trim();
        if token.is_empty() {
            return Err(AppError::Unauthenticated("empty X-API-Key header".into()));
        }
        return Ok(Some(token.to_string()));
    }
    Ok(None)
}

/// Who the request is, and whether its quota admits it; a refused request is answered here.
/// Missing and failed credentials count against the client address.
async fn admit(
    state: &AppState,
    req: &HttpRequest,
    format: Format,
) -> Result<(Option<Arc<Principal>>, Decision), HttpResponse> {
    let client_ip = req.peer_addr().map_or([127, 0, 0, 1].into(), |a| a.ip());
    let refuse = |err: AppError, decision: &Decision| {
        let mut response = error_response(err, format);
        add_rate_limit_headers(&mut response, decision);
        if let Some(retry_after_secs) = decision.retry_after_secs
            && let Ok(value) = header::HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    };
    let (principal, decision) = match presented_credential(req.headers()).transpose() {
        None => (
            None,
            state
                .rate_limits
                .admit(&Subject::Anonymous(client_ip))
                .await,
        ),
        Some(presented) => match authenticate_from(state, client_ip, presented).await {
            Ok(principal) => {
                let decision = state.rate_limits.admit(&principal.rate_subject()).await;
                (Some(principal), decision)
            }
            Err((err, decision)) => return Err(refuse(err, &decision)),
        },
    };
    if let Some(retry_after_secs) = decision.retry_after_secs {
        return Err(refuse(
            AppError::RateLimited { retry_after_secs },
            &decision,
        ));
    }
    Ok((principal, decision))
}

/// IETF `RateLimit-*` headers, on every GraphQL response.
fn add_rate_limit_headers(response: &mut HttpResponse, decision: &Decision) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("ratelimit-limit", decision.limit.to_string()),
        ("ratelimit-remaining", decision.remaining.to_string()),
        ("ratelimit-reset", decision.reset_secs.to_string()),
        ("ratelimit-policy", decision.policy.clone()),
    ] {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.insert(header::HeaderName::from_static(name), value);
        }
    }
}

/// Reads the body up to `limit` bytes; a larger one is refused without reading on.
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    format: Format,
) -> Result<web::Bytes, HttpResponse> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| bad_request("the request body could not be read".into(), format))?;
        if body.len() + chunk.len() > limit {
            let err =
                AppError::QueryTooComplex(format!("the request body is larger than {limit} bytes"));
            let mut response = error_response(err, format);
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return Err(response);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// True when the operation the request selects is a mutation (refused over GET).
fn selects_mutation(request: &Request) -> bool {
    crate::context::documents::operation_type(request) == Some(OperationType::Mutation)
}

pub async fn graphql_post(
    state: web::Data<AppState>,
    schema: web::Data<HubSchema>,
    fast: web::Data<FastSchema>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let Some(format) = negotiate(req.headers()) else {
        return HttpResponse::NotAcceptable()
            .body("accept application/graphql-response+json or application/json");
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !content_type.starts_with(JSON) {
        let mut response = bad_request("send the request as application/json".into(), format);
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    let (principal, decision) = match admit(&state, &req, format).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let mut response = match read_body(payload, state.config.max_body_bytes, format).await {
        Ok(body) => match parse_batch(&state, &body) {
            Ok(batch) => {
                let schemas = (schema.get_ref(), fast.get_ref());
                execute(&state, schemas, &req, batch, principal, &decision, format).await
            }
            Err(err) => error_response(err, format),
        },
        Err(response) => response,
    };
    add_rate_limit_headers(&mut response, &decision);
    response
}

/// The request(s) in a POST body, each with a query (or a persisted query's hash), at most
/// `max_batch` of them.
fn parse_batch(state: &AppState, body: &[u8]) -> Result<BatchRequest, AppError> {
    let max_batch = state.config.max_batch;
    let mut batch: BatchRequest = serde_json::from_slice(body).map_err(|err| {
        if err.is_syntax() || err.is_eof() {
            AppError::validation(format!("the body is not valid JSON: {err}"))
        } else {
            AppError::validation(
                "the body is not a GraphQL request: send a JSON object with `query` \
                 (and `variables`, `operationName`, `extensions`), or an array of them",
            )
        }
    })?;
    let operations = batch.iter().count();
    if operations <= max_batch {
        for request in batch.iter_mut() {
            state.persisted.resolve(request)?;
        }
    }
    if batch.iter().any(|r| r.query.trim().is_empty()) {
        return Err(AppError::validation("the request has no `query`"));
    }
    if operations > max_batch {
        return Err(AppError::QueryTooComplex(format!(
            "a batch may hold at most {max_batch} operations (got {operations})"
        )));
    }
    Ok(batch)
}

pub async fn graphql_get(
    state: web::Data<AppState>,
    schema: web::Data<HubSchema>,
    fast: web::Data<FastSchema>,
    req: HttpRequest,
) -> HttpResponse {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html && state.config.graphiql && !req.query_string().contains("query=") {
        return crate::graphiql::page_response();
    }
    let Some(format) = negotiate(req.headers()) else {
        return HttpResponse::NotAcceptable()
            .body("accept application/graphql-response+json or application/json");
    };
    // async-graphql-actix-web's extractor reads a GET request (query, operationName,
    // variables and extensions from the query string).
    let extracted = async_graphql_actix_web::GraphQLRequest::from_request(
        &req,
        &mut actix_web::dev::Payload::None,
    )
    .await;
    let request = match extracted {
        Ok(request) => request.into_inner(),
        Err(err) => return bad_request(format!("invalid GraphQL GET request: {err}"), format),
    };
    let mut request = request;
    if let Err(err) = state.persisted.resolve(&mut request) {
        return error_response(err, format);
    }
    if request.query.trim().is_empty() {
        return bad_request("the request has no `query` parameter".into(), format);
    }
    if selects_mutation(&request) {
        let mut response = bad_request("mutations must be sent with POST".into(), format);
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    let (principal, decision) = match admit(&state, &req, format).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let mut response = execute(
        &state,
        (schema.get_ref(), fast.get_ref()),
        &req,
        BatchRequest::Single(request),
        principal,
        &decision,
        format,
    )
    .await;
    add_rate_limit_headers(&mut response, &decision);
    response
}

async fn execute(
    state: &AppState,
    (schema, fast): (&HubSchema, &FastSchema),
    req: &HttpRequest,
    mut batch: BatchRequest,
    principal: Option<Arc<Principal>>,
    decision: &Decision,
    format: Format,
) -> HttpResponse {
    let caller = principal.clone();
    if let Some(principal) = principal {
        batch = batch.data(principal);
    }
    let request_id = req.extensions().get::<RequestId>().cloned();
    for request in batch.iter_mut() {
        if let Some(id) = &request_id {
            request.data.insert(id.clone());
        }
        state.documents.prepare(request);
        request.data.insert(decision.clone());
        request.data.insert(AuditTargets::default());
        request.data.insert(WriteUnit::default());
    }
    // Each operation's type and registered name, for the metrics (the documents are parsed
    // already).
    let named = !state.config.metrics_operations.trim().is_empty();
    let types: Vec<(&'static str, std::borrow::Cow<'static, str>)> = batch
        .iter_mut()
        .map(|request| {
            let asked = request.operation_name.clone();
            let (kind, name) = match request.parsed_query() {
                Ok(document) => match &document.operations {
                    async_graphql::parser::types::DocumentOperations::Single(op) => {
                        (type_label(op.node.ty), asked.filter(|_| named))
                    }
                    async_graphql::parser::types::DocumentOperations::Multiple(ops) => {
                        let chosen = match &asked {
                            Some(name) => ops.get(name.as_str()).map(|op| (name.clone(), op)),
                            None if ops.len() == 1 => {
                                ops.iter().next().map(|(n, op)| (n.to_string(), op))
                            }
                            None => None,
                        };
                        match chosen {
                            Some((name, op)) => {
                                (type_label(op.node.ty), Some(name).filter(|_| named))
                            }
                            None => ("multiple", None),
                        }
                    }
                },
                Err(_) => ("invalid", None),
            };
            (kind, state.config.operation_label(name.as_deref()))
        })
        .collect();
    let started = std::time::Instant::now();
    let mut ticket = None;
    // A single query or mutation whose document passed validation before runs on the
    // schema without extensions (see `FastSchema`); a query may be answered with what was
    // kept for it while its data is unchanged (see `answers`).
    let response = match batch {
        BatchRequest::Single(mut request)
            if types.first().is_some_and(|(kind, _)| *kind == "query") =>
        {
            let lookup = match &fast.answers {
                Some(answers) => {
                    answers
                        .lookup(&state.pool, caller.as_deref(), &mut request)
                        .await
                }
                None => Lookup::Pass,
            };
            match lookup {
                Lookup::Hit(body) => {
                    let seconds = started.elapsed().as_secs_f64();
                    record_operations(types, &[false], seconds);
                    return HttpResponse::Ok()
                        .content_type(format.content_type())
                        .body(body);
                }
                Lookup::Miss(miss) => ticket = Some(miss),
                Lookup::Pass => {}
            }
            BatchResponse::Single(execute_single(schema, fast, request).await)
        }
        BatchRequest::Single(request)
            if types.first().is_some_and(|(kind, _)| *kind == "mutation") =>
        {
            BatchResponse::Single(execute_single(schema, fast, request).await)
        }
        batch => schema.execute_batch(batch).await,
    };
    let seconds = started.elapsed().as_secs_f64();
    let errors: Vec<bool> = match &response {
        BatchResponse::Single(single) => vec![!single.errors.is_empty()],
        BatchResponse::Batch(responses) => responses.iter().map(|r| !r.errors.is_empty()).collect(),
    };
    record_operations(types, &errors, seconds);
    let (status, body, headers) = match response {
        BatchResponse::Single(single) => {
            // A request error (parse, validation, limits) means nothing was executed: the spec
            // answers it with 400 and no `data` under application/graphql-response+json.
            let request_error = single.data == async_graphql::Value::Null
                && !single.errors.is_empty()
                && single.errors.iter().all(|e| e.path.is_empty());
            let headers = single.http_headers.clone();
            if single.errors.iter().any(is_outage) {
                // A dependency (the database) is down or timed out: the request may be
                // retried as it is (`Retry-After` is added below).
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    to_json(&single).into(),
                    headers,
                )
            } else if !request_error {
                let body = web::Bytes::from(to_json(&single));
                let answered = single.errors.is_empty() && single.extensions.is_empty();
                if let (Some(ticket), Some(answers), true) =
                    (ticket, &fast.answers, answered && headers.is_empty())
                {
                    answers.keep(ticket, body.clone());
                }
                (StatusCode::OK, body, headers)
            } else {
                let mut body = serde_json::to_value(&single).unwrap_or_default();
                if let Some(map) = body.as_object_mut() {
                    map.remove("data");
                }
                let status = match format {
                    Format::GraphqlResponseJson => StatusCode::BAD_REQUEST,
                    Format::Json => StatusCode::OK,
                };
                (status, body.to_string().into(), headers)
            }
        }
        BatchResponse::Batch(responses) => (
            StatusCode::OK,
            to_json(&responses).into(),
            Default::default(),
        ),
    };
    let mut builder = HttpResponse::build(status);
    for (name, value) in headers.iter() {
        builder.append_header((name.as_str(), value.as_bytes()));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        builder.insert_header((
            header::RETRY_AFTER,
            UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
        ));
    }
    builder.content_type(format.content_type()).body(body)
}

/// Runs one operation: on the schema without extensions when its document passed
/// validation before, else on the schema that validates it in full (and keeps the result).
async fn execute_single(
    schema: &HubSchema,
    fast: &FastSchema,
    mut request: Request,
) -> async_graphql::Response {
    if fast.admits(&mut request) {
        fast.execute(request).await
    } else {
        schema.execute(request).await
    }
}

/// Counts each operation of a request (its type, its registered name or `other`, and whether
/// it failed) and times them.
fn record_operations(
    types: Vec<(&'static str, std::borrow::Cow<'static, str>)>,
    errors: &[bool],
    seconds: f64,
) {
    for ((kind, operation), failed) in types.into_iter().zip(errors) {
        let outcome = if *failed { "error" } else { "ok" };
        metrics::counter!("hub_graphql_operations_total", "type" => kind,
            "operation" => operation.clone(), "outcome" => outcome)
        .increment(1);
        metrics::histogram!("hub_graphql_operation_duration_seconds", "type" => kind,
            "operation" => operation)
        .record(seconds);
    }
}

fn type_label(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

fn is_outage(error: &async_graphql::ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .and_then(|e| e.get("code"))
        .is_some_and(|code| *code == async_graphql::Value::from("UNAVAILABLE"))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| {
        r#"{"errors":[{"message":"the response could not be serialised","extensions":{"code":"INTERNAL"}}]}"#.into()
    })
}
