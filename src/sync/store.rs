//! Queries on `sync_configs`, `sync_runs` and `sync_records`.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::db::schema::{sync_configs, sync_records, sync_runs};
use crate::db::{DbConn, Fetch, Listed};
use crate::error::{AppError, AppResult};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = sync_configs)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_null = true)]
pub struct SyncConfigRow {
    pub id: String,
    pub team_id: String,
    pub project_id: String,
    pub name: String,
    pub source_integration_id: String,
    pub target_integration_id: String,
    pub direction: String,
    /// JSON of `SyncSpec`.
    pub spec: String,
    pub schedule_secs: Option<i64>,
    pub enabled: bool,
    pub last_run_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// JSON array of inbound webhook event types that start a run.
    pub run_on_webhook: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = sync_runs)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct SyncRunRow {
    pub id: String,
    pub team_id: String,
    pub project_id: String,
    pub config_id: String,
    pub status: String,
    pub trigger: String,
    pub records_read: i64,
    pub records_written: i64,
    pub records_skipped: i64,
    pub records_failed: i64,
    /// JSON array of `{key, message}`.
    pub error_samples: String,
    pub error: Option<String>,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    /// Renewed while the run runs; a stale one means nobody runs it any more.
    pub heartbeat_at: Option<NaiveDateTime>,
    /// How many replicas have run it (more than one: taken over after its replica stopped).
    pub attempts: i32,
}

fn conflict_name(name: &str) -> AppError {
    AppError::Conflict(format!(
        "a sync config named `{name}` already exists in this project"
    ))
}

pub async fn insert_config(conn: &mut DbConn, row: &SyncConfigRow) -> AppResult<()> {
    let result = with_conn!(conn, |c| diesel::insert_into(sync_configs::table)
        .values(row)
        .execute(c)
        .await);
    match result.map_err(AppError::from) {
        Err(AppError::Conflict(_)) => Err(conflict_name(&row.name)),
        other => other.map(|_| ()),
    }
}

pub async fn replace_config(conn: &mut DbConn, row: &SyncConfigRow) -> AppResult<()> {
    let result = with_conn!(conn, |c| diesel::update(
        sync_configs::table
            .filter(sync_configs::team_id.eq(&row.team_id))
            .filter(sync_configs::id.eq(&row.id))
    )
    .set(row)
    .execute(c)
    .await);
    match result.map_err(AppError::from) {
        Err(AppError::Conflict(_)) => Err(conflict_name(&row.name)),
        Ok(0) => Err(AppError::not_found("sync config")),
        other => other.map(|_| ()),
    }
}

pub async fn get_config(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<SyncConfigRow> {
    with_conn!(conn, |c| sync_configs::table
        .filter(sync_configs::team_id.eq(team_id))
        .filter(sync_configs::id.eq(id))
        .select(SyncConfigRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("sync config"))
}

pub async fn list_configs(
    conn: &mut DbConn,
    team_id: &str,
    project_id: Option<&str>,
) -> AppResult<Vec<SyncConfigRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = sync_configs::table
            .filter(sync_configs::team_id.eq(team_id))
            .select(SyncConfigRow::as_select())
            .order(sync_configs::id.asc())
            .into_boxed();
        if let Some(project) = project_id {
            query = query.filter(sync_configs::project_id.eq(project.to_string()));
        }
        query.load(c).await
    })?)
}

/// Enabled configs with a schedule (the scheduler picks the due ones).
/// The enabled configs reading from `integration_id` that run on some inbound webhook.
pub async fn configs_on_webhook(
    conn: &mut DbConn,
    integration_id: &str,
) -> AppResult<Vec<SyncConfigRow>> {
    Ok(with_conn!(conn, |c| sync_configs::table
        .filter(sync_configs::source_integration_id.eq(integration_id))
        .filter(sync_configs::enabled.eq(true))
        .filter(sync_configs::run_on_webhook.ne("[]"))
        .select(SyncConfigRow::as_select())
        .load(c)
        .await)?)
}

pub async fn scheduled_configs(conn: &mut DbConn) -> AppResult<Vec<SyncConfigRow>> {
    Ok(with_conn!(conn, |c| sync_configs::table
        .filter(sync_configs::enabled.eq(true))
        .filter(sync_configs::schedule_secs.is_not_null())
        .select(SyncConfigRow::as_select())
        .load(c)
        .await)?)
}

