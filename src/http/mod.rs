//! The one outbound HTTP client. Every call the hub makes for an integration goes through
//! [`Outbound::send`]: the SSRF guard, the integration's outbound rate limit (the hub waits
//! rather than exceed a provider's quota), its circuit breaker, connect and total timeouts,
//! retries with exponential backoff and jitter for idempotent methods (timeouts, 429, 502,
//! 503, 504; `Retry-After` honoured within bounds) and a cap on response size.

pub mod breaker;
pub mod guard;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use thread_local::ThreadLocal;

use crate::config::Config;
use crate::error::AppError;
use breaker::Breakers;
use guard::{AddressGuard, Blocked, GuardedResolver};

/// One request to send.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: Method,
    pub url: url::Url,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
}

/// What came back, with what it took.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub enum OutboundError {
    Blocked(String),
    Timeout,
    CircuitOpen {
        retry_in_secs: u64,
    },
    TooLarge(usize),
    /// The upstream redirected to another origin; not followed (credentials stay home).
    CrossOrigin(String),
    /// The request could not be built (nothing was sent).
    Invalid(String),
    Transport(String),
}

impl OutboundError {
    pub fn message(&self) -> String {
        match self {
            Self::Blocked(reason) => reason.clone(),
            Self::Timeout => "the upstream did not answer in time".into(),
            Self::CircuitOpen { retry_in_secs } => {
                format!(
                    "the upstream keeps failing; calls paused for {retry_in_secs} s (circuit open)"
                )
            }
            Self::TooLarge(limit) => format!("the upstream response is larger than {limit} bytes"),
            Self::Invalid(reason) => format!("the request could not be sent: {reason}"),
            Self::CrossOrigin(origin) => format!(
                "the upstream redirected to another origin ({origin}); redirects are followed \
                 only within the integration's origin, so its credentials never leave it"
            ),
            Self::Transport(reason) => format!("the upstream could not be reached: {reason}"),
        }
    }
}

impl From<OutboundError> for AppError {
    fn from(err: OutboundError) -> Self {
        match err {
            OutboundError::Blocked(reason) => AppError::UpstreamBlocked(reason),
            OutboundError::Timeout => AppError::UpstreamTimeout(err.message()),
            other => AppError::UpstreamError(other.message()),
        }
    }
}

type Limiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

