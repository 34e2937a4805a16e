//! Group commit: rows written by many concurrent requests go to the database together, one
//! transaction per batch. A writer either waits until its row is stored (so a client that
//! reads right after writing sees it) or queues it and moves on; batches are committed in the
//! order their rows were queued, so a row that is waited for is stored after every row queued
//! before it. Under load this turns hundreds of write transactions into a few; a lone row is
//! written at once.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{DbConn, DbPool};
use crate::error::{AppError, AppResult};

/// A row type that can be inserted many at a time.
pub trait GroupInsert: Clone + Send + Sync + 'static + Sized {
    fn insert_all(conn: &mut DbConn, rows: Vec<Self>)
    -> impl Future<Output = AppResult<()>> + Send;
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

async fn write<T: GroupInsert>(pool: &DbPool, rows: Vec<T>) -> Outcome {
    if rows.is_empty() {
        return Ok(());
    }
    let outcome = match pool.get().await {
        Ok(mut conn) => T::insert_all(&mut conn, rows).await,
        Err(err) => Err(err),
    };
    outcome.map_err(|err| {
        let code = err.code().to_string();
        let _ = err.into_graphql(); // logs internal details
        code
    })
}

impl<T: GroupInsert> GroupWriter<T> {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(pool: DbPool, max_batch: usize) -> Self {
        let (sender, mut receiver) = mpsc::channel::<Job<T>>(max_batch * 4);
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < max_batch {
                    match receiver.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let rows: Vec<T> = jobs.iter().filter_map(|(row, _)| row.clone()).collect();
                let outcome = write(&pool, rows).await;
                if outcome.is_err() && jobs.iter().filter(|(row, _)| row.is_some()).count() > 1 {
                    // One bad row (say, of an integration deleted meanwhile) must not cost the
                    // others theirs: write them one by one.
                    for (row, waiter) in jobs {
                        let outcome = write(&pool, row.into_iter().collect()).await;
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(outcome);
                        }
                    }
                } else {
                    for waiter in jobs.into_iter().filter_map(|(_, waiter)| waiter) {
                        let _ = waiter.send(outcome.clone());
                    }
                }
            }
        });
        Self { sender }
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
