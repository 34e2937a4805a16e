//! Single-flight locks of this replica, by key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Async locks by key: work that should run once at a time per key on this replica
/// (refreshing one integration's OAuth token) queues on the key's lock.
#[derive(Default)]
pub struct Flights {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Flights {
    pub fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() > 1_000 {
            // Only locks nobody holds or waits for are dropped.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(key.to_string()).or_default().clone()
    }
}
