//! The top of the house: the one schema assembled from the domains' parts, and its HTTP
//! transport (`http`: POST and GET, batches, persisted queries), with what every transport
//! shares: turning a presented credential into a caller (`authenticate`), error codes
//! (`codes`) and the operation limits (`limits`). The WebSocket transport is `live`.

pub mod authenticate;
pub mod codes;
pub mod http;
pub mod limits;

use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::api_keys::graphql::{ApiKeyMutation, ApiKeyQuery};
use crate::audit::extension::AuditLog;
use crate::audit::graphql::AuditQuery;
use crate::calls::graphql::CallsMutation;
use crate::context::AppState;
use crate::health::graphql::{HealthMutation, HealthQuery, HealthSubscription};
use crate::integrations::graphql::{
    IntegrationMutation, IntegrationQuery, IntegrationSubscription,
};
use crate::logs::graphql::{LogsQuery, LogsSubscription};
use crate::projects::graphql::{ProjectMutation, ProjectQuery};
use crate::providers::graphql::ProviderQuery;
use crate::sync::graphql::{SyncMutation, SyncQuery, SyncSubscription};
use crate::teams::graphql::ViewerQuery;
use crate::webhooks::graphql::{WebhookMutation, WebhookQuery, WebhookSubscription};
use crate::webhooks::inbound::{InboundMutation, InboundQuery};
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
    WebhookQuery,
    InboundQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    ProjectMutation,
    IntegrationMutation,
    HealthMutation,
    CallsMutation,
    SyncMutation,
    ApiKeyMutation,
    WebhookMutation,
    InboundMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    LogsSubscription,
    HealthSubscription,
    IntegrationSubscription,
    SyncSubscription,
    WebhookSubscription,
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
