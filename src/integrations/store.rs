//! Queries on `integrations`, each confined to one team.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::model::{IntegrationChanges, IntegrationFilter, IntegrationRow};
use crate::db::schema::integrations;
use crate::db::{DbConn, Fetch, Listed};
use crate::error::{AppError, AppResult};
use crate::with_conn;

fn name_taken(name: &str) -> AppError {
    AppError::Conflict(format!(
        "an integration named `{name}` already exists in this project"
    ))
}

pub async fn insert(conn: &mut DbConn, row: &IntegrationRow) -> AppResult<()> {
    let result = with_conn!(conn, |c| diesel::insert_into(integrations::table)
        .values(row)
        .execute(c)
        .await);
    match result.map_err(AppError::from) {
        Err(AppError::Conflict(_)) => Err(name_taken(&row.name)),
        other => other.map(|_| ()),
    }
}

pub async fn get(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<IntegrationRow> {
    with_conn!(conn, |c| integrations::table
        .filter(integrations::team_id.eq(team_id))
        .filter(integrations::id.eq(id))
        .select(IntegrationRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("integration"))
}

/// One page in id (creation) order after `after_id`; fetches `limit` rows.
pub async fn list(
    conn: &mut DbConn,
    team_id: &str,
    project_id: &str,
    filter: &IntegrationFilter,
    after_id: Option<&str>,
    limit: i64,
) -> AppResult<Vec<IntegrationRow>> {
    let fetch = Fetch::Page {
        after: after_id,
        limit,
    };
    Ok(select_list(conn, team_id, project_id, filter, fetch)
        .await?
        .rows())
}

/// How many rows [`list`] would give over all pages.
pub async fn count(
    conn: &mut DbConn,
    team_id: &str,
    project_id: &str,
    filter: &IntegrationFilter,
) -> AppResult<i64> {
    Ok(select_list(conn, team_id, project_id, filter, Fetch::Count)
        .await?
        .count())
}

/// The one place the filters are applied: for a page, or for the count.
async fn select_list(
    conn: &mut DbConn,
    team_id: &str,
    project_id: &str,
    filter: &IntegrationFilter,
    fetch: Fetch<'_>,
) -> AppResult<Listed<IntegrationRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = integrations::table
            .filter(integrations::team_id.eq(team_id))
            .filter(integrations::project_id.eq(project_id))
            .into_boxed();
        if let Some(keys) = &filter.provider_keys {
            query = query.filter(integrations::provider_key.eq_any(keys.clone()));
        }
        if let Some(status) = filter.status {
            query = query.filter(integrations::status.eq(status.as_str()));
        }
        if let Some(enabled) = filter.enabled {
            query = query.filter(integrations::enabled.eq(enabled));
        }
        if let Some(ids) = &filter.only_ids {
            query = query.filter(integrations::id.eq_any(ids.clone()));
        }
        crate::page_or_count!(query, c, fetch, IntegrationRow, integrations::id, gt, asc)
    })?)
}

pub async fn update(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    changes: &IntegrationChanges,
) -> AppResult<IntegrationRow> {
    let updated = with_conn!(conn, |c| diesel::update(
        integrations::table
            .filter(integrations::team_id.eq(team_id))
            .filter(integrations::id.eq(id))
    )
    .set(changes)
    .execute(c)
    .await)
    .map_err(AppError::from);
    match updated {
        Err(AppError::Conflict(_)) => Err(name_taken(changes.name.as_deref().unwrap_or_default())),
        Ok(0) => Err(AppError::not_found("integration")),
        Ok(_) => get(conn, team_id, id).await,
        Err(other) => Err(other),
    }
}

