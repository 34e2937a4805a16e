use std::collections::BTreeMap;

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::store::{self, TemplateRow};
use super::{AuthSpec, EXPORT_FORMAT, EndpointSpec, HealthSpec, TemplateDoc, category_name};
use crate::audit;
use crate::auth::{Scope, ScopeGuard, principal};
use crate::context::{Connection, Edge, Page, conn};
use crate::error::{AppError, AppResult};
use crate::providers::graphql::ProviderNode;
use crate::providers::{self, ProviderCategory};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum TemplateVisibility {
    /// Only the team's own.
    Team,
    /// Listed in every team's marketplace (installable; never a credential or a config).
    Public,
}

impl TemplateVisibility {
    fn as_str(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Public => "public",
        }
    }
}

#[derive(SimpleObject)]
pub struct TemplateVersion {
    pub version: i32,
    pub created_at: DateTime<Utc>,
}

/// A team's custom integration template.
pub struct TemplateNode(pub TemplateRow);

#[Object(name = "IntegrationTemplate")]
impl TemplateNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.template_key
    }
    /// What `registerIntegration` takes as `provider`.
    async fn provider_key(&self) -> String {
        format!("{}{}", super::PREFIX, self.0.template_key)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn category(&self) -> ProviderCategory {
        super::category_of(&self.0.category).unwrap_or(ProviderCategory::Custom)
    }
    async fn visibility(&self) -> TemplateVisibility {
        if self.0.visibility == "public" {
            TemplateVisibility::Public
        } else {
            TemplateVisibility::Team
        }
    }
    async fn latest_version(&self) -> i32 {
        self.0.latest_version
    }
    async fn install_count(&self) -> i64 {
        self.0.install_count
    }
    async fn installed_from(&self) -> Option<ID> {
        self.0.installed_from.clone().map(ID)
    }
    async fn versions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TemplateVersion>> {
        Ok(store::versions(&mut *conn(ctx).await?, &self.0.id)
            .await?
            .into_iter()
            .map(|(version, at)| TemplateVersion {
                version,
                created_at: at.and_utc(),
            })
            .collect())
    }
    /// The template document of a version (the latest when omitted).
    async fn document(
        &self,
        ctx: &Context<'_>,
        version: Option<i32>,
    ) -> async_graphql::Result<Json<Value>> {
        let row = store::version(
            &mut *conn(ctx).await?,
            &self.0.id,
            version.unwrap_or(self.0.latest_version),
        )
        .await?;
        Ok(Json(serde_json::from_str(&row.document)?))
    }
    /// How many of the team's integrations use it.
    async fn integration_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        Ok(store::users(&mut *conn(ctx).await?, &self.0.id).await?)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at.and_utc()
    }
}

#[derive(InputObject)]
pub struct TemplateAuthInput {
    /// `none`, `bearer`, `basic`, `header`, `query` or `oauth2`.
    #[graphql(name = "type")]
    pub kind: String,
    pub token_field: Option<String>,
    pub username_field: Option<String>,
    pub password_field: Option<String>,
    pub header_name: Option<String>,
    pub query_param: Option<String>,
}

#[derive(InputObject)]
pub struct TemplateHealthCheckInput {
    pub method: String,
    pub path: String,
    pub expect_status: Option<i32>,
}

#[derive(InputObject)]
pub struct TemplateEndpointInput {
    pub name: String,
    pub description: Option<String>,
    pub method: String,
    /// Under the base URL, with `{param}` placeholders.
    pub path: String,
    /// Query parameter → template string.
    pub query: Option<Json<BTreeMap<String, String>>>,
    /// Header → template string.
    pub headers: Option<Json<BTreeMap<String, String>>>,
    /// A JSON template: `"{param}"` takes the parameter's value with its JSON type.
    pub body: Option<Json<Value>>,
    /// JSON Schema (2020-12) of the parameters.
    pub params_schema: Option<Json<Value>>,
    /// A JSON Pointer into the answer: what `invokeEndpoint` returns as `data`.
    pub response_pointer: Option<String>,
}

