//! The one error type. Data-layer code returns diesel results, domain services return
//! `AppError`, and this file is the only place an error becomes a stable `extensions.code`.
//! Internal errors are logged here with where they came from and answered as a bare
//! "internal error": no SQL, path or stack reaches a client.

use async_graphql::ErrorExtensions;
use serde::Serialize;

/// One failing location in a validated document (JSON Pointer into the input).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldProblem {
    pub path: String,
    pub message: String,
}

#[derive(Debug)]
pub enum AppError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    Validation {
        message: String,
        problems: Vec<FieldProblem>,
    },
    InvalidConfiguration {
        message: String,
        problems: Vec<FieldProblem>,
    },
    Conflict(String),
    RateLimited {
        retry_after_secs: u64,
    },
    QueryTooComplex(String),
    UpstreamTimeout(String),
    UpstreamError(String),
    /// The SSRF guard refused the destination.
    UpstreamBlocked(String),
    IntegrationDisabled(String),
    /// The database (or another dependency we need) cannot be reached right now.
    Unavailable(String),
    /// An automatic persisted query's hash this replica does not know: send the query.
    PersistedQueryNotFound,
    Internal {
        error: anyhow::Error,
        origin: &'static std::panic::Location<'static>,
    },
}

pub type AppResult<T> = Result<T, AppError>;

/// What `Retry-After` says when a dependency is down.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

impl AppError {
    #[track_caller]
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal {
            error: error.into(),
            origin: std::panic::Location::caller(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    /// The stable code clients match on (`extensions.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Validation { .. } => "VALIDATION_FAILED",
            Self::InvalidConfiguration { .. } => "INVALID_CONFIGURATION",
            Self::Conflict(_) => "CONFLICT",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::QueryTooComplex(_) => "QUERY_TOO_COMPLEX",
            Self::UpstreamTimeout(_) => "UPSTREAM_TIMEOUT",
            Self::UpstreamError(_) => "UPSTREAM_ERROR",
            Self::UpstreamBlocked(_) => "UPSTREAM_BLOCKED",
            Self::IntegrationDisabled(_) => "INTEGRATION_DISABLED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::Internal { .. } => "INTERNAL",
        }
    }

    /// The message a client sees.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::QueryTooComplex(m)
            | Self::UpstreamTimeout(m)
            | Self::UpstreamError(m)
            | Self::UpstreamBlocked(m)
            | Self::IntegrationDisabled(m)
            | Self::Validation { message: m, .. }
            | Self::InvalidConfiguration { message: m, .. } => m.clone(),
            Self::RateLimited { retry_after_secs } => {
                format!("rate limit exceeded; retry after {retry_after_secs} s")
            }
            Self::Unavailable(_) => "service temporarily unavailable".into(),
            // Apollo clients match this exact message as well as the code.
            Self::PersistedQueryNotFound => "PersistedQueryNotFound".into(),
            Self::Internal { .. } => "internal error".into(),
        }
    }

    /// The HTTP status for errors answered outside GraphQL execution.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Validation { .. }
            | Self::InvalidConfiguration { .. }
            | Self::QueryTooComplex(_) => 400,
            Self::RateLimited { .. } => 429,
            Self::UpstreamTimeout(_) => 504,
            Self::UpstreamError(_) | Self::UpstreamBlocked(_) => 502,
            Self::IntegrationDisabled(_) => 409,
            Self::Conflict(_) => 409,
            Self::Unavailable(_) => 503,
            // Apollo's protocol: the client reads the error and sends the full query.
            Self::PersistedQueryNotFound => 200,
            Self::Internal { .. } => 500,
        }
    }

    /// Seconds a client should wait before trying again, where that is known.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Logs what the client will not see.
    pub fn log(&self) {
        match self {
            Self::Internal { error, origin } => {
                tracing::error!(origin = %origin, error = format!("{error:#}"), "internal error")
            }
            Self::Unavailable(detail) => tracing::warn!(detail, "dependency unavailable"),
            _ => {}
        }
    }

    /// The GraphQL error: message plus `extensions.code` (and the failing paths, if any).
    pub fn into_graphql(self) -> async_graphql::Error {
        self.log();
        let code = self.code();
        let problems = match &self {
            Self::Validation { problems, .. } | Self::InvalidConfiguration { problems, .. } => {
                problems.clone()
            }
            _ => Vec::new(),
        };
        let retry_after = self.retry_after_secs();
        async_graphql::Error::new(self.message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(secs) = retry_after {
                ext.set("retryAfter", secs);
            }
            if !problems.is_empty() {
                let list: Vec<async_graphql::Value> = problems
                    .iter()
                    .map(|p| {
                        let mut map = async_graphql::indexmap::IndexMap::new();
                        map.insert(async_graphql::Name::new("path"), p.path.clone().into());
                        map.insert(
                            async_graphql::Name::new("message"),
                            p.message.clone().into(),
                        );
                        async_graphql::Value::Object(map)
                    })
                    .collect();
                ext.set("problems", async_graphql::Value::List(list));
            }
        })
    }

    /// A GraphQL-shaped response body for errors raised before execution (auth, limits).
    pub fn into_response_body(self) -> serde_json::Value {
        self.log();
        let mut extensions = serde_json::json!({ "code": self.code() });
        if let Some(retry_after_secs) = self.retry_after_secs() {
            extensions["retryAfter"] = retry_after_secs.into();
        }
        serde_json::json!({ "errors": [{ "message": self.message(), "extensions": extensions }] })
    }
}

