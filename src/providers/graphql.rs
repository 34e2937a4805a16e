use async_graphql::{Context, Json, Object};

use super::catalogue::{self, AuthScheme, HealthCheck, Provider, ProviderCategory};
use crate::auth::{Scope, ScopeGuard};

/// A catalogue entry, with the JSON Schemas UIs use to draw configuration and credential forms.
pub struct ProviderNode(pub &'static Provider);

#[Object(name = "Provider")]
impl ProviderNode {
    /// Stable key, e.g. `jira`.
    async fn key(&self) -> &str {
        self.0.key
    }
    async fn name(&self) -> &str {
        self.0.name
    }
    async fn category(&self) -> ProviderCategory {
        self.0.category
    }
    async fn auth_scheme(&self) -> AuthScheme {
        self.0.auth_scheme
    }
    /// Used when the configuration sets no `baseUrl`; null where every install differs.
    async fn default_base_url(&self) -> Option<&str> {
        self.0.default_base_url
    }
    async fn health_check(&self) -> &HealthCheck {
        &self.0.health_check
    }
    async fn docs_url(&self) -> &str {
        self.0.docs_url
    }
    /// JSON Schema (2020-12) of the integration configuration.
    async fn config_schema(&self) -> Json<&serde_json::Value> {
        Json(&self.0.config_schema)
    }
    /// JSON Schema (2020-12) of the credentials; values are write-only.
    async fn credentials_schema(&self) -> Json<&serde_json::Value> {
        Json(&self.0.credentials_schema)
    }
    /// OAuth 2.0 at this provider (endpoints, default scopes, PKCE, refresh), if it offers it:
    /// create an app with `createOAuthApp` to connect integrations through it.
    async fn oauth(&self) -> Option<super::oauth::OAuthSpec> {
        super::oauth::spec(self.0.key)
    }
}

#[derive(Default)]
pub struct ProviderQuery;

#[Object]
impl ProviderQuery {
    /// The provider catalogue, optionally one category.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn providers(
        &self,
        _ctx: &Context<'_>,
        category: Option<ProviderCategory>,
    ) -> Vec<ProviderNode> {
        catalogue::all()
            .iter()
            .filter(|p| category.is_none_or(|c| p.category == c))
            .map(ProviderNode)
            .collect()
    }

    /// One provider by key; null when the key is unknown.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn provider(&self, key: String) -> Option<ProviderNode> {
        catalogue::find(&key).map(ProviderNode)
    }
}
