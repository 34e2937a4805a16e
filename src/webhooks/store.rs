//! Queries on webhook endpoints, deliveries and attempts. What serves a caller is confined
//! to its team; what serves the worker goes by id.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::{webhook_attempts, webhook_deliveries, webhook_endpoints};
use crate::db::{DbConn, Fetch, Listed};
use crate::error::{AppError, AppResult};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_endpoints)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct EndpointRow {
    pub id: String,
    pub team_id: String,
    pub project_id: Option<String>,
    pub url: String,
    pub description: String,
    /// JSON array of event types; empty = all.
    pub event_types: String,
    /// JSON array of integration ids; empty = all.
    pub integration_ids: String,
    /// Sealed JSON object of extra headers (`<key id>:<sealed>`).
    pub headers_sealed: Option<String>,
    pub rate_limit_per_second: Option<i32>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// `<key id>:<sealed>`.
    pub secret_sealed: String,
    pub previous_secret_sealed: Option<String>,
    pub previous_secret_until: Option<NaiveDateTime>,
    /// Since when every attempt has failed (none since the last success).
    pub failing_since: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl EndpointRow {
    pub fn event_types(&self) -> Vec<String> {
        serde_json::from_str(&self.event_types).unwrap_or_default()
    }

    pub fn integration_ids(&self) -> Vec<String> {
        serde_json::from_str(&self.integration_ids).unwrap_or_default()
    }
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = webhook_endpoints)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<String>,
    pub integration_ids: Option<String>,
    pub headers_sealed: Option<Option<String>>,
    pub rate_limit_per_second: Option<Option<i32>>,
    pub enabled: Option<bool>,
    pub disabled_reason: Option<Option<String>>,
    pub secret_sealed: Option<String>,
    pub previous_secret_sealed: Option<Option<String>>,
    pub previous_secret_until: Option<Option<NaiveDateTime>>,
    pub failing_since: Option<Option<NaiveDateTime>>,
    pub updated_at: Option<NaiveDateTime>,
}

#[derive(
    Debug,
    Clone,
    Queryable,
    QueryableByName,
    Selectable,
    Insertable,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = webhook_deliveries)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct DeliveryRow {
    /// Also the `webhook-id` header: the same on every attempt.
    pub id: String,
    pub team_id: String,
    pub project_id: Option<String>,
    pub endpoint_id: String,
    pub event_type: String,
    /// The exact body sent.
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts in the current round (a redelivery starts a new round).
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    /// Held by a worker until then; after it, any worker may claim the row again.
    pub claimed_until: Option<NaiveDateTime>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_attempts)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct AttemptRow {
    pub id: String,
    pub delivery_id: String,
    pub endpoint_id: String,
    pub attempted_at: NaiveDateTime,
    pub response_status: Option<i32>,
    pub duration_ms: i64,
    pub error: Option<String>,
    /// The first 1 KiB of the answer.
    pub response_body: Option<String>,
}

