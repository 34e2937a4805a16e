//! The rows the journal group-commits for the domains above: request logs (the `logs`
//! domain), audit events (`audit`) and inbound webhook events (`webhooks`). Defined here, below both, so the journal needs no
//! domain.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{audit_events, inbound_webhook_events, request_logs};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
// A `None` is bound as NULL (what these columns default to anyway), not written as `DEFAULT`:
// the statement is then the same for every row, and diesel finds it in its statement cache by
// its type instead of building its SQL text to look it up, once per row the journal writes.
#[diesel(treat_none_as_default_value = false)]
pub struct AuditEventRow {
    pub id: String,
    pub team_id: String,
    pub actor: String,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    pub error_code: Option<String>,
    pub created_at: NaiveDateTime,
    /// The HTTP request's id (`X-Request-Id`), to match the event with logs and the client.
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = request_logs)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
// A `None` is bound as NULL (what these columns default to anyway), not written as `DEFAULT`:
// the statement is then the same for every row, and diesel finds it in its statement cache by
// its type instead of building its SQL text to look it up, once per row the journal writes.
#[diesel(treat_none_as_default_value = false)]
pub struct RequestLogRow {
    pub id: String,
    pub team_id: String,
    pub project_id: String,
    pub integration_id: String,
    pub level: String,
    pub method: String,
    /// Path and query, redacted.
    pub path: String,
    pub status: Option<i32>,
    pub duration_ms: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub error: Option<String>,
    pub actor: String,
    pub correlation_id: String,
    pub created_at: NaiveDateTime,
}

/// An event a provider pushed (an inbound webhook).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = inbound_webhook_events)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct InboundEventRow {
    pub id: String,
    pub team_id: String,
    pub project_id: String,
    pub integration_id: String,
    pub provider: String,
    pub event_type: String,
    pub delivery_id: String,
    pub payload: String,
    pub received_at: NaiveDateTime,
}
