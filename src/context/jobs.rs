//! Background work running on this replica (sync runs today): each job by its id, with the
//! group it belongs to (a sync config: one run of it at a time), a flag that asks it to stop,
//! and its task (aborted at once when the server stops, as a crash would).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;

#[derive(Default)]
pub struct Jobs {
    active: DashMap<String, Job>,
}

struct Job {
    group: String,
    cancel: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Jobs {
    /// Keeps a started job until [`Jobs::finished`].
    pub fn started(
        &self,
        id: String,
        group: String,
        cancel: Arc<AtomicBool>,
        task: tokio::task::JoinHandle<()>,
    ) {
        self.active.insert(
            id,
            Job {
                group,
                cancel,
                task,
            },
        );
    }

    pub fn finished(&self, id: &str) {
        self.active.remove(id);
    }

    /// Asks the job to stop; false when it does not run here.
    pub fn cancel(&self, id: &str) -> bool {
        match self.active.get(id) {
            Some(job) => {
                job.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Whether a job of `group` runs here.
    pub fn runs_group(&self, group: &str) -> bool {
        self.active.iter().any(|job| job.group == group)
    }

    /// The ids of the jobs running here.
    pub fn ids(&self) -> Vec<String> {
        self.active.iter().map(|job| job.key().clone()).collect()
    }

    /// Stops every job at once, as a crash would (their rows stay as they were until their
    /// lease runs out).
    pub fn abort_all(&self) {
        for job in self.active.iter() {
            job.task.abort();
        }
        self.active.clear();
    }
}