pub async fn insert_endpoint(conn: &mut DbConn, row: &EndpointRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(webhook_endpoints::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// The endpoint if it exists in this team; NOT_FOUND otherwise (also for other teams').
pub async fn get_endpoint(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<EndpointRow> {
    with_conn!(conn, |c| webhook_endpoints::table
        .filter(webhook_endpoints::team_id.eq(team_id))
        .filter(webhook_endpoints::id.eq(id))
        .select(EndpointRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("webhook endpoint"))
}

/// For the worker: the endpoint of a delivery, whatever its team.
pub async fn endpoint_by_id(conn: &mut DbConn, id: &str) -> AppResult<Option<EndpointRow>> {
    Ok(with_conn!(conn, |c| webhook_endpoints::table
        .filter(webhook_endpoints::id.eq(id))
        .select(EndpointRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// The enabled endpoints of a team (the outbox matches events against them).
pub async fn enabled_endpoints(conn: &mut DbConn, team_id: &str) -> AppResult<Vec<EndpointRow>> {
    Ok(with_conn!(conn, |c| webhook_endpoints::table
        .filter(webhook_endpoints::team_id.eq(team_id))
        .filter(webhook_endpoints::enabled.eq(true))
        .select(EndpointRow::as_select())
        .load(c)
        .await)?)
}

/// A page of a team's endpoints (`project_id`: only that project's, and the team-wide ones
/// when `with_team_wide`).
pub async fn list_endpoints(
    conn: &mut DbConn,
    team_id: &str,
    project_ids: Option<&[String]>,
    fetch: Fetch<'_>,
) -> AppResult<Listed<EndpointRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = webhook_endpoints::table
            .filter(webhook_endpoints::team_id.eq(team_id))
            .into_boxed();
        if let Some(ids) = project_ids {
            query = query.filter(webhook_endpoints::project_id.eq_any(ids.to_vec()));
        }
        crate::page_or_count!(query, c, fetch, EndpointRow, webhook_endpoints::id, gt, asc)
    })?)
}

pub async fn update_endpoint(
    conn: &mut DbConn,
    id: &str,
    changes: &EndpointChanges,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        webhook_endpoints::table.filter(webhook_endpoints::id.eq(id))
    )
    .set(changes)
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn delete_endpoint(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<()> {
    let deleted = with_conn!(conn, |c| diesel::delete(
        webhook_endpoints::table
            .filter(webhook_endpoints::team_id.eq(team_id))
            .filter(webhook_endpoints::id.eq(id))
    )
    .execute(c)
    .await)?;
    if deleted == 0 {
        return Err(AppError::not_found("webhook endpoint"));
    }
    Ok(())
}

/// Inserts deliveries (one statement per 500); one already there is left as it is, so a
/// retried insert never doubles a delivery.
pub async fn insert_deliveries(conn: &mut DbConn, rows: &[DeliveryRow]) -> AppResult<()> {
    for chunk in rows.chunks(500) {
        match conn {
            DbConn::Postgres(c) => {
                diesel::insert_into(webhook_deliveries::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(&mut **c)
                    .await
            }
            DbConn::Sqlite(c) => {
                // SQLite takes one row per statement here (it caches the statement).
                let mut inserted = 0;
                for row in chunk {
                    inserted += diesel::insert_or_ignore_into(webhook_deliveries::table)
                        .values(row)
                        .execute(&mut **c)
                        .await?;
                }
                Ok(inserted)
            }
        }?;
    }
    Ok(())
}

pub async fn get_delivery(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<DeliveryRow> {
    with_conn!(conn, |c| webhook_deliveries::table
        .filter(webhook_deliveries::team_id.eq(team_id))
        .filter(webhook_deliveries::id.eq(id))
        .select(DeliveryRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("webhook delivery"))
}

/// What a list of deliveries is filtered by.
#[derive(Default)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<String>,
    /// Deliveries of these projects' events (and, with `team_wide`, of team-wide ones).
    pub project_id: Option<String>,
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<NaiveDateTime>,
}

/// A page of a team's deliveries, newest first.
pub async fn list_deliveries(
    conn: &mut DbConn,
    team_id: &str,
    filter: &DeliveryFilter,
    fetch: Fetch<'_>,
) -> AppResult<Listed<DeliveryRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = webhook_deliveries::table
            .filter(webhook_deliveries::team_id.eq(team_id))
            .into_boxed();
        if let Some(id) = &filter.endpoint_id {
            query = query.filter(webhook_deliveries::endpoint_id.eq(id.clone()));
        }
        if let Some(id) = &filter.project_id {
            query = query.filter(webhook_deliveries::project_id.eq(id.clone()));
        }
        if let Some(status) = &filter.status {
            query = query.filter(webhook_deliveries::status.eq(status.clone()));
        }
        if let Some(kind) = &filter.event_type {
            query = query.filter(webhook_deliveries::event_type.eq(kind.clone()));
        }
        if let Some(since) = filter.since {
            query = query.filter(webhook_deliveries::created_at.ge(since));
        }
        crate::page_or_count!(
            query,
            c,
            fetch,
            DeliveryRow,
            webhook_deliveries::id,
            lt,
            desc
        )
    })?)
}

/// The attempts of some deliveries, oldest first.
pub async fn attempts_of(conn: &mut DbConn, delivery_ids: &[String]) -> AppResult<Vec<AttemptRow>> {
    Ok(with_conn!(conn, |c| webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq_any(delivery_ids))
        .order(webhook_attempts::id.asc())
        .select(AttemptRow::as_select())
        .load(c)
        .await)?)
}

/// Claims up to `limit` due deliveries until `until` (a lease): on PostgreSQL with
/// `FOR UPDATE SKIP LOCKED`, so replicas claiming at once never get the same row.
pub async fn claim_due(
    conn: &mut DbConn,
    now: NaiveDateTime,
    until: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<DeliveryRow>> {
    use diesel::sql_types::{BigInt, Timestamp};
    const PICK: &str = "SELECT id FROM webhook_deliveries WHERE status = 'pending' \
         AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1) \
         ORDER BY next_attempt_at LIMIT $3";
    let rows = match conn {
        DbConn::Postgres(c) => {
            diesel::sql_query(format!(
                "UPDATE webhook_deliveries SET claimed_until = $2 WHERE id IN ({PICK} \
                 FOR UPDATE SKIP LOCKED) RETURNING *"
            ))
            .bind::<Timestamp, _>(now)
            .bind::<Timestamp, _>(until)
            .bind::<BigInt, _>(limit)
            .load::<DeliveryRow>(&mut **c)
            .await
        }
        DbConn::Sqlite(c) => {
            // Read first: most polls find nothing due, and a read takes no write lock.
            let due: Option<String> = webhook_deliveries::table
                .filter(webhook_deliveries::status.eq("pending"))
                .filter(webhook_deliveries::next_attempt_at.le(now))
                .filter(
                    webhook_deliveries::claimed_until
                        .is_null()
                        .or(webhook_deliveries::claimed_until.lt(now)),
                )
                .select(webhook_deliveries::id)
                .first(&mut **c)
                .await
                .optional()?;
            if due.is_none() {
                return Ok(Vec::new());
            }
            // One writer at a time: the select and update are one statement. SQLite numbers
            // its parameters `?N`.
            diesel::sql_query(
                format!(
                    "UPDATE webhook_deliveries SET claimed_until = $2 WHERE id IN ({PICK}) \
                     RETURNING *"
                )
                .replace('$', "?"),
            )
            .bind::<Timestamp, _>(now)
            .bind::<Timestamp, _>(until)
            .bind::<BigInt, _>(limit)
            .load::<DeliveryRow>(&mut **c)
            .await
        }
    };
    Ok(rows?)
}

/// Records an attempt and the delivery's new state; the claim ends with it.
pub async fn record_attempt(
    conn: &mut DbConn,
    attempt: &AttemptRow,
    delivery: &DeliveryRow,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(webhook_attempts::table)
        .values(attempt)
        .execute(c)
        .await)?;
    with_conn!(conn, |c| diesel::update(
        webhook_deliveries::table.filter(webhook_deliveries::id.eq(&delivery.id))
    )
    .set((
        webhook_deliveries::status.eq(&delivery.status),
        webhook_deliveries::attempts.eq(delivery.attempts),
        webhook_deliveries::next_attempt_at.eq(delivery.next_attempt_at),
        webhook_deliveries::claimed_until.eq(None::<NaiveDateTime>),
        webhook_deliveries::last_status.eq(delivery.last_status),
        webhook_deliveries::last_error.eq(&delivery.last_error),
        webhook_deliveries::finished_at.eq(delivery.finished_at),
    ))
    .execute(c)
    .await)?;
    Ok(())
}

/// Ends a delivery without an attempt (its endpoint is disabled).
pub async fn fail_unsent(
    conn: &mut DbConn,
    id: &str,
    reason: &str,
    at: NaiveDateTime,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        webhook_deliveries::table.filter(webhook_deliveries::id.eq(id))
    )
    .set((
        webhook_deliveries::status.eq("failed"),
        webhook_deliveries::claimed_until.eq(None::<NaiveDateTime>),
        webhook_deliveries::last_error.eq(reason),
        webhook_deliveries::finished_at.eq(Some(at)),
    ))
    .execute(c)
    .await)?;
    Ok(())
}

