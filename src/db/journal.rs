//! The journal: rows written for every call and every mutation (request logs and audit
//! events) go through one group-commit writer, in order. Concurrent requests share a
//! transaction, and on SQLite no two of our writers ever compete for its single write lock (a
//! lost race costs a busy-wait of milliseconds).

use diesel::{QueryResult, RunQueryDsl};
use diesel_async::AsyncPgConnection;

use super::group::{GroupInsert, GroupWriter};
use super::schema::{audit_events, request_logs};
use crate::audit::AuditEventRow;
use crate::error::AppResult;
use crate::logs::RequestLogRow;

#[derive(Clone)]
pub enum JournalRow {
    RequestLog(RequestLogRow),
    Audit(AuditEventRow),
}

impl JournalRow {
    fn split(rows: Vec<Self>) -> (Vec<RequestLogRow>, Vec<AuditEventRow>) {
        let mut logs = Vec::new();
        let mut audits = Vec::new();
        for row in rows {
            match row {
                JournalRow::RequestLog(row) => logs.push(row),
                JournalRow::Audit(row) => audits.push(row),
            }
        }
        (logs, audits)
    }
}

impl GroupInsert for JournalRow {
    fn insert_sqlite(conn: &mut diesel::SqliteConnection, rows: Vec<Self>) -> QueryResult<()> {
        // One statement per row: SQLite caches it, and the cost is in the b-trees anyway.
        let (logs, audits) = Self::split(rows);
        for row in &logs {
            diesel::insert_into(request_logs::table)
                .values(row)
                .execute(conn)?;
        }
        for row in &audits {
            diesel::insert_into(audit_events::table)
                .values(row)
                .execute(conn)?;
        }
        Ok(())
    }

    async fn insert_postgres(conn: &mut AsyncPgConnection, rows: Vec<Self>) -> QueryResult<()> {
        let (logs, audits) = Self::split(rows);
        if !logs.is_empty() {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into(request_logs::table).values(&logs),
                conn,
            )
            .await?;
        }
        if !audits.is_empty() {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into(audit_events::table).values(&audits),
                conn,
            )
            .await?;
        }
        Ok(())
    }
}

/// Writes journal rows in order: audit rows (and `request_log`) are waited for until committed;
/// `queue_request_log` only queues.
#[derive(Clone)]
pub struct Journal(GroupWriter<JournalRow>);

impl Journal {
    pub fn spawn(pool: &super::DbPool) -> AppResult<Self> {
        GroupWriter::spawn(pool, 512).map(Self)
    }

    pub async fn request_log(&self, row: RequestLogRow) -> AppResult<()> {
        self.0.write(JournalRow::RequestLog(row)).await
    }

    /// Queues a request log without waiting: the mutation that made the call waits for its
    /// audit row, which is committed after it; calls made outside a request (health monitor,
    /// scheduled syncs) have theirs stored with the next batch, and at shutdown by
    /// [`Journal::flush`].
    pub async fn queue_request_log(&self, row: RequestLogRow) {
        self.0.queue(JournalRow::RequestLog(row)).await
    }

    /// Returns once everything queued before is stored.
    pub async fn flush(&self) -> AppResult<()> {
        self.0.flush().await
    }

    pub async fn audit(&self, row: AuditEventRow) -> AppResult<()> {
        self.0.write(JournalRow::Audit(row)).await
    }
}
