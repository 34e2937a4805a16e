use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::auth::ScopeSet;
use crate::db::schema::api_keys;

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

    pub fn is_expired(&self, at: NaiveDateTime) -> bool {
        self.expires_at.is_some_and(|e| e <= at)
    }
}
