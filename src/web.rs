//! What wraps every HTTP request: its id (accepted from `X-Request-Id` or made, echoed on the
//! response, on every log line of the request and on its audit events), the access log line,
//! the W3C `traceparent` passed on to upstream calls, CORS for browser apps on other origins,
//! and compression of larger answers.

use std::time::Instant;

use actix_cors::Cors;
use actix_web::HttpMessage;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use futures_util::TryFutureExt;
use tracing::Instrument;

use crate::trace::{RequestId, TRACEPARENT};

/// Answers smaller than this are sent as they are: compressing them costs more than it saves.
pub const COMPRESS_MIN_BYTES: usize = 1024;

/// Longest `X-Request-Id` accepted from a client.
const MAX_REQUEST_ID: usize = 128;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id is kept if it is short, visible ASCII without spaces or quotes; otherwise
/// (or without one) the hub makes one.
fn accepted_id(value: &&HeaderValue) -> bool {
    let text = value.as_bytes();
    !text.is_empty()
        && text.len() <= MAX_REQUEST_ID
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

/// A new id: a UUIDv7 in 32 hex digits (time-ordered, so ids sort like the requests).
fn new_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    let text = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The id of a request with these headers: the client's, if acceptable, or a new one.
pub fn request_id_of(headers: &header::HeaderMap) -> RequestId {
    RequestId(match headers.get(&X_REQUEST_ID).filter(accepted_id) {
        Some(id) => id.clone(),
        None => new_id(),
    })
}

/// Counts a request served on `path` in the HTTP metrics.
pub fn count_request(path: &str, status: u16, started: Instant) {
    count_route(route_of(path), status, started);
}

fn count_route(route: &'static str, status: u16, started: Instant) {
    let status = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("hub_http_requests_total", "route" => route, "status" => status).increment(1);
    metrics::histogram!("hub_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
}

/// `version-traceid-parentid-flags` in lower-case hex, not all zeros, version not `ff`.
fn valid_traceparent(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// The outermost middleware: the request's id, its span (so every line logged while it is
/// served carries the id), its `traceparent`, and one access log line (the query string left
/// out: GET /graphql carries variables).
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id_of(req.headers());
    let traceparent = req
        .headers()
        .get("traceparent")
        .filter(|v| valid_traceparent(v))
        .cloned();
    let span = tracing::info_span!("request", request_id = %id.as_str());
    // The access line's parts are copied only when it is written.
    let line = tracing::enabled!(tracing::Level::INFO)
        .then(|| (req.method().clone(), req.path().to_string()));
    let route = route_of(req.path());
    req.extensions_mut().insert(id.clone());
    let mut response = TRACEPARENT
        .scope(traceparent, next.call(req))
        .instrument(span.clone())
        .await?;
    response.headers_mut().insert(X_REQUEST_ID, id.0);
    count_route(route, response.status().as_u16(), started);
    if let Some((method, path)) = line {
        span.in_scope(|| {
            tracing::info!(
                %method,
                path,
                status = response.status().as_u16(),
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request"
            )
        });
    }
    Ok(response)
}

/// The route of a path, from a fixed set (a label; never the path itself, which may carry a
/// token).
fn route_of(path: &str) -> &'static str {
    match path {
        "/graphql" => "graphql",
        "/metrics" => "metrics",
        "/healthz" | "/readyz" => "health",
        _ if path.starts_with("/hooks/") => "hooks",
        "/oauth/callback" => "oauth",
        _ if path.starts_with("/graphiql/") => "graphiql",
        _ => "other",
    }
}

/// Inside the compressor: small answers are marked `identity`, which it leaves alone. A
/// plain `Transform` (no boxed service or future per request, unlike `from_fn`).
pub struct PlainSmallAnswers;

impl<S, B> Transform<S, ServiceRequest> for PlainSmallAnswers
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = PlainSmallAnswersService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(PlainSmallAnswersService { inner: service }))
    }
}

pub struct PlainSmallAnswersService<S> {
    inner: S,
}

type Mark<B> = fn(ServiceResponse<B>) -> ServiceResponse<B>;

impl<S, B> Service<ServiceRequest> for PlainSmallAnswersService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = futures_util::future::MapOk<S::Future, Mark<B>>;

    actix_web::dev::forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        self.inner.call(req).map_ok(mark_small as Mark<B>)
    }
}

fn mark_small<B: MessageBody>(mut response: ServiceResponse<B>) -> ServiceResponse<B> {
    if let BodySize::Sized(size) = response.response().body().size()
        && (size as usize) < COMPRESS_MIN_BYTES
        && !response.headers().contains_key(header::CONTENT_ENCODING)
    {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    response
}

/// CORS for the configured origins: preflights answered, the headers browsers need to read
/// our answers exposed. An origin not in the list gets no CORS headers (the browser then
/// refuses the answer to the page); the request itself is not blocked, so same-origin pages
/// (GraphiQL) and non-browser clients are unaffected.
pub fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-api-key"),
            X_REQUEST_ID,
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            HeaderName::from_static("ratelimit-policy"),
            header::RETRY_AFTER,
            X_REQUEST_ID,
        ])
        .max_age(600)
        .block_on_origin_mismatch(false);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// Whether a WebSocket upgrade's `Origin` may connect: any when no origins are configured;
/// otherwise a listed one, or the hub's own (GraphiQL served by the hub).
pub fn websocket_origin_allowed(origins: &[String], req: &actix_web::dev::RequestHead) -> bool {
    if origins.is_empty() || origins.iter().any(|o| o == "*") {
        return true;
    }
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        // Not a browser: browsers always send Origin on WebSocket upgrades.
        return true;
    };
    if origins.iter().any(|o| o == origin) {
        return true;
    }
    let Some(host) = forwarded_host(req) else {
        return false;
    };
    url::Url::parse(origin)
        .ok()
        .and_then(|url| {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            url.host_str().map(|h| format!("{h}{port}"))
        })
        .is_some_and(|origin_host| origin_host == host)
}

/// The host a request was sent to, as actix's `ConnectionInfo` finds it: `Forwarded: host=`,
/// then `X-Forwarded-Host`, then `Host`.
fn forwarded_host(req: &actix_web::dev::RequestHead) -> Option<String> {
    let headers = req.headers();
    let forwarded = headers
        .get_all(header::FORWARDED)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([';', ',']))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim().trim_matches('"').to_string())
        });
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
    };
    forwarded
        .or_else(|| first("x-forwarded-host"))
        .or_else(|| first("host"))
        .filter(|host| !host.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_and_traceparents() {
        assert!(accepted_id(&&HeaderValue::from_static("abc-123_x.y")));
        assert!(!accepted_id(&&HeaderValue::from_static("has space")));
        assert!(!accepted_id(
            &&HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
        let made = new_id();
        assert_eq!(made.len(), 32);
        assert!(accepted_id(&&made), "a made id is one the hub would accept");
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(&HeaderValue::from_static(good)));
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(!valid_traceparent(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
