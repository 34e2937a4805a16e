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

/// Adds to `jobs` whatever is already queued, up to `max_batch` jobs in all.
fn gather<T>(jobs: &mut Vec<Job<T>>, receiver: &mut mpsc::Receiver<Job<T>>, max_batch: usize) {
    while jobs.len() < max_batch {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
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
///
/// Under load (the previous batch held more than one row) a batch is let fill before it is
/// committed: one commit then carries many rows instead of a few, and a commit costs far more
/// than a row (on SQLite it writes every b-tree page its rows touched, and about as many for
/// one row as for dozens). A batch someone waits for (a flush, a row written with
/// `write`) fills for [`STEP`]; one nobody waits for fills for up to `linger`, in steps, and
/// is committed as soon as it is full or someone starts waiting on it. A lone row is
/// committed at once.
async fn drain<T: Clone>(
    mut receiver: mpsc::Receiver<Job<T>>,
    max_batch: usize,
    linger: Duration,
    progress: Arc<Progress>,
    own_thread: bool,
    mut write: impl AsyncFnMut(Vec<T>) -> Outcome,
) {
    let mut busy = false;
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        if busy {
            let mut lingered = Duration::ZERO;
            loop {
                if own_thread {
                    std::thread::sleep(STEP);
                } else {
                    tokio::time::sleep(STEP).await;
                }
                lingered += STEP;
                gather(&mut jobs, &mut receiver, max_batch);
                let waited_on = jobs.iter().any(|(_, waiter)| waiter.is_some());
                if waited_on || lingered >= linger || jobs.len() >= max_batch {
                    break;
                }
            }
        } else {
            gather(&mut jobs, &mut receiver, max_batch);
        }
        busy = jobs.len() > 1;
        commit(jobs, &mut write, &progress).await;
    }
}

/// How long a batch fills at a time under load: the latency it adds to a row someone waits
/// for, at most (and only under load).
const STEP: Duration = Duration::from_millis(1);

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
    /// under load a batch nobody waits for fills for up to `linger` (see [`drain`]); `wait`
    /// bounds how long a caller waits for its row or a flush.
    pub fn spawn(
        pool: &DbPool,
        max_batch: usize,
        max_pending: usize,
        linger: Duration,
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
                            linger,
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
                    linger,
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
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;

    /// Under load a batch nobody waits for fills for the linger, and is committed early
    /// once someone waits on it or it is full.
    #[tokio::test]
    async fn a_batch_nobody_waits_for_lingers_until_someone_waits_or_it_is_full() {
        let linger = Duration::from_millis(600);
        let (sender, receiver) = mpsc::channel::<Job<u8>>(64);
        let batches = Arc::new(Mutex::new(Vec::<(Vec<u8>, Instant)>::new()));
        let written = batches.clone();
        // Two rows queued before the writer starts: its first batch holds both, so it is
        // under load from then on.
        for row in [1, 2] {
            sender.send((Some(row), None)).await.unwrap();
        }
        let writer = tokio::spawn(drain(
            receiver,
            4,
            linger,
            Arc::new(Progress::default()),
            false,
            async move |rows: Vec<u8>| {
                written.lock().unwrap().push((rows, Instant::now()));
                Ok(())
            },
        ));
        let batch = |i: usize| batches.lock().unwrap().get(i).cloned();
        let wait_for = async |i: usize| loop {
            if let Some(batch) = batch(i) {
                return batch;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(wait_for(0).await.0, [1, 2]);

        // Rows nobody waits for, then a flush: committed with the flush, before the linger.
        let started = Instant::now();
        sender.send((Some(3), None)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.send((Some(4), None)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(batch(1).is_none(), "rows nobody waits for linger");
        let (done, outcome) = oneshot::channel();
        sender.send((None, Some(done))).await.unwrap();
        assert_eq!(outcome.await.unwrap(), Ok(()));
        let (rows, at) = wait_for(1).await;
        assert_eq!(rows, [3, 4]);
        assert!(
            at - started < linger / 2,
            "committed once waited on: {:?}",
            at - started
        );

        // Rows nobody waits for: one batch, after the linger.
        let started = Instant::now();
        for row in [5, 6] {
            sender.send((Some(row), None)).await.unwrap();
        }
        let (rows, at) = wait_for(2).await;
        assert_eq!(rows, [5, 6]);
        assert!(at - started >= linger, "lingered: {:?}", at - started);

        // A full batch does not wait for the linger.
        let started = Instant::now();
        for row in [7, 8, 9, 10] {
            sender.send((Some(row), None)).await.unwrap();
        }
        let (rows, at) = wait_for(3).await;
        assert_eq!(rows, [7, 8, 9, 10]);
        assert!(
            at - started < linger / 2,
            "committed once full: {:?}",
            at - started
        );
        drop(sender);
        writer.await.unwrap();
    }

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
