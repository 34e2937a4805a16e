//! SQLite reads on the calling thread.
//!
//! A pooled SQLite connection runs each statement on Tokio's blocking pool (diesel-async's
//! `SyncConnectionWrapper`): a pool checkout, a hand-over to another thread and a wake-up
//! back, per statement. A resolver's reads are short indexed lookups that take microseconds,
//! and WAL readers never wait for the writer, so they run where they are asked instead: each
//! thread keeps a few read-only connections of its own ([`Reader`]), and the statement runs
//! inline when the query's future is polled. Writes, transactions and long scans keep the
//! pool and the hop, so a thread never waits on the write lock.

use std::cell::RefCell;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::SqliteConnection;
use crate::error::AppError;

/// Where a SQLite connection runs its statements: on Tokio's blocking pool (pooled
/// connections, which write and may wait for the write lock), or at once on the calling
/// thread (a thread's own readers).
pub enum Hop {
    Blocking,
    Inline,
}

impl SpawnBlocking for Hop {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        match self {
            Hop::Inline => std::future::ready(Ok(task())).boxed(),
            Hop::Blocking => match tokio::runtime::Handle::try_current() {
                Ok(handle) => FinishOnDrop {
                    task: handle.spawn_blocking(task),
                    handle,
                }
                .map(|joined| joined.map_err(Box::from))
                .boxed(),
                Err(err) => std::future::ready(Err(Box::from(err))).boxed(),
            },
        }
    }

    fn get_runtime() -> Self {
        Hop::Blocking
    }
}

/// A statement on the blocking pool that finishes before its future is gone: the connection
/// is shared with the task until then (what diesel-async's own Tokio hop does).
struct FinishOnDrop<R> {
    handle: tokio::runtime::Handle,
    task: tokio::task::JoinHandle<R>,
}

impl<R> Future for FinishOnDrop<R> {
    type Output = Result<R, tokio::task::JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().task).poll(cx)
    }
}

impl<R> Drop for FinishOnDrop<R> {
    fn drop(&mut self) {
        if self.task.is_finished() {
            return;
        }
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        if let Ok(tokio::runtime::RuntimeFlavor::MultiThread) = flavor {
            let task = Pin::new(&mut self.task);
            tokio::task::block_in_place(|| {
                let _ = self.handle.block_on(task);
            });
        } else {
            // A request's future dropped on an actix worker (a current-thread runtime, where
            // `block_in_place` would panic): the statement runs on another thread, so this
            // one waits for it by parking.
            park_until_done(&mut self.task);
        }
    }
}

/// Parks the calling thread until `task` (running elsewhere) has finished.
fn park_until_done<R>(task: &mut tokio::task::JoinHandle<R>) {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    while Pin::new(&mut *task).poll(&mut cx).is_pending() {
        std::thread::park();
    }
}

/// Idle readers a thread keeps; more are opened when a thread's resolvers read at once, and
/// closed when given back beyond this.
const KEEP_PER_THREAD: usize = 4;

thread_local! {
    static IDLE: RefCell<Vec<(Arc<str>, SqliteConnection)>> = const { RefCell::new(Vec::new()) };
}

/// A read-only connection of the current thread, given back to the thread that drops it.
pub struct Reader {
    path: Arc<str>,
    conn: Option<SqliteConnection>,
}

impl Reader {
    /// One of this thread's idle readers of `path`, or a new one (read-only: a write through
    /// it fails at once instead of waiting for the write lock on this thread).
    pub fn take(
        path: &Arc<str>,
        timeout: std::time::Duration,
        statements: &super::Statements,
    ) -> Result<Self, AppError> {
        let idle = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let at = idle.iter().rposition(|(p, _)| p == path)?;
            Some(idle.swap_remove(at).1)
        });
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let mut raw =
                    diesel::SqliteConnection::establish(path).map_err(super::unavailable)?;
                raw.batch_execute(&format!(
                    "{} PRAGMA query_only = ON;",
                    super::sqlite_pragmas(timeout)
                ))
                .map_err(super::unavailable)?;
                raw.set_instrumentation(statements.instrumentation());
                SqliteConnection::with_runtime(raw, Hop::Inline)
            }
        };
        Ok(Self {
            path: path.clone(),
            conn: Some(conn),
        })
    }
}

impl std::ops::Deref for Reader {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // A reader left inside a transaction (an error mid-way) is closed, not reused.
        use diesel_async::AsyncConnection;
        use diesel_async::TransactionManager;
        let clean =
            <SqliteConnection as AsyncConnection>::TransactionManager::transaction_manager_status_mut(
                &mut conn,
            )
            .transaction_depth()
            .is_ok_and(|depth| depth.is_none());
        if clean {
            // Ignored when the thread is ending (its readers are closed with it).
            // The oldest idle reader makes room (one of a database no longer read, say).
            let _ = IDLE.try_with(|idle| {
                let mut idle = idle.borrow_mut();
                if idle.len() >= KEEP_PER_THREAD {
                    idle.remove(0);
                }
                idle.push((self.path.clone(), conn));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A statement's future dropped mid-way on a current-thread runtime (an actix worker)
    /// waits for the statement instead of panicking, so its connection is never shared.
    #[test]
    fn a_dropped_statement_finishes_first_on_a_current_thread_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        runtime.block_on(async move {
            let mut statement = Hop::Blocking.spawn_blocking(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                seen.store(true, Ordering::SeqCst);
            });
            let waker = futures_util::task::noop_waker();
            assert!(
                statement
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            drop(statement);
            assert!(
                done.load(Ordering::SeqCst),
                "the drop waited for the statement"
            );
        });
    }

    #[test]
    fn inline_statements_run_at_once() {
        let mut ran = Hop::Inline.spawn_blocking(|| 7);
        let waker = futures_util::task::noop_waker();
        match ran.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(7)) => {}
            _ => panic!("an inline statement is ready when first polled"),
        }
    }
}
