//! Queries on `projects`, each confined to one team.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{ProjectChanges, ProjectRow};
use crate::db::DbConn;
use crate::db::schema::projects;
use crate::error::{AppError, AppResult};
use crate::with_conn;

pub async fn insert(conn: &mut DbConn, row: &ProjectRow) -> AppResult<()> {
    let result = with_conn!(conn, |c| diesel::insert_into(projects::table)
        .values(row)
        .execute(c)
        .await);
    match result.map_err(AppError::from) {
        Err(AppError::Conflict(_)) => Err(AppError::Conflict(format!(
            "a project named `{}` already exists",
            row.name
        ))),
        other => other.map(|_| ()),
    }
}

pub async fn list(conn: &mut DbConn, team_id: &str) -> AppResult<Vec<ProjectRow>> {
    Ok(with_conn!(conn, |c| projects::table
        .filter(projects::team_id.eq(team_id))
        .order(projects::id.asc())
        .select(ProjectRow::as_select())
        .load(c)
        .await)?)
}

/// The project if it exists in this team; NOT_FOUND otherwise (also for other teams').
pub async fn get(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<ProjectRow> {
    with_conn!(conn, |c| projects::table
        .filter(projects::team_id.eq(team_id))
        .filter(projects::id.eq(id))
        .select(ProjectRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("project"))
}

pub async fn update(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    changes: &ProjectChanges,
) -> AppResult<ProjectRow> {
    let updated = with_conn!(conn, |c| diesel::update(
        projects::table
            .filter(projects::team_id.eq(team_id))
            .filter(projects::id.eq(id))
    )
    .set(changes)
    .execute(c)
    .await)
    .map_err(AppError::from);
    match updated {
        Err(AppError::Conflict(_)) => Err(AppError::Conflict(
            "a project with that name already exists".into(),
        )),
        Ok(0) => Err(AppError::not_found("project")),
        Ok(_) => get(conn, team_id, id).await,
        Err(other) => Err(other),
    }
}

/// Deletes the project and (by cascade) its integrations.
pub async fn delete(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<()> {
    let deleted = with_conn!(conn, |c| diesel::delete(
        projects::table
            .filter(projects::team_id.eq(team_id))
            .filter(projects::id.eq(id))
    )
    .execute(c)
    .await)?;
    if deleted == 0 {
        return Err(AppError::not_found("project"));
    }
    Ok(())
}
