//! The journal: rows written for every call and every mutation (request logs and audit
//! events) go through one group-commit writer, in order. Concurrent requests share a
//! transaction, and on SQLite no two of our writers ever compete for its single write lock (a
//! lost race costs a busy-wait of milliseconds).

use std::time::Duration;

use diesel::{QueryResult, RunQueryDsl};
use diesel_async::AsyncPgConnection;

use super::group::{GroupInsert, GroupWriter};
use super::rows::{AuditEventRow, InboundEventRow, RequestLogRow};
use super::schema::{audit_events, inbound_webhook_events, request_logs};
use crate::error::{AppError, AppResult};

#[derive(Clone)]
pub enum JournalRow {
    RequestLog(RequestLogRow),
    Audit(AuditEventRow),
    /// Kept once per provider delivery id: a second one is dropped.
    Inbound(InboundEventRow),
}

type Split = (Vec<RequestLogRow>, Vec<AuditEventRow>, Vec<InboundEventRow>);

impl JournalRow {
    fn split(rows: Vec<Self>) -> Split {
        let (mut logs, mut audits, mut inbound) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            match row {
                JournalRow::RequestLog(row) => logs.push(row),
                JournalRow::Audit(row) => audits.push(row),
                JournalRow::Inbound(row) => inbound.push(row),
            }
        }
        (logs, audits, inbound)
    }
}

impl GroupInsert for JournalRow {
    fn insert_sqlite(conn: &mut diesel::SqliteConnection, rows: Vec<Self>) -> QueryResult<()> {
        let (logs, audits, inbound) = Self::split(rows);
        for row in &inbound {
            diesel::insert_or_ignore_into(inbound_webhook_events::table)
                .values(row)
                .execute(conn)?;
        }
        // Calls' rows, many per statement (see `journal_sqlite`).
        super::journal_sqlite::insert(conn, &logs)?;
        super::journal_sqlite::insert(conn, &audits)
    }

    async fn insert_postgres(conn: &mut AsyncPgConnection, rows: Vec<Self>) -> QueryResult<()> {
        let (logs, audits, inbound) = Self::split(rows);
        if !inbound.is_empty() {
            diesel_async::RunQueryDsl::execute(
                diesel::insert_into(inbound_webhook_events::table)
                    .values(&inbound)
                    .on_conflict_do_nothing(),
                conn,
            )
            .await?;
        }
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
/// mutations that only make calls: `CALLS` in `audit::recorded`) are only queued, and every
/// read of these tables [`Journal::flush`]es first, so a client that reads after a call sees it.
///
/// With `HUB_JOURNAL_DURABILITY=committed` calls wait for their rows too (nothing a call
/// answered can be lost to a crash). While the database is out rows wait (at most
/// `HUB_JOURNAL_MAX_PENDING`); once that many wait, calls are refused before they are made.
#[derive(Clone)]
pub struct Journal {
    writer: GroupWriter<JournalRow>,
    committed: bool,
}

impl Journal {
    pub fn spawn(pool: &super::DbPool, config: &crate::config::Config) -> AppResult<Self> {
        Ok(Self {
            writer: GroupWriter::spawn(
                pool,
                512,
                config.journal_max_pending,
                Duration::from_millis(config.journal_linger_ms),
                config.db_timeout(),
            )?,
            committed: config.journal_durability == "committed",
        })
    }

    /// UNAVAILABLE when the rows waiting for the database have reached their bound: a call
    /// is refused before it is made rather than losing its log.
    pub fn check_room(&self) -> AppResult<()> {
        if self.writer.has_room() {
            Ok(())
        } else {
            Err(AppError::Unavailable(
                "the journal is full: the database has not taken its writes".into(),
            ))
        }
    }

    /// Rows waiting to be written.
    pub fn pending(&self) -> usize {
        self.writer.pending()
    }

    /// A call's row (request log, or the audit row of a mutation that only makes calls):
    /// queued (stored within milliseconds, before anything queued after it, and at shutdown
    /// by [`Journal::flush`]), or with `committed` durability stored before this returns.
    pub async fn call_row(&self, row: JournalRow) -> AppResult<()> {
        if self.committed {
            // Boxed: the waiting future is large, and every call's future would carry it.
            Box::pin(self.writer.write(row)).await
        } else {
            self.writer.queue(row).await
        }
    }

    /// Stores a request log; returns once it is committed.
    pub async fn request_log(&self, row: RequestLogRow) -> AppResult<()> {
        self.writer.write(JournalRow::RequestLog(row)).await
    }

    /// Queues a request log without waiting for it to be stored.
    pub async fn queue_request_log(&self, row: RequestLogRow) -> AppResult<()> {
        self.writer.queue(JournalRow::RequestLog(row)).await
    }

    /// Queues a call's row without waiting (see [`GroupWriter::try_queue`]).
    pub fn try_call_row(&self, row: JournalRow) -> bool {
        self.writer.try_queue(row)
    }

    /// Returns once everything queued before is stored. Readers of request logs and audit
    /// events call it first.
    pub async fn flush(&self) -> AppResult<()> {
        self.writer.flush().await
    }

    /// Stores an inbound webhook event (unless one with its delivery id is there); returns
    /// once it is committed.
    pub async fn inbound_event(&self, row: InboundEventRow) -> AppResult<()> {
        self.writer.write(JournalRow::Inbound(row)).await
    }

    /// Stores an audit row; returns once it is committed.
    pub async fn audit(&self, row: AuditEventRow) -> AppResult<()> {
        self.writer.write(JournalRow::Audit(row)).await
    }
}
