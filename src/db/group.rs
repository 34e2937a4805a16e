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
}

impl<T> Clone for GroupWriter<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
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

/// Writes one batch in one transaction and tells its waiters how it went. A failed batch of
/// several rows is written again one row at a time: one bad row (say, of an integration deleted
/// meanwhile) must not cost the others theirs. A flush (a job without a row) always succeeds:
/// it asks only that everything before it was tried, and a reader must not fail because
/// somebody else's row did.
async fn commit<T: Clone>(jobs: Vec<Job<T>>, write: &mut impl AsyncFnMut(Vec<T>) -> Outcome) {
    let outcome = write(rows_of(&jobs)).await;
    let rows = jobs.iter().filter(|(row, _)| row.is_some()).count();
    if outcome.is_err() && rows > 1 {
        for (row, waiter) in jobs {
            let outcome = write(row.into_iter().collect()).await;
            if let Some(waiter) = waiter {
                let _ = waiter.send(outcome);
            }
        }
        return;
    }
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
async fn drain<T: Clone>(
    mut receiver: mpsc::Receiver<Job<T>>,
    max_batch: usize,
    mut write: impl AsyncFnMut(Vec<T>) -> Outcome,
) {
    while let Some(first) = receiver.recv().await {
        commit(gather(first, &mut receiver, max_batch), &mut write).await;
    }
}

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
    /// it ends when every handle is dropped.
    pub fn spawn(pool: &DbPool, max_batch: usize) -> AppResult<Self> {
        let (sender, receiver) = mpsc::channel::<Job<T>>(max_batch * 4);
        match pool {
            DbPool::Sqlite(_, path, timeout) => {
                let mut conn = diesel::SqliteConnection::establish(path)
                    .map_err(|err| AppError::Unavailable(format!("database unavailable: {err}")))?;
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    &sqlite_pragmas(*timeout),
                )?;
                let runtime = tokio::runtime::Handle::try_current().map_err(AppError::internal)?;
                std::thread::Builder::new()
                    .name("journal-writer".into())
                    .spawn(move || {
                        runtime.block_on(drain(receiver, max_batch, async |rows| {
                            write_sqlite(&mut conn, rows)
                        }))
                    })
                    .map_err(AppError::internal)?;
            }
            DbPool::Postgres(pool) => {
                let pool = pool.clone();
                tokio::spawn(drain(receiver, max_batch, async move |rows| {
                    write_postgres(&pool, rows).await
                }));
            }
        }
        Ok(Self { sender })
    }

    async fn send(&self, row: Option<T>) -> AppResult<()> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send((row, Some(done)))
            .await
            .map_err(|_| AppError::internal(anyhow::anyhow!("writer stopped")))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(code)) => Err(AppError::internal(anyhow::anyhow!(
                "group write failed ({code})"
            ))),
            Err(_) => Err(AppError::internal(anyhow::anyhow!("writer stopped"))),
        }
    }

    /// Stores `row` with whatever else is waiting; returns once it is written.
    pub async fn write(&self, row: T) -> AppResult<()> {
        self.send(Some(row)).await
    }

    /// Queues `row` without waiting for it (waiting only while the queue is full). A failure
    /// is logged by the writer.
    pub async fn queue(&self, row: T) {
        if self.sender.send((Some(row), None)).await.is_err() {
            tracing::error!("row not queued: the writer stopped");
        }
    }

    /// Returns once every row queued before is stored (or has failed).
    pub async fn flush(&self) -> AppResult<()> {
        self.send(None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        commit(alone, &mut write).await;
        commit(together, &mut write).await;
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
