use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::AuditEventRow;
use crate::db::schema::audit_events;
use crate::db::{DbConn, Fetch, Listed};
use crate::error::AppResult;
use crate::with_conn;

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
}

/// Newest first; `before_id` continues a previous page.
pub async fn list(
    conn: &mut DbConn,
    team_id: &str,
    filter: &AuditFilter,
    before_id: Option<&str>,
    limit: i64,
) -> AppResult<Vec<AuditEventRow>> {
    let fetch = Fetch::Page {
        after: before_id,
        limit,
    };
    Ok(select_list(conn, team_id, filter, fetch).await?.rows())
}

/// How many rows [`list`] would give over all pages.
pub async fn count(conn: &mut DbConn, team_id: &str, filter: &AuditFilter) -> AppResult<i64> {
    Ok(select_list(conn, team_id, filter, Fetch::Count)
        .await?
        .count())
}

/// The one place the filters are applied: for a page, or for the count.
async fn select_list(
    conn: &mut DbConn,
    team_id: &str,
    filter: &AuditFilter,
    fetch: Fetch<'_>,
) -> AppResult<Listed<AuditEventRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = audit_events::table
            .filter(audit_events::team_id.eq(team_id))
            .into_boxed();
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_events::actor.eq(actor.clone()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_events::action.eq(action.clone()));
        }
        if let Some(target_type) = &filter.target_type {
            query = query.filter(audit_events::target_type.eq(target_type.clone()));
        }
        if let Some(target_id) = &filter.target_id {
            query = query.filter(audit_events::target_id.eq(target_id.clone()));
        }
        if let Some(outcome) = &filter.outcome {
            query = query.filter(audit_events::outcome.eq(outcome.clone()));
        }
        if let Some(since) = filter.since {
            query = query.filter(audit_events::created_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit_events::created_at.lt(until));
        }
        crate::page_or_count!(query, c, fetch, AuditEventRow, audit_events::id, lt, desc)
    })?)
}

/// Stores one audit row (inside a mutation's transaction).
pub async fn insert(conn: &mut DbConn, row: &AuditEventRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(audit_events::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}