pub async fn delete_config(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<()> {
    let deleted = with_conn!(conn, |c| diesel::delete(
        sync_configs::table
            .filter(sync_configs::team_id.eq(team_id))
            .filter(sync_configs::id.eq(id))
    )
    .execute(c)
    .await)?;
    if deleted == 0 {
        return Err(AppError::not_found("sync config"));
    }
    Ok(())
}

pub async fn set_last_run(conn: &mut DbConn, id: &str, at: NaiveDateTime) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        sync_configs::table.filter(sync_configs::id.eq(id))
    )
    .set(sync_configs::last_run_at.eq(Some(at)))
    .execute(c)
    .await)?;
    Ok(())
}

/// Inserts a queued run; CONFLICT if the config has an active run (the unique index
/// `sync_runs_one_active` decides, whichever replica asks).
pub async fn insert_run(conn: &mut DbConn, row: &SyncRunRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(sync_runs::table)
        .values(row)
        .execute(c)
        .await)
    .map_err(|err| match AppError::from(err) {
        AppError::Conflict(_) => {
            AppError::Conflict("a run of this sync is already in progress".into())
        }
        other => other,
    })?;
    Ok(())
}

/// Claims the schedule's period `[at - every, at]` for this replica: true when this call moved
/// the config's `last_run_at` (no other replica started a run in the period).
pub async fn claim_period(
    conn: &mut DbConn,
    config_id: &str,
    at: NaiveDateTime,
    every: chrono::Duration,
) -> AppResult<bool> {
    let claimed = with_conn!(conn, |c| diesel::update(
        sync_configs::table
            .filter(sync_configs::id.eq(config_id))
            .filter(
                sync_configs::last_run_at
                    .is_null()
                    .or(sync_configs::last_run_at.le(at - every))
            )
    )
    .set(sync_configs::last_run_at.eq(Some(at)))
    .execute(c)
    .await)?;
    Ok(claimed == 1)
}

