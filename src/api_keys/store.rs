//! Queries on `api_keys`; every one that serves a team is confined to it.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::model::{ApiKeyChanges, ApiKeyRow};
use crate::db::DbConn;
use crate::db::schema::api_keys;
use crate::error::AppResult;
use crate::with_conn;

pub async fn insert(conn: &mut DbConn, row: &ApiKeyRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(api_keys::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// Looks a key up by its public id, across teams: only authentication uses this.
pub async fn find_by_public_id(conn: &mut DbConn, public_id: &str) -> AppResult<Option<ApiKeyRow>> {
    Ok(with_conn!(conn, |c| api_keys::table
        .filter(api_keys::public_id.eq(public_id))
        .select(ApiKeyRow::as_select())
        .first(c)
        .await
        .optional())?)
}

pub async fn list(conn: &mut DbConn, team_id: &str) -> AppResult<Vec<ApiKeyRow>> {
    Ok(with_conn!(conn, |c| api_keys::table
        .filter(api_keys::team_id.eq(team_id))
        .order(api_keys::id.asc())
        .select(ApiKeyRow::as_select())
        .load(c)
        .await)?)
}

pub async fn find(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<Option<ApiKeyRow>> {
    Ok(with_conn!(conn, |c| api_keys::table
        .filter(api_keys::team_id.eq(team_id))
        .filter(api_keys::id.eq(id))
        .select(ApiKeyRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// Sets `revoked_at` once (a second revoke keeps the first time); returns the row.
pub async fn revoke(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    at: NaiveDateTime,
) -> AppResult<Option<ApiKeyRow>> {
    with_conn!(conn, |c| diesel::update(
        api_keys::table
            .filter(api_keys::team_id.eq(team_id))
            .filter(api_keys::id.eq(id))
            .filter(api_keys::revoked_at.is_null())
    )
    .set(api_keys::revoked_at.eq(at))
    .execute(c)
    .await)?;
    find(conn, team_id, id).await
}

pub async fn update(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    changes: &ApiKeyChanges,
) -> AppResult<Option<ApiKeyRow>> {
    with_conn!(conn, |c| diesel::update(
        api_keys::table
            .filter(api_keys::team_id.eq(team_id))
            .filter(api_keys::id.eq(id))
    )
    .set(changes)
    .execute(c)
    .await)?;
    find(conn, team_id, id).await
}
