//! A circuit breaker per integration: after `threshold` consecutive failures the circuit
//! opens and calls fail at once for `cooldown`; then one trial call is let through
//! (half-open): success closes the circuit, failure opens it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
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

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    /// May a call go out now? Err carries the seconds until the next trial.
    pub fn admit(&self, key: &str) -> Result<(), u64> {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(circuit) = circuits.get_mut(key) else {
            return Ok(());
        };
        let Some(opened_at) = circuit.opened_at else {
            return Ok(());
        };
        let elapsed = opened_at.elapsed();
        if elapsed < self.cooldown {
            return Err((self.cooldown - elapsed).as_secs().max(1));
        }
        if circuit.trial_in_flight {
            return Err(1);
        }
        circuit.trial_in_flight = true;
        Ok(())
    }

    pub fn record(&self, key: &str, success: bool) {
        let mut circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        if success {
            circuits.remove(key);
            return;
        }
        let circuit = circuits.entry(key.to_string()).or_default();
        circuit.failures += 1;
        circuit.trial_in_flight = false;
        if circuit.failures >= self.threshold || circuit.opened_at.is_some() {
            circuit.opened_at = Some(Instant::now());
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

    #[test]
    fn opens_after_threshold_and_recovers_through_a_trial() {
        let breakers = Breakers::new(2, Duration::from_millis(50));
        breakers.record("a", false);
        assert!(breakers.admit("a").is_ok());
        breakers.record("a", false);
        assert_eq!(breakers.state("a"), CircuitState::Open);
        assert!(breakers.admit("a").is_err());
        assert!(breakers.admit("b").is_ok(), "circuits are per key");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breakers.admit("a").is_ok(), "one trial");
        assert!(breakers.admit("a").is_err(), "only one");
        breakers.record("a", false);
        assert_eq!(
            breakers.state("a"),
            CircuitState::Open,
            "a failed trial opens again"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(breakers.admit("a").is_ok());
        breakers.record("a", true);
        assert_eq!(breakers.state("a"), CircuitState::Closed);
    }
}
