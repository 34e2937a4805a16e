//! Call targets (an integration's row, parsed configuration and opened credentials) kept by
//! each replica, so a call through an integration costs no database read and no decryption.
//! A change made through this replica drops the entry at once; other replicas see a change
//! within the cache period (`HUB_INTEGRATION_CACHE_SECS`), as with cached API keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::service::Prepared;

const MAX_ENTRIES: usize = 10_000;

pub struct CallTargets {
    ttl: Duration,
    /// Bumped by every invalidation: an entry read before a change is not stored after it.
    generation: AtomicU64,
    entries: RwLock<HashMap<String, (Arc<Prepared>, Instant)>>,
}

impl CallTargets {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            generation: AtomicU64::new(0),
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, integration_id: &str) -> Option<Arc<Prepared>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let (target, cached_at) = entries.get(integration_id)?;
        (cached_at.elapsed() < self.ttl).then(|| target.clone())
    }

    /// Taken before reading the row that [`CallTargets::insert`] will store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores `target` unless an integration changed since `generation` was taken.
    pub fn insert(&self, generation: u64, target: Arc<Prepared>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(target.integration.id.clone(), (target, Instant::now()));
    }

    /// Drops an integration's entry (updated, enabled or disabled, credentials rotated, deleted).
    pub fn invalidate(&self, integration_id: &str) {
        self.drop_where(|target| target.integration.id == integration_id);
    }

    /// Drops the entries of a project's integrations (the project was deleted).
    pub fn invalidate_project(&self, project_id: &str) {
        self.drop_where(|target| target.integration.project_id == project_id);
    }

    fn drop_where(&self, drop: impl Fn(&Prepared) -> bool) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, (target, _)| !drop(target));
    }
}
