//! Request rate limits (governor's GCRA): one quota per API key (its own, or the default),
//! per JWT subject, and per client IP for requests without credentials. Each caller has a
//! limiter of its own, so a noisy key never takes from another's quota.

pub mod global;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// `requests` per `period`, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateSpec {
    pub requests: u32,
    pub period: Duration,
    pub burst: u32,
}

impl RateSpec {
    /// Parses `600/1m`, `10/1s,burst=20`, `5000/1h` (periods in s, m or h).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a rate like 600/1m or 10/1s,burst=20");
        let (rate, burst) = match text.split_once(',') {
            Some((rate, extra)) => {
                let burst = extra
                    .trim()
                    .strip_prefix("burst=")
                    .and_then(|b| b.parse::<u32>().ok())
                    .ok_or_else(bad)?;
                (rate, Some(burst))
            }
            None => (text, None),
        };
        let (requests, period) = rate.trim().split_once('/').ok_or_else(bad)?;
        let requests: u32 = requests.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let (number, unit) = period.split_at(
            period
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(period.len()),
        );
        let number: u64 = if number.is_empty() {
            1
        } else {
            number.parse().map_err(|_| bad())?
        };
        let seconds = match unit {
            "s" => number,
            "m" => number * 60,
            "h" => number * 3600,
            _ => return Err(bad()),
        };
        Self::new(
            requests,
            Duration::from_secs(seconds),
            burst.unwrap_or(requests),
        )
    }

    pub fn new(requests: u32, period: Duration, burst: u32) -> Result<Self, String> {
        if requests == 0 || burst == 0 || period.is_zero() {
            return Err("requests, period and burst must all be positive".into());
        }
        if period > Duration::from_secs(86_400) {
            return Err("the period is at most one day".into());
        }
        Ok(Self {
            requests,
            period,
            burst,
        })
    }

    fn quota(&self) -> Quota {
        let interval = self.period / self.requests;
        Quota::with_period(interval.max(Duration::from_nanos(1)))
            .expect("positive interval")
            .allow_burst(NonZeroU32::new(self.burst).expect("positive burst"))
    }

    /// `RateLimit-Policy` value: the quota and its window in seconds.
    pub fn policy(&self) -> String {
        format!(
            "{};w={};burst={}",
            self.requests,
            self.period.as_secs().max(1),
            self.burst
        )
    }
}

/// Who a request is counted against.
pub enum Subject<'a> {
    /// An API key, with its own quota if it has one.
    ApiKey { id: &'a str, spec: Option<RateSpec> },
    /// A JWT subject (team-qualified).
    User(String),
    /// No credentials: the client address.
    Anonymous(IpAddr),
}

/// The outcome of one check, and what the `RateLimit-*` headers say.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the quota is whole again.
    pub reset_secs: u64,
    /// Seconds to wait before retrying, when refused.
    pub retry_after_secs: Option<u64>,
    pub policy: String,
}

pub struct RateLimits {
    api_key_default: RateSpec,
    user: RateSpec,
    anonymous: RateSpec,
    keys: DashMap<String, (RateSpec, Arc<Direct>)>,
    users: Keyed<String>,
    ips: Keyed<IpAddr>,
    /// Addresses whose anonymous quota is spent, and until when: a credential presented from
    /// one of them is refused before it is looked up.
    throttled: DashMap<IpAddr, std::time::Instant>,
    clock: DefaultClock,
    /// Quotas shared by all replicas (Redis), when configured.
    global: Option<Arc<global::GlobalQuotas>>,
}

impl RateLimits {
    pub fn new(api_key_default: RateSpec, user: RateSpec, anonymous: RateSpec) -> Self {
        Self {
            api_key_default,
            user,
            anonymous,
            keys: DashMap::new(),
            users: RateLimiter::dashmap(user.quota())
                .with_middleware::<StateInformationMiddleware>(),
            ips: RateLimiter::dashmap(anonymous.quota())
                .with_middleware::<StateInformationMiddleware>(),
            throttled: DashMap::new(),
            clock: DefaultClock::default(),
            global: None,
        }
    }

    /// Checks quotas in Redis first (`global`), this replica's limiters as the fallback.
    pub fn with_global(mut self, global: Option<Arc<global::GlobalQuotas>>) -> Self {
        self.global = global;
        self
    }

    /// Counts one request against `subject`: in the quotas all replicas share when Redis is
    /// configured and answers, else in this replica's own (`check`).
    pub async fn admit(&self, subject: &Subject<'_>) -> Decision {
        let Some(global) = &self.global else {
            return self.check(subject);
        };
        let (kind, key, spec) = match subject {
            Subject::ApiKey { id, spec } => (
                "api_key",
                format!("key:{id}"),
                spec.unwrap_or(self.api_key_default),
            ),
            Subject::User(subject) => ("user", format!("user:{subject}"), self.user),
            Subject::Anonymous(ip) => ("anonymous", format!("ip:{ip}"), self.anonymous),
        };
        let Some(step) = global.step(&key, spec).await else {
            return self.check(subject);
        };
        let interval = spec.period.as_secs_f64() / f64::from(spec.requests);
        let fill = step.fill.as_secs_f64();
        if step.allowed {
            let room = (interval * f64::from(spec.burst) - fill) / interval;
            Decision {
                allowed: true,
                limit: spec.burst,
                remaining: room.floor().clamp(0.0, f64::from(spec.burst)) as u32,
                reset_secs: fill.ceil() as u64,
                retry_after_secs: None,
                policy: spec.policy(),
            }
        } else {
            if let Subject::Anonymous(ip) = subject {
                self.throttled
                    .insert(*ip, std::time::Instant::now() + step.wait);
            }
            metrics::counter!("hub_rate_limited_total", "subject" => kind).increment(1);
            Decision {
                allowed: false,
                limit: spec.burst,
                remaining: 0,
                reset_secs: fill.ceil() as u64,
                retry_after_secs: Some(step.wait.as_secs_f64().ceil().max(1.0) as u64),
                policy: spec.policy(),
            }
        }
    }

