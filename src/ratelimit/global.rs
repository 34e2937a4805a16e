//! Quotas shared by every replica (`HUB_REDIS_URL`): each check is one GCRA step in Redis,
//! one atomic round trip (a Lua script on Redis's clock), so N replicas together admit a
//! caller at its quota, not N times it. Until Redis answers (not yet connected, down, slower
//! than `HUB_REDIS_TIMEOUT_MS`) a check returns None and the caller falls back on this
//! replica's governor limiter: logged and counted, never refusing the whole API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::RateSpec;

/// GCRA (the generic cell rate algorithm, as governor uses) on the key's theoretical arrival
/// time, in microseconds of Redis's clock. ARGV: emission interval, tolerance (interval ×
/// burst). Returns {allowed, µs until allowed, µs until the quota is whole}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > tolerance then
  return {0, next_tat - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return {1, 0, next_tat - now}
";

/// One GCRA step's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub allowed: bool,
    /// How long until a request would be allowed (zero when allowed).
    pub wait: Duration,
    /// How long until the quota is whole again.
    pub fill: Duration,
}

pub struct GlobalQuotas {
    connection: Arc<OnceLock<ConnectionManager>>,
    script: redis::Script,
    timeout: Duration,
    /// When the last fallback was logged (seconds since the Unix epoch): at most one line
    /// per 10 s.
    warned_at: AtomicU64,
}

impl GlobalQuotas {
    /// Checks `url` and starts connecting in the background (retrying each second); checks
    /// fall back until the connection is up. Needs a Tokio runtime.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|err| format!("HUB_REDIS_URL: {err}"))?;
        let connection: Arc<OnceLock<ConnectionManager>> = Arc::default();
        let slot = connection.clone();
        tokio::spawn(async move {
            loop {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                match ConnectionManager::new_with_config(client.clone(), config).await {
                    Ok(manager) => {
                        tracing::info!("global quotas: connected to Redis");
                        let _ = slot.set(manager);
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "global quotas: Redis unreachable; quotas are per replica until it answers");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA),
            timeout,
            warned_at: AtomicU64::new(0),
        })
    }

    /// One request against `key`'s quota `spec`; None if Redis did not answer in time.
    pub async fn step(&self, key: &str, spec: RateSpec) -> Option<Step> {
        let outcome = match self.connection.get() {
            Some(connection) => {
                let mut connection = connection.clone();
                let interval = (spec.period.as_micros() / u128::from(spec.requests)).max(1) as u64;
                let tolerance = interval.saturating_mul(u64::from(spec.burst));
                let mut invocation = self.script.key(format!("ihub:quota:{key}"));
                invocation.arg(interval).arg(tolerance);
                let call = invocation.invoke_async::<(i64, i64, i64)>(&mut connection);
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err(format!("no answer in {} ms", self.timeout.as_millis())),
                }
            }
            None => Err("not connected".to_string()),
        };
        match outcome {
            Ok((allowed, wait, fill)) => Some(Step {
                allowed: allowed == 1,
                wait: Duration::from_micros(wait.max(0) as u64),
                fill: Duration::from_micros(fill.max(0) as u64),
            }),
            Err(reason) => {
                metrics::counter!("hub_rate_limit_fallbacks_total").increment(1);
                let now = chrono::Utc::now().timestamp().max(0) as u64;
                let last = self.warned_at.load(Ordering::Relaxed);
                if now >= last + 10
                    && self
                        .warned_at
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(%reason, "global quotas: Redis did not answer; this replica's own limiter decides meanwhile");
                }
                None
            }
        }
    }
}
