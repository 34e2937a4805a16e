//! Validation once per document, and [`Checks`], the schema's one extension that applies it
//! with the error codes and the limits. async-graphql validates every request in full (about a tenth
//! of an `executeRequest`'s CPU), yet everything its rules check depends on the document and
//! the operation name alone, except one thing: whether each variable's value fits its type.
//! So once a kept document (see `context::documents`) passed validation, a later request with
//! the same text and operation name gets that result back, provided its variables fit their
//! declared types here ([`fits`], the same test async-graphql applies). A request whose
//! variables do not fit (or hold a `null`, which a variable with a default may not pass to a
//! non-null argument) is validated in full, so every refusal is async-graphql's own, word for
//! word.
//!
//! One refusal is ours, on every request: async-graphql's validation lets a variable of an
//! input object type through when its value is not an object (a list, a string), and fails
//! only when the field runs, so a mutation of several fields ran the ones before it. Such a
//! variable is refused with VALIDATION_FAILED before anything runs ([`misshapen`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use async_graphql::{
    Positioned, Request, Response, ServerError, ServerResult, ValidationResult, Value, Variables,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::codes;
use super::limits::{self, QueryLimits};
use crate::context::documents::DocumentCache;

/// The schema's one extension: every check around an operation, in this order: error codes
/// on every answer (`codes`), the variable and document limits (`limits`), validation once
/// per document (this module). One extension rather than three: async-graphql wraps every
/// hook and every field resolved in one boxed call per extension installed.
pub struct Checks {
    pub documents: Arc<DocumentCache>,
    pub limits: QueryLimits,
}

impl ExtensionFactory for Checks {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerRequest {
            documents: self.documents.clone(),
            limits: self.limits,
            state: Mutex::new(State::default()),
        })
    }
}

struct PerRequest {
    documents: Arc<DocumentCache>,
    limits: QueryLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    operation: Option<String>,
    /// The document's text, to keep its validation result under (a miss).
    query: Option<String>,
    /// The result of an earlier validation that stands for this request (a hit).
    known: Option<ValidationResult>,
    /// A variable whose value is not the object its input type needs, and that type.
    misshapen: Option<(String, String)>,
}

impl PerRequest {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for PerRequest {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        codes::tagged(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(codes::tagged).boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.state().operation = request.operation_name.clone();
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        limits::check_variables(variables)?;
        let document = next.run(ctx, query, variables).await?;
        self.limits.check_document(&document)?;
        let registry = &ctx.schema_env.registry;
        let mut state = self.state();
        let selected = operation(&document, state.operation.as_deref());
        state.misshapen = selected.and_then(|op| misshapen_variable(registry, &op.node, variables));
        let known = self.documents.validated(query, state.operation.as_deref());
        state.known = known
            .filter(|_| selected.is_some_and(|op| variables_fit(registry, &op.node, variables)));
        if state.known.is_none() {
            state.query = Some(query.to_string());
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let known = self.state().known.take();
        let result = match known {
            Some(result) => result,
            None => {
                let result = next.run(ctx).await?;
                self.limits.check_result(&result)?;
                let mut state = self.state();
                if let Some(query) = state.query.take() {
                    self.documents
                        .passed(&query, state.operation.as_deref(), result);
                }
                result
            }
        };
        match self.state().misshapen.take() {
            Some((name, ty)) => Err(vec![ServerError::new(
                format!(
                    "the variable `${name}` does not fit its type `{ty}`: an input object is \
                     given as an object"
                ),
                None,
            )]),
            None => Ok(result),
        }
    }
}

/// Whether `request` may run without being validated again (on `graphql::FastSchema`): its
/// document is kept and passed validation before under the same operation name, its variables
/// are within the limits (`limits::check_variables`), fit their declared types and hold no
/// misshapen input object. Whatever is not admitted here is validated in full, so every
/// refusal stays async-graphql's own (or ours, above).
pub fn admitted(documents: &DocumentCache, registry: &Registry, request: &mut Request) -> bool {
    if limits::check_variables(&request.variables).is_err()
        || documents
            .validated(&request.query, request.operation_name.as_deref())
            .is_none()
    {
        return false;
    }
    // Taken out for the moment: the parsed document borrows the request.
    let variables = std::mem::take(&mut request.variables);
    let name = request.operation_name.take();
    let admitted = match request.parsed_query() {
        Ok(document) => operation(document, name.as_deref()).is_some_and(|op| {
            misshapen_variable(registry, &op.node, &variables).is_none()
                && variables_fit(registry, &op.node, &variables)
        }),
        Err(_) => false,
    };
    request.variables = variables;
    request.operation_name = name;
    admitted
}

/// The first variable given whose value holds something other than an object (or null) where
/// its type needs an input object, and that type.
fn misshapen_variable(
    registry: &Registry,
    operation: &OperationDefinition,
    variables: &Variables,
) -> Option<(String, String)> {
    operation
        .variable_definitions
        .iter()
        .find_map(|definition| {
            let definition = &definition.node;
            let ty = definition.var_type.node.to_string();
            let value = variables.get(&definition.name.node)?;
            misshapen(registry, &ty, value).then(|| (definition.name.node.to_string(), ty))
        })
}

/// Whether `value` holds, anywhere, something other than an object (or null) where the type
/// named `ty` needs an input object. async-graphql's validation accepts it; running the field
/// then fails. Values nest at most `limits::MAX_VARIABLE_DEPTH` deep.
pub fn misshapen(registry: &Registry, ty: &str, value: &Value) -> bool {
    match MetaTypeName::create(ty) {
        MetaTypeName::NonNull(inner) => misshapen(registry, inner, value),
        MetaTypeName::List(inner) => match value {
            Value::List(items) => items.iter().any(|item| misshapen(registry, inner, item)),
            _ => misshapen(registry, inner, value),
        },
        MetaTypeName::Named(name) => match (registry.types.get(name), value) {
            (_, Value::Null) => false,
            (Some(MetaType::InputObject { input_fields, .. }), Value::Object(values)) => {
                input_fields.values().any(|field| {
                    values
                        .get(field.name.as_str())
                        .is_some_and(|value| misshapen(registry, &field.ty, value))
                })
            }
            (Some(MetaType::InputObject { .. }), _) => true,
            _ => false,
        },
    }
}

/// The operation a request with `name` selects, as async-graphql picks it.
fn operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), None) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        _ => None,
    }
}