pub struct Outbound {
    /// One client (and so one connection pool) per thread that makes calls: a pooled
    /// connection's I/O runs on the runtime of the thread that opened it, so a thread that
    /// keeps to its own never has to wake another to make a call.
    clients: ThreadLocal<reqwest::Client>,
    /// Clients for webhook deliveries: they follow no redirect at all.
    hook_clients: ThreadLocal<reqwest::Client>,
    connect_timeout: Duration,
    guard: Arc<AddressGuard>,
    limiter: Limiter,
    /// The per-integration quota, and the quotas all replicas share (Redis) if configured.
    rate: crate::ratelimit::RateSpec,
    global: Option<Arc<crate::ratelimit::global::GlobalQuotas>>,
    breakers: Breakers,
    timeout: Duration,
    max_retries: u32,
    retry_base: Duration,
    retry_max: Duration,
    max_retry_after: Duration,
    max_response_bytes: usize,
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` as seconds (dates are not worth the trouble here: providers send seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// A redirect to another scheme, host or port: refused, never followed.
#[derive(Debug, Clone)]
struct CrossOrigin(String);

impl std::fmt::Display for CrossOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect to another origin ({})", self.0)
    }
}

impl std::error::Error for CrossOrigin {}

/// The first error of type `E` in `err`'s chain.
fn cause<E: std::error::Error + Clone + 'static>(err: &reqwest::Error) -> Option<E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found.clone());
        }
        source = e.source();
    }
    None
}

/// A client that refuses blocked addresses, on connect and on every redirect, and follows
/// redirects only within the origin (scheme, host and port) of the request it was given:
/// the credentials the hub injected (headers, cookies, query parameters) are meant for that
/// origin alone, so a redirect elsewhere is refused rather than followed with them or
/// stripped of some. No `Referer` is ever sent (it would carry query credentials).
fn client(
    guard: &Arc<AddressGuard>,
    connect_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    let redirect_guard = guard.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error(Blocked("too many redirects".into()));
        }
        if let Err(blocked) = redirect_guard.check_url(attempt.url()) {
            return attempt.error(blocked);
        }
        let first = attempt.previous().first().map(url::Url::origin);
        if first.is_some_and(|origin| origin != attempt.url().origin()) {
            let to = attempt.url().origin().ascii_serialization();
            return attempt.error(CrossOrigin(to));
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        // Idle connections are dropped before common servers drop them (Node and actix-web
        // close after 5 s): reusing one the server is closing at that moment fails a call
        // that is not retried (a POST), as a sync write did in our tests.
        .pool_idle_timeout(Duration::from_secs(4))
        .redirect(redirects)
        .referer(false)
        .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
        .no_proxy()
        .user_agent(concat!("integration-hub/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Counts an outbound call by provider and status class (or error kind), with its duration.
fn record(
    provider: &'static str,
    outcome: &Result<OutboundResponse, OutboundError>,
    started: Instant,
) {
    let status: &'static str = match outcome {
        Ok(response) => match response.status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Err(OutboundError::Blocked(_)) => "blocked",
        Err(OutboundError::Timeout) => "timeout",
        Err(OutboundError::CircuitOpen { .. }) => "circuit_open",
        Err(OutboundError::TooLarge(_)) => "too_large",
        Err(OutboundError::CrossOrigin(_)) => "cross_origin",
        Err(OutboundError::Invalid(_)) => "invalid",
        Err(OutboundError::Transport(_)) => "transport",
    };
    metrics::counter!("hub_outbound_requests_total", "provider" => provider, "status" => status)
        .increment(1);
    metrics::histogram!("hub_outbound_request_duration_seconds", "provider" => provider)
        .record(started.elapsed().as_secs_f64());
}

/// A client for webhook deliveries: the same guard, no redirects, no proxy.
fn hook_client(
    guard: &Arc<AddressGuard>,
    connect_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
        .no_proxy()
        .user_agent(concat!(
            "integration-hub-webhooks/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

impl Outbound {
    /// Counts calls in the quotas all replicas share (Redis) first.
    pub fn with_global(
        mut self,
        global: Option<Arc<crate::ratelimit::global::GlobalQuotas>>,
    ) -> Self {
        self.global = global;
        self
    }

    /// Waits until the integration's quota lets one more call through: in the quotas all
    /// replicas share when Redis answers, else in this replica's limiter.
    async fn quota_ready(&self, key: &str) {
        if let Some(global) = &self.global {
            let quota_key = format!("outbound:{key}");
            loop {
                match global.step(&quota_key, self.rate).await {
                    Some(step) if step.allowed => return,
                    Some(step) => tokio::time::sleep(step.wait).await,
                    None => break,
                }
            }
        }
        self.limiter.until_key_ready(&key.to_string()).await;
    }

    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let allow = config.outbound_allow_list().map_err(anyhow::Error::msg)?;
        let guard = Arc::new(AddressGuard::new(allow));
        let connect_timeout = Duration::from_millis(config.outbound_connect_timeout_ms);
        // Built once here so a client that cannot be built fails the start, not a call.
        let clients = ThreadLocal::new();
        clients.get_or_try(|| client(&guard, connect_timeout))?;
        let rate = crate::ratelimit::RateSpec::parse(&config.outbound_rate_limit)
            .map_err(anyhow::Error::msg)?;
        let quota = Quota::with_period(rate.period / rate.requests)
            .ok_or_else(|| anyhow::anyhow!("outbound rate limit too fine"))?
            .allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN));
        Ok(Self {
            clients,
            hook_clients: ThreadLocal::new(),
            connect_timeout,
            guard,
            limiter: RateLimiter::dashmap(quota),
            rate,
            global: None,
            breakers: Breakers::new(
                config.breaker_threshold,
                Duration::from_secs(config.breaker_cooldown_secs),
            ),
            timeout: Duration::from_millis(config.outbound_timeout_ms),
            max_retries: config.outbound_max_retries,
            retry_base: Duration::from_millis(config.outbound_retry_base_ms),
            retry_max: Duration::from_millis(config.outbound_retry_max_ms),
            max_retry_after: Duration::from_secs(config.outbound_max_retry_after_secs),
            max_response_bytes: config.outbound_max_response_bytes,
        })
    }

    /// Whether `url` may be called at all (its scheme, and its host when it is an address);
    /// names are checked again on every connection.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        self.guard.check_url(url).map_err(|blocked| blocked.0)
    }

    /// One webhook delivery attempt: no retry, no redirect followed (a 3xx is the answer),
    /// the address guard on connect, `timeout` for all of it; the answer's body is read up to
    /// `keep` bytes (the rest is left unread).
    pub async fn deliver(
        &self,
        request: OutboundRequest,
        timeout: Duration,
        keep: usize,
    ) -> Result<OutboundResponse, OutboundError> {
        self.deliver_as("webhook", request, timeout, keep).await
    }

    /// Like [`Outbound::deliver`], counted in the outbound metrics under `label` (OAuth token
    /// requests: no retry here, no redirect followed).
    pub async fn deliver_as(
        &self,
        label: &'static str,
        request: OutboundRequest,
        timeout: Duration,
        keep: usize,
    ) -> Result<OutboundResponse, OutboundError> {
        self.guard
            .check_url(&request.url)
            .map_err(|b| OutboundError::Blocked(b.0))?;
        let client = self
            .hook_clients
            .get_or_try(|| hook_client(&self.guard, self.connect_timeout))
            .map_err(|err| OutboundError::Transport(err.to_string()))?;
        let mut builder = client
            .request(request.method, request.url)
            .headers(request.headers)
            .timeout(timeout);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let started = Instant::now();
        let outcome = self.deliver_from(builder, started, timeout, keep).await;
        record(label, &outcome, started);
        outcome
    }

    async fn deliver_from(
        &self,
        builder: reqwest::RequestBuilder,
        started: Instant,
        timeout: Duration,
        keep: usize,
    ) -> Result<OutboundResponse, OutboundError> {
        let mut response = builder.send().await.map_err(|err| self.classify(err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = bytes::BytesMut::new();
        while body.len() < keep {
            let remaining = timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(remaining, response.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                // The status is the answer; a body cut short or slow changes nothing.
                _ => break,
            }
        }
        body.truncate(keep);
        Ok(OutboundResponse {
            status,
            headers,
            body: body.freeze(),
            attempts: 1,
        })
    }

    /// The calling thread's client, built on its first call.
    fn client(&self) -> Result<&reqwest::Client, OutboundError> {
        self.clients
            .get_or_try(|| client(&self.guard, self.connect_timeout))
            .map_err(|err| OutboundError::Transport(err.to_string()))
    }

    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Sends `request` for the integration `key`, with everything the module docs promise.
    /// A final 4xx/5xx is returned as a response, not an error.
    pub async fn send(
        &self,
        key: &str,
        provider: &'static str,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        let started = Instant::now();
        let outcome = self.send_measured(key, provider, request).await;
        record(provider, &outcome, started);
        outcome
    }

    async fn send_measured(
        &self,
        key: &str,
        provider: &'static str,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        self.guard
            .check_url(&request.url)
            .map_err(|b| OutboundError::Blocked(b.0))?;
        let admission = self
            .breakers
            .admit(key)
            .map_err(|retry_in_secs| OutboundError::CircuitOpen { retry_in_secs })?;
        let retries = if is_idempotent(&request.method) {
            self.max_retries
        } else {
            0
        };
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(self.retry_max)
            .with_max_times(retries as usize)
            .with_jitter()
            .build();
        let mut attempts = 0;
        let mut sent = false;
        let limiter_key = key.to_string();
        let outcome = loop {
            attempts += 1;
            let limit = self.quota_ready(&limiter_key);
            if tokio::time::timeout(self.timeout, limit).await.is_err() {
                break Err(OutboundError::Timeout);
            }
            sent = true;
            let result = self.attempt(&request).await;
            let retry_delay = match &result {
                Ok(response) if is_retryable(response.status) => {
                    Some(retry_after(&response.headers))
                }
                Err(OutboundError::Timeout) => Some(None),
                _ => None,
            };
            match (retry_delay, backoff.next()) {
                (Some(server_delay), Some(our_delay)) => {
                    metrics::counter!("hub_outbound_retries_total", "provider" => provider)
                        .increment(1);
                    let delay = server_delay.map_or(our_delay, |d| d.min(self.max_retry_after));
                    tracing::debug!(
                        key,
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        "retrying upstream call"
                    );
                    tokio::time::sleep(delay).await;
                }
                _ => break result,
            }
        };
        admission.finish(match &outcome {
            _ if !sent => breaker::Outcome::NotSent,
            Ok(r) if !r.status.is_server_error() => breaker::Outcome::Success,
            Err(OutboundError::Blocked(_) | OutboundError::Invalid(_)) => breaker::Outcome::NotSent,
            _ => breaker::Outcome::Failure,
        });
        outcome.map(|mut response| {
            response.attempts = attempts;
            response
        })
    }

    async fn attempt(&self, request: &OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let mut builder = self
            .client()?
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone())
            .timeout(self.timeout);
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        if let Some(traceparent) = crate::trace::traceparent()
            && !request.headers.contains_key("traceparent")
        {
            builder = builder.header("traceparent", traceparent.as_bytes());
        }
        let started = Instant::now();
        let mut response = builder.send().await.map_err(|err| self.classify(err))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = bytes::BytesMut::new();
        loop {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            let chunk = tokio::time::timeout(remaining, response.chunk())
                .await
                .map_err(|_| OutboundError::Timeout)?
                .map_err(|err| self.classify(err))?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(OutboundError::TooLarge(self.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(OutboundResponse {
            status,
            headers,
            body: body.freeze(),
            attempts: 1,
        })
    }

    fn classify(&self, err: reqwest::Error) -> OutboundError {
        if let Some(blocked) = cause::<Blocked>(&err) {
            return OutboundError::Blocked(blocked.0);
        }
        if let Some(redirect) = cause::<CrossOrigin>(&err) {
            return OutboundError::CrossOrigin(redirect.0);
        }
        if err.is_timeout() {
            return OutboundError::Timeout;
        }
        if err.is_builder() {
            return OutboundError::Invalid(err.without_url().to_string());
        }
        let mut reason = err.to_string();
        if let Some(url) = err.url() {
            // reqwest names the URL; keep the message free of it (it may carry a token).
            reason = reason.replace(url.as_str(), "the upstream");
        }
        OutboundError::Transport(reason)
    }
}