/// Queues deliveries again, as a new round of attempts (redeliver, replay). Returns how many.
pub async fn requeue(
    conn: &mut DbConn,
    team_id: &str,
    ids: &[String],
    at: NaiveDateTime,
) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::team_id.eq(team_id))
            .filter(webhook_deliveries::id.eq_any(ids))
    )
    .set((
        webhook_deliveries::status.eq("pending"),
        webhook_deliveries::attempts.eq(0),
        webhook_deliveries::next_attempt_at.eq(at),
        webhook_deliveries::claimed_until.eq(None::<NaiveDateTime>),
        webhook_deliveries::finished_at.eq(None::<NaiveDateTime>),
    ))
    .execute(c)
    .await)?)
}

/// The ids of an endpoint's deliveries created since `since` that did not reach it.
pub async fn undelivered_since(
    conn: &mut DbConn,
    endpoint_id: &str,
    since: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<String>> {
    Ok(with_conn!(conn, |c| webhook_deliveries::table
        .filter(webhook_deliveries::endpoint_id.eq(endpoint_id))
        .filter(webhook_deliveries::created_at.ge(since))
        .filter(webhook_deliveries::status.eq("failed"))
        .order(webhook_deliveries::id.asc())
        .limit(limit)
        .select(webhook_deliveries::id)
        .load(c)
        .await)?)
}

/// The newest attempts of an endpoint since a time (at most [`STATS_SAMPLE`]): (status,
/// duration) of each, for its statistics.
pub async fn attempt_outcomes(
    conn: &mut DbConn,
    endpoint_id: &str,
    since: NaiveDateTime,
) -> AppResult<Vec<(Option<i32>, i64)>> {
    Ok(with_conn!(conn, |c| webhook_attempts::table
        .filter(webhook_attempts::endpoint_id.eq(endpoint_id))
        .filter(webhook_attempts::attempted_at.ge(since))
        .order(webhook_attempts::attempted_at.desc())
        .select((
            webhook_attempts::response_status,
            webhook_attempts::duration_ms
        ))
        .limit(STATS_SAMPLE)
        .load(c)
        .await)?)
}

/// Statistics read at most this many attempts (the newest), whatever the period asked.
pub const STATS_SAMPLE: i64 = 100_000;

/// How an endpoint's deliveries since a time ended: (delivered, failed).
pub async fn delivery_outcomes(
    conn: &mut DbConn,
    endpoint_id: &str,
    since: NaiveDateTime,
) -> AppResult<(i64, i64)> {
    let count = |status: &'static str| {
        webhook_deliveries::table
            .filter(webhook_deliveries::endpoint_id.eq(endpoint_id.to_string()))
            .filter(webhook_deliveries::created_at.ge(since))
            .filter(webhook_deliveries::status.eq(status))
            .count()
    };
    let delivered: i64 = with_conn!(conn, |c| count("delivered").get_result(c).await)?;
    let failed: i64 = with_conn!(conn, |c| count("failed").get_result(c).await)?;
    Ok((delivered, failed))
}