/// Whether every variable given fits the type the operation declares for it. A `null` never
/// counts as fitting here: a variable with a default may stand where null is not allowed.
fn variables_fit(
    registry: &Registry,
    operation: &OperationDefinition,
    variables: &Variables,
) -> bool {
    operation.variable_definitions.iter().all(|definition| {
        let definition = &definition.node;
        match variables.get(&definition.name.node) {
            None => true,
            Some(Value::Null) => false,
            Some(value) => fits(registry, &definition.var_type.node.to_string(), value),
        }
    })
}

/// Whether `value` is a valid input value of the type named `ty`: async-graphql's own test
/// (`is_valid_input_value` in its validation, which is not public), answering yes or no.
/// Values nest at most `limits::MAX_VARIABLE_DEPTH` deep (checked before parsing).
pub fn fits(registry: &Registry, ty: &str, value: &Value) -> bool {
    match MetaTypeName::create(ty) {
        MetaTypeName::NonNull(inner) => {
            !matches!(value, Value::Null) && fits(registry, inner, value)
        }
        MetaTypeName::List(inner) => match value {
            Value::List(items) => items.iter().all(|item| fits(registry, inner, item)),
            Value::Null => true,
            _ => fits(registry, inner, value),
        },
        MetaTypeName::Named(name) => {
            if matches!(value, Value::Null) {
                return true;
            }
            match registry.types.get(name) {
                None => false,
                Some(MetaType::Scalar { is_valid, .. }) => {
                    is_valid.as_ref().is_none_or(|valid| valid(value))
                }
                Some(MetaType::Enum { enum_values, .. }) => match value {
                    Value::Enum(item) => enum_values.contains_key(item.as_str()),
                    Value::String(item) => enum_values.contains_key(item.as_str()),
                    _ => false,
                },
                Some(MetaType::InputObject {
                    input_fields,
                    oneof,
                    ..
                }) => match value {
                    Value::Object(values) => {
                        if *oneof
                            && (values.len() != 1
                                || values.values().next().is_some_and(|v| v == &Value::Null))
                        {
                            return false;
                        }
                        let mut unknown: HashSet<&str> =
                            values.keys().map(|key| key.as_str()).collect();
                        let fields_fit = input_fields.values().all(|field| {
                            unknown.remove(field.name.as_str());
                            match values.get(field.name.as_str()) {
                                Some(value) => fits(registry, &field.ty, value),
                                None => {
                                    !MetaTypeName::create(&field.ty).is_non_null()
                                        || field.default_value.is_some()
                                }
                            }
                        });
                        fields_fit && unknown.is_empty()
                    }
                    _ => true,
                },
                Some(_) => true,
            }
        }
    }
}
