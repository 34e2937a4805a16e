//! Who is calling: the principal resolved from a request's credentials (API key or JWT), the
//! resources it may reach, and the guards that check its scopes on every field and mutation.

pub mod api_key;
pub mod cache;
pub mod jwks;
pub mod jwt;
pub mod scope;
pub mod usage;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_graphql::{Context, Guard};
use chrono::NaiveDateTime;

pub use scope::{Scope, ScopeSet};

use crate::error::AppError;
use crate::ratelimit::RateSpec;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub team_id: String,
    pub actor: Actor,
    pub scopes: ScopeSet,
    pub limits: ResourceLimits,
    /// The caller's own request quota (API keys may have one).
    pub rate: Option<RateSpec>,
    /// When the credential stops being valid (key expiry, token `exp`).
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    ApiKey { id: String },
    User { subject: String },
}

impl Actor {
    /// How the actor is named in records (`api_key:<id>`, `user:<sub>`).
    pub fn label(&self) -> String {
        match self {
            Actor::ApiKey { id } => format!("api_key:{id}"),
            Actor::User { subject } => format!("user:{subject}"),
        }
    }
}

/// Projects and integrations an API key is limited to; empty limits reach the whole team.
/// A named project reaches all its integrations; a named integration reaches only itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ResourceLimits {
    pub projects: Option<BTreeSet<String>>,
    pub integrations: Option<BTreeSet<String>>,
}

impl ResourceLimits {
    pub fn is_unrestricted(&self) -> bool {
        self.projects.is_none() && self.integrations.is_none()
    }

    pub fn allows_project(&self, project_id: &str) -> bool {
        self.is_unrestricted()
            || self
                .projects
                .as_ref()
                .is_some_and(|p| p.contains(project_id))
    }

    pub fn allows_integration(&self, project_id: &str, integration_id: &str) -> bool {
        self.allows_project(project_id)
            || self
                .integrations
                .as_ref()
                .is_some_and(|i| i.contains(integration_id))
    }

    /// True when everything `other` reaches, `self` reaches too. `project_of` names the
    /// project of an integration `other` is limited to (None: unknown, so not covered).
    pub fn covers(
        &self,
        other: &ResourceLimits,
        project_of: impl Fn(&str) -> Option<String>,
    ) -> bool {
        if self.is_unrestricted() {
            return true;
        }
        if other.is_unrestricted() {
            return false;
        }
        let projects_ok = other
            .projects
            .iter()
            .flatten()
            .all(|p| self.allows_project(p));
        let integrations_ok = other
            .integrations
            .iter()
            .flatten()
            .all(|i| project_of(i).is_some_and(|project| self.allows_integration(&project, i)));
        projects_ok && integrations_ok
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

    /// NOT_FOUND unless this caller may reach the project.
    pub fn check_project(&self, project_id: &str) -> Result<(), AppError> {
        if self.limits.allows_project(project_id) {
            Ok(())
        } else {
            Err(AppError::not_found("project"))
        }
    }

    /// NOT_FOUND unless this caller may reach the integration.
    pub fn check_integration(
        &self,
        project_id: &str,
        integration_id: &str,
    ) -> Result<(), AppError> {
        if self.limits.allows_integration(project_id, integration_id) {
            Ok(())
        } else {
            Err(AppError::not_found("integration"))
        }
    }

    /// FORBIDDEN for callers limited to named resources (team-wide operations).
    pub fn require_unrestricted(&self) -> Result<(), AppError> {
        if self.limits.is_unrestricted() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "this key is limited to named projects or integrations".into(),
            ))
        }
    }

    /// The rate-limit bucket this caller is counted in.
    pub fn rate_subject(&self) -> crate::ratelimit::Subject<'_> {
        match &self.actor {
            Actor::ApiKey { id } => crate::ratelimit::Subject::ApiKey {
                id,
                spec: self.rate,
            },
            Actor::User { subject } => {
                crate::ratelimit::Subject::User(format!("{}:{subject}", self.team_id))
            }
        }
    }
}

/// The caller of the current GraphQL operation, or UNAUTHENTICATED.
pub fn principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal, AppError> {
    ctx.data_opt::<Arc<Principal>>()
        .map(Arc::as_ref)
        .ok_or_else(|| {
            AppError::Unauthenticated("authentication required: send an API key or a JWT".into())
        })
}

/// `#[graphql(guard = "ScopeGuard(Scope::X)")]`: the caller must be authenticated and hold X.
pub struct ScopeGuard(pub Scope);

impl Guard for ScopeGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        principal(ctx)?.require(self.0)?;
        Ok(())
    }
}
