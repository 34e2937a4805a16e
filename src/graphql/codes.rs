//! Every error on every transport carries an `extensions.code`. The hub's own errors get
//! theirs where they are made (`AppError`); what is left comes from async-graphql checking
//! the request against the schema (parse errors, unknown fields or variables, values that do
//! not fit their type such as an Int overflow or a bad DateTime), which is bad input:
//! VALIDATION_FAILED; the parser's multi-line reports become one line with line and column.
//! Applied to single responses, each item of a batch and every
//! subscription message.

use async_graphql::{Response, ServerError};

fn tag(error: &mut ServerError) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", "VALIDATION_FAILED");
    }
    let code = match extensions.get("code") {
        Some(async_graphql::Value::String(code)) => known_code(code),
        _ => "OTHER",
    };
    metrics::counter!("hub_graphql_errors_total", "code" => code).increment(1);
    if error.message.contains('\n') {
        error.message = one_line(&error.message, &error.locations);
    }
}

/// A code as a label from the fixed set (anything else is `OTHER`).
fn known_code(code: &str) -> &'static str {
    const CODES: [&str; 15] = [
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "VALIDATION_FAILED",
        "INVALID_CONFIGURATION",
        "CONFLICT",
        "RATE_LIMITED",
        "QUERY_TOO_COMPLEX",
        "UPSTREAM_TIMEOUT",
        "UPSTREAM_ERROR",
        "UPSTREAM_BLOCKED",
        "INTEGRATION_DISABLED",
        "UNAVAILABLE",
        "PERSISTED_QUERY_NOT_FOUND",
        "INTERNAL",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("OTHER")
}

/// The parser's multi-line report (source excerpt, caret, `= expected ...`) as one line:
/// `syntax error at line 1, column 9: expected selection`.
fn one_line(message: &str, locations: &[async_graphql::Pos]) -> String {
    let expected = message
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("= "))
        .map(str::trim);
    match (locations.first(), expected) {
        (Some(pos), Some(expected)) => format!(
            "syntax error at line {}, column {}: {expected}",
            pos.line, pos.column
        ),
        (None, Some(expected)) => format!("syntax error: {expected}"),
        _ => message.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

pub fn tagged(mut response: Response) -> Response {
    response.errors.iter_mut().for_each(tag);
    response
}
