//! The delivery worker: claims due deliveries (each with a lease, so a replica that dies
//! loses its claims and any replica sends them after it), sends each one signed, records the
//! attempt and schedules the next: at once, then after each wait of
//! `HUB_WEBHOOK_RETRY_SCHEDULE` (jittered ±10 %), or after the receiver's `Retry-After` on 429
//! and 503 (1 s to 1 h). A 2xx delivers; 410 Gone disables the endpoint at once; an endpoint
//! whose attempts have only failed for `HUB_WEBHOOK_DISABLE_AFTER_SECS` is disabled and
//! `webhook.endpoint_disabled` published. Per endpoint: at most
//! `HUB_WEBHOOK_ENDPOINT_CONCURRENCY` in flight and its own rate limit.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::store::{self, AttemptRow, DeliveryRow, EndpointChanges, EndpointRow};
use crate::context::AppState;
use crate::db::{new_id, now};
use crate::error::AppResult;
use crate::events::{Event, EventKind};
use crate::http::{OutboundError, OutboundRequest};

/// The first this many bytes of an answer are kept with its attempt.
const KEEP_BODY: usize = 1024;

/// Deliveries claimed at most at once per claim.
const CLAIM_BATCH: usize = 100;

struct Gate {
    slots: Arc<Semaphore>,
    rate: Option<(i32, DefaultDirectRateLimiter)>,
}

pub struct Worker {
    state: AppState,
    schedule: Vec<Duration>,
    timeout: Duration,
    /// Deliveries in flight on this replica.
    slots: Arc<Semaphore>,
    gates: DashMap<String, Arc<Gate>>,
}

impl Worker {
    pub fn new(state: AppState) -> Arc<Self> {
        let schedule = crate::config::webhook_schedule(&state.config.webhook_retry_schedule)
            .unwrap_or_default();
        Arc::new(Self {
            schedule,
            timeout: Duration::from_millis(state.config.webhook_timeout_ms),
            slots: Arc::new(Semaphore::new(state.config.webhook_concurrency)),
            gates: DashMap::new(),
            state,
        })
    }