    /// Counts one request against `subject`.
    pub fn check(&self, subject: &Subject<'_>) -> Decision {
        let kind = match subject {
            Subject::ApiKey { .. } => "api_key",
            Subject::User(_) => "user",
            Subject::Anonymous(_) => "anonymous",
        };
        let decision = self.decide_for(subject);
        if !decision.allowed {
            metrics::counter!("hub_rate_limited_total", "subject" => kind).increment(1);
        }
        decision
    }

    fn decide_for(&self, subject: &Subject<'_>) -> Decision {
        match subject {
            Subject::ApiKey { id, spec } => {
                let spec = spec.unwrap_or(self.api_key_default);
                let current = self
                    .keys
                    .get(*id)
                    .filter(|entry| entry.0 == spec)
                    .map(|entry| entry.1.clone());
                let limiter = current.unwrap_or_else(|| {
                    let limiter = Arc::new(
                        RateLimiter::direct(spec.quota())
                            .with_middleware::<StateInformationMiddleware>(),
                    );
                    self.keys.insert(id.to_string(), (spec, limiter.clone()));
                    limiter
                });
                self.decide(spec, limiter.check())
            }
            Subject::User(subject) => self.decide(self.user, self.users.check_key(subject)),
            Subject::Anonymous(ip) => {
                let outcome = self.ips.check_key(ip);
                if let Err(not_until) = &outcome {
                    let wait = not_until.wait_time_from(self.clock.now());
                    self.throttled.insert(*ip, std::time::Instant::now() + wait);
                }
                self.decide(self.anonymous, outcome)
            }
        }
    }

    /// True while `ip`'s anonymous quota is spent (a refused request said so).
    pub fn throttled(&self, ip: IpAddr) -> bool {
        self.throttled
            .get(&ip)
            .is_some_and(|until| *until > std::time::Instant::now())
    }

    fn decide(
        &self,
        spec: RateSpec,
        outcome: Result<
            governor::middleware::StateSnapshot,
            governor::NotUntil<<DefaultClock as Clock>::Instant>,
        >,
    ) -> Decision {
        let interval = spec.period.as_secs_f64() / f64::from(spec.requests);
        match outcome {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: spec.burst,
                    remaining,
                    reset_secs: (interval * f64::from(spec.burst - remaining)).ceil() as u64,
                    retry_after_secs: None,
                    policy: spec.policy(),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now()).as_secs_f64();
                let retry_after = wait.ceil().max(1.0) as u64;
                Decision {
                    allowed: false,
                    limit: spec.burst,
                    remaining: 0,
                    reset_secs: (wait + interval * f64::from(spec.burst.saturating_sub(1))).ceil()
                        as u64,
                    retry_after_secs: Some(retry_after),
                    policy: spec.policy(),
                }
            }
        }
    }

    /// Forgets a key's limiter (revoked or deleted keys).
    pub fn forget_key(&self, id: &str) {
        self.keys.remove(id);
    }

    /// Drops per-user and per-IP state that has fully refilled, bounding memory.
    pub fn shrink(&self) {
        self.users.retain_recent();
        self.ips.retain_recent();
        self.users.shrink_to_fit();
        self.ips.shrink_to_fit();
        let now = std::time::Instant::now();
        self.throttled.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let spec = RateSpec::parse("600/1m,burst=100").unwrap();
        assert_eq!(
            (spec.requests, spec.period, spec.burst),
            (600, Duration::from_secs(60), 100)
        );
        assert_eq!(RateSpec::parse("10/s").unwrap().burst, 10);
        assert_eq!(
            RateSpec::parse("5/2h").unwrap().period,
            Duration::from_secs(7200)
        );
        for bad in [
            "",
            "10",
            "10/1d",
            "0/1s",
            "x/1s",
            "10/1s,burst=0",
            "10/1s,bust=2",
        ] {
            assert!(RateSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_have_their_own_quota() {
        let spec = RateSpec::parse("2/1h").unwrap();
        let limits = RateLimits::new(spec, spec, spec);
        let a = Subject::ApiKey {
            id: "a",
            spec: None,
        };
        let b = Subject::ApiKey {
            id: "b",
            spec: None,
        };
        assert!(limits.check(&a).allowed);
        let second = limits.check(&a);
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let refused = limits.check(&a);
        assert!(!refused.allowed);
        assert!(refused.retry_after_secs.unwrap() > 1000);
        assert!(limits.check(&b).allowed, "another key is unaffected");
    }
}
