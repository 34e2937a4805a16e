//! Queries on templates and their versions. What serves a caller is confined to its team,
//! except the marketplace's reads of public templates.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::TemplateDoc;
use crate::db::schema::{integration_template_versions, integration_templates, integrations};
use crate::db::{DbConn, new_id, now};
use crate::error::{AppError, AppResult};
use crate::with_conn;

/// At most this many templates per team, and versions per template.
pub const MAX_TEMPLATES_PER_TEAM: i64 = 200;
pub const MAX_VERSIONS: i32 = 200;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = integration_templates)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct TemplateRow {
    pub id: String,
    pub team_id: String,
    pub template_key: String,
    pub name: String,
    pub description: String,
    pub category: String,
    /// `team` or `public`.
    pub visibility: String,
    pub latest_version: i32,
    pub install_count: i64,
    /// The public template it was installed from.
    pub installed_from: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = integration_template_versions)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct VersionRow {
    pub template_id: String,
    pub version: i32,
    pub document: String,
    pub created_at: NaiveDateTime,
}

fn key_taken(key: &str) -> AppError {
    AppError::Conflict(format!("the team already has a template with key `{key}`"))
}

/// Creates a template with its first version.
pub async fn create(
    conn: &mut DbConn,
    team_id: &str,
    doc: &TemplateDoc,
    installed_from: Option<&str>,
) -> AppResult<TemplateRow> {
    let count: i64 = with_conn!(conn, |c| integration_templates::table
        .filter(integration_templates::team_id.eq(team_id))
        .count()
        .get_result(c)
        .await)?;
    if count >= MAX_TEMPLATES_PER_TEAM {
        return Err(AppError::validation(format!(
            "a team has at most {MAX_TEMPLATES_PER_TEAM} templates"
        )));
    }
    let at = now();
    let row = TemplateRow {
        id: new_id(),
        team_id: team_id.to_string(),
        template_key: doc.key.clone(),
        name: doc.name.clone(),
        description: doc.description.clone(),
        category: doc.category.clone(),
        visibility: "team".into(),
        latest_version: 1,
        install_count: 0,
        installed_from: installed_from.map(str::to_string),
        created_at: at,
        updated_at: at,
    };
    let inserted = with_conn!(conn, |c| diesel::insert_into(integration_templates::table)
        .values(&row)
        .execute(c)
        .await)
    .map_err(AppError::from);
    match inserted {
        Err(AppError::Conflict(_)) => return Err(key_taken(&doc.key)),
        other => other?,
    };
    insert_version(conn, &row.id, 1, doc).await?;
    Ok(row)
}

async fn insert_version(
    conn: &mut DbConn,
    template_id: &str,
    version: i32,
    doc: &TemplateDoc,
) -> AppResult<()> {
    let row = VersionRow {
        template_id: template_id.to_string(),
        version,
        document: doc.to_text()?,
        created_at: now(),
    };
    with_conn!(conn, |c| diesel::insert_into(
        integration_template_versions::table
    )
    .values(&row)
    .execute(c)
    .await)?;
    Ok(())
}

/// A new version of the team's template (its key cannot change).
pub async fn add_version(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    doc: &TemplateDoc,
) -> AppResult<TemplateRow> {
    let current = get(conn, team_id, id).await?;
    if doc.key != current.template_key {
        return Err(AppError::validation(format!(
            "key: a template's key cannot change (it is `{}`)",
            current.template_key
        )));
    }
    if current.latest_version >= MAX_VERSIONS {
        return Err(AppError::validation(format!(
            "a template has at most {MAX_VERSIONS} versions"
        )));
    }
    let version = current.latest_version + 1;
    // Only over the version read: a concurrent update makes this one fail, not interleave.
    let updated = with_conn!(conn, |c| diesel::update(
        integration_templates::table
            .filter(integration_templates::id.eq(id))
            .filter(integration_templates::latest_version.eq(current.latest_version))
    )
    .set((
        integration_templates::latest_version.eq(version),
        integration_templates::name.eq(&doc.name),
        integration_templates::description.eq(&doc.description),
        integration_templates::category.eq(&doc.category),
        integration_templates::updated_at.eq(now()),
    ))
    .execute(c)
    .await)?;
    if updated == 0 {
        return Err(AppError::Conflict(
            "the template changed meanwhile; read it again".into(),
        ));
    }
    insert_version(conn, id, version, doc).await?;
    get(conn, team_id, id).await
}

