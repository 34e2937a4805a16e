//! The unit of work of a root mutation field: every database write the mutation makes through
//! [`super::conn`] and its audit row commit in one transaction, or none does. What the change
//! tells the rest of the process (events, cache invalidations) waits for the commit, so no one
//! reacts to a change that was rolled back or re-caches the old state before it is gone.

use std::sync::Arc;
use std::sync::Mutex as SyncMutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_graphql::Context;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::context::AppState;
use crate::db::DbConn;
use crate::error::{AppError, AppResult};

type Effect = Box<dyn FnOnce(&AppState) + Send>;

/// One per request (request data); the audit extension opens it around each root mutation
/// field that changes stored state (root mutation fields run one after another).
#[derive(Default)]
pub struct WriteUnit {
    open: AtomicBool,
    /// Set once a root mutation field starts: from then on the request's connections come
    /// from the pool (a mutation outside a unit may still write), never a thread's readers.
    mutating: AtomicBool,
    conn: Arc<Mutex<Option<DbConn>>>,
    effects: SyncMutex<Vec<Effect>>,
}

/// A connection inside the open unit (holding it keeps others of the same mutation waiting).
pub type UnitConn = OwnedMappedMutexGuard<Option<DbConn>, DbConn>;

/// How a closed unit ended.
pub struct Closed {
    /// The transaction's connection, if the mutation used the database.
    pub conn: Option<DbConn>,
    effects: Vec<Effect>,
}

impl WriteUnit {
    /// Starts collecting the current mutation's writes and effects.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Ends the current mutation's unit: its connection (with the transaction still open) and
    /// its deferred effects, for the caller to commit and run, or roll back and drop.
    pub async fn close(&self) -> Closed {
        self.open.store(false, Ordering::SeqCst);
        let conn = self.conn.lock().await.take();
        let effects = std::mem::take(&mut *self.effects.lock().unwrap_or_else(|e| e.into_inner()));
        Closed { conn, effects }
    }

    /// Marks the request as a mutation (see [`WriteUnit::mutating`]).
    pub fn enter_mutation(&self) {
        self.mutating.store(true, Ordering::SeqCst);
    }

    /// Whether a root mutation field has started in this request.
    pub fn is_mutating(&self) -> bool {
        self.mutating.load(Ordering::SeqCst)
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// The unit's connection: the first use checks one out and begins the transaction.
    /// Waits (up to `timeout`) while another resolver of the same mutation holds it.
    pub async fn conn(&self, state: &AppState, timeout: Duration) -> AppResult<UnitConn> {
        let mut slot = tokio::time::timeout(timeout, self.conn.clone().lock_owned())
            .await
            .map_err(|_| {
                AppError::Unavailable("the mutation's database connection stayed busy".into())
            })?;
        if slot.is_none() {
            let mut conn = state.pool.get().await?;
            conn.begin_write().await?;
            *slot = Some(conn);
        }
        OwnedMutexGuard::try_map(slot, Option::as_mut)
            .map_err(|_| AppError::internal(anyhow::anyhow!("the unit lost its connection")))
    }
}

impl Closed {
    /// Runs the effects the mutation deferred (after its commit).
    pub fn run_effects(self, state: &AppState) {
        for effect in self.effects {
            effect(state);
        }
    }
}

/// The open unit of the current request, if a mutation is running in one.
pub fn current<'a>(ctx: &'a Context<'_>) -> Option<&'a WriteUnit> {
    ctx.data_opt::<WriteUnit>().filter(|unit| unit.is_open())
}

/// Runs `effect` once the current mutation has committed (at once outside a unit). Dropped if
/// the mutation rolls back.
pub fn after_commit(ctx: &Context<'_>, effect: impl FnOnce(&AppState) + Send + 'static) {
    match current(ctx) {
        Some(unit) => unit
            .effects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(effect)),
        None => effect(super::state(ctx)),
    }
}