pub async fn delete(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<()> {
    let deleted = with_conn!(conn, |c| diesel::delete(
        integrations::table
            .filter(integrations::team_id.eq(team_id))
            .filter(integrations::id.eq(id))
    )
    .execute(c)
    .await)?;
    if deleted == 0 {
        return Err(AppError::not_found("integration"));
    }
    Ok(())
}

/// Integrations whose credentials are sealed under a key other than `active_key_id`
/// (of one team, or of all teams when `team_id` is None), at most `limit`.
pub async fn sealed_under_other_keys(
    conn: &mut DbConn,
    team_id: Option<&str>,
    active_key_id: &str,
    limit: i64,
) -> AppResult<Vec<IntegrationRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = integrations::table
            .filter(integrations::credentials_sealed.is_not_null())
            .filter(integrations::credentials_key_id.ne(active_key_id))
            .select(IntegrationRow::as_select())
            .order(integrations::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(team) = team_id {
            query = query.filter(integrations::team_id.eq(team.to_string()));
        }
        query.load(c).await
    })?)
}

/// Replaces sealed credentials only if they are still sealed under `old_key_id` (a concurrent
/// rotation wins); returns whether the row changed.
pub async fn replace_sealed(
    conn: &mut DbConn,
    id: &str,
    old_key_id: &str,
    new_key_id: &str,
    sealed: &str,
) -> AppResult<bool> {
    let changed = with_conn!(conn, |c| diesel::update(
        integrations::table
            .filter(integrations::id.eq(id))
            .filter(integrations::credentials_key_id.eq(old_key_id))
    )
    .set((
        integrations::credentials_sealed.eq(sealed),
        integrations::credentials_key_id.eq(new_key_id),
    ))
    .execute(c)
    .await)?;
    Ok(changed == 1)
}

/// Every integration of a project (for statistics).
pub async fn all_in_project(
    conn: &mut DbConn,
    team_id: &str,
    project_id: &str,
) -> AppResult<Vec<IntegrationRow>> {
    Ok(with_conn!(conn, |c| integrations::table
        .filter(integrations::team_id.eq(team_id))
        .filter(integrations::project_id.eq(project_id))
        .select(IntegrationRow::as_select())
        .load(c)
        .await)?)
}

/// The project of each of these integrations of the team (unknown ids are left out).
pub async fn projects_of(
    conn: &mut DbConn,
    team_id: &str,
    ids: &[String],
) -> AppResult<std::collections::HashMap<String, String>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let pairs: Vec<(String, String)> = with_conn!(conn, |c| integrations::table
        .filter(integrations::team_id.eq(team_id))
        .filter(integrations::id.eq_any(ids))
        .select((integrations::id, integrations::project_id))
        .load(c)
        .await)?;
    Ok(pairs.into_iter().collect())
}

/// One sealed value per key id the store uses, across all teams: (key id, integration id,
/// sealed text). What the start checks its keys against.
pub async fn sealed_samples(conn: &mut DbConn) -> AppResult<Vec<(String, String, String)>> {
    let key_ids: Vec<Option<String>> = with_conn!(conn, |c| integrations::table
        .filter(integrations::credentials_sealed.is_not_null())
        .select(integrations::credentials_key_id)
        .distinct()
        .load(c)
        .await)?;
    let mut samples = Vec::new();
    for key_id in key_ids.into_iter().flatten() {
        let sample: Option<(String, Option<String>)> = with_conn!(conn, |c| integrations::table
            .filter(integrations::credentials_key_id.eq(&key_id))
            .filter(integrations::credentials_sealed.is_not_null())
            .select((integrations::id, integrations::credentials_sealed))
            .first(c)
            .await
            .optional())?;
        if let Some((id, Some(sealed))) = sample {
            samples.push((key_id, id, sealed));
        }
    }
    Ok(samples)
}

/// Sets the integration's `lastError` (its status is left alone).
pub async fn set_last_error(conn: &mut DbConn, id: &str, message: &str) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        integrations::table.filter(integrations::id.eq(id))
    )
    .set(integrations::last_error.eq(message))
    .execute(c)
    .await)?;
    Ok(())
}