#[derive(InputObject)]
pub struct IntegrationTemplateInput {
    /// `a-z0-9_-`; the provider key is `template:<key>`.
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub category: ProviderCategory,
    /// JSON Schema (2020-12) of the configuration.
    pub config_schema: Json<Value>,
    /// JSON Schema (2020-12) of the credentials (sealed, never returned).
    pub credentials_schema: Json<Value>,
    pub auth: TemplateAuthInput,
    /// May reference configuration fields: `http://{config.host}/api`.
    pub base_url: String,
    pub health_check: Option<TemplateHealthCheckInput>,
    pub endpoints: Option<Vec<TemplateEndpointInput>>,
}

impl IntegrationTemplateInput {
    fn into_doc(self) -> AppResult<TemplateDoc> {
        let endpoints = self.endpoints.unwrap_or_default();
        if endpoints.len() > super::MAX_ENDPOINTS {
            return Err(AppError::validation(format!(
                "endpoints: at most {}",
                super::MAX_ENDPOINTS
            )));
        }
        let doc = TemplateDoc {
            key: self.key,
            name: self.name,
            description: self.description.unwrap_or_default(),
            category: category_name(self.category).to_string(),
            config_schema: self.config_schema.0,
            credentials_schema: self.credentials_schema.0,
            auth: AuthSpec {
                kind: self.auth.kind,
                token_field: self.auth.token_field,
                username_field: self.auth.username_field,
                password_field: self.auth.password_field,
                header_name: self.auth.header_name,
                query_param: self.auth.query_param,
            },
            base_url: self.base_url,
            health_check: self.health_check.map(|h| HealthSpec {
                method: h.method,
                path: h.path,
                expect_status: h.expect_status.map(|s| s.clamp(0, 1000) as u16),
            }),
            endpoints: endpoints
                .into_iter()
                .map(|e| EndpointSpec {
                    name: e.name,
                    description: e.description.unwrap_or_default(),
                    method: e.method,
                    path: e.path,
                    query: e.query.map(|q| q.0).unwrap_or_default(),
                    headers: e.headers.map(|h| h.0).unwrap_or_default(),
                    body: e.body.map(|b| b.0),
                    params_schema: e.params_schema.map(|s| s.0),
                    response_pointer: e.response_pointer,
                })
                .collect(),
        };
        doc.validate()?;
        doc.to_text()?;
        Ok(doc)
    }
}

/// A marketplace entry: a public template of some team, or a built-in provider.
#[derive(SimpleObject)]
pub struct MarketplaceEntry {
    /// The template's id (null for a built-in provider).
    pub id: Option<ID>,
    pub builtin: bool,
    /// The template's key, or the built-in provider's.
    pub key: String,
    pub name: String,
    pub description: String,
    pub category: ProviderCategory,
    /// The publishing team's name (null for a built-in provider).
    pub publisher: Option<String>,
    pub latest_version: i32,
    pub install_count: i64,
}

async fn entry(conn: &mut crate::db::DbConn, row: TemplateRow) -> AppResult<MarketplaceEntry> {
    Ok(MarketplaceEntry {
        id: Some(ID(row.id.clone())),
        builtin: false,
        publisher: Some(store::team_name(conn, &row.team_id).await?),
        category: super::category_of(&row.category).unwrap_or(ProviderCategory::Custom),
        key: row.template_key,
        name: row.name,
        description: row.description,
        latest_version: row.latest_version,
        install_count: row.install_count,
    })
}

/// The document as exported: the template and a format marker, nothing of any integration.
fn export(doc: &Value) -> Value {
    let mut out = doc.clone();
    out["format"] = json!(EXPORT_FORMAT);
    out
}

#[derive(Default)]
pub struct TemplateQuery;

/// The catalogue's providers and the team's templates (at their latest versions).
async fn team_providers(ctx: &Context<'_>, team_id: &str) -> AppResult<Vec<ProviderNode>> {
    let mut nodes: Vec<ProviderNode> = providers::catalogue::all()
        .iter()
        .map(ProviderNode::Builtin)
        .collect();
    for (row, document) in store::latest_of_team(&mut *conn(ctx).await?, team_id).await? {
        let doc: TemplateDoc = serde_json::from_str(&document)?;
        nodes.push(ProviderNode::Custom(std::sync::Arc::new(
            super::as_provider(&row, row.latest_version, &doc),
        )));
    }
    Ok(nodes)
}

