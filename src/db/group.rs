//! Group commit: rows written by many concurrent requests go to the database together, one
//! transaction per batch. A writer either waits until its row is stored (so a client that
//! reads right after writing sees it) or queues it and moves on; batches are committed in the
//! order their rows were queued, so a row that is waited for is stored after every row queued
//! before it. Under load this turns hundreds of write transactions into a few; a lone row is
//! written at once.
//!
//! On SQLite the writer is a thread of its own holding one connection for its whole life: no
//! pool checkout and no hop to the blocking pool per batch, and a page cache that stays warm
//! because it writes these tables alone. On PostgreSQL it is a task that borrows a pooled
//! connection per batch.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::{Connection, QueryResult};
use diesel_async::AsyncPgConnection;
use tokio::sync::{mpsc, oneshot};

use diesel_async::pooled_connection::deadpool::Pool;

use super::{DbPool, sqlite_pragmas};
use crate::error::{AppError, AppResult};

/// A row type that can be inserted many at a time, in one transaction.
pub trait GroupInsert: Clone + Send + Sync + 'static + Sized {
    fn insert_sqlite(conn: &mut diesel::SqliteConnection, rows: Vec<Self>) -> QueryResult<()>;
    fn insert_postgres(
        conn: &mut AsyncPgConnection,
        rows: Vec<Self>,
    ) -> impl Future<Output = QueryResult<()>> + Send;
}

type Outcome = Result<(), String>;

/// A row (none for a flush) and, if someone waits, where to tell them.
type Job<T> = (Option<T>, Option<oneshot::Sender<Outcome>>);

pub struct GroupWriter<T> {
    sender: mpsc::Sender<Job<T>>,
    /// How long a waiter waits for its row (or a flush) before it is told UNAVAILABLE; the
    /// row itself stays queued and is stored once the database is back.
    wait: Duration,
    /// Rows handed to the writer, and rows it has tried (stored, or failed and logged): a
    /// flush that finds them equal has nothing to wait for, and returns without a round trip
    /// to the writer.
    progress: Arc<Progress>,
}

#[derive(Default)]
struct Progress {
    queued: AtomicU64,
    tried: AtomicU64,
}

impl<T> Clone for GroupWriter<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            wait: self.wait,
            progress: self.progress.clone(),
        }
    }
}

