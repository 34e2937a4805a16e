//! The context every domain works in, below all of them: the replica's shared state
//! ([`AppState`]) and what resolvers share (a database connection inside or outside a
//! mutation's unit of work, pages and cursors, the live event stream). It knows no domain:
//! what it holds for one (call targets, jobs) it holds by id, opaque.

pub mod documents;
pub mod flights;
pub mod jobs;
pub mod live;
pub mod page;
pub mod peers;
pub mod persisted;
pub mod targets;
pub mod unit;

use std::sync::Arc;

use async_graphql::Context;

use crate::auth::cache::CredentialCache;
use crate::auth::jwt::JwtVerifier;
use crate::auth::usage::UsageRecorder;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::db::journal::Journal;
use crate::db::{DbConn, DbPool};
use crate::error::AppResult;
use crate::events::EventBus;
use crate::http::Outbound;
use crate::ratelimit::RateLimits;
use documents::DocumentCache;
use jobs::Jobs;
pub use page::{Connection, Edge, Page, PageInfo, asks_total};
use persisted::PersistedQueries;
use targets::CallTargets;

/// What every request and resolver shares. Cheap to clone: the parts are handles.
#[derive(Clone)]
pub struct AppState {
    /// Shared, not copied: the state is cloned into every task and connection (a copy of
    /// the configuration and the keyring cost each WebSocket 4.5 KB).
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub keyring: Arc<Keyring>,
    pub credentials: Arc<CredentialCache>,
    /// Integrations opened for calls, per replica.
    pub call_targets: Arc<CallTargets>,
    /// Parsed GraphQL documents, by their text.
    pub documents: Arc<DocumentCache>,
    /// Automatic persisted queries' documents, by their sha256.
    pub persisted: Arc<PersistedQueries>,
    /// API keys' use counts and last-used times, written in batches.
    pub usage: Arc<UsageRecorder>,
    pub rate_limits: Arc<RateLimits>,
    pub jwt: Option<Arc<JwtVerifier>>,
    /// A plain client for the hub's own fetches (JWKS), from operator-set URLs.
    pub http: reqwest::Client,
    /// The one client for calls made for integrations (SSRF guard, retries, breaker...).
    pub outbound: Arc<Outbound>,
    pub events: EventBus,
    /// Request logs and audit events, group-committed.
    pub journal: Journal,
    /// Background work running on this replica (sync runs), cancellable.
    pub jobs: Arc<Jobs>,
    /// Work done once at a time per key on this replica (an integration's token refresh).
    pub flights: Arc<flights::Flights>,
    /// Set when the server starts to stop: `/readyz` turns false and every WebSocket closes
    /// at once with 1012 (service restart).
    pub going_away: tokio::sync::watch::Sender<bool>,
    /// The hub's external base URL, known once it listens (`HUB_PUBLIC_URL`, or the bound
    /// address).
    pub public_base: Arc<std::sync::OnceLock<String>>,
    /// WebSockets open on this replica, and how many may be (`HUB_MAX_CONNECTIONS`, or
    /// derived at start from the open-file limit).
    pub websockets: Arc<std::sync::atomic::AtomicUsize>,
    pub max_websockets: Arc<std::sync::atomic::AtomicUsize>,
    /// Wakes the webhook delivery worker (a delivery was queued or became due).
    pub wake_deliveries: Arc<tokio::sync::Notify>,
    /// Calls on their way upstream; the shutdown waits for their logs (cut ones included).
    pub calls_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// The other replicas on the same PostgreSQL, told of changes to their caches.
    pub peers: peers::Peers,
}

impl AppState {
    /// The hub's external base URL, without a trailing slash.
    pub fn public_base(&self) -> String {
        match (&self.config.public_url, self.public_base.get()) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(bound)) => bound.clone(),
            (None, None) => format!("http://{}", self.config.bind),
        }
    }
}

/// The application state in schema data.
pub fn state<'a>(ctx: &'a Context<'_>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// A database connection for a resolver: inside a mutation's unit of work, the unit's
/// transaction (see [`unit`]); elsewhere in a mutation one from the pool; in a query or a
/// subscription's start, a reader (on SQLite the calling thread's own, see
/// [`crate::db::reader`]).
pub async fn conn(ctx: &Context<'_>) -> AppResult<Db> {
    let state = state(ctx);
    if let Some(unit) = unit::current(ctx) {
        return Ok(Db::Unit(unit.conn(state, state.config.db_timeout()).await?));
    }
    // Requests without a unit are the subscriptions a fan-out runs, which only read.
    let mutating = ctx
        .data_opt::<unit::WriteUnit>()
        .is_some_and(unit::WriteUnit::is_mutating);
    Ok(Db::Pooled(if mutating {
        state.pool.get().await?
    } else {
        state.pool.read().await?
    }))
}

/// What [`conn`] gives: use it as `&mut DbConn`.
// Like `DbConn`: few and short-lived, boxing would only add an allocation per resolver.
#[allow(clippy::large_enum_variant)]
pub enum Db {
    Pooled(DbConn),
    Unit(unit::UnitConn),
}

impl std::ops::Deref for Db {
    type Target = DbConn;
    fn deref(&self) -> &DbConn {
        match self {
            Db::Pooled(conn) => conn,
            Db::Unit(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut DbConn {
        match self {
            Db::Pooled(conn) => conn,
            Db::Unit(conn) => conn,
        }
    }
}

/// A connection for reading request logs or audit events: the journal is flushed first, so
/// the reader sees every call and mutation that ended before it asked. Outside a unit it
/// comes from the pool: these reads may scan many rows, which the blocking pool does off the
/// request threads.
pub async fn journal_conn(ctx: &Context<'_>) -> AppResult<Db> {
    let state = state(ctx);
    state.journal.flush().await?;
    match unit::current(ctx) {
        Some(_) => conn(ctx).await,
        None => Ok(Db::Pooled(state.pool.get().await?)),
    }
}
