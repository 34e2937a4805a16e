use async_graphql::{ID, Json, Object};
use serde_json::Value;

use super::catalogue::{AuthScheme, HealthCheck, Provider, ProviderCategory};

/// A provider a team's integrations can use that the catalogue does not hold: one of the
/// team's templates (`template:<key>`), at a version.
pub struct CustomProvider {
    pub key: String,
    pub name: String,
    pub description: String,
    pub category: ProviderCategory,
    pub auth_scheme: AuthScheme,
    /// The template's `auth.type`.
    pub auth_type: String,
    pub health_check: HealthCheck,
    pub config_schema: Value,
    pub credentials_schema: Value,
    pub template_id: String,
    pub template_version: i32,
}

/// A catalogue entry or a team's template, with the JSON Schemas UIs use to draw
/// configuration and credential forms.
pub enum ProviderNode {
    Builtin(&'static Provider),
    Custom(std::sync::Arc<CustomProvider>),
}

#[Object(name = "Provider")]
impl ProviderNode {
    /// Stable key, e.g. `jira`, or `template:<key>` for a team's template.
    async fn key(&self) -> &str {
        match self {
            Self::Builtin(p) => p.key,
            Self::Custom(c) => &c.key,
        }
    }
    async fn name(&self) -> &str {
        match self {
            Self::Builtin(p) => p.name,
            Self::Custom(c) => &c.name,
        }
    }
    /// What the provider is (a template's description; empty for built-ins).
    async fn description(&self) -> &str {
        match self {
            Self::Builtin(_) => "",
            Self::Custom(c) => &c.description,
        }
    }
    async fn category(&self) -> ProviderCategory {
        match self {
            Self::Builtin(p) => p.category,
            Self::Custom(c) => c.category,
        }
    }
    async fn auth_scheme(&self) -> AuthScheme {
        match self {
            Self::Builtin(p) => p.auth_scheme,
            Self::Custom(c) => c.auth_scheme,
        }
    }
    /// Used when the configuration sets no `baseUrl`; null where every install differs (and
    /// for templates, whose base URL is built from their configuration).
    async fn default_base_url(&self) -> Option<&str> {
        match self {
            Self::Builtin(p) => p.default_base_url,
            Self::Custom(_) => None,
        }
    }
    async fn health_check(&self) -> &HealthCheck {
        match self {
            Self::Builtin(p) => &p.health_check,
            Self::Custom(c) => &c.health_check,
        }
    }
    async fn docs_url(&self) -> &str {
        match self {
            Self::Builtin(p) => p.docs_url,
            Self::Custom(_) => "",
        }
    }
    /// JSON Schema (2020-12) of the integration configuration.
    async fn config_schema(&self) -> Json<&Value> {
        match self {
            Self::Builtin(p) => Json(&p.config_schema),
            Self::Custom(c) => Json(&c.config_schema),
        }
    }
    /// JSON Schema (2020-12) of the credentials; values are write-only.
    async fn credentials_schema(&self) -> Json<&Value> {
        match self {
            Self::Builtin(p) => Json(&p.credentials_schema),
            Self::Custom(c) => Json(&c.credentials_schema),
        }
    }
    /// OAuth 2.0 at this provider (endpoints, default scopes, PKCE, refresh), if it offers it:
    /// create an app with `createOAuthApp` to connect integrations through it.
    async fn oauth(&self) -> Option<super::oauth::OAuthSpec> {
        match self {
            Self::Builtin(p) => super::oauth::spec(p.key),
            Self::Custom(c) if c.auth_type == "oauth2" => super::oauth::spec("generic_rest"),
            Self::Custom(_) => None,
        }
    }
    /// The team's template this provider is (null for built-ins).
    async fn template_id(&self) -> Option<ID> {
        match self {
            Self::Builtin(_) => None,
            Self::Custom(c) => Some(ID(c.template_id.clone())),
        }
    }
    /// The template version described (its latest, or the integration's pinned one).
    async fn template_version(&self) -> Option<i32> {
        match self {
            Self::Builtin(_) => None,
            Self::Custom(c) => Some(c.template_version),
        }
    }
}
