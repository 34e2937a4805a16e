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

use std::sync::Arc;

use async_graphql::registry::Registry;
use async_graphql::{
    MergedObject, MergedSubscription, OutputType, Schema, SchemaBuilder, SubscriptionType,
    ValidationMode,
};

use boxed::Boxed;

use crate::api_keys::graphql::{ApiKeyMutation, ApiKeyQuery};
use crate::audit::graphql::AuditQuery;
use crate::audit::recorded::Audited;
use crate::calls::graphql::CallsMutation;
use crate::context::AppState;
use crate::context::documents::DocumentCache;
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

pub type HubSchema = Schema<Query, Audited<Mutation>, Subscription>;

/// The schema's parts with introspection, field suggestions and nesting as configured.
fn builder(state: &AppState) -> SchemaBuilder<Query, Audited<Mutation>, Subscription> {
    let config = &state.config;
    let mut builder = Schema::build(
        Query::default(),
        Audited::default(),
        Subscription::default(),
    )
    .limit_recursive_depth(64);
    if !config.introspection {
        builder = builder.disable_introspection();
    }
    if !config.field_suggestions {
        builder = builder.disable_suggestions();
    }
    builder
}

/// The schema over the application state, with every check as an extension: error codes,
/// validation kept per document, the operation limits. It runs subscriptions, batches and
/// every operation whose document is new (see [`FastSchema`] for the rest).
pub fn build_schema(state: AppState) -> HubSchema {
    builder(&state)
        .extension(validated::Checks {
            documents: state.documents.clone(),
            limits: query_limits(&state),
        })
        .data(state)
        .finish()
}

/// The same schema without extensions, for a single query or mutation over HTTP whose
/// document passed validation before (`validated::admitted`). async-graphql resolves every
/// field through a slower path (a registry lookup, a `ResolveInfo` and a boxed call per
/// extension) as soon as any extension is installed, and validates every request in full
/// unless an extension steps in; here the validation is async-graphql's fast mode (depth,
/// complexity with this request's variables, fragment cycles), the audit is the mutation
/// type's own (`audit::recorded`), and the limits and error codes are applied around the
/// execution. `integrations(first: 20)` ×1.15–1.2 (`cargo bench --bench reads`).
pub struct FastSchema {
    schema: HubSchema,
    /// The schema's types, to check a request's variables against.
    registry: Registry,
    documents: Arc<DocumentCache>,
    limits: QueryLimits,
    /// Answers kept while their data is unchanged (SQLite; `HUB_ANSWER_CACHE_MB` > 0).
    pub answers: Option<answers::Answers>,
}

impl FastSchema {
    /// Whether `request` may run here (see `validated::admitted`); one that may not runs on
    /// the schema with extensions, which validates it in full.
    pub fn admits(&self, request: &mut async_graphql::Request) -> bool {
        validated::admitted(&self.documents, &self.registry, request)
    }

    /// Runs an admitted request, then tags every error with its code. The limits that do not
    /// depend on the variables' values hold already: `admits` checked the variables' own
    /// limits, and a document is kept as validated only after it passed the document limits
    /// (`validated::Checks`); depth and complexity with this request's variables are
    /// async-graphql's own here.
    pub async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        let mut response = self.schema.execute(request).await;
        for error in &mut response.errors {
            self.limits.explain(error);
        }
        codes::tagged(response)
    }
}

pub fn build_fast_schema(state: AppState) -> FastSchema {
    let config = &state.config;
    let limits = query_limits(&state);
    let documents = state.documents.clone();
    let kept_bytes = config.answer_cache_mb.saturating_mul(1024 * 1024);
    let schema = builder(&state)
        .validation_mode(ValidationMode::Fast)
        .limit_depth(config.max_depth)
        .limit_complexity(config.max_complexity)
        .data(state)
        .finish();
    let answers = (kept_bytes > 0).then(|| answers::Answers::new(&schema.sdl(), kept_bytes));
    FastSchema {
        schema,
        registry: registry(),
        documents,
        limits,
        answers,
    }
}

/// The types of the schema, as its own registry holds them (async-graphql does not lend its
/// own): every type reachable from the roots.
fn registry() -> Registry {
    let mut registry = Registry::default();
    <Query as OutputType>::create_type_info(&mut registry);
    <Audited<Mutation> as OutputType>::create_type_info(&mut registry);
    <Subscription as SubscriptionType>::create_type_info(&mut registry);
    registry
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
        Audited::<Mutation>::default(),
        Subscription::default(),
    )
    .finish()
    .sdl()
}
