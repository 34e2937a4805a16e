//! The audit log: who (key or user) did which mutation to what, when, and how it ended.
//! Recorded for every root mutation field by the root mutation type itself
//! ([`recorded::Audited`]), so no mutation can forget it on any schema or transport;
//! resolvers only name their target with [`target`].

pub mod graphql;
pub mod recorded;
pub mod store;

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::Context;

pub use crate::db::rows::AuditEventRow;

/// Targets named by the mutations of one request, by response key.
#[derive(Default)]
pub struct AuditTargets(Mutex<HashMap<String, (String, String)>>);

/// Names the object the current mutation acts on (call it before anything can fail, where the
/// id is known, and again once a created object has its id).
pub fn target(ctx: &Context<'_>, target_type: &str, target_id: &str) {
    let (Some(targets), Some(path)) = (ctx.data_opt::<AuditTargets>(), ctx.path_node) else {
        return;
    };
    targets.0.lock().unwrap_or_else(|e| e.into_inner()).insert(
        path.to_string(),
        (target_type.to_string(), target_id.to_string()),
    );
}

impl AuditTargets {
    fn take(&self, path: &str) -> Option<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path)
    }
}
