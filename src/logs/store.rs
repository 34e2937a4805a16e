//! Queries on `request_logs`.

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::RequestLogRow;
use crate::db::schema::request_logs;
use crate::db::{DbConn, Fetch, Listed};
use crate::error::AppResult;
use crate::with_conn;

/// Which logs to list: of one integration or a whole project, narrowed further.
#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    pub integration_id: Option<String>,
    pub project_id: Option<String>,
    /// Only these integrations (a key limited to named integrations).
    pub only_integrations: Option<Vec<String>>,
    pub levels: Option<Vec<&'static str>>,
    pub status: Option<i32>,
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
}

/// Newest first; `before_id` continues a previous page.
pub async fn list(
    conn: &mut DbConn,
    team_id: &str,
    filter: &LogFilter,
    before_id: Option<&str>,
    limit: i64,
) -> AppResult<Vec<RequestLogRow>> {
    let fetch = Fetch::Page {
        after: before_id,
        limit,
    };
    Ok(select_list(conn, team_id, filter, fetch).await?.rows())
}

/// How many rows [`list`] would give over all pages.
pub async fn count(conn: &mut DbConn, team_id: &str, filter: &LogFilter) -> AppResult<i64> {
    Ok(select_list(conn, team_id, filter, Fetch::Count)
        .await?
        .count())
}

/// The one place the filters are applied: for a page, or for the count.
async fn select_list(
    conn: &mut DbConn,
    team_id: &str,
    filter: &LogFilter,
    fetch: Fetch<'_>,
) -> AppResult<Listed<RequestLogRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = request_logs::table
            .filter(request_logs::team_id.eq(team_id))
            .into_boxed();
        if let Some(id) = &filter.integration_id {
            query = query.filter(request_logs::integration_id.eq(id.clone()));
        }
        if let Some(id) = &filter.project_id {
            query = query.filter(request_logs::project_id.eq(id.clone()));
        }
        if let Some(ids) = &filter.only_integrations {
            query = query.filter(request_logs::integration_id.eq_any(ids.clone()));
        }
        if let Some(levels) = &filter.levels {
            query = query.filter(request_logs::level.eq_any(levels.clone()));
        }
        if let Some(status) = filter.status {
            query = query.filter(request_logs::status.eq(status));
        }
        if let Some(since) = filter.since {
            query = query.filter(request_logs::created_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(request_logs::created_at.lt(until));
        }
        crate::page_or_count!(query, c, fetch, RequestLogRow, request_logs::id, lt, desc)
    })?)
}

/// Drops logs older than `cutoff` (by their time-ordered ids: the primary key is the only
/// index this needs), then all but the newest `keep` of each integration.
pub async fn prune(conn: &mut DbConn, cutoff: NaiveDateTime, keep: i64) -> AppResult<usize> {
    let first_kept = crate::db::first_id_at(cutoff);
    let mut removed = with_conn!(conn, |c| diesel::delete(
        request_logs::table.filter(request_logs::id.lt(&first_kept))
    )
    .execute(c)
    .await)?;
    let crowded: Vec<String> = with_conn!(conn, |c| request_logs::table
        .group_by(request_logs::integration_id)
        .having(count_star().gt(keep))
        .select(request_logs::integration_id)
        .load(c)
        .await)?;
    for integration in crowded {
        let boundary: Option<String> = with_conn!(conn, |c| request_logs::table
            .filter(request_logs::integration_id.eq(&integration))
            .select(request_logs::id)
            .order(request_logs::id.desc())
            .offset(keep)
            .limit(1)
            .first(c)
            .await
            .optional())?;
        if let Some(boundary) = boundary {
            removed += with_conn!(conn, |c| diesel::delete(
                request_logs::table
                    .filter(request_logs::integration_id.eq(&integration))
                    .filter(request_logs::id.le(&boundary))
            )
            .execute(c)
            .await)?;
        }
    }
    Ok(removed)
}
