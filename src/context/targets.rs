//! Integrations opened for calls (row, parsed configuration, opened credentials), kept by
//! each replica so a call costs no database read and no decryption. What is kept is the
//! `calls` domain's; here it is opaque, by integration and project id, so that the domains
//! below `calls` (projects, integrations) can drop entries when they change one. A change
//! made through this replica drops the entry at once; other replicas see it within the cache
//! period (`HUB_INTEGRATION_CACHE_SECS`), as with cached API keys.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const MAX_ENTRIES: usize = 10_000;

struct Entry {
    integration_id: String,
    project_id: String,
    target: Arc<dyn Any + Send + Sync>,
    at: Instant,
}

pub struct CallTargets {
    ttl: Duration,
    /// Bumped by every invalidation: an entry read before a change is not stored after it.
    generation: AtomicU64,
    entries: RwLock<HashMap<String, Entry>>,
}

impl CallTargets {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            generation: AtomicU64::new(0),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The integration's fresh entry, if it holds a `T`.
    pub fn get<T: Any + Send + Sync>(&self, integration_id: &str) -> Option<Arc<T>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(integration_id)?;
        if entry.at.elapsed() >= self.ttl {
            return None;
        }
        entry.target.clone().downcast::<T>().ok()
    }

    /// Taken before reading the row that [`CallTargets::insert`] will store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores `target` unless an integration changed since `generation` was taken.
    pub fn insert<T: Any + Send + Sync>(
        &self,
        generation: u64,
        integration_id: &str,
        project_id: &str,
        target: Arc<T>,
    ) {
        self.insert_keyed(
            generation,
            integration_id,
            integration_id,
            project_id,
            target,
        );
    }

    /// Like [`CallTargets::insert`], under another `key` than the integration's id (what else
    /// is kept of an integration: its inbound webhook by token); dropped with the integration.
    pub fn insert_keyed<T: Any + Send + Sync>(
        &self,
        generation: u64,
        key: &str,
        integration_id: &str,
        project_id: &str,
        target: Arc<T>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, entry| entry.at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key.to_string(),
            Entry {
                integration_id: integration_id.to_string(),
                project_id: project_id.to_string(),
                target,
                at: Instant::now(),
            },
        );
    }

    /// Drops an integration's entries (updated, enabled or disabled, credentials rotated,
    /// deleted, its inbound webhook changed).
    pub fn invalidate(&self, integration_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(integration_id);
        entries.retain(|_, entry| entry.integration_id != integration_id);
    }

    /// Forgets everything (changes may have been missed).
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    /// Drops the entries of a project's integrations (the project was deleted).
    pub fn invalidate_project(&self, project_id: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, entry| entry.project_id != project_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_dropped_by_id_and_project_and_stale_reads_not_stored() {
        let targets = CallTargets::new(Duration::from_secs(60));
        let g = targets.generation();
        targets.insert(g, "i1", "p1", Arc::new(1u32));
        targets.insert(g, "i2", "p2", Arc::new(2u32));
        assert_eq!(targets.get::<u32>("i1").as_deref(), Some(&1));
        assert!(
            targets.get::<String>("i1").is_none(),
            "another type is not found"
        );
        targets.invalidate_project("p1");
        assert!(targets.get::<u32>("i1").is_none());
        assert_eq!(targets.get::<u32>("i2").as_deref(), Some(&2));
        // Read before a change, stored after it: not kept.
        targets.insert(g, "i1", "p1", Arc::new(1u32));
        assert!(targets.get::<u32>("i1").is_none());
        targets.invalidate("i2");
        assert!(targets.get::<u32>("i2").is_none());
        // Entries kept under another key go with their integration.
        let g = targets.generation();
        targets.insert_keyed(g, "hook:x", "i3", "p3", Arc::new(3u32));
        assert_eq!(targets.get::<u32>("hook:x").as_deref(), Some(&3));
        targets.invalidate("i3");
        assert!(targets.get::<u32>("hook:x").is_none());
    }
}
