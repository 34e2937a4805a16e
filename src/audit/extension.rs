use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{ServerResult, Value};

use super::{AuditEventRow, AuditTargets};
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::{new_id, now};

/// Mutations that only call through an integration: they change nothing the hub stores but
/// their request logs, so their audit rows are queued with those logs (readers flush the
/// journal first) instead of holding up the call until they are committed.
const CALLS: [&str; 3] = ["executeRequest", "executeGraphql", "batchExecute"];

/// Records one audit event per root mutation field of an authenticated caller.
pub struct AuditLog;

impl ExtensionFactory for AuditLog {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuditLog)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for AuditLog {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let is_mutation = info.parent_type == "Mutation" && info.path_node.parent.is_none();
        if !is_mutation {
            return next.run(ctx, info).await;
        }
        let action = info.name.to_string();
        let path = info.path_node.to_string();
        let result = next.run(ctx, info).await;
        let (Some(principal), Some(state)) =
            (ctx.data_opt::<Arc<Principal>>(), ctx.data_opt::<AppState>())
        else {
            return result;
        };
        let target = ctx.data_opt::<AuditTargets>().and_then(|t| t.take(&path));
        let error_code = result.as_ref().err().map(|err| {
            err.extensions
                .as_ref()
                .and_then(|ext| ext.get("code"))
                .and_then(|code| match code {
                    Value::String(code) => Some(code.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "INTERNAL".into())
        });
        let row = AuditEventRow {
            id: new_id(),
            team_id: principal.team_id.clone(),
            actor: principal.actor.label(),
            action,
            target_type: target.as_ref().map(|t| t.0.clone()),
            target_id: target.map(|t| t.1),
            outcome: if error_code.is_none() {
                "success"
            } else {
                "failure"
            }
            .into(),
            error_code,
            created_at: now(),
        };
        let journaled = if CALLS.contains(&row.action.as_str()) {
            state
                .journal
                .call_row(crate::db::journal::JournalRow::Audit(row))
                .await
        } else {
            state.journal.audit(row).await
        };
        if let Err(err) = journaled {
            tracing::error!(code = err.code(), "audit event not recorded");
        }
        result
    }
}