pub async fn get_run(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<SyncRunRow> {
    with_conn!(conn, |c| sync_runs::table
        .filter(sync_runs::team_id.eq(team_id))
        .filter(sync_runs::id.eq(id))
        .select(SyncRunRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("sync run"))
}

/// Writes a run's status, counts and samples as they are now, if the run is still active and
/// still this holder's (`attempts` is the fencing token: a run taken over by another replica
/// has a higher count). False if it is not: the caller no longer holds the run.
pub async fn save_run(conn: &mut DbConn, run: &SyncRunRow) -> AppResult<bool> {
    let saved = with_conn!(conn, |c| diesel::update(
        sync_runs::table
            .filter(sync_runs::id.eq(&run.id))
            .filter(sync_runs::attempts.eq(run.attempts))
            .filter(sync_runs::status.eq_any(["queued", "running"]))
    )
    .set((
        sync_runs::status.eq(&run.status),
        sync_runs::records_read.eq(run.records_read),
        sync_runs::records_written.eq(run.records_written),
        sync_runs::records_skipped.eq(run.records_skipped),
        sync_runs::records_failed.eq(run.records_failed),
        sync_runs::error_samples.eq(&run.error_samples),
        sync_runs::error.eq(&run.error),
        sync_runs::started_at.eq(run.started_at),
        sync_runs::finished_at.eq(run.finished_at),
    ))
    .execute(c)
    .await)?;
    Ok(saved == 1)
}

/// Is a run of this config queued or running?
pub async fn has_active_run(conn: &mut DbConn, config_id: &str) -> AppResult<bool> {
    let count: i64 = with_conn!(conn, |c| sync_runs::table
        .filter(sync_runs::config_id.eq(config_id))
        .filter(sync_runs::status.eq_any(["queued", "running"]))
        .count()
        .get_result(c)
        .await)?;
    Ok(count > 0)
}

/// Renews a running run's lease for its holder (`attempts`, as in `save_run`). False if the
/// run is no longer the holder's: taken over by another replica, or cancelled from one.
pub async fn heartbeat(
    conn: &mut DbConn,
    run_id: &str,
    attempts: i32,
    at: NaiveDateTime,
) -> AppResult<bool> {
    let renewed = with_conn!(conn, |c| diesel::update(
        sync_runs::table
            .filter(sync_runs::id.eq(run_id))
            .filter(sync_runs::attempts.eq(attempts))
            .filter(sync_runs::status.eq_any(["queued", "running"]))
            // A lease given back at a stop stays given back: a renewal that was on its way
            // when the replica stopped must not hold the run for another lease.
            .filter(
                sync_runs::heartbeat_at
                    .is_null()
                    .or(sync_runs::heartbeat_at.ne(released_at())),
            )
    )
    .set(sync_runs::heartbeat_at.eq(Some(at)))
    .execute(c)
    .await)?;
    Ok(renewed == 1)
}

/// A run's lease ran out before `cutoff` (a run never renewed counts from its creation).
type LeaseRanOut = diesel::dsl::Or<
    diesel::dsl::Lt<sync_runs::heartbeat_at, NaiveDateTime>,
    diesel::dsl::And<
        diesel::dsl::IsNull<sync_runs::heartbeat_at>,
        diesel::dsl::Lt<sync_runs::created_at, NaiveDateTime>,
    >,
>;

fn lease_ran_out(cutoff: NaiveDateTime) -> LeaseRanOut {
    sync_runs::heartbeat_at
        .lt(cutoff)
        .or(sync_runs::heartbeat_at
            .is_null()
            .and(sync_runs::created_at.lt(cutoff)))
}

/// Runs queued or running whose lease ran out before `cutoff`, that this replica is not
/// running (`running_here`), oldest first, at most `limit`.
pub async fn stale_runs(
    conn: &mut DbConn,
    cutoff: NaiveDateTime,
    running_here: &[String],
    limit: i64,
) -> AppResult<Vec<SyncRunRow>> {
    Ok(with_conn!(conn, |c| sync_runs::table
        .filter(sync_runs::status.eq_any(["queued", "running"]))
        .filter(lease_ran_out(cutoff))
        .filter(sync_runs::id.ne_all(running_here))
        .order(sync_runs::id.asc())
        .limit(limit)
        .select(SyncRunRow::as_select())
        .load(c)
        .await)?)
}

/// Claims a run whose lease ran out before `cutoff`: its heartbeat renewed to `at` and its
/// attempts counted, if no other replica claimed it first (a conditional update). True if
/// this replica now holds it.
pub async fn take_over(
    conn: &mut DbConn,
    run_id: &str,
    cutoff: NaiveDateTime,
    at: NaiveDateTime,
) -> AppResult<bool> {
    let claimed = with_conn!(conn, |c| diesel::update(
        sync_runs::table
            .filter(sync_runs::id.eq(run_id))
            .filter(sync_runs::status.eq_any(["queued", "running"]))
            .filter(lease_ran_out(cutoff))
    )
    .set((
        sync_runs::heartbeat_at.eq(Some(at)),
        sync_runs::attempts.eq(sync_runs::attempts + 1),
    ))
    .execute(c)
    .await)?;
    Ok(claimed == 1)
}

/// Gives back the leases of runs `ids` (this replica's, at a graceful stop) at once: another
/// replica takes them over at its next check instead of waiting for them to run out.
pub async fn release_runs(conn: &mut DbConn, ids: &[String]) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::update(
        sync_runs::table
            .filter(sync_runs::id.eq_any(ids))
            .filter(sync_runs::status.eq_any(["queued", "running"]))
    )
    .set(sync_runs::heartbeat_at.eq(Some(released_at())))
    .execute(c)
    .await)?)
}

/// The heartbeat of a run whose lease was given back: long ago, so any replica takes it over.
fn released_at() -> NaiveDateTime {
    chrono::DateTime::UNIX_EPOCH.naive_utc()
}

/// Runs `ids` marked interrupted with `reason` if still queued or running (runs taken over
/// that cannot go on).
pub async fn interrupt_runs(
    conn: &mut DbConn,
    ids: &[String],
    reason: &str,
    at: NaiveDateTime,
) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::update(
        sync_runs::table
            .filter(sync_runs::id.eq_any(ids))
            .filter(sync_runs::status.eq_any(["queued", "running"]))
    )
    .set((
        sync_runs::status.eq("interrupted"),
        sync_runs::finished_at.eq(Some(at)),
        sync_runs::error.eq(Some(reason)),
    ))
    .execute(c)
    .await)?)
}

#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub config_id: Option<String>,
    pub project_id: Option<String>,
    pub status: Option<String>,
}

