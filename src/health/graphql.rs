use async_graphql::{Context, ID, Object, SimpleObject, Subscription, Union};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};

use super::window_stats;
use crate::auth::{Scope, ScopeGuard, principal};
use crate::context::live::{EventsMissed, Live, watch};
use crate::context::{conn, journal_conn, state};
use crate::events::EventKind;
use crate::integrations::graphql::{IntegrationNode, reachable};
use crate::integrations::insight::IntegrationHealth;
use crate::integrations::model::IntegrationStatus;
use crate::providers::{self, ProviderCategory};

#[derive(SimpleObject)]
pub struct CategoryCount {
    pub category: ProviderCategory,
    pub count: i64,
}

#[derive(SimpleObject)]
pub struct StatusCount {
    pub status: IntegrationStatus,
    pub count: i64,
}

#[derive(SimpleObject)]
pub struct ProjectStatistics {
    pub total_integrations: i64,
    pub by_category: Vec<CategoryCount>,
    pub by_status: Vec<StatusCount>,
    /// Connected integrations.
    pub healthy: i64,
    /// Degraded, disconnected or failing integrations.
    pub unhealthy: i64,
    pub total_requests: i64,
    pub average_response_ms: Option<f64>,
}

#[derive(SimpleObject, Clone)]
pub struct HealthChange {
    pub integration_id: ID,
    pub previous: IntegrationStatus,
    pub status: IntegrationStatus,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Union)]
pub enum HealthStreamItem {
    Change(HealthChange),
    Missed(EventsMissed),
}

#[derive(Default)]
pub struct HealthQuery;

#[Object]
impl HealthQuery {
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn integration_health(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
    ) -> async_graphql::Result<IntegrationHealth> {
        let caller = principal(ctx)?;
        let integration = reachable(ctx, caller, &integration_id).await?;
        let stats = window_stats(state(ctx), &integration).await?;
        Ok(IntegrationHealth::new(state(ctx), &integration, &stats))
    }

    /// Counts by category and status, health, and request totals of a project's integrations.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn project_statistics(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
    ) -> async_graphql::Result<ProjectStatistics> {
        let caller = principal(ctx)?;
        caller.check_project(&project_id)?;
        let mut db = journal_conn(ctx).await?;
        crate::projects::store::get(&mut db, &caller.team_id, &project_id).await?;
        let rows =
            crate::integrations::store::all_in_project(&mut db, &caller.team_id, &project_id)
                .await?;
        let mut by_category: Vec<CategoryCount> = Vec::new();
        let mut by_status: Vec<StatusCount> = Vec::new();
        for row in &rows {
            if let Some(provider) = providers::find(&row.provider_key) {
                match by_category
                    .iter_mut()
                    .find(|c| c.category == provider.category)
                {
                    Some(entry) => entry.count += 1,
                    None => by_category.push(CategoryCount {
                        category: provider.category,
                        count: 1,
                    }),
                }
            }
            let status = IntegrationStatus::parse(&row.status);
            match by_status.iter_mut().find(|c| c.status == status) {
                Some(entry) => entry.count += 1,
                None => by_status.push(StatusCount { status, count: 1 }),
            }
        }
        let healthy = rows
            .iter()
            .filter(|r| r.status == IntegrationStatus::Connected.as_str())
            .count() as i64;
        let unhealthy = rows
            .iter()
            .filter(|r| {
                matches!(
                    IntegrationStatus::parse(&r.status),
                    IntegrationStatus::Degraded
                        | IntegrationStatus::Disconnected
                        | IntegrationStatus::Error
                )
            })
            .count() as i64;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let per_integration =
            crate::integrations::insight::totals(&mut db, &caller.team_id, &ids, None, false)
                .await?;
        let (requests, duration_ms) = per_integration
            .values()
            .fold((0, 0), |(n, ms), t| (n + t.total, ms + t.duration_ms));
        Ok(ProjectStatistics {
            total_integrations: rows.len() as i64,
            by_category,
            by_status,
            healthy,
            unhealthy,
            total_requests: requests,
            average_response_ms: (requests > 0).then(|| duration_ms as f64 / requests as f64),
        })
    }
}

#[derive(Default)]
pub struct HealthSubscription;

#[Subscription]
impl HealthSubscription {
    /// Every change of an integration's health status in the project, live.
    #[graphql(guard = "ScopeGuard(Scope::LogsSubscribe)")]
    async fn integration_health_changed(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = HealthStreamItem> + use<>> {
        let caller = principal(ctx)?;
        caller.check_project(&project_id)?;
        crate::projects::store::get(&mut *conn(ctx).await?, &caller.team_id, &project_id).await?;
        let project = project_id.0;
        Ok(watch(ctx, caller).filter_map(move |item| {
            let out = match item {
                Live::Missed(count) => Some(HealthStreamItem::Missed(EventsMissed {
                    count: count.min(i32::MAX as u64) as i32,
                })),
                Live::Event(event)
                    if event.kind == EventKind::IntegrationHealthChanged
                        && event.project_id.as_deref() == Some(project.as_str()) =>
                {
                    Some(HealthStreamItem::Change(HealthChange {
                        integration_id: ID(event.subject_id.clone()),
                        previous: IntegrationStatus::parse(
                            event.payload["previous"].as_str().unwrap_or_default(),
                        ),
                        status: IntegrationStatus::parse(
                            event.payload["status"].as_str().unwrap_or_default(),
                        ),
                        error: event.payload["error"].as_str().map(str::to_string),
                        at: event.at.and_utc(),
                    }))
                }
                Live::Event(_) => None,
            };
            std::future::ready(out)
        }))
    }
}

#[derive(SimpleObject)]
pub struct TestConnectionResult {
    pub ok: bool,
    /// The upstream's status code, when it answered.
    pub status: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// The integration after the check (status, last error).
    pub integration: IntegrationNode,
}

#[derive(Default)]
pub struct HealthMutation;

#[Object]
impl HealthMutation {
    /// Runs the provider's health request now and updates the integration's status.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsExecute)")]
    async fn test_connection(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
    ) -> async_graphql::Result<TestConnectionResult> {
        let caller = principal(ctx)?;
        crate::audit::target(ctx, "integration", &integration_id);
        let integration = reachable(ctx, caller, &integration_id).await?;
        let (outcome, updated) =
            crate::health::run_check(state(ctx), &integration, &caller.actor.label()).await?;
        Ok(TestConnectionResult {
            ok: outcome.ok,
            status: outcome.status.map(i32::from),
            duration_ms: outcome.duration_ms.min(i32::MAX as i64) as i32,
            error: outcome.error,
            integration: IntegrationNode::one(updated),
        })
    }
}
