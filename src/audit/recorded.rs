use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::resolve_container_serial;
use async_graphql::{
    ContainerType, Context, ContextSelectionSet, ObjectType, OutputType, PathSegment, Positioned,
    ServerError, ServerResult, Value,
};

use super::{AuditEventRow, AuditTargets};
use crate::auth::Principal;
use crate::context::AppState;
use crate::context::unit::{Closed, WriteUnit};
use crate::db::journal::JournalRow;
use crate::db::{new_id, now};
use crate::error::AppError;

/// Mutations that act rather than change what the hub stores: calls through an integration,
/// a connection test, a sync run or push, an OAuth token obtained or revoked. What they do is
/// recorded by their own rows (request logs, runs), so their audit rows go through the
/// journal: the calls' with their request logs (same durability), the others' committed
/// before the answer.
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

/// The root mutation type `M`, recording one audit event per field it resolves for an
/// authenticated caller, on every schema and transport that runs it (no extension needed,
/// so a schema without extensions audits as well). A mutation that changes stored state
/// runs in a [`WriteUnit`]: its writes and its audit row commit together, or it fails and
/// nothing it wrote stays. The same GraphQL type as `M` in every other respect.
#[derive(Default)]
pub struct Audited<M>(pub M);

impl<M: ObjectType> OutputType for Audited<M> {
    fn type_name() -> Cow<'static, str> {
        M::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        M::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        resolve_container_serial(ctx, self).await
    }
}

impl<M: ObjectType> ContainerType for Audited<M> {
    async fn resolve_field(&self, ctx: &Context<'_>) -> ServerResult<Option<Value>> {
        // Pinned where it is made: the field's future (kilobytes) is not moved again.
        let resolve = std::pin::pin!(self.0.resolve_field(ctx));
        audited(ctx, resolve).await
    }

    async fn find_entity(&self, ctx: &Context<'_>, params: &Value) -> ServerResult<Option<Value>> {
        self.0.find_entity(ctx, params).await
    }
}

impl<M: ObjectType> ObjectType for Audited<M> {}

/// Resolves a root mutation field and records its audit event (see [`Audited`]).
async fn audited(
    ctx: &Context<'_>,
    resolve: std::pin::Pin<&mut impl std::future::Future<Output = ServerResult<Option<Value>>>>,
) -> ServerResult<Option<Value>> {
    let field = &ctx.item.node;
    let action = field.name.node.to_string();
    let path = ctx.path_node.map(|p| p.to_string()).unwrap_or_default();
    let key = field.response_key().node.to_string();
    let acts = CALLS.contains(&action.as_str()) || ACTIONS.contains(&action.as_str());
    if let Some(unit) = ctx.data_opt::<WriteUnit>() {
        unit.enter_mutation();
    }
    let unit = ctx.data_opt::<WriteUnit>().filter(|_| !acts);
    if let Some(unit) = unit {
        unit.open();
    }
    let result = resolve.await;
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
        // future is built for every root field of every mutation.
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