    /// A claim lasts an attempt's timeout plus `HUB_JOB_LEASE_SECS`: an attempt (with its
    /// waits for the endpoint's slot and rate) ends well before; a claim that outlives it was
    /// lost with its replica, and the delivery is sent again.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(self.state.config.job_lease_secs)
    }

    /// Claims and sends until aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let worker = self.clone();
        tokio::spawn(async move {
            let poll = Duration::from_millis(worker.state.config.webhook_poll_ms);
            loop {
                let claimed = worker.claim_and_send().await;
                if claimed == 0 {
                    tokio::select! {
                        _ = worker.state.wake_deliveries.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
            }
        })
    }

    /// Deliveries in flight (the stop waits for them).
    pub fn in_flight(&self) -> usize {
        self.state.config.webhook_concurrency - self.slots.available_permits()
    }

    async fn claim_and_send(self: &Arc<Self>) -> usize {
        let free = self.slots.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            return 0;
        }
        let at = now();
        let until = at + chrono::Duration::from_std(self.lease()).unwrap_or_default();
        let claimed = match self.state.pool.get().await {
            Ok(mut conn) => store::claim_due(&mut conn, at, until, free as i64).await,
            Err(err) => Err(err),
        };
        let rows = match claimed {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(
                    code = err.code(),
                    "webhook deliveries not claimed; will retry"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                return 0;
            }
        };
        let count = rows.len();
        for row in rows {
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                break;
            };
            let worker = self.clone();
            tokio::spawn(async move { worker.deliver(row, permit).await });
        }
        count
    }

    fn gate(&self, endpoint: &EndpointRow) -> Arc<Gate> {
        if let Some(gate) = self.gates.get(&endpoint.id)
            && gate.rate.as_ref().map(|r| r.0) == endpoint.rate_limit_per_second
        {
            return gate.clone();
        }
        let gate = Arc::new(Gate {
            slots: Arc::new(Semaphore::new(
                self.state.config.webhook_endpoint_concurrency,
            )),
            rate: endpoint.rate_limit_per_second.and_then(|per_second| {
                let n = NonZeroU32::new(per_second.max(1) as u32)?;
                Some((per_second, RateLimiter::direct(Quota::per_second(n))))
            }),
        });
        self.gates.insert(endpoint.id.clone(), gate.clone());
        gate
    }

    async fn deliver(self: Arc<Self>, delivery: DeliveryRow, _slot: OwnedSemaphorePermit) {
        if let Err(err) = self.try_deliver(delivery).await {
            // The claim runs out and the delivery is tried again.
            tracing::warn!(
                code = err.code(),
                "webhook delivery not recorded; it will be retried"
            );
        }
        self.state.wake_deliveries.notify_one();
    }

    async fn try_deliver(&self, mut delivery: DeliveryRow) -> AppResult<()> {
        let state = &self.state;
        let endpoint = {
            let mut conn = state.pool.get().await?;
            store::endpoint_by_id(&mut conn, &delivery.endpoint_id).await?
        };
        let Some(endpoint) = endpoint else {
            self.gates.remove(&delivery.endpoint_id);
            return Ok(()); // deleted with its deliveries
        };
        if !endpoint.enabled {
            let mut conn = state.pool.get().await?;
            let reason = "the endpoint is disabled";
            store::fail_unsent(&mut conn, &delivery.id, reason, now()).await?;
            delivery.status = "failed".into();
            delivery.last_error = Some(reason.into());
            self.announce(&delivery);
            return Ok(());
        }
        let gate = self.gate(&endpoint);
        let _endpoint_slot = gate.slots.clone().acquire_owned().await;
        if let Some((_, limiter)) = &gate.rate {
            limiter.until_ready().await;
        }
        let request = self.request(&endpoint, &delivery)?;
        let attempted_at = now();
        let started = Instant::now();
        let result = state
            .outbound
            .deliver(request, self.timeout, KEEP_BODY)
            .await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let (status, error, body) = match &result {
            Ok(response) => (
                Some(response.status.as_u16() as i32),
                None,
                Some(String::from_utf8_lossy(&response.body).into_owned()),
            ),
            Err(err) => (None, Some(describe(err)), None),
        };
        let outcome = match status {
            Some(200..=299) => "delivered",
            Some(_) => "refused",
            None => "unanswered",
        };
        metrics::counter!("hub_webhook_attempts_total", "outcome" => outcome).increment(1);
        delivery.attempts += 1;
        delivery.last_status = status;
        delivery.last_error = error.clone();
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let gone = status == Some(410);
        let retry_after = match &result {
            Ok(response) if matches!(response.status.as_u16(), 429 | 503) => {
                crate::http::retry_after(&response.headers)
                    .map(|d| d.clamp(Duration::from_secs(1), Duration::from_secs(3600)))
            }
            _ => None,
        };
        let wait = self.schedule.get(delivery.attempts as usize - 1).copied();
        if delivered {
            delivery.status = "delivered".into();
            delivery.finished_at = Some(now());
        } else if gone || wait.is_none() {
            delivery.status = "failed".into();
            delivery.finished_at = Some(now());
        } else {
            let wait = retry_after.unwrap_or_else(|| jitter(wait.unwrap_or_default()));
            delivery.next_attempt_at = now() + chrono::Duration::from_std(wait).unwrap_or_default();
        }
        let attempt = AttemptRow {
            id: new_id(),
            delivery_id: delivery.id.clone(),
            endpoint_id: endpoint.id.clone(),
            attempted_at,
            response_status: status,
            duration_ms,
            error,
            response_body: body,
        };
        let mut conn = state.pool.get().await?;
        store::record_attempt(&mut conn, &attempt, &delivery).await?;
        self.announce(&delivery);
        // The endpoint's health: a success clears its failing streak; 410 or a streak longer
        // than the limit disables it.
        let at = now();
        if delivered {
            if endpoint.failing_since.is_some() {
                let changes = EndpointChanges {
                    failing_since: Some(None),
                    ..Default::default()
                };
                store::update_endpoint(&mut conn, &endpoint.id, &changes).await?;
            }
            return Ok(());
        }
        let limit = chrono::Duration::seconds(state.config.webhook_disable_after_secs as i64);
        let reason = if gone {
            Some("the endpoint answered 410 Gone".to_string())
        } else if endpoint
            .failing_since
            .is_some_and(|since| at - since >= limit)
        {
            Some(format!(
                "every delivery failed for {} s",
                state.config.webhook_disable_after_secs
            ))
        } else {
            None
        };
        let changes = match &reason {
            Some(reason) => EndpointChanges {
                enabled: Some(false),
                disabled_reason: Some(Some(reason.clone())),
                updated_at: Some(at),
                ..Default::default()
            },
            None if endpoint.failing_since.is_none() => EndpointChanges {
                failing_since: Some(Some(at)),
                ..Default::default()
            },
            None => return Ok(()),
        };
        store::update_endpoint(&mut conn, &endpoint.id, &changes).await?;
        if let Some(reason) = reason {
            tracing::warn!(endpoint = %endpoint.id, reason, "webhook endpoint disabled");
            state.events.publish(Event {
                kind: EventKind::WebhookEndpointDisabled,
                team_id: endpoint.team_id.clone(),
                project_id: endpoint.project_id.clone(),
                subject_id: endpoint.id.clone(),
                payload: json!({ "url": endpoint.url, "reason": reason }),
                request_log: None,
                at,
            });
        }
        Ok(())
    }

    /// The signed request: `webhook-id` (the delivery's, the same on every attempt),
    /// `webhook-timestamp` (this attempt's), `webhook-signature` (one per live secret), the
    /// endpoint's own headers.
    fn request(
        &self,
        endpoint: &EndpointRow,
        delivery: &DeliveryRow,
    ) -> AppResult<OutboundRequest> {
        let state = &self.state;
        let mut headers = HeaderMap::new();
        if let Some(sealed) = &endpoint.headers_sealed {
            let extra: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(
                &super::graphql::open(state, sealed, &endpoint.id, "headers")?,
            )?;
            for (name, value) in extra {
                if let (Ok(name), Some(Ok(value))) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    value.as_str().map(HeaderValue::from_str),
                ) {
                    headers.insert(name, value);
                }
            }
        }
        let mut keys = vec![super::sign::key_of(&String::from_utf8_lossy(
            &super::graphql::open(state, &endpoint.secret_sealed, &endpoint.id, "secret")?,
        ))?];
        if let (Some(previous), Some(until)) = (
            &endpoint.previous_secret_sealed,
            endpoint.previous_secret_until,
        ) && until > now()
        {
            keys.push(super::sign::key_of(&String::from_utf8_lossy(
                &super::graphql::open(state, previous, &endpoint.id, "secret")?,
            ))?);
        }
        let timestamp = now().and_utc().timestamp();
        let body = delivery.payload.as_bytes();
        let signature = super::sign::header(&keys, &delivery.id, timestamp, body);
        let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        set(&mut headers, "webhook-id", &delivery.id);
        set(&mut headers, "webhook-timestamp", &timestamp.to_string());
        set(&mut headers, "webhook-signature", &signature);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let url = url::Url::parse(&endpoint.url)
            .map_err(|err| crate::error::AppError::validation(format!("url: {err}")))?;
        Ok(OutboundRequest {
            method: reqwest::Method::POST,
            url,
            headers,
            body: Some(body.to_vec()),
        })
    }

    /// Tells subscribers of `webhookDeliveryUpdates`.
    fn announce(&self, delivery: &DeliveryRow) {
        self.state.events.publish(Event {
            kind: EventKind::WebhookDeliveryUpdated,
            team_id: delivery.team_id.clone(),
            project_id: delivery.project_id.clone(),
            subject_id: delivery.endpoint_id.clone(),
            payload: serde_json::to_value(delivery).unwrap_or_default(),
            request_log: None,
            at: now(),
        });
    }
}

fn describe(err: &OutboundError) -> String {
    match err {
        OutboundError::Timeout => "the endpoint did not answer in time".into(),
        other => other.message(),
    }
}

/// `wait` ± 10 %.
fn jitter(wait: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..=1.1);
    wait.mul_f64(factor)
}
