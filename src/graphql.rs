//! Builds the one schema from the domains' parts, plus the pieces resolvers share:
//! a database connection from context, and opaque cursors for pagination.

use async_graphql::{Context, EmptySubscription, MergedObject, Schema, SimpleObject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::api_keys::graphql::{ApiKeyMutation, ApiKeyQuery};
use crate::crypto::Keyring;
use crate::db::{DbConn, DbPool};
use crate::error::{AppError, AppResult};
use crate::integrations::graphql::{IntegrationMutation, IntegrationQuery};
use crate::projects::graphql::{ProjectMutation, ProjectQuery};
use crate::providers::graphql::ProviderQuery;

#[derive(MergedObject, Default)]
pub struct Query(ProviderQuery, ProjectQuery, IntegrationQuery, ApiKeyQuery);

#[derive(MergedObject, Default)]
pub struct Mutation(ProjectMutation, IntegrationMutation, ApiKeyMutation);

pub type HubSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema with its shared data. Without `pool`/`keyring` it is only good for printing
/// the SDL.
pub fn build_schema(pool: Option<DbPool>, keyring: Option<Keyring>) -> HubSchema {
    let mut builder = Schema::build(Query::default(), Mutation::default(), EmptySubscription);
    if let Some(pool) = pool {
        builder = builder.data(pool);
    }
    if let Some(keyring) = keyring {
        builder = builder.data(keyring);
    }
    builder.finish()
}

/// The SDL as committed in schema.graphql.
pub fn sdl() -> String {
    build_schema(None, None).sdl()
}

/// A connection from the pool in schema data.
pub async fn conn(ctx: &Context<'_>) -> AppResult<DbConn> {
    ctx.data::<DbPool>()
        .map_err(|_| AppError::internal(anyhow::anyhow!("no database in schema data")))?
        .get()
        .await
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` to get the next page.
    pub end_cursor: Option<String>,
}

const MAX_PAGE: i32 = 100;

/// `first` checked and defaulted (20; at most 100).
pub fn page_size(first: Option<i32>) -> AppResult<i64> {
    match first {
        None => Ok(20),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as i64),
        Some(_) => Err(AppError::validation(format!(
            "`first` must be between 1 and {MAX_PAGE}"
        ))),
    }
}

pub fn encode_cursor(kind: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}

pub fn decode_cursor(kind: &str, cursor: &str) -> AppResult<String> {
    let invalid = || AppError::validation("invalid cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_string)
        .ok_or_else(invalid)
}
