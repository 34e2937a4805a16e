use std::sync::Arc;

use async_graphql::{Context, ID, Object, Subscription, Union};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};

use super::store::{self, LogFilter};
use super::{LogLevel, RequestLogRow};
use crate::auth::{Principal, Scope, ScopeGuard, principal};
use crate::context::live::{EventsMissed, Live, watch};
use crate::context::{Connection, Page, asks_total, conn, journal_conn};
use crate::error::{AppError, AppResult};
use crate::events::EventKind;
use crate::integrations::graphql::reachable;
use crate::integrations::insight::{self, IntegrationMetrics};

pub struct RequestLogNode(pub Arc<RequestLogRow>);

#[Object(name = "RequestLog")]
impl RequestLogNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn integration_id(&self) -> ID {
        ID(self.0.integration_id.clone())
    }
    async fn project_id(&self) -> ID {
        ID(self.0.project_id.clone())
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    async fn level(&self) -> LogLevel {
        LogLevel::parse(&self.0.level)
    }
    async fn method(&self) -> &str {
        &self.0.method
    }
    /// Path and query, with secrets redacted.
    async fn path(&self) -> &str {
        &self.0.path
    }
    /// The upstream's status; null when it did not answer.
    async fn status(&self) -> Option<i32> {
        self.0.status
    }
    async fn duration_ms(&self) -> i64 {
        self.0.duration_ms
    }
    async fn bytes_in(&self) -> i64 {
        self.0.bytes_in
    }
    async fn bytes_out(&self) -> i64 {
        self.0.bytes_out
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// `api_key:<id>`, `user:<sub>` or `system:health-monitor`.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn correlation_id(&self) -> &str {
        &self.0.correlation_id
    }
}

/// Which logs a caller asked for, checked against what it may reach.
async fn scope(
    ctx: &Context<'_>,
    caller: &Principal,
    integration_id: Option<ID>,
    project_id: Option<ID>,
) -> AppResult<LogFilter> {
    match (integration_id, project_id) {
        (Some(id), None) => {
            reachable(ctx, caller, &id).await?;
            Ok(LogFilter {
                integration_id: Some(id.0),
                ..Default::default()
            })
        }
        (None, Some(id)) => {
            crate::projects::store::get(&mut *conn(ctx).await?, &caller.team_id, &id).await?;
            let only_integrations = if caller.limits.allows_project(&id) {
                None
            } else {
                let ids = caller
                    .limits
                    .integrations
                    .clone()
                    .ok_or_else(|| AppError::not_found("project"))?;
                Some(ids.into_iter().collect())
            };
            Ok(LogFilter {
                project_id: Some(id.0),
                only_integrations,
                ..Default::default()
            })
        }
        _ => Err(AppError::validation(
            "give either integrationId or projectId",
        )),
    }
}

#[derive(Union)]
pub enum LogStreamItem {
    Log(RequestLogNode),
    Missed(EventsMissed),
}

#[derive(Default)]
pub struct LogsQuery;

#[Object]
impl LogsQuery {
    /// Request logs of an integration or a project, newest first.
    #[graphql(guard = "ScopeGuard(Scope::LogsRead)")]
    #[allow(clippy::too_many_arguments)]
    async fn integration_logs(
        &self,
        ctx: &Context<'_>,
        integration_id: Option<ID>,
        project_id: Option<ID>,
        #[graphql(desc = "This level and above")] level: Option<LogLevel>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        status: Option<i32>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<RequestLogNode>> {
        let caller = principal(ctx)?;
        let page = Page::new("log", first, after)?;
        let mut filter = scope(ctx, caller, integration_id, project_id).await?;
        filter.levels = level.map(LogLevel::and_above);
        filter.status = status;
        filter.since = since.map(|t| t.naive_utc());
        filter.until = until.map(|t| t.naive_utc());
        let rows = store::list(
            &mut *journal_conn(ctx).await?,
            &caller.team_id,
            &filter,
            page.after.as_deref(),
            page.fetch(),
        )
        .await?;
        let total = if asks_total(ctx) {
            Some(store::count(&mut *conn(ctx).await?, &caller.team_id, &filter).await?)
        } else {
            None
        };
        Ok(page.connection(rows, total, |r| &r.id, |r| RequestLogNode(Arc::new(r))))
    }

    /// Totals, success and failure, response times and bytes of an integration's calls
    /// (within log retention; `since` narrows it).
    #[graphql(guard = "ScopeGuard(Scope::LogsRead)")]
    async fn integration_metrics(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        since: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<IntegrationMetrics> {
        let caller = principal(ctx)?;
        let integration = reachable(ctx, caller, &integration_id).await?;
        let mut totals = insight::totals(
            &mut *journal_conn(ctx).await?,
            &caller.team_id,
            std::slice::from_ref(&integration.id),
            since.map(|t| t.naive_utc()),
            true,
        )
        .await?;
        let totals = totals.remove(&integration.id).unwrap_or_default();
        Ok(totals.into())
    }
}

#[derive(Default)]
pub struct LogsSubscription;

#[Subscription]
impl LogsSubscription {
    /// Every new request log of an integration or a project, live, at `minLevel` and above.
    #[graphql(guard = "ScopeGuard(Scope::LogsSubscribe)")]
    async fn integration_logs(
        &self,
        ctx: &Context<'_>,
        integration_id: Option<ID>,
        project_id: Option<ID>,
        min_level: Option<LogLevel>,
    ) -> async_graphql::Result<impl Stream<Item = LogStreamItem> + use<>> {
        let caller = principal(ctx)?;
        let filter = scope(ctx, caller, integration_id, project_id).await?;
        let min_level = min_level.unwrap_or(LogLevel::Info);
        // One integration's logs end when it is deleted.
        let deleted = filter.integration_id.clone();
        let events = watch(ctx, caller).take_while(move |item| {
            let gone = matches!(item, Live::Event(e) if e.kind == EventKind::IntegrationDeleted
                && Some(&e.subject_id) == deleted.as_ref());
            std::future::ready(!gone)
        });
        Ok(events.filter_map(move |item| {
            let out = match item {
                Live::Missed(count) => Some(LogStreamItem::Missed(EventsMissed {
                    count: count.min(i32::MAX as u64) as i32,
                })),
                Live::Event(event) if event.kind == EventKind::IntegrationRequest => event
                    .request_log
                    .clone()
                    .filter(|row| matches(&filter, row) && LogLevel::parse(&row.level) >= min_level)
                    .map(|row| LogStreamItem::Log(RequestLogNode(row))),
                Live::Event(_) => None,
            };
            std::future::ready(out)
        }))
    }
}

fn matches(filter: &LogFilter, row: &RequestLogRow) -> bool {
    filter
        .integration_id
        .as_ref()
        .is_none_or(|id| *id == row.integration_id)
        && filter
            .project_id
            .as_ref()
            .is_none_or(|id| *id == row.project_id)
        && filter
            .only_integrations
            .as_ref()
            .is_none_or(|ids| ids.contains(&row.integration_id))
}
