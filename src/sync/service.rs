//! Rules for sync configs: what a config must say for its direction, and that everything it
//! names exists in the caller's team. Errors name the field.

use super::mapping::{Mapper, Path, derive_reverse};
use super::pager::{MAX_PAGE_SIZE, MAX_PAGES};
use super::spec::{ConflictPolicy, ReadSpec, SyncConfigInput, SyncDirection, SyncSpec, WriteSpec};
use super::store::SyncConfigRow;
use crate::auth::Principal;
use crate::calls::target::{MAX_PATH_CHARS, MAX_QUERY_PARAMS};
use crate::db::{DbConn, new_id, now};
use crate::error::{AppError, AppResult, FieldProblem};

fn problem(path: &str, message: &str) -> FieldProblem {
    FieldProblem {
        path: path.into(),
        message: message.into(),
    }
}

fn check_path(path: &str, at: &str, problems: &mut Vec<FieldProblem>) {
    if !path.starts_with('/') {
        problems.push(problem(at, "must start with /"));
    }
    if path.chars().count() > MAX_PATH_CHARS {
        problems.push(problem(at, &format!("at most {MAX_PATH_CHARS} characters")));
    }
}

fn check_endpoint(name: &str, at: &str, problems: &mut Vec<FieldProblem>) {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        problems.push(problem(at, "not an endpoint name"));
    }
}

