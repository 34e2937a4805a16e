//! What a sync configuration says: how to read records on a side, how to write them, which
//! field is the key, the field mappings, the direction and the conflict policy. The same types
//! are the GraphQL input and output and the stored JSON.

use async_graphql::{Enum, InputObject, Json, SimpleObject};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
pub enum SyncDirection {
    SourceToTarget,
    TargetToSource,
    Bidirectional,
}

impl SyncDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SourceToTarget => "source_to_target",
            Self::TargetToSource => "target_to_source",
            Self::Bidirectional => "bidirectional",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "target_to_source" => Self::TargetToSource,
            "bidirectional" => Self::Bidirectional,
            _ => Self::SourceToTarget,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    #[default]
    SourceWins,
    TargetWins,
    /// The side whose timestamp field is later wins.
    NewestWins,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum, Default)]
#[serde(rename_all = "snake_case")]
pub enum PaginationKind {
    #[default]
    None,
    /// `?page=1&per_page=100`, counting up until a short or empty page.
    Page,
    /// `?offset=0&limit=100`.
    Offset,
    /// A cursor read from the body (JSON Pointer) and sent back as a parameter.
    Cursor,
    /// The `Link: <...>; rel="next"` header.
    LinkHeader,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, SimpleObject, InputObject)]
#[graphql(input_name = "PaginationInput")]
#[serde(default)]
pub struct Pagination {
    pub kind: PaginationKind,
    /// Page: the page parameter (`page`); Cursor: the cursor parameter (`cursor`).
    pub param: Option<String>,
    /// Page: the page-size parameter (`per_page`); Offset: the limit parameter (`limit`).
    pub size_param: Option<String>,
    /// Offset: the offset parameter (`offset`).
    pub offset_param: Option<String>,
    /// Records per page (100).
    pub size: Option<i32>,
    /// Page: the first page number (1).
    pub start: Option<i32>,
    /// Cursor: JSON Pointer to the next cursor in the body, e.g. `/meta/next`.
    pub cursor_pointer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject, InputObject)]
#[graphql(input_name = "ReadSpecInput")]
pub struct ReadSpec {
    #[graphql(default_with = "\"GET\".to_string()")]
    #[serde(default = "get")]
    pub method: String,
    /// Under the integration's base URL (empty when `endpoint` is given).
    #[graphql(default)]
    #[serde(default)]
    pub path: String,
    /// Read through this endpoint of a template integration instead of `method` and `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The endpoint's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Json<serde_json::Map<String, serde_json::Value>>>,
    /// Extra query parameters.
    pub query: Option<Json<serde_json::Map<String, serde_json::Value>>>,
    /// JSON Pointer to the records array in the body (empty: the body is the array).
    #[graphql(default)]
    #[serde(default)]
    pub records_pointer: String,
    #[graphql(default)]
    #[serde(default)]
    pub pagination: Pagination,
    /// Stop after this many pages (safety net; default 10,000).
    pub max_pages: Option<i32>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject, InputObject)]
#[graphql(input_name = "WriteSpecInput")]
pub struct WriteSpec {
    #[graphql(default_with = "\"POST\".to_string()")]
    #[serde(default = "post")]
    pub create_method: String,
    /// Path template for new records; `{field}` takes a mapped field's value, `{key}` the key
    /// (empty when `createEndpoint` is given).
    #[graphql(default)]
    #[serde(default)]
    pub create_path: String,
    /// Create through this endpoint of a template integration: its parameters are the mapped
    /// record's fields, and `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_endpoint: Option<String>,
    /// Update existing records through this endpoint (parameters as for `createEndpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_endpoint: Option<String>,
    #[graphql(default_with = "\"PUT\".to_string()")]
    #[serde(default = "put")]
    pub update_method: String,
    /// Path template for records that exist, e.g. `/items/{key}`. Without it, records are
    /// always created.
    pub update_path: Option<String>,
    /// Send new records in arrays of this many (for bulk endpoints) instead of one by one.
    pub batch_size: Option<i32>,
}

fn post() -> String {
    "POST".into()
}

