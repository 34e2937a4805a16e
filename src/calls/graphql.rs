use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use futures_util::StreamExt;

use super::service::{self, CallBody, CallInput, CallResult, parse_method};
use crate::audit;
use crate::auth::{Principal, Scope, ScopeGuard, principal};
use crate::context::state;
use crate::error::{AppError, AppResult};
use crate::integrations::graphql::reachable;

#[derive(InputObject, Clone)]
pub struct ExecuteRequestInput {
    /// GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    pub method: String,
    /// Under the integration's base URL, starting with `/`.
    pub path: String,
    /// Query parameters: an object of strings, numbers, booleans or lists of them.
    pub query: Option<Json<serde_json::Value>>,
    /// Extra request headers (authentication is the hub's).
    pub headers: Option<Json<serde_json::Value>>,
    /// A JSON body.
    pub body: Option<Json<serde_json::Value>>,
    /// A non-JSON body (sent as text/plain unless `headers` says otherwise).
    pub body_text: Option<String>,
}

fn object(
    value: Option<Json<serde_json::Value>>,
    what: &str,
) -> AppResult<Option<serde_json::Map<String, serde_json::Value>>> {
    match value.map(|v| v.0) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(AppError::validation(format!("`{what}` must be an object"))),
    }
}

impl ExecuteRequestInput {
    fn into_call(self) -> AppResult<CallInput> {
        let body = match (self.body, self.body_text) {
            (Some(_), Some(_)) => {
                return Err(AppError::validation(
                    "send either `body` or `bodyText`, not both",
                ));
            }
            (Some(json), None) => Some(CallBody::Json(json.0)),
            (None, Some(text)) => Some(CallBody::Text(text)),
            (None, None) => None,
        };
        Ok(CallInput {
            method: parse_method(&self.method)?,
            path: self.path,
            query: object(self.query, "query")?,
            headers: object(self.headers, "headers")?,
            body,
        })
    }
}

/// An upstream answer.
#[derive(SimpleObject)]
pub struct ExecuteResult {
    pub status: i32,
    /// True for a 2xx status.
    pub ok: bool,
    /// Response headers (cookies and hop-by-hop headers removed).
    pub headers: Json<BTreeMap<String, String>>,
    /// The body, when it is JSON.
    pub body: Option<Json<serde_json::Value>>,
    /// The body as text, when it is not JSON.
    pub body_text: Option<String>,
    pub duration_ms: i32,
    /// Attempts made (retries included).
    pub attempts: i32,
    /// Sent upstream as `X-Request-Id` and kept in the request log.
    pub correlation_id: String,
}

impl From<CallResult> for ExecuteResult {
    fn from(r: CallResult) -> Self {
        Self {
            status: r.status.into(),
            ok: (200..300).contains(&r.status),
            headers: Json(r.headers.into_iter().collect()),
            body: r.json.map(Json),
            body_text: r.text,
            duration_ms: r.duration_ms.min(i32::MAX as i64) as i32,
            attempts: r.attempts as i32,
            correlation_id: r.correlation_id,
        }
    }
}

#[derive(SimpleObject)]
pub struct CallError {
    pub code: String,
    pub message: String,
}

/// One call of a batch: its result or its error.
#[derive(SimpleObject)]
pub struct BatchCallResult {
    /// Position in the request's `calls`.
    pub index: i32,
    pub result: Option<ExecuteResult>,
    pub error: Option<CallError>,
}

/// The integration opened for calling, if the caller may reach it: from the replica's cache,
/// or read and opened (then cached).
async fn callable(
    ctx: &Context<'_>,
    caller: &Principal,
    id: &str,
) -> AppResult<Arc<service::Prepared>> {
    let targets = &state(ctx).call_targets;
    if let Some(target) = targets.get::<service::Prepared>(id) {
        if target.integration.team_id != caller.team_id {
            return Err(AppError::not_found("integration"));
        }
        caller.check_integration(&target.integration.project_id, id)?;
        return Ok(target);
    }
    // A miss reads and opens the integration: boxed, so the futures of the calls that find
    // it cached (nearly all) do not carry the state of that read.
    let generation = targets.generation();
    let row = Box::pin(reachable(ctx, caller, id)).await?;
    let target = Arc::new(Box::pin(service::prepare(state(ctx), row)).await?);
    targets.insert(
        generation,
        &target.integration.id,
        &target.integration.project_id,
        target.clone(),
    );
    Ok(target)
}