/// Drops deliveries that ended before `cutoff` (their attempts with them).
pub async fn prune(conn: &mut DbConn, cutoff: NaiveDateTime) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::delete(
        webhook_deliveries::table
            .filter(webhook_deliveries::status.ne("pending"))
            .filter(webhook_deliveries::finished_at.lt(cutoff))
    )
    .execute(c)
    .await)?)
}

/// Every sealed value of the webhooks (endpoint secrets, previous secrets and headers, inbound
/// secrets), of one team or all: (table, row id, column, `<key id>:<sealed>`, context).
async fn sealed_values(
    conn: &mut DbConn,
    team_id: Option<&str>,
) -> AppResult<Vec<(&'static str, String, &'static str, String, String)>> {
    use crate::db::schema::inbound_webhooks;
    type EndpointSecrets = (String, String, Option<String>, Option<String>);
    let endpoints: Vec<EndpointSecrets> = with_conn!(conn, |c| {
        let mut query = webhook_endpoints::table
            .select((
                webhook_endpoints::id,
                webhook_endpoints::secret_sealed,
                webhook_endpoints::previous_secret_sealed,
                webhook_endpoints::headers_sealed,
            ))
            .into_boxed();
        if let Some(team) = team_id {
            query = query.filter(webhook_endpoints::team_id.eq(team.to_string()));
        }
        query.load(c).await
    })?;
    let inbound: Vec<(String, String)> = with_conn!(conn, |c| {
        let mut query = inbound_webhooks::table
            .select((
                inbound_webhooks::integration_id,
                inbound_webhooks::secret_sealed,
            ))
            .into_boxed();
        if let Some(team) = team_id {
            query = query.filter(inbound_webhooks::team_id.eq(team.to_string()));
        }
        query.load(c).await
    })?;
    let mut values = Vec::new();
    for (id, secret, previous, headers) in endpoints {
        let context = |what: &str| format!("webhook:{id}:{what}");
        values.push((
            "webhook_endpoints",
            id.clone(),
            "secret_sealed",
            secret,
            context("secret"),
        ));
        if let Some(previous) = previous {
            values.push((
                "webhook_endpoints",
                id.clone(),
                "previous_secret_sealed",
                previous,
                context("secret"),
            ));
        }
        if let Some(headers) = headers {
            values.push((
                "webhook_endpoints",
                id.clone(),
                "headers_sealed",
                headers,
                context("headers"),
            ));
        }
    }
    for (id, secret) in inbound {
        let context = format!("webhook:{id}:inbound");
        values.push(("inbound_webhooks", id, "secret_sealed", secret, context));
    }
    Ok(values)
}

