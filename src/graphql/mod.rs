//! The top of the house: the one schema assembled from the domains' parts, and its HTTP
//! transport (`http`: POST and GET, batches, persisted queries), with what every transport
//! shares: turning a presented credential into a caller (`authenticate`), error codes
//! (`codes`) and the operation limits (`limits`). The WebSocket transport is `live`.

pub mod answers;
pub mod authenticate;
pub mod boxed;
pub mod codes;
pub mod http;
pub mod limits;
pub mod validated;

use async_graphql::{MergedObject, MergedSubscription, Schema};

use boxed::Boxed;

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
use crate::oauth::graphql::{OAuthMutation, OAuthQuery};
use crate::projects::graphql::{ProjectMutation, ProjectQuery};
use crate::sync::graphql::{SyncMutation, SyncQuery, SyncSubscription};
use crate::teams::graphql::ViewerQuery;
use crate::templates::graphql::{TemplateMutation, TemplateQuery};
use crate::webhooks::graphql::{WebhookMutation, WebhookQuery, WebhookSubscription};
use crate::webhooks::inbound::{InboundMutation, InboundQuery};
use limits::QueryLimits;

#[derive(MergedObject, Default)]
pub struct Query(
    ViewerQuery,
    ProjectQuery,
    IntegrationQuery,
    HealthQuery,
    LogsQuery,
    SyncQuery,
    ApiKeyQuery,
    AuditQuery,
    WebhookQuery,
    InboundQuery,
    OAuthQuery,
    TemplateQuery,
);

// A merged object asks its parts for a field from the last to the first, so the calls
// (`executeRequest` and its kin, the hot path) come last and are asked first; every other
// part is `Boxed`, so the future of a call does not carry the state of the largest mutation
// (see `boxed`). (Not a doc comment: that would become the type's GraphQL description.)
#[derive(MergedObject, Default)]
pub struct Mutation(
    Boxed<ProjectMutation>,
    Boxed<IntegrationMutation>,
    Boxed<HealthMutation>,
    Boxed<SyncMutation>,
    Boxed<ApiKeyMutation>,
    Boxed<WebhookMutation>,
    Boxed<InboundMutation>,
    Boxed<OAuthMutation>,
    Boxed<TemplateMutation>,
    CallsMutation,
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
    .extension(validated::ValidatedDocuments(state.documents.clone()))
    .extension(query_limits(&state))
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

/// The same schema for queries sent over HTTP, without extensions. async-graphql resolves
/// every field through a slower path (a registry lookup, a `ResolveInfo` and a boxed call per
/// extension) as soon as any extension is installed; a query needs none of them: the audit
/// log records mutations, and the limits and error codes are applied here around the
/// execution. `integrations(first: 20)` ×1.15–1.2 (`cargo bench --bench reads`).
pub struct QuerySchema {
    schema: HubSchema,
    limits: QueryLimits,
    /// Answers kept while their data is unchanged (SQLite; `HUB_ANSWER_CACHE_MB` > 0).
    pub answers: Option<answers::Answers>,
}

impl QuerySchema {
    /// Runs a query (the caller checked its operation type): the variables and document
    /// limits first, then the execution, then every error tagged with its code.
    pub async fn execute(&self, mut request: async_graphql::Request) -> async_graphql::Response {
        let checked = limits::check_variables(&request.variables).and_then(|()| {
            match request.parsed_query() {
                Ok(document) => self.limits.check_document(document),
                // Reported by the execution, as any parse error.
                Err(_) => Ok(()),
            }
        });
        let mut response = match checked {
            Ok(()) => self.schema.execute(request).await,
            Err(error) => async_graphql::Response::from_errors(vec![error]),
        };
        for error in &mut response.errors {
            self.limits.explain(error);
        }
        codes::tagged(response)
    }
}

pub fn build_query_schema(state: AppState) -> QuerySchema {
    let config = &state.config;
    let limits = query_limits(&state);
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(config.max_depth)
    .limit_complexity(config.max_complexity)
    .limit_recursive_depth(64);
    if !config.introspection {
        builder = builder.disable_introspection();
    }
    if !config.field_suggestions {
        builder = builder.disable_suggestions();
    }
    let kept_bytes = config.answer_cache_mb.saturating_mul(1024 * 1024);
    let schema = builder.data(state).finish();
    let answers = (kept_bytes > 0).then(|| answers::Answers::new(&schema.sdl(), kept_bytes));
    QuerySchema {
        schema,
        limits,
        answers,
    }
}

fn query_limits(state: &AppState) -> QueryLimits {
    let config = &state.config;
    QueryLimits {
        max_depth: config.max_depth,
        max_complexity: config.max_complexity,
        max_aliases: config.max_aliases,
        max_fields: config.max_fields,
        max_directives: config.max_directives,
    }
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