// No `Display` on purpose: async-graphql converts any `Display` type into an error with its
// text as the message, which would bypass the code mapping below.
impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        err.into_graphql()
    }
}

impl From<diesel::result::Error> for AppError {
    #[track_caller]
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::NotFound => AppError::NotFound("not found".into()),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                AppError::Conflict("an object with these unique values already exists".into())
            }
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                AppError::NotFound("a referenced object does not exist".into())
            }
            // The database is down, gone away, locked or too slow: not a bug, an outage.
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => AppError::Unavailable(format!("database connection lost: {}", info.message())),
            Error::DatabaseError(_, info) if is_outage(info.message()) => {
                AppError::Unavailable(format!("database unavailable: {}", info.message()))
            }
            other => AppError::internal(other),
        }
    }
}

/// Database messages that mean "not now" rather than "wrong": SQLite's busy or locked
/// database, PostgreSQL's statement or lock timeout, a connection the server ended.
fn is_outage(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "database is locked",
        "database table is locked",
        "database is busy",
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "terminating connection",
        "connection closed",
        "the database system is",
        "disk i/o error",
        "database or disk is full",
    ]
    .iter()
    .any(|m| message.contains(m))
}

impl From<serde_json::Error> for AppError {
    #[track_caller]
    fn from(err: serde_json::Error) -> Self {
        AppError::internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (AppError::Unauthenticated(String::new()), "UNAUTHENTICATED"),
            (AppError::Forbidden(String::new()), "FORBIDDEN"),
            (AppError::NotFound(String::new()), "NOT_FOUND"),
            (AppError::validation(""), "VALIDATION_FAILED"),
            (
                AppError::InvalidConfiguration {
                    message: String::new(),
                    problems: vec![],
                },
                "INVALID_CONFIGURATION",
            ),
            (AppError::Conflict(String::new()), "CONFLICT"),
            (
                AppError::RateLimited {
                    retry_after_secs: 1,
                },
                "RATE_LIMITED",
            ),
            (
                AppError::QueryTooComplex(String::new()),
                "QUERY_TOO_COMPLEX",
            ),
            (AppError::Unavailable(String::new()), "UNAVAILABLE"),
            (
                AppError::PersistedQueryNotFound,
                "PERSISTED_QUERY_NOT_FOUND",
            ),
            (AppError::internal(anyhow::anyhow!("x")), "INTERNAL"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn internal_details_are_not_shown() {
        let err = AppError::internal(anyhow::anyhow!("relation \"teams\" does not exist"));
        let gql = err.into_graphql();
        assert_eq!(gql.message, "internal error");
    }
}
