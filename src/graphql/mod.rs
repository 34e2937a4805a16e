//! Builds the one schema from the domains' parts, plus the pieces resolvers share:
//! a database connection from context, and opaque cursors for pagination.

pub mod codes;
pub mod documents;
pub mod http;
pub mod limits;
pub mod persisted;
pub mod unit;

use async_graphql::{Context, MergedObject, MergedSubscription, OutputType, Schema, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::api_keys::graphql::{ApiKeyMutation, ApiKeyQuery};
use crate::app::AppState;
use crate::audit::extension::AuditLog;
use crate::audit::graphql::{AuditEventNode, AuditQuery};
use crate::auth::graphql::ViewerQuery;
use crate::calls::graphql::CallsMutation;
use crate::db::DbConn;
use crate::error::{AppError, AppResult};
use crate::health::graphql::{HealthQuery, HealthSubscription};
use crate::integrations::graphql::{
    IntegrationMutation, IntegrationNode, IntegrationQuery, IntegrationSubscription,
};
use crate::logs::graphql::{LogsQuery, LogsSubscription, RequestLogNode};
use crate::projects::graphql::{ProjectMutation, ProjectQuery};
use crate::providers::graphql::ProviderQuery;
use crate::sync::graphql::{SyncMutation, SyncQuery, SyncRunNode, SyncSubscription};
use limits::QueryLimits;

#[derive(MergedObject, Default)]
pub struct Query(
    ViewerQuery,
    ProviderQuery,
    ProjectQuery,
    IntegrationQuery,
    HealthQuery,
    LogsQuery,
    SyncQuery,
    ApiKeyQuery,
    AuditQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    ProjectMutation,
    IntegrationMutation,
    CallsMutation,
    SyncMutation,
    ApiKeyMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    LogsSubscription,
    HealthSubscription,
    IntegrationSubscription,
    SyncSubscription,
);

pub type HubSchema = Schema<Query, Mutation, Subscription>;

/// The schema over the application state: limits, audit log and production switches from
/// its configuration.
pub fn build_schema(state: AppState) -> HubSchema {
    let config = &state.config;
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .extension(codes::ErrorCodes)
    .extension(QueryLimits {
        max_depth: config.max_depth,
        max_complexity: config.max_complexity,
        max_aliases: config.max_aliases,
        max_fields: config.max_fields,
        max_directives: config.max_directives,
    })
    .extension(AuditLog)
    .limit_recursive_depth(64);
    if !config.introspection {
        builder = builder.disable_introspection();
    }
    if !config.field_suggestions {
        builder = builder.disable_suggestions();
    }
    builder.data(state).finish()
}

/// The SDL as committed in schema.graphql.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .finish()
    .sdl()
}

