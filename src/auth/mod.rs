//! Who is calling: the principal resolved from a request's credentials, and the guards that
//! check its scopes on every field and mutation.

pub mod api_key;
pub mod scope;

use async_graphql::{Context, Guard};

pub use scope::{Scope, ScopeSet};

use crate::error::AppError;

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub team_id: String,
    pub actor: Actor,
    pub scopes: ScopeSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    ApiKey { id: String },
}

impl Actor {
    /// How the actor is named in records (`api_key:<id>`).
    pub fn label(&self) -> String {
        match self {
            Actor::ApiKey { id } => format!("api_key:{id}"),
        }
    }
}

impl Principal {
    pub fn require(&self, scope: Scope) -> Result<(), AppError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "this operation needs the `{}` scope",
                scope.as_str()
            )))
        }
    }
}

/// The caller of the current GraphQL operation, or UNAUTHENTICATED.
pub fn principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal, AppError> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| AppError::Unauthenticated("authentication required: send an API key".into()))
}

/// `#[graphql(guard = "ScopeGuard(Scope::X)")]`: the caller must be authenticated and hold X.
pub struct ScopeGuard(pub Scope);

impl Guard for ScopeGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        principal(ctx)?.require(self.0)?;
        Ok(())
    }
}
