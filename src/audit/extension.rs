use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{PathSegment, ServerError, ServerResult, Value};

use super::{AuditEventRow, AuditTargets};
use crate::auth::Principal;
use crate::context::AppState;
use crate::context::unit::{Closed, WriteUnit};
use crate::db::journal::JournalRow;
use crate::db::{new_id, now};
use crate::error::AppError;

/// Mutations that act rather than change what the hub stores: calls through an integration,
/// a connection test, a sync run or push, an OAuth token obtained or revoked. What they do is recorded by their own rows (request
/// logs, runs), so their audit rows go through the journal: the calls' with their request
/// logs (same durability), the others' committed before the answer.
const CALLS: [&str; 4] = [
    "executeRequest",
    "executeGraphql",
    "batchExecute",
    "invokeEndpoint",
];
const ACTIONS: [&str; 6] = [
    "testConnection",
    "runSync",
    "pushRecords",
    "refreshOAuthToken",
    "disconnectOAuth",
    "connectOAuthClientCredentials",
];

/// Records one audit event per root mutation field of an authenticated caller. A mutation
/// that changes stored state runs in a [`WriteUnit`]: its writes and its audit row commit
/// together, or it fails and nothing it wrote stays.
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
        // Boxed: this future is built for every field resolved, and only a root mutation field
        // needs the state below.
        Box::pin(audited(ctx, info, next)).await
    }
}

/// Resolves a root mutation field and records its audit event (see [`AuditLog`]).
async fn audited(
    ctx: &ExtensionContext<'_>,
    info: ResolveInfo<'_>,
    next: NextResolve<'_>,
) -> ServerResult<Option<Value>> {
    let action = info.name.to_string();
    let path = info.path_node.to_string();
    let key = info.alias.unwrap_or(info.name).to_string();
    let acts = CALLS.contains(&action.as_str()) || ACTIONS.contains(&action.as_str());
    if let Some(unit) = ctx.data_opt::<WriteUnit>() {
        unit.enter_mutation();
    }
    let unit = ctx.data_opt::<WriteUnit>().filter(|_| !acts);
    if let Some(unit) = unit {
        unit.open();
    }
    let result = next.run(ctx, info).await;
    let closed = match unit {
        Some(unit) => Some(unit.close().await),
        None => None,
    };
    let Some(state) = ctx.data_opt::<AppState>() else {
        return result;
    };
    let mut row = ctx.data_opt::<Arc<Principal>>().map(|principal| {
        let target = ctx.data_opt::<AuditTargets>().and_then(|t| t.take(&path));
        AuditEventRow {
            id: new_id(),
            team_id: principal.team_id.clone(),
            actor: principal.actor.label(),
            action,
            target_type: target.as_ref().map(|t| t.0.clone()),
            target_id: target.map(|t| t.1),
            outcome: "success".into(),
            error_code: None,
            created_at: now(),
            request_id: ctx
                .data_opt::<crate::trace::RequestId>()
                .map(|id| id.as_str().to_string()),
        }
    });
    let result = match (result, closed) {
        // The futures that commit or wait are boxed: calls take neither path, and this
        // future is built for every field of every mutation.
        (Ok(value), Some(closed)) => match Box::pin(commit(state, closed, row.as_ref())).await {
            Ok(()) => return Ok(value),
            Err(err) => {
                tracing::error!(
                    code = err.code(),
                    "mutation rolled back: it could not commit with its audit event"
                );
                let mut err = err.into_graphql().into_server_error(Default::default());
                err.locations.clear();
                err.path = vec![PathSegment::Field(key)];
                Err(err)
            }
        },
        (Ok(value), None) => {
            if let Some(row) = row {
                let journaled = if CALLS.contains(&row.action.as_str()) {
                    state.journal.call_row(JournalRow::Audit(row)).await
                } else {
                    Box::pin(state.journal.audit(row)).await
                };
                // The action happened (a call was answered, a run started): answering an
                // error would invite a retry that does it again. Logged, not hidden.
                if let Err(err) = journaled {
                    tracing::error!(code = err.code(), "audit event not recorded");
                }
            }
            return Ok(value);
        }
        (Err(err), closed) => {
            if let Some(closed) = closed {
                Box::pin(roll_back(closed)).await;
            }
            Err(err)
        }
    };
    if let (Err(err), Some(mut row)) = (&result, row.take()) {
        row.outcome = "failure".into();
        row.error_code = Some(code_of(err));
        if let Err(err) = Box::pin(state.journal.audit(row)).await {
            tracing::error!(code = err.code(), "failure audit event not recorded");
        }
    }
    result
}

/// Inserts the audit row in the unit's transaction and commits, then runs the deferred
/// effects. A mutation that wrote nothing has its row journaled instead.
async fn commit(
    state: &AppState,
    mut closed: Closed,
    row: Option<&AuditEventRow>,
) -> Result<(), AppError> {
    let stored = match (closed.conn.as_mut(), row) {
        (Some(conn), Some(row)) => match super::store::insert(conn, row).await {
            Ok(()) => conn.commit().await,
            Err(err) => Err(err),
        },
        (Some(conn), None) => conn.commit().await,
        (None, Some(row)) => state.journal.audit(row.clone()).await,
        (None, None) => Ok(()),
    };
    match stored {
        Ok(()) => {
            closed.run_effects(state);
            Ok(())
        }
        Err(err) => {
            roll_back(closed).await;
            Err(err)
        }
    }
}

/// Undoes a unit (its effects are dropped). A rollback that fails leaves the connection
/// marked as in a transaction, so the pool discards it.
async fn roll_back(closed: Closed) {
    if let Some(mut conn) = closed.conn
        && let Err(err) = conn.rollback().await
    {
        tracing::warn!(
            code = err.code(),
            "rollback failed; the connection is discarded"
        );
    }
}

fn code_of(err: &ServerError) -> String {
    err.extensions
        .as_ref()
        .and_then(|ext| ext.get("code"))
        .and_then(|code| match code {
            Value::String(code) => Some(code.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "INTERNAL".into())
}