/// One sealed value per key id, to check at start that every key they need is held and
/// opens them: (key id, context, sealed text).
pub async fn sealed_samples(conn: &mut DbConn) -> AppResult<Vec<(String, String, String)>> {
    let mut samples: Vec<(String, String, String)> = Vec::new();
    for (_, _, _, stored, context) in sealed_values(conn, None).await? {
        if let Some((key_id, sealed)) = stored.split_once(':')
            && !samples.iter().any(|s| s.0 == key_id)
        {
            samples.push((key_id.to_string(), context, sealed.to_string()));
        }
    }
    Ok(samples)
}

/// Re-seals every webhook secret and header set not under the active key (of one team, or
/// all); returns how many values changed. A value changed meanwhile is left to it.
pub async fn reseal_all(
    conn: &mut DbConn,
    keyring: &crate::crypto::Keyring,
    team_id: Option<&str>,
) -> AppResult<u64> {
    use crate::db::schema::inbound_webhooks;
    let active = keyring.active_key_id();
    let mut count = 0;
    for (table, id, column, stored, context) in sealed_values(conn, team_id).await? {
        let Some((key_id, sealed)) = stored.split_once(':') else {
            continue;
        };
        if key_id == active {
            continue;
        }
        let clear = keyring.open(key_id, sealed, &context)?;
        let (new_key, resealed) = keyring.seal(&clear, &context)?;
        let new = format!("{new_key}:{resealed}");
        let changed = match (table, column) {
            ("inbound_webhooks", _) => with_conn!(conn, |c| diesel::update(
                inbound_webhooks::table
                    .filter(inbound_webhooks::integration_id.eq(&id))
                    .filter(inbound_webhooks::secret_sealed.eq(&stored))
            )
            .set(inbound_webhooks::secret_sealed.eq(&new))
            .execute(c)
            .await)?,
            (_, "secret_sealed") => with_conn!(conn, |c| diesel::update(
                webhook_endpoints::table
                    .filter(webhook_endpoints::id.eq(&id))
                    .filter(webhook_endpoints::secret_sealed.eq(&stored))
            )
            .set(webhook_endpoints::secret_sealed.eq(&new))
            .execute(c)
            .await)?,
            (_, "previous_secret_sealed") => with_conn!(conn, |c| diesel::update(
                webhook_endpoints::table
                    .filter(webhook_endpoints::id.eq(&id))
                    .filter(webhook_endpoints::previous_secret_sealed.eq(&stored))
            )
            .set(webhook_endpoints::previous_secret_sealed.eq(&new))
            .execute(c)
            .await)?,
            _ => with_conn!(conn, |c| diesel::update(
                webhook_endpoints::table
                    .filter(webhook_endpoints::id.eq(&id))
                    .filter(webhook_endpoints::headers_sealed.eq(&stored))
            )
            .set(webhook_endpoints::headers_sealed.eq(&new))
            .execute(c)
            .await)?,
        };
        count += changed as u64;
    }
    Ok(count)
}
