//! Usage counts and last-used times, gathered in memory and written in batches, so a request
//! costs no database write. Flushed periodically and at shutdown.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::NaiveDateTime;
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Timestamp};
use diesel_async::RunQueryDsl;

use crate::db::schema::api_keys;
use crate::db::{DbConn, DbPool, now};
use crate::error::AppResult;
use crate::with_conn;

#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<String, (i64, NaiveDateTime)>>,
}

impl UsageRecorder {
    pub fn record(&self, key_id: &str) {
        let at = now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(key_id) {
            Some(entry) => {
                entry.0 += 1;
                entry.1 = at;
            }
            None => {
                pending.insert(key_id.to_string(), (1, at));
            }
        }
    }

    /// Writes what was gathered; on failure the counts are put back for the next flush.
    pub async fn flush(&self, pool: &DbPool) -> AppResult<usize> {
        let batch: Vec<(String, (i64, NaiveDateTime))> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let mut conn = match pool.get().await {
            Ok(conn) => conn,
            Err(err) => {
                self.restore(batch);
                return Err(err);
            }
        };
        let mut written = 0;
        let mut failed = Vec::new();
        let mut error = None;
        for (id, (count, at)) in batch {
            match add_usage(&mut conn, &id, count, at).await {
                Ok(()) => written += 1,
                Err(err) => {
                    failed.push((id, (count, at)));
                    error = Some(err);
                }
            }
        }
        self.restore(failed);
        match error {
            Some(err) => Err(err),
            None => Ok(written),
        }
    }

    fn restore(&self, batch: Vec<(String, (i64, NaiveDateTime))>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (id, (count, at)) in batch {
            let entry = pending.entry(id).or_insert((0, at));
            entry.0 += count;
            entry.1 = entry.1.max(at);
        }
    }
}

/// Adds `count` uses and moves `last_used_at` forward (never back), in one statement: a
/// reader never sees the new count without its time.
pub async fn add_usage(
    conn: &mut DbConn,
    id: &str,
    count: i64,
    at: NaiveDateTime,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        api_keys::table.filter(api_keys::id.eq(id))
    )
    .set((
        api_keys::usage_count.eq(api_keys::usage_count + count),
        api_keys::last_used_at.eq(case_when(
            api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(at)),
            Some(at).into_sql::<Nullable<Timestamp>>(),
        )
        .otherwise(api_keys::last_used_at)),
    ))
    .execute(c)
    .await)?;
    Ok(())
}
