//! A circuit breaker per integration: after `threshold` consecutive failures the circuit
//! opens and calls fail at once for `cooldown`; then one trial call is let through
//! (half-open). Every way a trial can end leads somewhere defined: the upstream answered
//! well (closed), it failed or timed out (open again, a new cooldown), or the call never
//! reached it — refused by the SSRF guard, an invalid request, a local quota wait that ran
//! out, a call cancelled half-way — (still half-open: the next call is the trial). An
//! [`Admission`] that is dropped without an outcome counts as "never reached it", so no
//! trial can hold the circuit shut.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// How a call let through by the breaker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (anything but a 5xx).
    Success,
    /// The upstream failed: transport error, timeout, 5xx, oversized answer, a redirect away.
    Failure,
    /// The upstream was not reached (blocked, invalid, cancelled): says nothing about it.
    NotSent,
}

#[derive(Default)]
struct Circuit {
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

pub struct Breakers {
    threshold: u32,
    cooldown: Duration,
    circuits: Mutex<HashMap<String, Circuit>>,
}

/// A call the breaker let through; report how it ended with [`Admission::finish`]. Dropped
/// unfinished, it ends as [`Outcome::NotSent`].
pub struct Admission<'a> {
    breakers: &'a Breakers,
    key: &'a str,
    trial: bool,
    finished: bool,
}

impl Admission<'_> {
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.breakers.record(self.key, self.trial, outcome);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.breakers.record(self.key, self.trial, Outcome::NotSent);
        }
    }
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    /// May a call go out now? Err carries the seconds until the next trial.
    pub fn admit<'a>(&'a self, key: &'a str) -> Result<Admission<'a>, u64> {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let admission = |trial| Admission {
            breakers: self,
            key,
            trial,
            finished: false,
        };
        let Some(circuit) = circuits.get_mut(key) else {
            return Ok(admission(false));
        };
        let Some(opened_at) = circuit.opened_at else {
            return Ok(admission(false));
        };
        let elapsed = opened_at.elapsed();
        if elapsed < self.cooldown {
            return Err((self.cooldown - elapsed).as_secs().max(1));
        }
        if circuit.trial_in_flight {
            return Err(1);
        }
        circuit.trial_in_flight = true;
        Ok(admission(true))
    }

    fn record(&self, key: &str, trial: bool, outcome: Outcome) {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Outcome::Success => {
                if circuits.remove(key).is_some_and(|c| c.opened_at.is_some()) {
                    metrics::counter!("hub_breaker_transitions_total", "to" => "closed")
                        .increment(1);
                }
            }
            Outcome::Failure => {
                let circuit = circuits.entry(key.to_string()).or_default();
                circuit.failures += 1;
                if trial {
                    circuit.trial_in_flight = false;
                }
                if circuit.failures >= self.threshold || circuit.opened_at.is_some() {
                    if circuit.opened_at.is_none() || trial {
                        metrics::counter!("hub_breaker_transitions_total", "to" => "open")
                            .increment(1);
                    }
                    circuit.opened_at = Some(Instant::now());
                }
            }
            Outcome::NotSent => {
                if let Some(circuit) = circuits.get_mut(key).filter(|_| trial) {
                    circuit.trial_in_flight = false;
                }
            }
        }
    }

    pub fn state(&self, key: &str) -> CircuitState {
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        match circuits.get(key).and_then(|c| c.opened_at) {
            None => CircuitState::Closed,
            Some(at) if at.elapsed() < self.cooldown => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_millis(40);

    /// A breaker for key "a" that is open and past its cooldown (half-open).
    fn half_open() -> Breakers {
        let breakers = Breakers::new(1, COOLDOWN);
        breakers.admit("a").unwrap().finish(Outcome::Failure);
        assert_eq!(breakers.state("a"), CircuitState::Open);
        assert!(breakers.admit("a").is_err(), "open: calls fail fast");
        std::thread::sleep(COOLDOWN + Duration::from_millis(10));
        assert_eq!(breakers.state("a"), CircuitState::HalfOpen);
        breakers
    }

    #[test]
    fn opens_after_threshold_and_only_one_trial_at_a_time() {
        let breakers = Breakers::new(2, COOLDOWN);
        breakers.admit("a").unwrap().finish(Outcome::Failure);
        assert_eq!(breakers.state("a"), CircuitState::Closed, "below threshold");
        breakers.admit("a").unwrap().finish(Outcome::Failure);
        assert_eq!(breakers.state("a"), CircuitState::Open);
        assert!(breakers.admit("b").is_ok(), "circuits are per key");
        std::thread::sleep(COOLDOWN + Duration::from_millis(10));
        let trial = breakers.admit("a").expect("one trial");
        assert!(breakers.admit("a").is_err(), "only one at a time");
        drop(trial);
    }

    #[test]
    fn a_successful_trial_closes() {
        let breakers = half_open();
        breakers.admit("a").unwrap().finish(Outcome::Success);
        assert_eq!(breakers.state("a"), CircuitState::Closed);
        assert!(breakers.admit("a").is_ok() && breakers.admit("a").is_ok());
    }

    #[test]
    fn a_failed_or_timed_out_trial_opens_again() {
        let breakers = half_open();
        breakers.admit("a").unwrap().finish(Outcome::Failure);
        assert_eq!(breakers.state("a"), CircuitState::Open, "a new cooldown");
        assert!(breakers.admit("a").is_err());
        std::thread::sleep(COOLDOWN + Duration::from_millis(10));
        assert!(breakers.admit("a").is_ok(), "and a new trial after it");
    }

    #[test]
    fn a_trial_that_never_reached_the_upstream_leaves_it_half_open() {
        // Blocked by the SSRF guard, an invalid request, a quota wait that ran out: reported.
        let breakers = half_open();
        breakers.admit("a").unwrap().finish(Outcome::NotSent);
        assert_eq!(breakers.state("a"), CircuitState::HalfOpen);
        let next = breakers.admit("a").expect("the next call is the trial");
        next.finish(Outcome::Success);
        assert_eq!(breakers.state("a"), CircuitState::Closed);
    }

    #[test]
    fn a_cancelled_trial_frees_the_circuit() {
        // A call dropped half-way (its caller went away) never reports an outcome.
        let breakers = half_open();
        drop(breakers.admit("a").unwrap());
        assert_eq!(breakers.state("a"), CircuitState::HalfOpen);
        assert!(breakers.admit("a").is_ok(), "not stuck open");
    }

    #[test]
    fn outcomes_of_ordinary_calls_do_not_touch_a_trial() {
        let breakers = Breakers::new(3, COOLDOWN);
        breakers.admit("a").unwrap().finish(Outcome::NotSent);
        breakers.admit("a").unwrap().finish(Outcome::Failure);
        breakers.admit("a").unwrap().finish(Outcome::Success);
        assert_eq!(
            breakers.state("a"),
            CircuitState::Closed,
            "success resets the count"
        );
    }
}
