//! Queries on `request_logs`.

use chrono::NaiveDateTime;
use diesel::dsl::{count_star, max, sql};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
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

/// Aggregates over the logs of some integrations since a time.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub total: i64,
    pub successful: i64,
    /// Calls that say the integration is unwell: no answer (transport failure, timeout,
    /// refused destination), a 5xx, or the credentials refused (401, 403). Other 4xx answers
    /// are about the caller's request, not the integration.
    pub unhealthy: i64,
    pub duration_ms: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub last_activity: Option<NaiveDateTime>,
    pub p95_ms: Option<i64>,
}

pub async fn totals(
    conn: &mut DbConn,
    team_id: &str,
    integration_ids: &[String],
    since: Option<NaiveDateTime>,
) -> AppResult<Totals> {
    let since = since.unwrap_or_default();
    let ids = integration_ids.to_vec();
    let (total, (successful, unhealthy), duration_ms, bytes_in, bytes_out, last_activity) = with_conn!(
        conn,
        |c| {
            request_logs::table
        .filter(request_logs::team_id.eq(team_id))
        .filter(request_logs::integration_id.eq_any(ids.clone()))
        .filter(request_logs::created_at.ge(since))
        .select((
            count_star(),
            (
                sql::<BigInt>("CAST(COALESCE(SUM(CASE WHEN status < 400 AND error IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT)"),
                sql::<BigInt>("CAST(COALESCE(SUM(CASE WHEN error IS NOT NULL OR status IS NULL OR status >= 500 OR status IN (401, 403) THEN 1 ELSE 0 END), 0) AS BIGINT)"),
            ),
            sql::<BigInt>("CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT)"),
            sql::<BigInt>("CAST(COALESCE(SUM(bytes_in), 0) AS BIGINT)"),
            sql::<BigInt>("CAST(COALESCE(SUM(bytes_out), 0) AS BIGINT)"),
            max(request_logs::created_at),
        ))
        .get_result::<(i64, (i64, i64), i64, i64, i64, Option<NaiveDateTime>)>(c)
        .await
        }
    )?;
    let p95_ms = if total == 0 {
        None
    } else {
        let offset = ((total - 1) as f64 * 0.95).floor() as i64;
        with_conn!(conn, |c| request_logs::table
            .filter(request_logs::team_id.eq(team_id))
            .filter(request_logs::integration_id.eq_any(ids.clone()))
            .filter(request_logs::created_at.ge(since))
            .select(request_logs::duration_ms)
            .order(request_logs::duration_ms.asc())
            .offset(offset)
            .limit(1)
            .first::<i64>(c)
            .await
            .optional())?
    };
    Ok(Totals {
        total,
        successful,
        unhealthy,
        duration_ms,
        bytes_in,
        bytes_out,
        last_activity,
        p95_ms,
    })
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
