//! Teams: the tenants. Created from the CLI or on first start, each with a first admin key.

pub mod graphql;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::api_keys::service::{NewApiKey, prepare_api_key};
use crate::auth::{Scope, ScopeSet};
use crate::db::schema::{api_keys, teams};
use crate::db::{DbConn, new_id, now};
use crate::error::{AppError, AppResult};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = teams)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Team {
    pub id: String,
    pub name: String,
    pub created_at: NaiveDateTime,
}

pub async fn count(conn: &mut DbConn) -> AppResult<i64> {
    Ok(with_conn!(conn, |c| teams::table
        .count()
        .get_result::<i64>(c)
        .await)?)
}

pub async fn find(conn: &mut DbConn, id: &str) -> AppResult<Team> {
    with_conn!(conn, |c| teams::table
        .find(id)
        .select(Team::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("team"))
}

/// Finds a team by id or by name (what the CLI accepts).
pub async fn find_by_id_or_name(conn: &mut DbConn, id_or_name: &str) -> AppResult<Team> {
    with_conn!(conn, |c| teams::table
        .filter(teams::id.eq(id_or_name).or(teams::name.eq(id_or_name)))
        .select(Team::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("team"))
}

/// Creates a team and its first admin key; returns the team and the full key (shown once).
pub async fn create_with_admin_key(conn: &mut DbConn, name: &str) -> AppResult<(Team, String)> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(AppError::validation(
            "team name must be 1 to 100 characters",
        ));
    }
    let team = Team {
        id: new_id(),
        name: name.to_string(),
        created_at: now(),
    };
    let (key_row, key) = prepare_api_key(NewApiKey::new(
        team.id.clone(),
        "admin",
        [Scope::Admin].into_iter().collect::<ScopeSet>(),
        "system",
    ));
    // One transaction: a team never exists without its first key.
    let inserted = with_conn!(conn, |c| c
        .transaction(async |c| {
            diesel::insert_into(teams::table)
                .values(&team)
                .execute(c)
                .await?;
            diesel::insert_into(api_keys::table)
                .values(&key_row)
                .execute(c)
                .await?;
            Ok::<_, diesel::result::Error>(())
        })
        .await);
    match inserted.map_err(AppError::from) {
        Err(AppError::Conflict(_)) => {
            return Err(AppError::Conflict(format!(
                "a team named `{name}` already exists"
            )));
        }
        other => other?,
    };
    Ok((team, key))
}

/// Removes a team that has nothing but its keys (a first start whose admin key could not be
/// shown). One transaction.
pub async fn delete_with_keys(conn: &mut DbConn, team_id: &str) -> AppResult<()> {
    let team_id = team_id.to_string();
    with_conn!(conn, |c| {
        let team_id = team_id.clone();
        c.transaction(async move |c| {
            diesel::delete(api_keys::table.filter(api_keys::team_id.eq(&team_id)))
                .execute(c)
                .await?;
            diesel::delete(teams::table.filter(teams::id.eq(&team_id)))
                .execute(c)
                .await?;
            Ok::<_, diesel::result::Error>(())
        })
        .await
    })?;
    Ok(())
}