pub async fn list_runs(
    conn: &mut DbConn,
    team_id: &str,
    filter: &RunFilter,
    before_id: Option<&str>,
    limit: i64,
) -> AppResult<Vec<SyncRunRow>> {
    let fetch = Fetch::Page {
        after: before_id,
        limit,
    };
    Ok(select_list_runs(conn, team_id, filter, fetch).await?.rows())
}

/// How many rows [`list_runs`] would give over all pages.
pub async fn count_runs(conn: &mut DbConn, team_id: &str, filter: &RunFilter) -> AppResult<i64> {
    Ok(select_list_runs(conn, team_id, filter, Fetch::Count)
        .await?
        .count())
}

/// The one place the filters are applied: for a page, or for the count.
async fn select_list_runs(
    conn: &mut DbConn,
    team_id: &str,
    filter: &RunFilter,
    fetch: Fetch<'_>,
) -> AppResult<Listed<SyncRunRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = sync_runs::table
            .filter(sync_runs::team_id.eq(team_id))
            .into_boxed();
        if let Some(id) = &filter.config_id {
            query = query.filter(sync_runs::config_id.eq(id.clone()));
        }
        if let Some(id) = &filter.project_id {
            query = query.filter(sync_runs::project_id.eq(id.clone()));
        }
        if let Some(status) = &filter.status {
            query = query.filter(sync_runs::status.eq(status.clone()));
        }
        crate::page_or_count!(query, c, fetch, SyncRunRow, sync_runs::id, lt, desc)
    })?)
}

/// Fingerprints of what was last seen or written on each side, by record key.
pub async fn fingerprints(
    conn: &mut DbConn,
    config_id: &str,
) -> AppResult<HashMap<String, (Option<String>, Option<String>)>> {
    let rows: Vec<(String, Option<String>, Option<String>)> =
        with_conn!(conn, |c| sync_records::table
            .filter(sync_records::config_id.eq(config_id))
            .select((
                sync_records::record_key,
                sync_records::source_fp,
                sync_records::target_fp
            ))
            .load(c)
            .await)?;
    Ok(rows.into_iter().map(|(k, s, t)| (k, (s, t))).collect())
}

/// Saves many fingerprints in one transaction (one statement per row on SQLite, one batch on
/// PostgreSQL); of a key given twice, the last.
pub async fn save_fingerprints(
    conn: &mut DbConn,
    config_id: &str,
    entries: &[(String, Option<String>, Option<String>)],
    at: NaiveDateTime,
) -> AppResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    // One row per record key, the last given: PostgreSQL refuses an upsert that touches a
    // row twice, and a page (or writes committed together) may hold a key twice.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (key, _, _)) in entries.iter().enumerate() {
        last.insert(key.as_str(), i);
    }
    let rows: Vec<_> = entries
        .iter()
        .enumerate()
        .filter(|(i, (key, _, _))| last.get(key.as_str()) == Some(i))
        .map(|(_, (key, source_fp, target_fp))| {
            (
                sync_records::config_id.eq(config_id),
                sync_records::record_key.eq(key.as_str()),
                sync_records::source_fp.eq(source_fp.as_deref()),
                sync_records::target_fp.eq(target_fp.as_deref()),
                sync_records::updated_at.eq(at),
            )
        })
        .collect();
    match conn {
        DbConn::Postgres(c) => {
            for chunk in rows.chunks(1000) {
                diesel::insert_into(sync_records::table)
                    .values(chunk)
                    .on_conflict((sync_records::config_id, sync_records::record_key))
                    .do_update()
                    .set((
                        sync_records::source_fp.eq(excluded(sync_records::source_fp)),
                        sync_records::target_fp.eq(excluded(sync_records::target_fp)),
                        sync_records::updated_at.eq(excluded(sync_records::updated_at)),
                    ))
                    .execute(&mut **c)
                    .await?;
            }
        }
        DbConn::Sqlite(c) => {
            c.transaction(async |c| {
                for row in &rows {
                    diesel::insert_into(sync_records::table)
                        .values(*row)
                        .on_conflict((sync_records::config_id, sync_records::record_key))
                        .do_update()
                        .set((
                            sync_records::source_fp.eq(excluded(sync_records::source_fp)),
                            sync_records::target_fp.eq(excluded(sync_records::target_fp)),
                            sync_records::updated_at.eq(excluded(sync_records::updated_at)),
                        ))
                        .execute(c)
                        .await?;
                }
                Ok::<_, diesel::result::Error>(())
            })
            .await?;
        }
    }
    Ok(())
}