/// What `invokeEndpoint` answers: the call's result and the part of its body the
/// endpoint's `responsePointer` names.
#[derive(SimpleObject)]
pub struct InvokeResult {
    pub endpoint: String,
    /// The body at the endpoint's `responsePointer` (the whole JSON body without one).
    pub data: Option<Json<serde_json::Value>>,
    pub result: ExecuteResult,
}

#[derive(Default)]
pub struct CallsMutation;

#[Object]
impl CallsMutation {
    /// One request through the integration, authenticated the provider's way.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsExecute)")]
    async fn execute_request(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        input: ExecuteRequestInput,
    ) -> async_graphql::Result<ExecuteResult> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let target = callable(ctx, caller, &integration_id).await?;
        let result = service::execute_prepared(
            state(ctx),
            &target,
            &caller.actor.label(),
            input.into_call()?,
        )
        .await?;
        Ok(result.into())
    }

    /// Calls a named endpoint of a template integration: `params` are checked against the
    /// endpoint's `paramsSchema`, then fill its path, query, headers and body; the call goes
    /// the way `executeRequest` goes (auth, retries, SSRF guard, logs).
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsExecute)")]
    async fn invoke_endpoint(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        endpoint: String,
        params: Option<Json<serde_json::Value>>,
    ) -> async_graphql::Result<InvokeResult> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let target = callable(ctx, caller, &integration_id).await?;
        let template = target.template.clone().ok_or_else(|| {
            AppError::validation(
                "invokeEndpoint needs an integration of a template (`template:<key>`)",
            )
        })?;
        let params = params.map_or_else(|| serde_json::json!({}), |p| p.0);
        let input = service::render_endpoint(&target, &endpoint, &params)?;
        let result =
            service::execute_prepared(state(ctx), &target, &caller.actor.label(), input).await?;
        let data = template.pick(&endpoint, result.json.as_ref()).map(Json);
        Ok(InvokeResult {
            endpoint,
            data,
            result: result.into(),
        })
    }

    /// A GraphQL operation against a `graphql` integration.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsExecute)")]
    async fn execute_graphql(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        query: String,
        variables: Option<Json<serde_json::Value>>,
        operation_name: Option<String>,
    ) -> async_graphql::Result<ExecuteResult> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let target = callable(ctx, caller, &integration_id).await?;
        let result = service::execute_graphql(
            state(ctx),
            &target,
            &caller.actor.label(),
            query,
            variables.map(|v| v.0),
            operation_name,
        )
        .await?;
        Ok(result.into())
    }

    /// Several calls through one integration, run concurrently (a bounded number at once);
    /// each has its own result or error, and one failing does not fail the rest.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsExecute)")]
    async fn batch_execute(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        calls: Vec<ExecuteRequestInput>,
    ) -> async_graphql::Result<Vec<BatchCallResult>> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let state = state(ctx);
        if calls.is_empty() || calls.len() > state.config.batch_max_calls {
            return Err(AppError::validation(format!(
                "a batch holds 1 to {} calls",
                state.config.batch_max_calls
            ))
            .into());
        }
        let target = callable(ctx, caller, &integration_id).await?;
        service::ensure_enabled(&target.integration)?;
        let actor = caller.actor.label();
        let (target, actor) = (&target, &actor);
        let mut results: Vec<BatchCallResult> =
            futures_util::stream::iter(calls.into_iter().enumerate())
                .map(|(index, call)| async move {
                    let outcome = match call.into_call() {
                        Ok(call) => service::execute_prepared(state, target, actor, call).await,
                        Err(err) => Err(err),
                    };
                    match outcome {
                        Ok(result) => BatchCallResult {
                            index: index as i32,
                            result: Some(result.into()),
                            error: None,
                        },
                        Err(err) => BatchCallResult {
                            index: index as i32,
                            result: None,
                            error: Some(CallError {
                                code: err.code().into(),
                                message: err.message(),
                            }),
                        },
                    }
                })
                .buffer_unordered(state.config.batch_concurrency)
                .collect()
                .await;
        results.sort_by_key(|r| r.index);
        Ok(results)
    }
}
