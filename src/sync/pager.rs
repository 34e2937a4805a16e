//! Reading records from a side, page by page: page numbers, offsets, cursors from the body,
//! or `Link` headers that must stay under the integration's base URL.

use serde_json::{Value, json};

use super::spec::{PaginationKind, ReadSpec};
use crate::calls::service::{CallInput, CallResult, execute, parse_method};
use crate::context::AppState;
use crate::error::{AppError, AppResult};
use crate::integrations::model::IntegrationRow;

/// Reads `read` page by page through the integration.
pub struct Pager<'a> {
    state: &'a AppState,
    integration: &'a IntegrationRow,
    read: &'a ReadSpec,
    actor: &'a str,
    size: usize,
    page_number: i64,
    offset: usize,
    cursor: Option<String>,
    next_link: Option<(String, serde_json::Map<String, Value>)>,
    pages_left: i32,
    done: bool,
}

/// The most records a read may ask for per page, and the most pages one read may take:
/// checked when a config is saved and enforced again when a stored one runs.
pub const MAX_PAGE_SIZE: i32 = 1000;
pub const MAX_PAGES: i32 = 10_000;

impl<'a> Pager<'a> {
    pub fn new(
        state: &'a AppState,
        integration: &'a IntegrationRow,
        read: &'a ReadSpec,
        actor: &'a str,
    ) -> Self {
        Self {
            state,
            integration,
            read,
            actor,
            size: read.pagination.size.unwrap_or(100).clamp(1, MAX_PAGE_SIZE) as usize,
            page_number: read.pagination.start.unwrap_or(1) as i64,
            offset: 0,
            cursor: None,
            next_link: None,
            pages_left: read.max_pages.unwrap_or(MAX_PAGES).clamp(1, MAX_PAGES),
            done: false,
        }
    }

    /// The next page's records; None when there are no more.
    pub async fn next(&mut self) -> AppResult<Option<Vec<Value>>> {
        if self.done || self.pages_left <= 0 {
            return Ok(None);
        }
        self.pages_left -= 1;
        let pagination = &self.read.pagination;
        let mut query = self
            .read
            .query
            .as_ref()
            .map(|q| q.0.clone())
            .unwrap_or_default();
        let mut path = self.read.path.clone();
        let mut method = parse_method(&self.read.method)?;
        let mut headers = None;
        if let Some(endpoint) = &self.read.endpoint {
            let params = serde_json::Value::Object(
                self.read
                    .params
                    .as_ref()
                    .map(|p| p.0.clone())
                    .unwrap_or_default(),
            );
            let call = crate::calls::service::endpoint_call(
                self.state,
                self.integration,
                endpoint,
                &params,
            )
            .await?;
            method = call.method;
            path = call.path;
            headers = call.headers;
            for (name, value) in call.query.unwrap_or_default() {
                query.entry(name).or_insert(value);
            }
        }
        match pagination.kind {
            PaginationKind::None => {}
            PaginationKind::Page => {
                query.insert(
                    pagination.param.clone().unwrap_or_else(|| "page".into()),
                    json!(self.page_number),
                );
                query.insert(
                    pagination
                        .size_param
                        .clone()
                        .unwrap_or_else(|| "per_page".into()),
                    json!(self.size),
                );
            }
            PaginationKind::Offset => {
                query.insert(
                    pagination
                        .offset_param
                        .clone()
                        .unwrap_or_else(|| "offset".into()),
                    json!(self.offset),
                );
                query.insert(
                    pagination
                        .size_param
                        .clone()
                        .unwrap_or_else(|| "limit".into()),
                    json!(self.size),
                );
            }
            PaginationKind::Cursor => {
                if let Some(cursor) = &self.cursor {
                    query.insert(
                        pagination.param.clone().unwrap_or_else(|| "cursor".into()),
                        json!(cursor),
                    );
                }
            }
            PaginationKind::LinkHeader => {
                if let Some((next_path, next_query)) = self.next_link.take() {
                    path = next_path;
                    query = next_query;
                }
            }
        }
        let result = execute(
            self.state,
            self.integration,
            self.actor,
            CallInput {
                method,
                path,
                query: Some(query),
                headers,
                body: None,
            },
        )
        .await?;
        if !(200..300).contains(&result.status) {
            return Err(AppError::UpstreamError(format!(
                "reading records failed with status {}",
                result.status
            )));
        }
        let body = result.json.clone().unwrap_or(Value::Null);
        let records = body
            .pointer(&self.read.records_pointer)
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| {
                AppError::UpstreamError(format!(
                    "no records array at `{}`",
                    self.read.records_pointer
                ))
            })?;
        match pagination.kind {
            PaginationKind::None => self.done = true,
            PaginationKind::Page | PaginationKind::Offset => {
                self.done = records.len() < self.size;
                self.page_number += 1;
                self.offset += records.len();
            }
            PaginationKind::Cursor => {
                let pointer = pagination.cursor_pointer.as_deref().unwrap_or("/next");
                self.cursor = match body.pointer(pointer) {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                self.done = self.cursor.is_none();
            }
            PaginationKind::LinkHeader => {
                self.next_link = next_link_of(&result, self.integration)?;
                self.done = self.next_link.is_none();
            }
        }
        Ok(Some(records))
    }
}

/// The `rel="next"` link as a path under the integration's base URL, with its query.
fn next_link_of(
    result: &CallResult,
    integration: &IntegrationRow,
) -> AppResult<Option<(String, serde_json::Map<String, Value>)>> {
    let Some(link) = result
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("link"))
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let Some(target) = link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().trim_start_matches("rel=").trim_matches('"') == "next")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    }) else {
        return Ok(None);
    };
    let provider = crate::providers::require(&integration.provider_key)?;
    let config: Value = serde_json::from_str(&integration.config)?;
    let base = crate::calls::target::base_url(provider, &config)?;
    let next = base
        .join(&target)
        .map_err(|_| AppError::UpstreamError("invalid next link".into()))?;
    if next.origin() != base.origin() || !next.path().starts_with(base.path().trim_end_matches('/'))
    {
        return Err(AppError::UpstreamBlocked(
            "the next link leaves the integration's base URL".into(),
        ));
    }
    let path = next.path()[base.path().trim_end_matches('/').len()..].to_string();
    let query = next
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    Ok(Some((
        if path.is_empty() { "/".into() } else { path },
        query,
    )))
}