/// The stable code of a write that failed because the database is down, locked or slow.
const OUTAGE: &str = "UNAVAILABLE";
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Writes `rows`, and while the database is out (the write fails with UNAVAILABLE) tries
/// again with exponential backoff until it is back: rows are never dropped for an outage.
/// Any other failure is returned at once.
async fn write_through_outages<T>(
    rows: impl Fn() -> Vec<T>,
    write: &mut impl AsyncFnMut(Vec<T>) -> Outcome,
) -> Outcome {
    let mut delay = RETRY_FIRST;
    loop {
        match write(rows()).await {
            Err(code) if code == OUTAGE => {
                tracing::warn!(
                    retry_in_ms = delay.as_millis() as u64,
                    "journal: database unavailable; keeping the rows and retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            other => return other,
        }
    }
}

/// The first job and whatever else is already queued, up to `max_batch`.
fn gather<T>(
    first: Job<T>,
    receiver: &mut mpsc::Receiver<Job<T>>,
    max_batch: usize,
) -> Vec<Job<T>> {
    let mut jobs = vec![first];
    while jobs.len() < max_batch {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    jobs
}

/// The rows of `jobs`, to write together.
fn rows_of<T: Clone>(jobs: &[Job<T>]) -> Vec<T> {
    jobs.iter().filter_map(|(row, _)| row.clone()).collect()
}

/// Writes one batch in one transaction and tells its waiters how it went. While the database
/// is out the batch is retried until it is back (see [`write_through_outages`]). A batch that
/// fails otherwise is written again one row at a time: one bad row (say, of an integration
/// deleted meanwhile) must not cost the others theirs, and is logged with its failure. A
/// flush (a job without a row) always succeeds: it asks only that everything before it was
/// tried, and a reader must not fail because somebody else's row did.
async fn commit<T: Clone>(
    jobs: Vec<Job<T>>,
    write: &mut impl AsyncFnMut(Vec<T>) -> Outcome,
    progress: &Progress,
) {
    let started = std::time::Instant::now();
    let outcome = write_through_outages(|| rows_of(&jobs), write).await;
    let rows = jobs.iter().filter(|(row, _)| row.is_some()).count();
    metrics::histogram!("hub_journal_batch_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("hub_journal_batch_rows").record(rows as f64);
    if outcome.is_err() && rows > 1 {
        for (row, waiter) in jobs {
            let outcome = write_through_outages(|| row.iter().cloned().collect(), write).await;
            if let Err(code) = &outcome {
                tracing::error!(
                    code,
                    "journal: a row was refused by the database and dropped"
                );
            }
            if let Some(waiter) = waiter {
                let _ = waiter.send(outcome);
            }
        }
        progress.tried.fetch_add(rows as u64, Ordering::SeqCst);
        return;
    }
    // Counted before any waiter hears: whoever learns its row is stored and then flushes
    // finds it tried.
    progress.tried.fetch_add(rows as u64, Ordering::SeqCst);
    for (row, waiter) in jobs {
        if let Some(waiter) = waiter {
            let _ = waiter.send(if row.is_some() {
                outcome.clone()
            } else {
                Ok(())
            });
        }
    }
}

/// The writer's life: batch after batch until every handle is dropped.
/// `own_thread`: the writer runs on a thread of its own (SQLite), which simply sleeps while a
/// batch fills, instead of waiting on a runtime timer (another thread's wake-up per batch).
async fn drain<T: Clone>(
    mut receiver: mpsc::Receiver<Job<T>>,
    max_batch: usize,
    progress: Arc<Progress>,
    own_thread: bool,
    mut write: impl AsyncFnMut(Vec<T>) -> Outcome,
) {
    let mut busy = false;
    while let Some(first) = receiver.recv().await {
        if busy {
            // Under load, let the batch fill for a moment: one commit then carries many rows
            // instead of a few (a commit costs far more than a row).
            if own_thread {
                std::thread::sleep(LINGER);
            } else {
                tokio::time::sleep(LINGER).await;
            }
        }
        let jobs = gather(first, &mut receiver, max_batch);
        busy = jobs.len() > 1;
        commit(jobs, &mut write, &progress).await;
    }
}

/// How long the writer lets a batch fill while rows keep coming (the previous batch held more
/// than one): the latency it adds to a row is this, at most, and only under load.
const LINGER: Duration = Duration::from_millis(1);

/// A failed write as the stable code waiters get; the details go to the log.
fn outcome_of(result: QueryResult<()>) -> Outcome {
    result.map_err(|err| {
        let err = AppError::from(err);
        let code = err.code().to_string();
        let _ = err.into_graphql(); // logs internal details
        code
    })
}

fn write_sqlite<T: GroupInsert>(conn: &mut diesel::SqliteConnection, rows: Vec<T>) -> Outcome {
    if rows.is_empty() {
        return Ok(());
    }
    outcome_of(conn.immediate_transaction(|c| T::insert_sqlite(c, rows)))
}

async fn write_postgres<T: GroupInsert>(pool: &Pool<AsyncPgConnection>, rows: Vec<T>) -> Outcome {
    if rows.is_empty() {
        return Ok(());
    }
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(error = %err, "journal: no database connection");
            return Err("UNAVAILABLE".into());
        }
    };
    outcome_of(
        diesel_async::AsyncConnection::transaction(&mut *conn, async |c| {
            T::insert_postgres(c, rows).await
        })
        .await,
    )
}

impl<T: GroupInsert> GroupWriter<T> {
    /// Starts the writer (a thread with its own connection on SQLite, a task on PostgreSQL);
    /// it ends when every handle is dropped. At most `max_pending` rows wait to be written;
    /// `wait` bounds how long a caller waits for its row or a flush.
    pub fn spawn(
        pool: &DbPool,
        max_batch: usize,
        max_pending: usize,
        wait: Duration,
    ) -> AppResult<Self> {
        let (sender, receiver) = mpsc::channel::<Job<T>>(max_pending.max(1));
        let progress = Arc::new(Progress::default());
        match pool {
            DbPool::Sqlite(_, path, timeout, statements) => {
                let open = {
                    let (path, pragmas) = (path.clone(), sqlite_pragmas(*timeout));
                    let statements = statements.clone();
                    move || -> AppResult<diesel::SqliteConnection> {
                        let mut conn = diesel::SqliteConnection::establish(&path)
                            .map_err(super::unavailable)?;
                        diesel::connection::SimpleConnection::batch_execute(&mut conn, &pragmas)?;
                        conn.set_instrumentation(statements.instrumentation());
                        Ok(conn)
                    }
                };
                let mut conn = open()?;
                let runtime = tokio::runtime::Handle::try_current().map_err(AppError::internal)?;
                let writer_progress = progress.clone();
                std::thread::Builder::new()
                    .name("journal-writer".into())
                    .spawn(move || {
                        runtime.block_on(drain(
                            receiver,
                            max_batch,
                            writer_progress,
                            true,
                            async |rows| {
                                let outcome = write_sqlite(&mut conn, rows);
                                if outcome.as_ref().is_err_and(|code| code == OUTAGE) {
                                    // A connection that went through a full disk or an I/O error
                                    // may stay broken: write the retry on a fresh one.
                                    if let Ok(fresh) = open() {
                                        conn = fresh;
                                    }
                                }
                                outcome
                            },
                        ))
                    })
                    .map_err(AppError::internal)?;
            }
            DbPool::Postgres(pool, _) => {
                let pool = pool.clone();
                tokio::spawn(drain(
                    receiver,
                    max_batch,
                    progress.clone(),
                    false,
                    async move |rows| write_postgres(&pool, rows).await,
                ));
            }
        }
        Ok(Self {
            sender,
            wait,
            progress,
        })
    }

    /// True while fewer than `max_pending` rows wait to be written.
    pub fn has_room(&self) -> bool {
        self.sender.capacity() > 0
    }

    /// Rows (and flushes) waiting to be written.
    pub fn pending(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    async fn send(&self, row: Option<T>) -> AppResult<()> {
        let (done, outcome) = oneshot::channel();
        let unavailable =
            || AppError::Unavailable("the database has not taken the journal's writes".into());
        let counted = row.is_some();
        let sent = self.handed(counted, async {
            match tokio::time::timeout(self.wait, self.sender.send((row, Some(done)))).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(AppError::internal(anyhow::anyhow!("writer stopped"))),
                Err(_) => Err(unavailable()),
            }
        });
        sent.await?;
        match tokio::time::timeout(self.wait, outcome).await {
            Err(_) => Err(unavailable()),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(code))) if code == OUTAGE => Err(unavailable()),
            Ok(Ok(Err(code))) => Err(AppError::internal(anyhow::anyhow!(
                "group write failed ({code})"
            ))),
            Ok(Err(_)) => Err(AppError::internal(anyhow::anyhow!("writer stopped"))),
        }
    }

    /// Stores `row` with whatever else is waiting; returns once it is written.
    pub async fn write(&self, row: T) -> AppResult<()> {
        self.send(Some(row)).await
    }

    /// Queues `row` without waiting for it to be written (waiting only while the queue is
    /// full, as long as a waiter would). A failure is logged by the writer.
    pub async fn queue(&self, row: T) -> AppResult<()> {
        // Room right now, the usual case: no waiting future is built. Every call queues its
        // rows here, and a future that may wait is large (the row, the channel's permit, the
        // timer), so it is boxed and built only when the queue is full.
        match self.offer(row) {
            Ok(()) => Ok(()),
            Err(row) => Box::pin(self.queue_waiting(row)).await,
        }
    }

    /// Queues `row` if there is room right now; hands it back if not.
    fn offer(&self, row: T) -> Result<(), T> {
        self.progress.queued.fetch_add(1, Ordering::SeqCst);
        match self.sender.try_send((Some(row), None)) {
            Ok(()) => Ok(()),
            Err(refused) => {
                self.progress.queued.fetch_sub(1, Ordering::SeqCst);
                match refused.into_inner() {
                    (Some(row), _) => Err(row),
                    // Never: a row was sent.
                    (None, _) => Ok(()),
                }
            }
        }
    }

    async fn queue_waiting(&self, row: T) -> AppResult<()> {
        self.handed(true, async {
            match tokio::time::timeout(self.wait, self.sender.send((Some(row), None))).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(AppError::internal(anyhow::anyhow!("writer stopped"))),
                Err(_) => Err(AppError::Unavailable(
                    "the journal is full: the database has not taken its writes".into(),
                )),
            }
        })
        .await
    }

    /// Runs `send`, counting its row as queued (uncounted again if it was not sent).
    async fn handed(&self, row: bool, send: impl Future<Output = AppResult<()>>) -> AppResult<()> {
        if row {
            self.progress.queued.fetch_add(1, Ordering::SeqCst);
        }
        let sent = send.await;
        if row && sent.is_err() {
            self.progress.queued.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Queues `row` if there is room right now, without waiting (for callers that cannot wait,
    /// like a drop); false when the queue is full or the writer stopped.
    pub fn try_queue(&self, row: T) -> bool {
        self.offer(row).is_ok()
    }

    /// Returns once every row queued before is stored (or has failed): at once when the
    /// writer has tried every row handed to it so far, else after a round trip through it.
    pub async fn flush(&self) -> AppResult<()> {
        // Tried first, then queued: every tried row was counted as queued before, so when
        // the rows tried at the first reading are at least those queued at the second, no
        // row was waiting at either.
        let tried = self.progress.tried.load(Ordering::SeqCst);
        if tried >= self.progress.queued.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.send(None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outage_keeps_the_batch_until_the_database_is_back() {
        let mut attempts = 0;
        let mut write = async |rows: Vec<u8>| {
            attempts += 1;
            assert_eq!(rows, [1, 2], "the whole batch each time");
            if attempts <= 3 {
                Err(OUTAGE.to_string())
            } else {
                Ok(())
            }
        };
        let (jobs, outcomes): (Vec<Job<u8>>, Vec<_>) = [Some(1), Some(2), None]
            .into_iter()
            .map(|row| {
                let (done, outcome) = oneshot::channel();
                ((row, Some(done)), outcome)
            })
            .unzip();
        commit(jobs, &mut write, &Progress::default()).await;
        for outcome in outcomes {
            assert_eq!(outcome.await.unwrap(), Ok(()));
        }
        assert_eq!(attempts, 4, "three outages, then stored");
    }

    #[tokio::test]
    async fn a_bad_row_fails_alone_and_a_flush_beside_it_succeeds() {
        let mut written = Vec::new();
        let mut write = async |rows: Vec<u8>| {
            written.push(rows.clone());
            if rows.contains(&0) {
                Err("INTERNAL".to_string())
            } else {
                Ok(())
            }
        };
        let (mut alone, outcomes): (Vec<Job<u8>>, Vec<_>) = [Some(0), None]
            .into_iter()
            .chain([Some(1), Some(0), Some(2), None])
            .map(|row| {
                let (done, outcome) = oneshot::channel();
                ((row, Some(done)), outcome)
            })
            .unzip();
        let together = alone.split_off(2);
        commit(alone, &mut write, &Progress::default()).await;
        commit(together, &mut write, &Progress::default()).await;
        let mut got = Vec::new();
        for outcome in outcomes {
            got.push(outcome.await.unwrap());
        }
        let bad = Err("INTERNAL".to_string());
        assert_eq!(got, [bad.clone(), Ok(()), Ok(()), bad, Ok(()), Ok(())]);
        assert_eq!(
            written,
            [vec![0], vec![1, 0, 2], vec![1], vec![0], vec![2], vec![]]
        );
    }
}