#[Object]
impl TemplateQuery {
    /// The provider catalogue and the team's templates (`template:<key>`), optionally one
    /// category.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn providers(
        &self,
        ctx: &Context<'_>,
        category: Option<ProviderCategory>,
    ) -> async_graphql::Result<Vec<ProviderNode>> {
        let caller = principal(ctx)?;
        let all = team_providers(ctx, &caller.team_id).await?;
        Ok(all
            .into_iter()
            .filter(|p| {
                category.is_none_or(|c| match p {
                    ProviderNode::Builtin(b) => b.category == c,
                    ProviderNode::Custom(t) => t.category == c,
                })
            })
            .collect())
    }

    /// One provider by key (`jira`, or `template:<key>` for a team's template); null when
    /// unknown.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn provider(
        &self,
        ctx: &Context<'_>,
        key: String,
    ) -> async_graphql::Result<Option<ProviderNode>> {
        let caller = principal(ctx)?;
        if let Some(builtin) = providers::find(&key) {
            return Ok(Some(ProviderNode::Builtin(builtin)));
        }
        let mut db = conn(ctx).await?;
        Ok(
            match super::resolve(&mut db, &caller.team_id, &key, None).await {
                Ok(Some((row, version, doc))) => Some(ProviderNode::Custom(std::sync::Arc::new(
                    super::as_provider(&row, version, &doc),
                ))),
                _ => None,
            },
        )
    }

    /// The team's templates, oldest first.
    #[graphql(guard = "ScopeGuard(Scope::TemplatesRead)")]
    async fn integration_templates(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<TemplateNode>> {
        let caller = principal(ctx)?;
        let page = Page::new("template", first, after)?;
        let rows = store::list(
            &mut *conn(ctx).await?,
            &caller.team_id,
            page.after.as_deref(),
            page.fetch(),
        )
        .await?;
        Ok(page.connection(rows, None, |r| &r.id, TemplateNode))
    }

    #[graphql(guard = "ScopeGuard(Scope::TemplatesRead)")]
    async fn integration_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<TemplateNode> {
        let caller = principal(ctx)?;
        Ok(TemplateNode(
            store::get(&mut *conn(ctx).await?, &caller.team_id, &id).await?,
        ))
    }

    /// A version of the team's template as a JSON document to keep in git
    /// (`importIntegrationTemplate` takes it back).
    #[graphql(guard = "ScopeGuard(Scope::TemplatesRead)")]
    async fn export_integration_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i32>,
    ) -> async_graphql::Result<Json<Value>> {
        let caller = principal(ctx)?;
        let mut db = conn(ctx).await?;
        let row = store::get(&mut db, &caller.team_id, &id).await?;
        let version =
            store::version(&mut db, &row.id, version.unwrap_or(row.latest_version)).await?;
        Ok(Json(export(&serde_json::from_str(&version.document)?)))
    }

    /// Public templates of every team (and, on the first page, the built-in providers),
    /// optionally matching `search` (name, key, description) and a category.
    #[graphql(guard = "ScopeGuard(Scope::TemplatesRead)")]
    async fn marketplace_templates(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        category: Option<ProviderCategory>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<MarketplaceEntry>> {
        principal(ctx)?;
        if search.as_ref().is_some_and(|s| s.chars().count() > 100) {
            return Err(AppError::validation("search: at most 100 characters").into());
        }
        let search = search.filter(|s| !s.trim().is_empty());
        let page = Page::new("marketplace", first, after)?;
        let mut db = conn(ctx).await?;
        let rows = store::list_public(
            &mut db,
            search.as_deref(),
            category.map(category_name),
            page.after.as_deref(),
            page.fetch(),
        )
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.id.clone();
            entries.push((id, entry(&mut db, row).await?));
        }
        let mut connection = page.connection(entries, None, |(id, _)| id, |(_, e)| e);
        if page.after.is_none() {
            let needle = search.as_deref().map(str::to_lowercase);
            let builtins = providers::catalogue::all()
                .iter()
                .filter(|p| category.is_none_or(|c| p.category == c))
                .filter(|p| {
                    needle
                        .as_deref()
                        .is_none_or(|n| p.key.contains(n) || p.name.to_lowercase().contains(n))
                })
                .map(|p| Edge {
                    cursor: String::new(),
                    node: MarketplaceEntry {
                        id: None,
                        builtin: true,
                        key: p.key.to_string(),
                        name: p.name.to_string(),
                        description: format!("Built-in provider ({})", p.docs_url),
                        category: p.category,
                        publisher: None,
                        latest_version: 1,
                        install_count: 0,
                    },
                });
            let mut edges: Vec<Edge<MarketplaceEntry>> = builtins.collect();
            edges.append(&mut connection.edges);
            connection.edges = edges;
        }
        Ok(connection)
    }
}

