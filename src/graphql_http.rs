//! GraphQL over HTTP (the GraphQL Foundation spec): POST with `application/json`, GET for
//! queries only, content negotiation between `application/graphql-response+json` and
//! `application/json`, and the status codes each calls for. Credentials are checked here,
//! before any execution.

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{BatchRequest, BatchResponse, Request};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::AppError;

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

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, AppError> {
    let Some(token) = presented_credential(headers)? else {
        return Ok(None);
    };
    let mut conn = state.pool.get().await?;
    crate::api_keys::service::authenticate(&mut conn, &token)
        .await
        .map(Some)
}

/// True when the operation the request selects is a mutation (refused over GET).
fn selects_mutation(request: &Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let ty = match &document.operations {
        DocumentOperations::Single(op) => Some(op.node.ty),
        DocumentOperations::Multiple(ops) => match &request.operation_name {
            Some(name) => ops.get(name.as_str()).map(|op| op.node.ty),
            None if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
            None => None,
        },
    };
    ty == Some(OperationType::Mutation)
}

pub async fn graphql_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
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
        return HttpResponse::UnsupportedMediaType()
            .content_type(format.content_type())
            .body(
                AppError::validation("send the request as application/json")
                    .into_response_body()
                    .to_string(),
            );
    }
    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(err) => return error_response(err, format),
    };
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(err) => {
            return bad_request(format!("the body is not a GraphQL request: {err}"), format);
        }
    };
    if batch.iter().any(|r| r.query.trim().is_empty()) {
        return bad_request("the request has no `query`".into(), format);
    }
    execute(&state, batch, principal, format).await
}

pub async fn graphql_get(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html && state.config.graphiql && !req.query_string().contains("query=") {
        let page = async_graphql::http::GraphiQLSource::build()
            .endpoint("/graphql")
            .title("integration-hub")
            .finish();
        return HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(page);
    }
    let Some(format) = negotiate(req.headers()) else {
        return HttpResponse::NotAcceptable()
            .body("accept application/graphql-response+json or application/json");
    };
    let request = match async_graphql::http::parse_query_string(req.query_string()) {
        Ok(request) => request,
        Err(err) => return bad_request(format!("invalid GraphQL GET request: {err}"), format),
    };
    if request.query.trim().is_empty() {
        return bad_request("the request has no `query` parameter".into(), format);
    }
    if selects_mutation(&request) {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, Method::POST.as_str()))
            .content_type(format.content_type())
            .body(
                AppError::validation("mutations must be sent with POST")
                    .into_response_body()
                    .to_string(),
            );
    }
    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(err) => return error_response(err, format),
    };
    execute(&state, BatchRequest::Single(request), principal, format).await
}

async fn execute(
    state: &AppState,
    mut batch: BatchRequest,
    principal: Option<Principal>,
    format: Format,
) -> HttpResponse {
    if let Some(principal) = principal {
        batch = batch.data(principal);
    }
    let response = state.schema.execute_batch(batch).await;
    let (status, body, headers) = match response {
        BatchResponse::Single(single) => {
            // A request error (parse, validation, limits) means nothing was executed: the spec
            // answers it with 400 and no `data` under application/graphql-response+json.
            let request_error = single.data == async_graphql::Value::Null
                && !single.errors.is_empty()
                && single.errors.iter().all(|e| e.path.is_empty());
            let headers = single.http_headers.clone();
            let mut body = serde_json::to_value(&single).unwrap_or_default();
            if request_error {
                tag_request_errors(&mut body);
            }
            let status = if request_error {
                if let Some(map) = body.as_object_mut() {
                    map.remove("data");
                }
                match format {
                    Format::GraphqlResponseJson => StatusCode::BAD_REQUEST,
                    Format::Json => StatusCode::OK,
                }
            } else {
                StatusCode::OK
            };
            (status, body, headers)
        }
        BatchResponse::Batch(responses) => {
            let body = serde_json::to_value(&responses).unwrap_or_default();
            (StatusCode::OK, body, Default::default())
        }
    };
    let mut builder = HttpResponse::build(status);
    for (name, value) in headers.iter() {
        builder.append_header((name.as_str(), value.as_bytes()));
    }
    builder
        .content_type(format.content_type())
        .body(body.to_string())
}

/// Parse and validation errors come from async-graphql without a code; they are bad input.
fn tag_request_errors(body: &mut serde_json::Value) {
    let Some(errors) = body.get_mut("errors").and_then(|e| e.as_array_mut()) else {
        return;
    };
    for error in errors {
        if let Some(error) = error.as_object_mut() {
            let extensions = error
                .entry("extensions")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(ext) = extensions.as_object_mut() {
                ext.entry("code")
                    .or_insert_with(|| "VALIDATION_FAILED".into());
            }
        }
    }
}