fn check_read(read: &ReadSpec, at: &str, problems: &mut Vec<FieldProblem>) {
    match &read.endpoint {
        Some(endpoint) => check_endpoint(endpoint, &format!("{at}.endpoint"), problems),
        None => check_path(&read.path, &format!("{at}.path"), problems),
    }
    if read
        .params
        .as_ref()
        .is_some_and(|p| p.0.len() > MAX_QUERY_PARAMS)
    {
        problems.push(problem(
            &format!("{at}.params"),
            &format!("at most {MAX_QUERY_PARAMS} parameters"),
        ));
    }
    if read.records_pointer.chars().count() > 256 {
        problems.push(problem(
            &format!("{at}.recordsPointer"),
            "at most 256 characters",
        ));
    }
    if read
        .query
        .as_ref()
        .is_some_and(|q| q.0.len() > MAX_QUERY_PARAMS)
    {
        problems.push(problem(
            &format!("{at}.query"),
            &format!("at most {MAX_QUERY_PARAMS} parameters"),
        ));
    }
    if read
        .max_pages
        .is_some_and(|m| !(1..=MAX_PAGES).contains(&m))
    {
        problems.push(problem(
            &format!("{at}.maxPages"),
            &format!("must be 1 to {MAX_PAGES}"),
        ));
    }
    if read
        .pagination
        .size
        .is_some_and(|s| !(1..=MAX_PAGE_SIZE).contains(&s))
    {
        problems.push(problem(
            &format!("{at}.pagination.size"),
            &format!("must be 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    if crate::calls::service::parse_method(&read.method).is_err() {
        problems.push(problem(&format!("{at}.method"), "unsupported method"));
    }
    if !read.records_pointer.is_empty() && !read.records_pointer.starts_with('/') {
        problems.push(problem(
            &format!("{at}.recordsPointer"),
            "must be a JSON Pointer (`/items`) or empty",
        ));
    }
}

fn check_write(write: &WriteSpec, at: &str, problems: &mut Vec<FieldProblem>) {
    match &write.create_endpoint {
        Some(endpoint) => {
            check_endpoint(endpoint, &format!("{at}.createEndpoint"), problems);
            if write.batch_size.is_some_and(|b| b > 1) {
                problems.push(problem(
                    &format!("{at}.batchSize"),
                    "an endpoint takes one record at a time",
                ));
            }
        }
        None => check_path(&write.create_path, &format!("{at}.createPath"), problems),
    }
    if let Some(endpoint) = &write.update_endpoint {
        check_endpoint(endpoint, &format!("{at}.updateEndpoint"), problems);
    }
    if let Some(path) = &write.update_path {
        check_path(path, &format!("{at}.updatePath"), problems);
    }
    for (field, method) in [
        ("createMethod", &write.create_method),
        ("updateMethod", &write.update_method),
    ] {
        if crate::calls::service::parse_method(method).is_err() {
            problems.push(problem(&format!("{at}.{field}"), "unsupported method"));
        }
    }
    if write.batch_size.is_some_and(|b| !(1..=1000).contains(&b)) {
        problems.push(problem(&format!("{at}.batchSize"), "must be 1 to 1000"));
    }
}

/// Validates an input against the caller's team and builds the row (new id when `id` is None).
pub async fn build_row(
    db: &mut DbConn,
    caller: &Principal,
    input: SyncConfigInput,
    existing: Option<&SyncConfigRow>,
) -> AppResult<SyncConfigRow> {
    caller.check_project(&input.project_id)?;
    crate::projects::store::get(db, &caller.team_id, &input.project_id).await?;
    let mut problems = Vec::new();
    for (field, id) in [
        ("sourceIntegrationId", &input.source_integration_id),
        ("targetIntegrationId", &input.target_integration_id),
    ] {
        match crate::integrations::store::get(db, &caller.team_id, id).await {
            Ok(row) if caller.limits.allows_integration(&row.project_id, &row.id) => {}
            _ => problems.push(problem(field, "no such integration in this team")),
        }
    }
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        problems.push(problem("name", "must be 1 to 100 characters"));
    }
    let needed: &[&str] = match input.direction {
        SyncDirection::SourceToTarget => &["sourceRead", "targetWrite"],
        SyncDirection::TargetToSource => &["targetRead", "sourceWrite"],
        SyncDirection::Bidirectional => &["sourceRead", "targetRead", "sourceWrite", "targetWrite"],
    };
    for field in needed {
        let present = match *field {
            "sourceRead" => input.source_read.is_some(),
            "targetRead" => input.target_read.is_some(),
            "sourceWrite" => input.source_write.is_some(),
            _ => input.target_write.is_some(),
        };
        if !present {
            problems.push(problem(field, "this direction needs it"));
        }
    }
    for (field, read) in [
        ("sourceRead", &input.source_read),
        ("targetRead", &input.target_read),
    ] {
        if let Some(read) = read {
            check_read(read, field, &mut problems);
        }
    }
    for (field, write) in [
        ("sourceWrite", &input.source_write),
        ("targetWrite", &input.target_write),
    ] {
        if let Some(write) = write {
            check_write(write, field, &mut problems);
        }
    }
    if input.mappings.is_empty() {
        problems.push(problem("mappings", "at least one mapping"));
    }
    if let Err(found) = Mapper::compile(&input.mappings, "mappings") {
        problems.extend(found);
    }
    if let Err(found) = Mapper::compile(&input.reverse_mappings, "reverseMappings") {
        problems.extend(found);
    }
    if input.direction != SyncDirection::SourceToTarget
        && input.reverse_mappings.is_empty()
        && derive_reverse(&input.mappings).is_empty()
    {
        problems.push(problem(
            "reverseMappings",
            "this direction needs mappings from target to source",
        ));
    }
    for (field, path) in [
        ("sourceKey", &input.source_key),
        ("targetKey", &input.target_key),
    ] {
        if let Err(message) = Path::parse(path) {
            problems.push(problem(field, &message));
        }
    }
    if input.conflict_policy == ConflictPolicy::NewestWins
        && (input.source_timestamp_field.is_none() || input.target_timestamp_field.is_none())
    {
        problems.push(problem(
            "conflictPolicy",
            "NEWEST_WINS needs sourceTimestampField and targetTimestampField",
        ));
    }
    if input.run_on_webhook.len() > 50
        || input
            .run_on_webhook
            .iter()
            .any(|t| t.is_empty() || t.len() > 200)
    {
        problems.push(problem(
            "runOnWebhook",
            "at most 50 event types of 1 to 200 characters",
        ));
    }
    if input.schedule_seconds.is_some_and(|s| s < 1) {
        problems.push(problem("scheduleSeconds", "at least 1"));
    }
    if !problems.is_empty() {
        return Err(AppError::Validation {
            message: problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; "),
            problems,
        });
    }
    let spec = SyncSpec {
        source_read: input.source_read,
        source_write: input.source_write,
        target_read: input.target_read,
        target_write: input.target_write,
        source_key: input.source_key,
        target_key: input.target_key,
        mappings: input.mappings,
        reverse_mappings: input.reverse_mappings,
        conflict_policy: input.conflict_policy,
        source_timestamp_field: input.source_timestamp_field,
        target_timestamp_field: input.target_timestamp_field,
    };
    let at = now();
    Ok(SyncConfigRow {
        id: existing.map_or_else(new_id, |e| e.id.clone()),
        team_id: caller.team_id.clone(),
        project_id: input.project_id.0,
        name,
        source_integration_id: input.source_integration_id.0,
        target_integration_id: input.target_integration_id.0,
        direction: input.direction.as_str().into(),
        spec: serde_json::to_string(&spec)?,
        schedule_secs: input.schedule_seconds.map(i64::from),
        enabled: input.enabled,
        last_run_at: existing.and_then(|e| e.last_run_at),
        created_at: existing.map_or(at, |e| e.created_at),
        updated_at: at,
        run_on_webhook: serde_json::to_string(&input.run_on_webhook)?,
    })
}
