use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::DbConn;
use crate::db::schema::{health_checks, integrations};
use crate::error::{AppError, AppResult};
use crate::integrations::model::{IntegrationRow, IntegrationStatus};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = health_checks)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct HealthCheckRow {
    pub id: String,
    pub integration_id: String,
    pub ok: bool,
    pub status: Option<i32>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub checked_at: NaiveDateTime,
}

pub async fn insert(conn: &mut DbConn, row: &HealthCheckRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(health_checks::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub async fn record_status(
    conn: &mut DbConn,
    integration_id: &str,
    status: IntegrationStatus,
    last_error: Option<String>,
    at: NaiveDateTime,
    response_ms: i64,
    consecutive_failures: i32,
) -> AppResult<IntegrationRow> {
    with_conn!(conn, |c| diesel::update(
        integrations::table.filter(integrations::id.eq(integration_id))
    )
    .set((
        integrations::status.eq(status.as_str()),
        integrations::last_error.eq(&last_error),
        integrations::last_check_at.eq(Some(at)),
        integrations::last_response_ms.eq(Some(response_ms)),
        integrations::consecutive_failures.eq(consecutive_failures),
    ))
    .execute(c)
    .await)?;
    with_conn!(conn, |c| integrations::table
        .filter(integrations::id.eq(integration_id))
        .select(IntegrationRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("integration"))
}

/// Enabled integrations not checked since `before`, oldest first.
pub async fn due(
    conn: &mut DbConn,
    before: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<IntegrationRow>> {
    Ok(with_conn!(conn, |c| integrations::table
        .filter(integrations::enabled.eq(true))
        .filter(
            integrations::last_check_at
                .is_null()
                .or(integrations::last_check_at.lt(before))
        )
        .select(IntegrationRow::as_select())
        .order(integrations::last_check_at.asc())
        .limit(limit)
        .load(c)
        .await)?)
}

/// Claims integration `id`'s due check for this replica: true when this call moved its
/// `last_check_at` to `at` (it was still before `before`). With several replicas each lists
/// the integration as due; the one whose update lands checks it, the others skip it.
pub async fn claim_check(
    conn: &mut DbConn,
    id: &str,
    before: NaiveDateTime,
    at: NaiveDateTime,
) -> AppResult<bool> {
    let claimed = with_conn!(conn, |c| diesel::update(
        integrations::table.filter(integrations::id.eq(id)).filter(
            integrations::last_check_at
                .is_null()
                .or(integrations::last_check_at.lt(before))
        )
    )
    .set(integrations::last_check_at.eq(Some(at)))
    .execute(c)
    .await)?;
    Ok(claimed == 1)
}

pub async fn prune(conn: &mut DbConn, cutoff: NaiveDateTime) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::delete(
        health_checks::table.filter(health_checks::checked_at.lt(cutoff))
    )
    .execute(c)
    .await)?)
}
