//! Who is calling: the principal resolved from a request's credentials (API key or JWT), the
//! resources it may reach, and the guards that check its scopes on every field and mutation.

pub mod api_key;
pub mod cache;
pub mod graphql;
pub mod jwks;
pub mod jwt;
pub mod scope;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_graphql::{Context, Guard};
use chrono::NaiveDateTime;

pub use scope::{Scope, ScopeSet};

use crate::app::AppState;
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

/// Authenticates a credential presented from `client` the same way on every transport (HTTP
/// and WebSocket): while the address is throttled nothing is looked up (only a credential
/// this replica verified recently, and so holds in memory, still passes: it cannot be a
/// guess), and a refused or malformed credential (`presented` is the transport's error for
/// one it could not read) counts against the address's anonymous quota. A refusal comes
/// with the address's quota decision, and is RATE_LIMITED once that quota is spent.
pub async fn authenticate_from(
    state: &AppState,
    client: std::net::IpAddr,
    presented: Result<String, AppError>,
) -> Result<Arc<Principal>, (AppError, crate::ratelimit::Decision)> {
    let result = match presented {
        Err(err) => Err(err),
        Ok(credential)
            if state.rate_limits.throttled(client)
                && state.credentials.get(&credential).is_none() =>
        {
            Err(AppError::Unauthenticated(
                "not checked: too many failed attempts from this address".into(),
            ))
        }
        Ok(credential) => authenticate(state, &credential).await,
    };
    result.map_err(|err| {
        let decision = state
            .rate_limits
            .check(&crate::ratelimit::Subject::Anonymous(client));
        let err = match decision.retry_after_secs {
            Some(retry_after_secs) => AppError::RateLimited { retry_after_secs },
            None => err,
        };
        (err, decision)
    })
}

/// The caller behind a credential: from the cache, else by checking the API key against the
/// database or verifying the JWT. Counts the use of an API key.
pub async fn authenticate(state: &AppState, credential: &str) -> Result<Arc<Principal>, AppError> {
    let principal = match state.credentials.get(credential) {
        Some(principal) => principal,
        None => {
            let (principal, valid_until) = if credential.starts_with(api_key::PREFIX) {
                let mut conn = state.pool.get().await?;
                crate::api_keys::service::authenticate(&mut conn, credential).await?
            } else if let Some(jwt) = &state.jwt {
                let identity = jwt.verify(credential).await?;
                let mut conn = state.pool.get().await?;
                crate::teams::find(&mut conn, &identity.team_id)
                    .await
                    .map_err(|_| {
                        AppError::Unauthenticated("the token's team does not exist".into())
                    })?;
                let principal = Principal {
                    team_id: identity.team_id,
                    actor: Actor::User {
                        subject: identity.subject,
                    },
                    scopes: identity.scopes,
                    limits: ResourceLimits::default(),
                    rate: None,
                    expires_at: Some(identity.expires_at),
                };
                (principal, Some(identity.expires_at))
            } else {
                return Err(AppError::Unauthenticated(
                    "send an API key (ihk_...); JWTs are not configured".into(),
                ));
            };
            let principal = Arc::new(principal);
            state
                .credentials
                .insert(credential, principal.clone(), valid_until);
            principal
        }
    };
    if let Actor::ApiKey { id } = &principal.actor {
        state.usage.record(id);
    }
    Ok(principal)
}
