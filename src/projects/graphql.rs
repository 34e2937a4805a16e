use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::{ProjectChanges, ProjectRow, store};
use crate::audit;
use crate::auth::{Scope, ScopeGuard, principal};
use crate::context::conn;
use crate::db::{new_id, now};
use crate::error::{AppError, AppResult};

pub struct ProjectNode(pub ProjectRow);

#[Object(name = "Project")]
impl ProjectNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at.and_utc()
    }
}

#[derive(InputObject)]
pub struct CreateProjectInput {
    pub name: String,
    pub description: Option<String>,
}

#[derive(InputObject)]
pub struct UpdateProjectInput {
    pub name: Option<String>,
    /// Set to null to clear.
    pub description: async_graphql::MaybeUndefined<String>,
}

fn check_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::validation(
            "project name must be 1 to 100 characters",
        ));
    }
    Ok(name.to_string())
}

fn check_description(description: Option<String>) -> AppResult<Option<String>> {
    match description {
        Some(d) if d.chars().count() > 2000 => Err(AppError::validation(
            "description is limited to 2000 characters",
        )),
        other => Ok(other),
    }
}

#[derive(Default)]
pub struct ProjectQuery;

#[Object]
impl ProjectQuery {
    /// The team's projects, oldest first.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn projects(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ProjectNode>> {
        let caller = principal(ctx)?;
        let rows = store::list(&mut *conn(ctx).await?, &caller.team_id).await?;
        Ok(rows
            .into_iter()
            .filter(|p| caller.limits.allows_project(&p.id))
            .map(ProjectNode)
            .collect())
    }

    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn project(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ProjectNode> {
        let caller = principal(ctx)?;
        caller.check_project(&id)?;
        Ok(ProjectNode(
            store::get(&mut *conn(ctx).await?, &caller.team_id, &id).await?,
        ))
    }
}

#[derive(Default)]
pub struct ProjectMutation;

#[Object]
impl ProjectMutation {
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn create_project(
        &self,
        ctx: &Context<'_>,
        input: CreateProjectInput,
    ) -> async_graphql::Result<ProjectNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        let at = now();
        let row = ProjectRow {
            id: new_id(),
            team_id: caller.team_id.clone(),
            name: check_name(&input.name)?,
            description: check_description(input.description)?,
            created_at: at,
            updated_at: at,
        };
        store::insert(&mut *conn(ctx).await?, &row).await?;
        audit::target(ctx, "project", &row.id);
        Ok(ProjectNode(row))
    }

    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn update_project(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateProjectInput,
    ) -> async_graphql::Result<ProjectNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "project", &id);
        caller.check_project(&id)?;
        let changes = ProjectChanges {
            name: input.name.as_deref().map(check_name).transpose()?,
            description: match input.description {
                async_graphql::MaybeUndefined::Undefined => None,
                async_graphql::MaybeUndefined::Null => Some(None),
                async_graphql::MaybeUndefined::Value(d) => Some(check_description(Some(d))?),
            },
            updated_at: Some(now()),
        };
        Ok(ProjectNode(
            store::update(&mut *conn(ctx).await?, &caller.team_id, &id, &changes).await?,
        ))
    }

    /// Deletes the project and every integration in it; returns its id.
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsWrite)")]
    async fn delete_project(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let caller = principal(ctx)?;
        audit::target(ctx, "project", &id);
        caller.check_project(&id)?;
        store::delete(&mut *conn(ctx).await?, &caller.team_id, &id).await?;
        let project = id.to_string();
        crate::context::unit::after_commit(ctx, move |state| {
            state.changed(crate::context::peers::Change::Project(project))
        });
        Ok(id)
    }
}
