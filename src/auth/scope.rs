//! The scope catalogue: `resource:action`, with `admin` standing for all of them.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    IntegrationsRead,
    IntegrationsWrite,
    IntegrationsExecute,
    CredentialsWrite,
    LogsRead,
    LogsSubscribe,
    ApiKeysRead,
    ApiKeysWrite,
    SyncRead,
    SyncWrite,
    SyncRun,
    WebhooksRead,
    WebhooksWrite,
    TemplatesRead,
    TemplatesWrite,
    AuditRead,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 17] = [
        Scope::IntegrationsRead,
        Scope::IntegrationsWrite,
        Scope::IntegrationsExecute,
        Scope::CredentialsWrite,
        Scope::LogsRead,
        Scope::LogsSubscribe,
        Scope::ApiKeysRead,
        Scope::ApiKeysWrite,
        Scope::SyncRead,
        Scope::SyncWrite,
        Scope::SyncRun,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::TemplatesRead,
        Scope::TemplatesWrite,
        Scope::AuditRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::IntegrationsRead => "integrations:read",
            Scope::IntegrationsWrite => "integrations:write",
            Scope::IntegrationsExecute => "integrations:execute",
            Scope::CredentialsWrite => "credentials:write",
            Scope::LogsRead => "logs:read",
            Scope::LogsSubscribe => "logs:subscribe",
            Scope::ApiKeysRead => "api_keys:read",
            Scope::ApiKeysWrite => "api_keys:write",
            Scope::SyncRead => "sync:read",
            Scope::SyncWrite => "sync:write",
            Scope::SyncRun => "sync:run",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::TemplatesRead => "templates:read",
            Scope::TemplatesWrite => "templates:write",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A set of granted scopes; `admin` grants everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses scope names; unknown names are returned as the error.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, Vec<String>> {
        let mut set = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in names {
            match Scope::parse(name.as_ref().trim()) {
                Some(scope) => {
                    set.insert(scope);
                }
                None => unknown.push(name.as_ref().to_string()),
            }
        }
        if unknown.is_empty() {
            Ok(Self(set))
        } else {
            Err(unknown)
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&Scope::Admin) || self.0.contains(&scope)
    }

    /// True when every scope of `other` is granted by `self` (no privilege escalation).
    pub fn covers(&self, other: &ScopeSet) -> bool {
        other.0.iter().all(|s| self.allows(*s))
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_string()).collect()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("integrations:delete"), None);
    }

    #[test]
    fn admin_allows_everything_and_covers() {
        let admin: ScopeSet = [Scope::Admin].into_iter().collect();
        let read: ScopeSet = [Scope::IntegrationsRead].into_iter().collect();
        assert!(admin.allows(Scope::AuditRead));
        assert!(admin.covers(&read));
        assert!(!read.covers(&admin));
        assert_eq!(
            ScopeSet::parse(&["nope"]).unwrap_err(),
            vec!["nope".to_string()]
        );
    }
}
