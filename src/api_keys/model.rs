use std::collections::BTreeSet;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::auth::{ResourceLimits, ScopeSet};
use crate::db::schema::api_keys;
use crate::ratelimit::RateSpec;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
#[diesel(check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ApiKeyRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub public_id: String,
    /// SHA-256 of the full key; the key itself is never stored.
    pub key_hash: String,
    /// JSON array of scope names.
    pub scopes: String,
    pub expires_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    pub last_used_at: Option<NaiveDateTime>,
    pub usage_count: i64,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
    /// JSON array of project ids the key is limited to (NULL: not limited by project).
    pub allowed_project_ids: Option<String>,
    /// JSON array of integration ids the key is limited to.
    pub allowed_integration_ids: Option<String>,
    pub rate_limit_requests: Option<i64>,
    pub rate_limit_period_secs: Option<i64>,
    pub rate_limit_burst: Option<i64>,
    /// Hash of the secret replaced by the last roll, accepted until `previous_key_expires_at`.
    pub previous_key_hash: Option<String>,
    pub previous_key_expires_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyChanges {
    pub name: Option<String>,
    pub scopes: Option<String>,
    pub expires_at: Option<Option<NaiveDateTime>>,
    pub allowed_project_ids: Option<Option<String>>,
    pub allowed_integration_ids: Option<Option<String>>,
    pub rate_limit_requests: Option<Option<i64>>,
    pub rate_limit_period_secs: Option<Option<i64>>,
    pub rate_limit_burst: Option<Option<i64>>,
    pub key_hash: Option<String>,
    pub previous_key_hash: Option<Option<String>>,
    pub previous_key_expires_at: Option<Option<NaiveDateTime>>,
    pub updated_at: Option<NaiveDateTime>,
}

fn id_set(json: &Option<String>) -> Option<BTreeSet<String>> {
    json.as_ref()
        .map(|text| serde_json::from_str(text).unwrap_or_default())
}

pub fn id_list_json(ids: &Option<BTreeSet<String>>) -> Option<String> {
    ids.as_ref()
        .map(|set| serde_json::to_string(set).unwrap_or_else(|_| "[]".into()))
}

impl ApiKeyRow {
    /// Scopes as stored; names no longer in the catalogue are dropped, never widened.
    pub fn scope_set(&self) -> ScopeSet {
        let names: Vec<String> = serde_json::from_str(&self.scopes).unwrap_or_default();
        names
            .iter()
            .filter_map(|n| crate::auth::Scope::parse(n))
            .collect()
    }

    pub fn limits(&self) -> ResourceLimits {
        ResourceLimits {
            projects: id_set(&self.allowed_project_ids),
            integrations: id_set(&self.allowed_integration_ids),
        }
    }

    pub fn rate_spec(&self) -> Option<RateSpec> {
        let (requests, period) = (self.rate_limit_requests?, self.rate_limit_period_secs?);
        let burst = self.rate_limit_burst.unwrap_or(requests);
        RateSpec::new(
            u32::try_from(requests).ok()?,
            Duration::from_secs(u64::try_from(period).ok()?),
            u32::try_from(burst).ok()?,
        )
        .ok()
    }

    pub fn is_expired(&self, at: NaiveDateTime) -> bool {
        self.expires_at.is_some_and(|e| e <= at)
    }
}