#[derive(Default)]
pub struct TemplateMutation;

#[Object]
impl TemplateMutation {
    /// Saves a template (version 1) after validating all of it.
    #[graphql(guard = "ScopeGuard(Scope::TemplatesWrite)")]
    async fn create_integration_template(
        &self,
        ctx: &Context<'_>,
        input: IntegrationTemplateInput,
    ) -> async_graphql::Result<TemplateNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        let doc = input.into_doc()?;
        let row = store::create(&mut *conn(ctx).await?, &caller.team_id, &doc, None).await?;
        audit::target(ctx, "template", &row.id);
        Ok(TemplateNode(row))
    }

    /// Saves a new version; integrations keep theirs until `upgradeIntegration`.
    #[graphql(guard = "ScopeGuard(Scope::TemplatesWrite)")]
    async fn update_integration_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: IntegrationTemplateInput,
    ) -> async_graphql::Result<TemplateNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        audit::target(ctx, "template", &id);
        let doc = input.into_doc()?;
        Ok(TemplateNode(
            store::add_version(&mut *conn(ctx).await?, &caller.team_id, &id, &doc).await?,
        ))
    }

    /// Deletes a template and its versions; CONFLICT while integrations use it.
    #[graphql(guard = "ScopeGuard(Scope::TemplatesWrite)")]
    async fn delete_integration_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<ID> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        audit::target(ctx, "template", &id);
        store::delete(&mut *conn(ctx).await?, &caller.team_id, &id).await?;
        Ok(id)
    }

    /// TEAM keeps it to the team; PUBLIC lists it in every team's marketplace.
    #[graphql(guard = "ScopeGuard(Scope::TemplatesWrite)")]
    async fn publish_integration_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
        visibility: TemplateVisibility,
    ) -> async_graphql::Result<TemplateNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        audit::target(ctx, "template", &id);
        Ok(TemplateNode(
            store::set_visibility(
                &mut *conn(ctx).await?,
                &caller.team_id,
                &id,
                visibility.as_str(),
            )
            .await?,
        ))
    }

    /// Copies a public template's version (the latest when omitted) into the caller's team,
    /// under its key or `key`.
    #[graphql(guard = "ScopeGuard(Scope::TemplatesWrite)")]
    async fn install_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i32>,
        key: Option<String>,
    ) -> async_graphql::Result<TemplateNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        let mut db = conn(ctx).await?;
        let source = store::public(&mut db, &id).await?;
        let stored = store::version(
            &mut db,
            &source.id,
            version.unwrap_or(source.latest_version),
        )
        .await?;
        let mut doc = TemplateDoc::parse(&stored.document)?;
        if let Some(key) = key {
            doc.key = key;
            doc.validate()?;
        }
        let row = store::create(&mut db, &caller.team_id, &doc, Some(&source.id)).await?;
        store::count_install(&mut db, &source.id).await?;
        audit::target(ctx, "template", &row.id);
        Ok(TemplateNode(row))
    }

    /// Creates a template from an exported document (`exportIntegrationTemplate`).
    #[graphql(guard = "ScopeGuard(Scope::TemplatesWrite)")]
    async fn import_integration_template(
        &self,
        ctx: &Context<'_>,
        document: Json<Value>,
    ) -> async_graphql::Result<TemplateNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        let mut document = document.0;
        match document.as_object_mut().and_then(|o| o.remove("format")) {
            Some(format) if format == EXPORT_FORMAT => {}
            _ => {
                return Err(AppError::validation(format!(
                    "format: an exported template says \"format\": \"{EXPORT_FORMAT}\""
                ))
                .into());
            }
        }
        let doc = TemplateDoc::parse(&document.to_string())?;
        let row = store::create(&mut *conn(ctx).await?, &caller.team_id, &doc, None).await?;
        audit::target(ctx, "template", &row.id);
        Ok(TemplateNode(row))
    }
}
