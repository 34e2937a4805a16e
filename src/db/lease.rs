//! Leases on periodic work that one replica at a time should do (pruning old logs, old
//! webhook events): a row per job naming its holder and when its hold runs out. The holder
//! renews it each time it does the job; once it has run out (its replica stopped), any
//! replica may claim it. Both steps are single statements, so two replicas never both hold
//! a job.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::schema::job_leases;
use crate::error::AppResult;

/// Claims (or renews) job `name` for `holder` until `until`, if nobody else holds it past
/// `at`. True if `holder` now holds it.
pub async fn claim(
    conn: &mut DbConn,
    name: &str,
    holder: &str,
    at: NaiveDateTime,
    until: NaiveDateTime,
) -> AppResult<bool> {
    let inserted = crate::with_conn!(conn, |c| diesel::insert_into(job_leases::table)
        .values((
            job_leases::name.eq(name),
            job_leases::holder.eq(holder),
            job_leases::expires_at.eq(until),
        ))
        .on_conflict_do_nothing()
        .execute(c)
        .await)?;
    if inserted == 1 {
        return Ok(true);
    }
    let taken = crate::with_conn!(conn, |c| diesel::update(
        job_leases::table.filter(job_leases::name.eq(name)).filter(
            job_leases::holder
                .eq(holder)
                .or(job_leases::expires_at.lt(at))
        )
    )
    .set((
        job_leases::holder.eq(holder),
        job_leases::expires_at.eq(until),
    ))
    .execute(c)
    .await)?;
    Ok(taken == 1)
}

/// Gives back every job `holder` holds (a replica stopping): another replica, or this one's
/// next start, claims them at once instead of when they run out.
pub async fn release_all(conn: &mut DbConn, holder: &str) -> AppResult<usize> {
    Ok(crate::with_conn!(conn, |c| diesel::delete(
        job_leases::table.filter(job_leases::holder.eq(holder))
    )
    .execute(c)
    .await)?)
}

/// Gives back job `name` if `holder` holds it (a one-off job done, like a token refresh).
pub async fn release(conn: &mut DbConn, name: &str, holder: &str) -> AppResult<usize> {
    Ok(crate::with_conn!(conn, |c| diesel::delete(
        job_leases::table
            .filter(job_leases::name.eq(name))
            .filter(job_leases::holder.eq(holder))
    )
    .execute(c)
    .await)?)
}
