//! Group commit: rows written by many concurrent requests go to the database together, one
//! INSERT per batch, while each request still waits until its own row is stored (so a client
//! that reads right after writing sees it). Under load this turns hundreds of write
//! transactions into a few; a lone request is written at once.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{DbConn, DbPool};
use crate::error::{AppError, AppResult};

/// A row type that can be inserted many at a time.
pub trait GroupInsert: Clone + Send + Sync + 'static + Sized {
    fn insert_all(conn: &mut DbConn, rows: Vec<Self>)
    -> impl Future<Output = AppResult<()>> + Send;
}

type Job<T> = (T, oneshot::Sender<Result<(), String>>);

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

async fn write<T: GroupInsert>(pool: &DbPool, rows: Vec<T>) -> Result<(), String> {
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
                let (rows, waiters): (Vec<T>, Vec<_>) = jobs.into_iter().unzip();
                let retry = (rows.len() > 1).then(|| rows.clone());
                let outcome = write(&pool, rows).await;
                match (outcome, retry) {
                    // One bad row (say, of an integration deleted meanwhile) must not cost
                    // the others theirs: write them one by one.
                    (Err(_), Some(rows)) => {
                        for (row, waiter) in rows.into_iter().zip(waiters) {
                            let _ = waiter.send(write(&pool, vec![row]).await);
                        }
                    }
                    (outcome, _) => {
                        for waiter in waiters {
                            let _ = waiter.send(outcome.clone());
                        }
                    }
                }
            }
        });
        Self { sender }
    }

    /// Stores `row` with whatever else is waiting; returns once it is written.
    pub async fn write(&self, row: T) -> AppResult<()> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send((row, done))
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
}
