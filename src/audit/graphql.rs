use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::AuditEventRow;
use super::store::{self, AuditFilter};
use crate::auth::{Scope, ScopeGuard, principal};
use crate::context::{Connection, Page, asks_total, journal_conn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AuditOutcome {
    Success,
    Failure,
}

impl AuditOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

pub struct AuditEventNode(pub AuditEventRow);

#[Object(name = "AuditEvent")]
impl AuditEventNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// `api_key:<id>` or `user:<sub>`.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// The mutation, e.g. `registerIntegration`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn target_type(&self) -> Option<&str> {
        self.0.target_type.as_deref()
    }
    async fn target_id(&self) -> Option<&str> {
        self.0.target_id.as_deref()
    }
    async fn outcome(&self) -> AuditOutcome {
        if self.0.outcome == "success" {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failure
        }
    }
    /// The error code of a failure.
    async fn error_code(&self) -> Option<&str> {
        self.0.error_code.as_deref()
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    /// The id of the HTTP request that made the mutation (`X-Request-Id`, echoed on its
    /// response and on its log lines).
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
}

#[derive(InputObject, Default)]
pub struct AuditFilterInput {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The team's audit events, newest first.
    #[graphql(guard = "ScopeGuard(Scope::AuditRead)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<AuditEventNode>> {
        let caller = principal(ctx)?;
        let page = Page::new("audit", first, after)?;
        let filter = filter.unwrap_or_default();
        let filter = AuditFilter {
            actor: filter.actor,
            action: filter.action,
            target_type: filter.target_type,
            target_id: filter.target_id,
            outcome: filter.outcome.map(|o| o.as_str().to_string()),
            since: filter.since.map(|t| t.naive_utc()),
            until: filter.until.map(|t| t.naive_utc()),
        };
        let rows = store::list(
            &mut *journal_conn(ctx).await?,
            &caller.team_id,
            &filter,
            page.after.as_deref(),
            page.fetch(),
        )
        .await?;
        let total = if asks_total(ctx) {
            Some(store::count(&mut *journal_conn(ctx).await?, &caller.team_id, &filter).await?)
        } else {
            None
        };
        Ok(page.connection(rows, total, |r| &r.id, AuditEventNode))
    }
}
