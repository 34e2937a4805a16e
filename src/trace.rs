//! What a request carries through everything done for it: its id (on log lines and audit
//! events) and the caller's W3C `traceparent` (passed on to upstream calls). Set by the HTTP
//! layer (`web`), read below it.

use actix_web::http::header::HeaderValue;

/// The id of the request being served (request extensions and GraphQL request data): the
/// header value as echoed (visible ASCII), so echoing it costs no copy or check.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

tokio::task_local! {
    /// The caller's `traceparent`, while its request is served: calls made for it carry it on.
    pub static TRACEPARENT: Option<HeaderValue>;
}

/// The `traceparent` of the request being served, if it sent a valid one.
pub fn traceparent() -> Option<HeaderValue> {
    TRACEPARENT.try_with(Clone::clone).ok().flatten()
}
