//! Request logs: one row per outbound call made for an integration, secrets redacted before
//! anything is written or published; metrics derived from them; retention by age and count.

pub mod graphql;
pub mod store;

use std::sync::Arc;

use crate::context::AppState;
use crate::db::{new_id, now};
use crate::events::{Event, EventKind};
use crate::integrations::model::IntegrationRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, async_graphql::Enum)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "warn" => Self::Warn,
            "error" => Self::Error,
            _ => Self::Info,
        }
    }

    /// The levels at or above this one.
    pub fn and_above(self) -> Vec<&'static str> {
        [Self::Info, Self::Warn, Self::Error]
            .into_iter()
            .filter(|l| *l >= self)
            .map(Self::as_str)
            .collect()
    }

    pub fn for_outcome(status: Option<u16>, error: bool) -> Self {
        match status {
            _ if error => Self::Error,
            Some(s) if s >= 500 => Self::Error,
            Some(s) if s >= 400 => Self::Warn,
            _ => Self::Info,
        }
    }
}

pub use crate::db::rows::RequestLogRow;

/// Query parameters whose values are always hidden.
const SENSITIVE_PARAMS: [&str; 12] = [
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "sig",
    "signature",
    "code",
    "client_secret",
    "auth",
];

/// Hides credential values anywhere in `text`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[REDACTED]");
        }
    }
    out
}

/// A URL's path and query for the log: sensitive parameters and credential values hidden.
pub fn redact_url(url: &url::Url, secrets: &[String]) -> String {
    let mut shown = url.path().to_string();
    if let Some(query) = url.query() {
        let pairs: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let value = if SENSITIVE_PARAMS
                    .iter()
                    .any(|p| lower == *p || lower.ends_with(&format!("_{p}")))
                {
                    "[REDACTED]".to_string()
                } else {
                    v.into_owned()
                };
                format!("{k}={value}")
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    redact(&shown, secrets)
}

/// What one call did, for the log.
pub struct CallRecord {
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub duration_ms: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub error: Option<String>,
    pub actor: String,
    pub correlation_id: String,
}

/// Journals the log row (readers of logs flush the journal first, so the caller's next read
/// sees it) and publishes it on the bus. Fails only when the row cannot be kept: the journal
/// is full, or (with `committed` durability) the database did not store it in time.
pub async fn record(
    state: &AppState,
    integration: &IntegrationRow,
    call: CallRecord,
) -> crate::error::AppResult<()> {
    let row = row_of(integration, call);
    let journaled = state
        .journal
        .call_row(crate::db::journal::JournalRow::RequestLog(row.clone()))
        .await;
    publish(state, row);
    journaled
}

/// Logs a call that was cut before its outcome was known (the server stopped at the end of
/// its grace period, or the caller went away). Runs where nothing can wait (a drop): the row
/// is queued if the journal has room, and the shutdown's flush stores it.
pub fn record_cut(state: &AppState, integration: &IntegrationRow, call: CallRecord) {
    let row = row_of(integration, call);
    if !state
        .journal
        .try_call_row(crate::db::journal::JournalRow::RequestLog(row.clone()))
    {
        tracing::error!(correlation_id = %row.correlation_id, "log of a cut call not kept: the journal is full");
    }
    publish(state, row);
}

fn row_of(integration: &IntegrationRow, call: CallRecord) -> RequestLogRow {
    RequestLogRow {
        id: new_id(),
        team_id: integration.team_id.clone(),
        project_id: integration.project_id.clone(),
        integration_id: integration.id.clone(),
        level: LogLevel::for_outcome(call.status, call.error.is_some())
            .as_str()
            .into(),
        method: call.method,
        path: call.path,
        status: call.status.map(i32::from),
        duration_ms: call.duration_ms,
        bytes_in: call.bytes_in,
        bytes_out: call.bytes_out,
        error: call.error,
        actor: call.actor,
        correlation_id: call.correlation_id,
        created_at: now(),
    }
}

fn publish(state: &AppState, row: RequestLogRow) {
    let row = Arc::new(row);
    state.events.publish(Event {
        kind: EventKind::IntegrationRequest,
        team_id: row.team_id.clone(),
        project_id: Some(row.project_id.clone()),
        subject_id: row.integration_id.clone(),
        // Subscribers read `request_log`; no JSON copy is made for every call.
        payload: serde_json::Value::Null,
        at: row.created_at,
        request_log: Some(row),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let url = url::Url::parse(
            "https://x.test/a/s3cr3tvalue/b?access_token=abc&q=1&client_secret=z&page=2",
        )
        .unwrap();
        assert_eq!(
            redact_url(&url, &["s3cr3tvalue".into()]),
            "/a/[REDACTED]/b?access_token=[REDACTED]&q=1&client_secret=[REDACTED]&page=2"
        );
    }

    #[test]
    fn levels_follow_outcomes() {
        assert_eq!(LogLevel::for_outcome(Some(200), false), LogLevel::Info);
        assert_eq!(LogLevel::for_outcome(Some(404), false), LogLevel::Warn);
        assert_eq!(LogLevel::for_outcome(Some(503), false), LogLevel::Error);
        assert_eq!(LogLevel::for_outcome(None, true), LogLevel::Error);
        assert_eq!(LogLevel::Warn.and_above(), ["warn", "error"]);
    }
}