pub async fn get(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<TemplateRow> {
    with_conn!(conn, |c| integration_templates::table
        .filter(integration_templates::team_id.eq(team_id))
        .filter(integration_templates::id.eq(id))
        .select(TemplateRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("template"))
}

pub async fn by_key(conn: &mut DbConn, team_id: &str, key: &str) -> AppResult<TemplateRow> {
    with_conn!(conn, |c| integration_templates::table
        .filter(integration_templates::team_id.eq(team_id))
        .filter(integration_templates::template_key.eq(key))
        .select(TemplateRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("template"))
}

/// A public template of any team (the marketplace).
pub async fn public(conn: &mut DbConn, id: &str) -> AppResult<TemplateRow> {
    with_conn!(conn, |c| integration_templates::table
        .filter(integration_templates::visibility.eq("public"))
        .filter(integration_templates::id.eq(id))
        .select(TemplateRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("template"))
}

/// One page of the team's templates, by id.
pub async fn list(
    conn: &mut DbConn,
    team_id: &str,
    after: Option<&str>,
    limit: i64,
) -> AppResult<Vec<TemplateRow>> {
    let after = after.unwrap_or_default().to_string();
    Ok(with_conn!(conn, |c| integration_templates::table
        .filter(integration_templates::team_id.eq(team_id))
        .filter(integration_templates::id.gt(&after))
        .order(integration_templates::id.asc())
        .limit(limit)
        .select(TemplateRow::as_select())
        .load(c)
        .await)?)
}

/// Every template of the team (at most [`MAX_TEMPLATES_PER_TEAM`]), for the provider list.
pub async fn all_of_team(conn: &mut DbConn, team_id: &str) -> AppResult<Vec<TemplateRow>> {
    list(conn, team_id, None, MAX_TEMPLATES_PER_TEAM).await
}

/// One page of public templates, optionally matching `search` (name, key or description)
/// and a category.
pub async fn list_public(
    conn: &mut DbConn,
    search: Option<&str>,
    category: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> AppResult<Vec<TemplateRow>> {
    let after = after.unwrap_or_default().to_string();
    let pattern = search.map(|s| {
        let escaped = s
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{}%", escaped.to_lowercase())
    });
    Ok(with_conn!(conn, |c| {
        let mut query = integration_templates::table
            .filter(integration_templates::visibility.eq("public"))
            .filter(integration_templates::id.gt(after.clone()))
            .order(integration_templates::id.asc())
            .limit(limit)
            .select(TemplateRow::as_select())
            .into_boxed();
        if let Some(category) = category {
            query = query.filter(integration_templates::category.eq(category.to_string()));
        }
        if let Some(pattern) = &pattern {
            query = query.filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("(lower(name) LIKE ")
                    .bind::<diesel::sql_types::Text, _>(pattern.clone())
                    .sql(" ESCAPE '\\' OR lower(template_key) LIKE ")
                    .bind::<diesel::sql_types::Text, _>(pattern.clone())
                    .sql(" ESCAPE '\\' OR lower(description) LIKE ")
                    .bind::<diesel::sql_types::Text, _>(pattern.clone())
                    .sql(" ESCAPE '\\')"),
            );
        }
        query.load(c).await
    })?)
}

pub async fn version(conn: &mut DbConn, template_id: &str, version: i32) -> AppResult<VersionRow> {
    with_conn!(conn, |c| integration_template_versions::table
        .filter(integration_template_versions::template_id.eq(template_id))
        .filter(integration_template_versions::version.eq(version))
        .select(VersionRow::as_select())
        .first(c)
        .await
        .optional())?
    .ok_or_else(|| AppError::not_found("template version"))
}

/// The versions of a template, oldest first (documents left out).
pub async fn versions(
    conn: &mut DbConn,
    template_id: &str,
) -> AppResult<Vec<(i32, NaiveDateTime)>> {
    Ok(with_conn!(conn, |c| integration_template_versions::table
        .filter(integration_template_versions::template_id.eq(template_id))
        .order(integration_template_versions::version.asc())
        .limit(MAX_VERSIONS as i64)
        .select((
            integration_template_versions::version,
            integration_template_versions::created_at,
        ))
        .load(c)
        .await)?)
}

/// How many integrations use the template.
pub async fn users(conn: &mut DbConn, template_id: &str) -> AppResult<i64> {
    Ok(with_conn!(conn, |c| integrations::table
        .filter(integrations::template_id.eq(template_id))
        .count()
        .get_result(c)
        .await)?)
}

pub async fn delete(conn: &mut DbConn, team_id: &str, id: &str) -> AppResult<()> {
    get(conn, team_id, id).await?;
    let used = users(conn, id).await?;
    if used > 0 {
        return Err(AppError::Conflict(format!(
            "the template is used by {used} integration(s); delete them first"
        )));
    }
    with_conn!(conn, |c| diesel::delete(
        integration_templates::table
            .filter(integration_templates::team_id.eq(team_id))
            .filter(integration_templates::id.eq(id))
    )
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn set_visibility(
    conn: &mut DbConn,
    team_id: &str,
    id: &str,
    visibility: &str,
) -> AppResult<TemplateRow> {
    let updated = with_conn!(conn, |c| diesel::update(
        integration_templates::table
            .filter(integration_templates::team_id.eq(team_id))
            .filter(integration_templates::id.eq(id))
    )
    .set((
        integration_templates::visibility.eq(visibility),
        integration_templates::updated_at.eq(now()),
    ))
    .execute(c)
    .await)?;
    if updated == 0 {
        return Err(AppError::not_found("template"));
    }
    get(conn, team_id, id).await
}

pub async fn count_install(conn: &mut DbConn, id: &str) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        integration_templates::table.filter(integration_templates::id.eq(id))
    )
    .set(integration_templates::install_count.eq(integration_templates::install_count + 1))
    .execute(c)
    .await)?;
    Ok(())
}

/// The name of a team (the marketplace shows who published a template).
pub async fn team_name(conn: &mut DbConn, team_id: &str) -> AppResult<String> {
    use crate::db::schema::teams;
    Ok(with_conn!(conn, |c| teams::table
        .filter(teams::id.eq(team_id))
        .select(teams::name)
        .first(c)
        .await
        .optional())?
    .unwrap_or_default())
}

/// The team's templates with their latest documents, in one statement (the provider list).
pub async fn latest_of_team(
    conn: &mut DbConn,
    team_id: &str,
) -> AppResult<Vec<(TemplateRow, String)>> {
    Ok(with_conn!(conn, |c| integration_templates::table
        .inner_join(
            integration_template_versions::table.on(integration_template_versions::template_id
                .eq(integration_templates::id)
                .and(
                    integration_template_versions::version
                        .eq(integration_templates::latest_version)
                )),
        )
        .filter(integration_templates::team_id.eq(team_id))
        .order(integration_templates::id.asc())
        .limit(MAX_TEMPLATES_PER_TEAM)
        .select((
            TemplateRow::as_select(),
            integration_template_versions::document
        ))
        .load(c)
        .await)?)
}

/// The team's templates and the versions named by `pairs` (template id, version), in two
/// statements however many there are (a page of integrations asking for their provider).
pub async fn versions_for(
    conn: &mut DbConn,
    team_id: &str,
    pairs: &[(String, i32)],
) -> AppResult<Vec<(TemplateRow, VersionRow)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = pairs.iter().map(|(id, _)| id.as_str()).collect();
    let numbers: Vec<i32> = pairs.iter().map(|(_, v)| *v).collect();
    let templates: Vec<TemplateRow> = with_conn!(conn, |c| integration_templates::table
        .filter(integration_templates::team_id.eq(team_id))
        .filter(integration_templates::id.eq_any(&ids))
        .select(TemplateRow::as_select())
        .load(c)
        .await)?;
    let versions: Vec<VersionRow> = with_conn!(conn, |c| integration_template_versions::table
        .filter(integration_template_versions::template_id.eq_any(&ids))
        .filter(integration_template_versions::version.eq_any(&numbers))
        .select(VersionRow::as_select())
        .load(c)
        .await)?;
    Ok(versions
        .into_iter()
        .filter(|v| {
            pairs
                .iter()
                .any(|(id, n)| *id == v.template_id && *n == v.version)
        })
        .filter_map(|v| {
            let row = templates.iter().find(|t| t.id == v.template_id)?.clone();
            Some((row, v))
        })
        .collect())
}