/// The application state in schema data.
pub fn state<'a>(ctx: &'a Context<'_>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// A database connection for a resolver: inside a mutation's unit of work, the unit's
/// transaction (see [`unit`]); elsewhere one from the pool.
pub async fn conn(ctx: &Context<'_>) -> AppResult<Db> {
    let state = state(ctx);
    match unit::current(ctx) {
        Some(unit) => Ok(Db::Unit(unit.conn(state, state.config.db_timeout()).await?)),
        None => Ok(Db::Pooled(state.pool.get().await?)),
    }
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
/// the reader sees every call and mutation that ended before it asked.
pub async fn journal_conn(ctx: &Context<'_>) -> AppResult<Db> {
    state(ctx).journal.flush().await?;
    conn(ctx).await
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` to get the next page.
    pub end_cursor: Option<String>,
}

pub type IntegrationEdge = Edge<IntegrationNode>;
pub type AuditEventEdge = Edge<AuditEventNode>;
pub type RequestLogEdge = Edge<RequestLogNode>;
pub type SyncRunEdge = Edge<SyncRunNode>;

#[derive(SimpleObject)]
#[graphql(concrete(name = "IntegrationEdge", params(IntegrationNode)))]
#[graphql(concrete(name = "AuditEventEdge", params(AuditEventNode)))]
#[graphql(concrete(name = "RequestLogEdge", params(RequestLogNode)))]
#[graphql(concrete(name = "SyncRunEdge", params(SyncRunNode)))]
pub struct Edge<T: OutputType> {
    pub cursor: String,
    pub node: T,
}

/// A page of a list in id order (ids are time-ordered UUIDv7), with Relay's conveniences:
/// `nodes` beside `edges`, and `totalCount`.
#[derive(SimpleObject)]
#[graphql(complex)]
#[graphql(concrete(name = "IntegrationConnection", params(IntegrationNode)))]
#[graphql(concrete(name = "AuditEventConnection", params(AuditEventNode)))]
#[graphql(concrete(name = "RequestLogConnection", params(RequestLogNode)))]
#[graphql(concrete(name = "SyncRunConnection", params(SyncRunNode)))]
pub struct Connection<T: OutputType>
where
    Edge<T>: OutputType,
{
    pub edges: Vec<Edge<T>>,
    pub page_info: PageInfo,
    /// Counted only when the query asks for `totalCount`.
    #[graphql(skip)]
    pub total: Option<i64>,
}

#[async_graphql::ComplexObject]
impl<T: OutputType> Connection<T>
where
    Edge<T>: OutputType,
{
    /// The edges' nodes, for clients that need no cursors.
    async fn nodes(&self) -> Vec<&T> {
        self.edges.iter().map(|edge| &edge.node).collect()
    }

    /// How many items the list's filters match (all pages).
    async fn total_count(&self) -> i64 {
        self.total.unwrap_or_default()
    }
}

/// Whether the query asks for the list's `totalCount` (worth a count query only then).
pub fn asks_total(ctx: &Context<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}

impl<T: OutputType> Connection<T>
where
    Edge<T>: OutputType,
{
    /// Builds a page from up to `limit + 1` rows (the extra row only says there is more).
    fn from_rows<R>(
        mut rows: Vec<R>,
        limit: i64,
        kind: &str,
        id_of: impl Fn(&R) -> &str,
        node: impl Fn(R) -> T,
    ) -> Self {
        let has_next_page = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let edges: Vec<Edge<T>> = rows
            .into_iter()
            .map(|row| Edge {
                cursor: encode_cursor(kind, id_of(&row)),
                node: node(row),
            })
            .collect();
        Self {
            page_info: PageInfo {
                has_next_page,
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            total: None,
        }
    }
}

const MAX_PAGE: i32 = 100;

/// One page request of a list: `first` (20 by default, at most 100) after an opaque cursor.
pub struct Page {
    kind: &'static str,
    pub limit: i64,
    /// The id the page starts after (decoded from the cursor).
    pub after: Option<String>,
}

impl Page {
    /// Checks `first` and decodes `after` (a cursor of this `kind` of list).
    pub fn new(kind: &'static str, first: Option<i32>, after: Option<String>) -> AppResult<Self> {
        Ok(Self {
            kind,
            limit: page_size(first)?,
            after: after
                .as_deref()
                .map(|c| decode_cursor(kind, c))
                .transpose()?,
        })
    }

    /// Rows to fetch: one more than the page, to tell whether there is a next one.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page of `rows` (fetched with `fetch()`), with cursors, page info and the total
    /// (when it was counted).
    pub fn connection<R, T: OutputType>(
        &self,
        rows: Vec<R>,
        total: Option<i64>,
        id_of: impl Fn(&R) -> &str,
        node: impl Fn(R) -> T,
    ) -> Connection<T>
    where
        Edge<T>: OutputType,
    {
        Connection {
            total,
            ..Connection::from_rows(rows, self.limit, self.kind, id_of, node)
        }
    }
}

/// `first` checked and defaulted (20; at most 100).
fn page_size(first: Option<i32>) -> AppResult<i64> {
    match first {
        None => Ok(20),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as i64),
        Some(_) => Err(AppError::validation(format!(
            "`first` must be between 1 and {MAX_PAGE}"
        ))),
    }
}

fn encode_cursor(kind: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}

fn decode_cursor(kind: &str, cursor: &str) -> AppResult<String> {
    let invalid = || AppError::validation("invalid cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_string)
        .ok_or_else(invalid)
}
