//! Group commit: rows written by many concurrent requests go to the database together, one
//! INSERT per batch. A writer either waits until its own row is stored (`write`), or hands the
//! row over and goes on (`submit`); a reader that must see every row handed over so far calls
//! `flush` first (rows are written in the order they were handed over).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{DbConn, DbPool};
use crate::error::{AppError, AppResult};

/// A row type that can be inserted many at a time.
pub trait GroupInsert: Send + Sync + 'static + Sized {
    fn insert_all(conn: &mut DbConn, rows: &[Self]) -> impl Future<Output = AppResult<()>> + Send;
}

type Reply = oneshot::Sender<Result<(), String>>;

enum Job<T> {
    Row(T, Option<Reply>),
    Flush(Reply),
}

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

fn stopped() -> AppError {
    AppError::internal(anyhow::anyhow!("writer stopped"))
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
                let mut rows = Vec::new();
                let mut waiters = Vec::new();
                for job in jobs {
                    match job {
                        Job::Row(row, reply) => {
                            rows.push(row);
                            waiters.extend(reply);
                        }
                        Job::Flush(reply) => waiters.push(reply),
                    }
                }
                let outcome = if rows.is_empty() {
                    Ok(())
                } else {
                    match pool.get().await {
                        Ok(mut conn) => T::insert_all(&mut conn, &rows).await,
                        Err(err) => Err(err),
                    }
                };
                let outcome = outcome.map_err(|err| {
                    let code = err.code().to_string();
                    let _ = err.into_graphql(); // logs internal details
                    code
                });
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
        Self { sender }
    }

    /// Stores `row` with whatever else is waiting; returns once it is written.
    pub async fn write(&self, row: T) -> AppResult<()> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Job::Row(row, Some(done)))
            .await
            .map_err(|_| stopped())?;
        Self::outcome(wait).await
    }

    /// Hands `row` over to be written soon; a later `flush` waits for it.
    pub async fn submit(&self, row: T) -> AppResult<()> {
        self.sender
            .send(Job::Row(row, None))
            .await
            .map_err(|_| stopped())
    }

    /// Returns once every row handed over before this call is written.
    pub async fn flush(&self) -> AppResult<()> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Job::Flush(done))
            .await
            .map_err(|_| stopped())?;
        Self::outcome(wait).await
    }

    async fn outcome(wait: oneshot::Receiver<Result<(), String>>) -> AppResult<()> {
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(code)) => Err(AppError::internal(anyhow::anyhow!(
                "group write failed ({code})"
            ))),
            Err(_) => Err(stopped()),
        }
    }
}
