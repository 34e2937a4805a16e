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

/// Writes journal rows in order. State-changing mutations wait until their audit row is
/// committed; calls through an integration (their request logs, and the audit rows of the
/// mutations that only make calls: `CALLS` in `audit::extension`) are only queued, and every
/// read of these tables [`Journal::flush`]es first, so a client that reads after a call sees it.
#[derive(Clone)]
pub struct Journal(GroupWriter<JournalRow>);

impl Journal {
    pub fn spawn(pool: &super::DbPool) -> AppResult<Self> {
        GroupWriter::spawn(pool, 512).map(Self)
    }

    /// Stores a request log; returns once it is committed.
    pub async fn request_log(&self, row: RequestLogRow) -> AppResult<()> {
        self.0.write(JournalRow::RequestLog(row)).await
    }

    /// Queues a request log without waiting: it is stored with the next batch (at shutdown by
    /// [`Journal::flush`]), before anything queued after it.
    pub async fn queue_request_log(&self, row: RequestLogRow) {
        self.0.queue(JournalRow::RequestLog(row)).await
    }

    /// Returns once everything queued before is stored. Readers of request logs and audit
    /// events call it first.
    pub async fn flush(&self) -> AppResult<()> {
        self.0.flush().await
    }

    /// Stores an audit row; returns once it is committed.
    pub async fn audit(&self, row: AuditEventRow) -> AppResult<()> {
        self.0.write(JournalRow::Audit(row)).await
    }

    /// Queues an audit row without waiting, like a request log.
    pub async fn queue_audit(&self, row: AuditEventRow) {
        self.0.queue(JournalRow::Audit(row)).await
    }
}