fn put() -> String {
    "PUT".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
pub enum TransformerKind {
    Trim,
    Uppercase,
    Lowercase,
    ToString,
    ToNumber,
    ToBool,
    /// `from` → `to` (chrono formats or `rfc3339`), with `fromTz`/`toTz` (`UTC`, `+02:00`).
    DateFormat,
    /// `table` lookup, `default` when absent.
    ValueMap,
    /// `value` when the input is missing, null or empty.
    Default,
    /// `fields` joined with `separator`.
    Concat,
    /// `template` with `{path}` placeholders from the record.
    Template,
    /// Splits text on `separator` into a list.
    Split,
    /// `pattern` (regex) replaced by `replacement`.
    RegexReplace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject, InputObject)]
#[graphql(input_name = "TransformerInput")]
pub struct Transformer {
    pub kind: TransformerKind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub from_tz: Option<String>,
    pub to_tz: Option<String>,
    pub table: Option<Json<serde_json::Map<String, serde_json::Value>>>,
    pub value: Option<Json<serde_json::Value>>,
    pub fields: Option<Vec<String>>,
    pub separator: Option<String>,
    pub template: Option<String>,
    pub pattern: Option<String>,
    pub replacement: Option<String>,
}

/// target ← source, through transformers in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject, InputObject)]
#[graphql(input_name = "FieldMappingInput")]
pub struct FieldMapping {
    /// Where the value goes: `fields.summary`, `labels[0]`.
    pub target: String,
    /// Where it comes from (omit for `concat`/`template`/`default` only).
    pub source: Option<String>,
    #[graphql(default)]
    #[serde(default)]
    pub transformers: Vec<Transformer>,
    /// A record without this value is skipped with a reason.
    #[graphql(default)]
    #[serde(default)]
    pub required: bool,
}

/// Everything but the identity fields, stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject)]
pub struct SyncSpec {
    pub source_read: Option<ReadSpec>,
    pub source_write: Option<WriteSpec>,
    pub target_read: Option<ReadSpec>,
    pub target_write: Option<WriteSpec>,
    /// The key field in source records.
    pub source_key: String,
    /// The key field in target records (and in mapped records).
    pub target_key: String,
    pub mappings: Vec<FieldMapping>,
    /// target → source mappings; derived from plain mappings when not given.
    pub reverse_mappings: Vec<FieldMapping>,
    pub conflict_policy: ConflictPolicy,
    pub source_timestamp_field: Option<String>,
    pub target_timestamp_field: Option<String>,
}

/// A sync config as created or replaced.
#[derive(InputObject)]
pub struct SyncConfigInput {
    pub project_id: async_graphql::ID,
    pub name: String,
    pub source_integration_id: async_graphql::ID,
    pub target_integration_id: async_graphql::ID,
    #[graphql(default_with = "SyncDirection::SourceToTarget")]
    pub direction: SyncDirection,
    pub source_read: Option<ReadSpec>,
    pub source_write: Option<WriteSpec>,
    pub target_read: Option<ReadSpec>,
    pub target_write: Option<WriteSpec>,
    /// The key field in source records, e.g. `key`.
    pub source_key: String,
    /// The key field in target records (and mapped records), e.g. `externalId`.
    pub target_key: String,
    pub mappings: Vec<FieldMapping>,
    /// target → source mappings for TARGET_TO_SOURCE and BIDIRECTIONAL; derived from plain
    /// field-to-field mappings when omitted.
    #[graphql(default)]
    pub reverse_mappings: Vec<FieldMapping>,
    #[graphql(default)]
    pub conflict_policy: ConflictPolicy,
    pub source_timestamp_field: Option<String>,
    pub target_timestamp_field: Option<String>,
    /// Run every this many seconds; null: only on demand.
    pub schedule_seconds: Option<i32>,
    /// Start a run when the source integration receives one of these inbound webhook event
    /// types (e.g. `push`, `issues`; `*` for any). A run already queued or running is enough.
    #[graphql(default)]
    pub run_on_webhook: Vec<String>,
    #[graphql(default = true)]
    pub enabled: bool,
}
