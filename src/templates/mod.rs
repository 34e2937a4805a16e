//! Custom integration templates: a team describes an API once (configuration and credential
//! schemas, auth scheme, base URL, health check, named endpoints) and uses it like a
//! built-in provider, as `template:<key>`. A template is a document, validated whole on save
//! (every problem named by its path), kept in immutable versions; integrations pin the
//! version they were registered with.
//!
//! This module holds the document, its validation and its rendering (base URL, endpoint
//! calls); the calls domain sends what it renders through the one outbound path.

pub mod graphql;
pub mod store;

use std::collections::BTreeMap;

use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{AppError, AppResult, FieldProblem};
use crate::providers::ProviderCategory;

/// What the provider key of a template integration starts with.
pub const PREFIX: &str = "template:";
/// At most this many endpoints per template.
pub const MAX_ENDPOINTS: usize = 50;
/// At most this many query parameters or headers per endpoint.
pub const MAX_PAIRS: usize = 50;
/// A template document, serialized, is at most this long.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The format marker of exported documents.
pub const EXPORT_FORMAT: &str = "integration-hub/template@1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateDoc {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A provider category (`PROJECT_MANAGEMENT`...).
    pub category: String,
    pub config_schema: Value,
    pub credentials_schema: Value,
    pub auth: AuthSpec,
    /// May reference configuration fields: `http://{config.host}/api`.
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthSpec>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthSpec {
    /// `none`, `bearer`, `basic`, `header`, `query` or `oauth2`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthSpec {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub method: String,
    /// Under the base URL, with `{param}` placeholders.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON template: a string that is exactly `"{param}"` takes the parameter's value with
    /// its JSON type; other strings have their placeholders filled as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_schema: Option<Value>,
    /// A JSON Pointer (RFC 6901) into the answer: what `invokeEndpoint` returns as `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_pointer: Option<String>,
}

/// A placeholder in a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    Param(String),
    Config(String),
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && text.len() <= 64
}

/// The pieces of a template string: literal text and placeholders.
fn pieces(text: &str) -> Result<Vec<Result<&str, Placeholder>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Ok(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "a `{` without its `}`".to_string())?;
        let inner = &after[..close];
        let placeholder = match inner.strip_prefix("config.") {
            Some(field) if is_name(field) => Placeholder::Config(field.to_string()),
            None if is_name(inner) => Placeholder::Param(inner.to_string()),
            _ => return Err(format!("`{{{inner}}}` is not a placeholder")),
        };
        out.push(Err(placeholder));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` without its `{`".into());
    }
    if !rest.is_empty() {
        out.push(Ok(rest));
    }
    Ok(out)
}

/// Fills a template string; `value` renders each placeholder.
pub fn render(
    text: &str,
    mut value: impl FnMut(&Placeholder) -> AppResult<String>,
) -> AppResult<String> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text).map_err(AppError::validation)? {
        match piece {
            Ok(literal) => out.push_str(literal),
            Err(placeholder) => out.push_str(&value(&placeholder)?),
        }
    }
    Ok(out)
}

/// Problems found in a document, each with its path.
#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.0.len() < 50 {
            self.0.push(FieldProblem {
                path: path.into(),
                message: message.into(),
            });
        }
    }

    fn into_result(self) -> AppResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        Err(AppError::Validation {
            message: format!("invalid template: {message}"),
            problems: self.0,
        })
    }
}

/// Compiles a JSON Schema as draft 2020-12 (remote references are not fetched).
pub fn compile_schema(schema: &Value) -> Result<Validator, String> {
    if !schema.is_object() {
        return Err("must be a JSON Schema object".into());
    }
    if let Some(dialect) = schema.get("$schema")
        && dialect != "https://json-schema.org/draft/2020-12/schema"
    {
        return Err("`$schema` must be https://json-schema.org/draft/2020-12/schema".into());
    }
    jsonschema::draft202012::new(schema)
        .map_err(|err| format!("not a valid JSON Schema: {}", err.masked()))
}

/// The names a schema declares under `properties`.
fn properties(schema: &Value) -> Vec<&str> {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const AUTH_TYPES: [&str; 6] = ["none", "bearer", "basic", "header", "query", "oauth2"];
/// Headers a template may not set: the hub owns authentication and framing.
const FORBIDDEN_HEADERS: [&str; 10] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "proxy-authorization",
    "private-token",
    "te",
    "upgrade",
];

/// The category a document names.
pub fn category_of(name: &str) -> Option<ProviderCategory> {
    use async_graphql::resolver_utils::EnumType;
    ProviderCategory::items()
        .iter()
        .find(|item| item.name == name)
        .map(|item| item.value)
}

pub fn category_name(category: ProviderCategory) -> &'static str {
    use async_graphql::resolver_utils::EnumType;
    ProviderCategory::items()
        .iter()
        .find(|item| item.value == category)
        .map_or("CUSTOM", |item| item.name)
}

impl TemplateDoc {
    /// Checks everything; VALIDATION_FAILED names each problem's path
    /// (`endpoints[2].path: unknown placeholder {issue}`).
    pub fn validate(&self) -> AppResult<()> {
        let mut problems = Problems::default();
        let key_ok = self.key.len() >= 2
            && self.key.len() <= 50
            && self.key.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !key_ok {
            problems.add(
                "key",
                "2 to 50 of a-z, 0-9, _ and -, starting with a letter",
            );
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            problems.add("name", "1 to 100 characters");
        }
        if self.description.chars().count() > 2000 {
            problems.add("description", "at most 2000 characters");
        }
        if category_of(&self.category).is_none() {
            problems.add("category", "not a provider category");
        }
        for (path, schema) in [
            ("configSchema", &self.config_schema),
            ("credentialsSchema", &self.credentials_schema),
        ] {
            if let Err(why) = compile_schema(schema) {
                problems.add(path, why);
            }
        }
        let config_fields = properties(&self.config_schema);
        let credential_fields = properties(&self.credentials_schema);
        self.check_auth(&credential_fields, &mut problems);
        let config_only = |text: &str, path: &str, problems: &mut Problems| match pieces(text) {
            Err(why) => problems.add(path, why),
            Ok(parts) => {
                for part in parts {
                    match part {
                        Err(Placeholder::Config(field))
                            if !config_fields.contains(&field.as_str()) =>
                        {
                            problems.add(path, format!("unknown placeholder {{config.{field}}}: configSchema has no `{field}`"));
                        }
                        Err(Placeholder::Param(name)) => {
                            problems.add(path, format!("unknown placeholder {{{name}}}: only {{config.<field>}} may be used here"));
                        }
                        _ => {}
                    }
                }
            }
        };
        config_only(&self.base_url, "baseUrl", &mut problems);
        if let Ok(example) = render(&self.base_url, |_| Ok("example".into())) {
            match url::Url::parse(&example) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    if !url.username().is_empty()
                        || url.query().is_some()
                        || url.fragment().is_some()
                    {
                        problems.add("baseUrl", "no user information, query or fragment");
                    }
                }
                _ => problems.add("baseUrl", "must be an http or https URL"),
            }
        }
        if let Some(health) = &self.health_check {
            if !METHODS.contains(&health.method.as_str()) {
                problems.add("healthCheck.method", "not an HTTP method the hub sends");
            }
            if !health.path.starts_with('/') || health.path.len() > 2048 {
                problems.add(
                    "healthCheck.path",
                    "must start with / (at most 2048 characters)",
                );
            }
            config_only(&health.path, "healthCheck.path", &mut problems);
            if health
                .expect_status
                .is_some_and(|s| !(100..=599).contains(&s))
            {
                problems.add("healthCheck.expectStatus", "an HTTP status, 100 to 599");
            }
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            problems.add("endpoints", format!("at most {MAX_ENDPOINTS}"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate().take(MAX_ENDPOINTS) {
            let at = |field: &str| format!("endpoints[{i}].{field}");
            if !is_name(&endpoint.name) {
                problems.add(
                    at("name"),
                    "letters, digits and _, starting with a letter (at most 64)",
                );
            } else if !names.insert(endpoint.name.as_str()) {
                problems.add(at("name"), format!("`{}` is named twice", endpoint.name));
            }
            if endpoint.description.chars().count() > 2000 {
                problems.add(at("description"), "at most 2000 characters");
            }
            if !METHODS.contains(&endpoint.method.as_str()) {
                problems.add(at("method"), "not an HTTP method the hub sends");
            }
            if !endpoint.path.starts_with('/') || endpoint.path.len() > 2048 {
                problems.add(at("path"), "must start with / (at most 2048 characters)");
            }
            let params_schema = endpoint
                .params_schema
                .clone()
                .unwrap_or_else(|| serde_json::json!({ "type": "object" }));
            if let Err(why) = compile_schema(&params_schema) {
                problems.add(at("paramsSchema"), why);
            }
            let params = properties(&params_schema);
            let check = |text: &str, path: String, problems: &mut Problems| match pieces(text) {
                Err(why) => problems.add(path, why),
                Ok(parts) => {
                    for part in parts {
                        match part {
                            Err(Placeholder::Param(name)) if !params.contains(&name.as_str()) => {
                                problems
                                    .add(path.clone(), format!("unknown placeholder {{{name}}}"));
                            }
                            Err(Placeholder::Config(field))
                                if !config_fields.contains(&field.as_str()) =>
                            {
                                problems.add(
                                    path.clone(),
                                    format!("unknown placeholder {{config.{field}}}"),
                                );
                            }
                            _ => {}
                        }
                    }
                }
            };
            check(&endpoint.path, at("path"), &mut problems);
            if endpoint.query.len() > MAX_PAIRS || endpoint.headers.len() > MAX_PAIRS {
                problems.add(
                    at("query"),
                    format!("at most {MAX_PAIRS} query parameters and {MAX_PAIRS} headers"),
                );
            }
            for (name, value) in &endpoint.query {
                if name.is_empty() || name.len() > 200 {
                    problems.add(
                        at(&format!("query.{name}")),
                        "a name of 1 to 200 characters",
                    );
                }
                check(value, at(&format!("query.{name}")), &mut problems);
            }
            for (name, value) in &endpoint.headers {
                let lower = name.to_ascii_lowercase();
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || FORBIDDEN_HEADERS.contains(&lower.as_str())
                {
                    problems.add(
                        at(&format!("headers.{name}")),
                        "not a header a template may set",
                    );
                }
                check(value, at(&format!("headers.{name}")), &mut problems);
            }
            if let Some(body) = &endpoint.body {
                walk_strings(body, &at("body"), &mut |text, path| {
                    check(text, path, &mut problems)
                });
            }
            if let Some(pointer) = &endpoint.response_pointer
                && !(pointer.is_empty() || pointer.starts_with('/'))
            {
                problems.add(
                    at("responsePointer"),
                    "a JSON Pointer: empty, or starting with /",
                );
            }
        }
        problems.into_result()
    }

    fn check_auth(&self, credential_fields: &[&str], problems: &mut Problems) {
        let auth = &self.auth;
        if !AUTH_TYPES.contains(&auth.kind.as_str()) {
            problems.add("auth.type", format!("one of {}", AUTH_TYPES.join(", ")));
            return;
        }
        let mut field = |name: &str, value: &Option<String>| match value {
            None => problems.add(
                format!("auth.{name}"),
                format!("required for `{}` auth", auth.kind),
            ),
            Some(field) if !credential_fields.contains(&field.as_str()) => problems.add(
                format!("auth.{name}"),
                format!("credentialsSchema has no `{field}`"),
            ),
            Some(_) => {}
        };
        match auth.kind.as_str() {
            "bearer" => field("tokenField", &auth.token_field),
            "basic" => {
                field("usernameField", &auth.username_field);
                field("passwordField", &auth.password_field);
            }
            "header" => {
                field("tokenField", &auth.token_field);
                let ok = auth.header_name.as_deref().is_some_and(|h| {
                    reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_ok()
                        && !FORBIDDEN_HEADERS[1..].contains(&h.to_ascii_lowercase().as_str())
                });
                if !ok {
                    problems.add(
                        "auth.headerName",
                        "a header name (not Host, Cookie or a framing header)",
                    );
                }
            }
            "query" => {
                field("tokenField", &auth.token_field);
                if auth
                    .query_param
                    .as_deref()
                    .is_none_or(|q| q.is_empty() || q.len() > 100)
                {
                    problems.add("auth.queryParam", "a parameter name of 1 to 100 characters");
                }
            }
            _ => {}
        }
    }

    /// The base URL with an integration's configuration filled in.
    pub fn base_url_for(&self, config: &Value) -> AppResult<url::Url> {
        let text = render(&self.base_url, |p| match p {
            Placeholder::Config(field) => config_text(config, field, true),
            Placeholder::Param(name) => Err(AppError::validation(format!(
                "unknown placeholder {{{name}}} in the base URL"
            ))),
        })?;
        url::Url::parse(&text)
            .map_err(|_| AppError::validation("the template's base URL is not a URL"))
    }

    /// The endpoint named `name`.
    pub fn endpoint(&self, name: &str) -> AppResult<&EndpointSpec> {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.endpoints.iter().map(|e| e.name.as_str()).collect();
                AppError::validation(format!(
                    "the template has no endpoint `{name}`; it has: {}",
                    known.join(", ")
                ))
            })
    }

    /// Parses and validates a stored or imported document.
    pub fn parse(text: &str) -> AppResult<Self> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(AppError::validation(format!(
                "a template document is at most {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        let doc: Self = serde_json::from_str(text)
            .map_err(|err| AppError::validation(format!("not a template document: {err}")))?;
        doc.validate()?;
        Ok(doc)
    }

    pub fn to_text(&self) -> AppResult<String> {
        let text = serde_json::to_string(self)?;
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(AppError::validation(format!(
                "a template document is at most {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        Ok(text)
    }
}

/// Calls `visit` on every string of a JSON template, with its path.
fn walk_strings(value: &Value, path: &str, visit: &mut impl FnMut(&str, String)) {
    match value {
        Value::String(text) => visit(text, path.to_string()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_strings(item, &format!("{path}[{i}]"), visit);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                walk_strings(item, &format!("{path}.{key}"), visit);
            }
        }
        _ => {}
    }
}

/// A configuration value as it may appear in a URL: text without characters that would
/// change the URL's structure.
fn config_text(config: &Value, field: &str, in_url: bool) -> AppResult<String> {
    let text = match &config[field] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => {
            return Err(AppError::validation(format!(
                "the integration's configuration has no `{field}`"
            )));
        }
        _ => {
            return Err(AppError::validation(format!(
                "configuration `{field}` is not a string, number or boolean"
            )));
        }
    };
    if in_url
        && text.chars().any(|c| {
            matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace() || c.is_control()
        })
    {
        return Err(AppError::validation(format!(
            "configuration `{field}` may not contain / ? # @ \\ or spaces (it is part of the base URL)"
        )));
    }
    Ok(text)
}

fn scalar_text(value: &Value, name: &str) -> AppResult<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(AppError::validation(format!(
            "parameter `{name}` is missing"
        ))),
        _ => Err(AppError::validation(format!(
            "parameter `{name}` must be a string, number or boolean here"
        ))),
    }
}

/// A template opened for calls: the document of one version with its compiled validators.
pub struct Runtime {
    pub template_id: String,
    pub version: i32,
    pub doc: TemplateDoc,
    params: BTreeMap<String, Validator>,
}

/// A call an endpoint renders, ready for the calls domain.
#[derive(Debug, Clone)]
pub struct RenderedCall {
    pub method: String,
    pub path: String,
    pub query: Map<String, Value>,
    pub headers: Map<String, Value>,
    pub body: Option<Value>,
}

impl Runtime {
    pub fn new(template_id: &str, version: i32, doc: TemplateDoc) -> AppResult<Self> {
        let mut params = BTreeMap::new();
        for endpoint in &doc.endpoints {
            let schema = endpoint
                .params_schema
                .clone()
                .unwrap_or_else(|| serde_json::json!({ "type": "object" }));
            let validator = compile_schema(&schema).map_err(AppError::validation)?;
            params.insert(endpoint.name.clone(), validator);
        }
        Ok(Self {
            template_id: template_id.to_string(),
            version,
            doc,
            params,
        })
    }

    /// The base URL with the integration's configuration filled in.
    pub fn base_url(&self, config: &Value) -> AppResult<url::Url> {
        self.doc.base_url_for(config)
    }

    /// Method, path and the status that means healthy.
    pub fn health(&self, config: &Value) -> AppResult<(String, String, u16)> {
        let Some(health) = &self.doc.health_check else {
            return Ok(("GET".into(), "/".into(), 200));
        };
        let path = render(&health.path, |p| match p {
            Placeholder::Config(field) => Ok(url_encode(&config_text(config, field, false)?)),
            Placeholder::Param(name) => Err(AppError::validation(format!(
                "unknown placeholder {{{name}}}"
            ))),
        })?;
        Ok((
            health.method.clone(),
            path,
            health.expect_status.unwrap_or(200),
        ))
    }

    /// Renders endpoint `name` with `params` (validated against its `paramsSchema` first).
    pub fn render_call(
        &self,
        name: &str,
        params: &Value,
        config: &Value,
    ) -> AppResult<RenderedCall> {
        let endpoint = self.doc.endpoint(name)?;
        if let Some(validator) = self.params.get(name) {
            let problems: Vec<FieldProblem> = validator
                .iter_errors(params)
                .take(20)
                .map(|err| {
                    let path = err.instance_path().to_string();
                    FieldProblem {
                        path: format!("params{path}"),
                        message: err.masked().to_string(),
                    }
                })
                .collect();
            if !problems.is_empty() {
                let summary = problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(AppError::Validation {
                    message: format!("params do not match the endpoint's paramsSchema: {summary}"),
                    problems,
                });
            }
        }
        let text = |template: &str, encode: bool| {
            render(template, |p| {
                let raw = match p {
                    Placeholder::Param(name) => scalar_text(&params[name.as_str()], name)?,
                    Placeholder::Config(field) => config_text(config, field, false)?,
                };
                Ok(if encode { url_encode(&raw) } else { raw })
            })
        };
        let path = text(&endpoint.path, true)?;
        let mut query = Map::new();
        for (name, template) in &endpoint.query {
            let value = text(template, false)?;
            query.insert(name.clone(), Value::String(value));
        }
        let mut headers = Map::new();
        for (name, template) in &endpoint.headers {
            headers.insert(name.clone(), Value::String(text(template, false)?));
        }
        let body = endpoint
            .body
            .as_ref()
            .map(|body| fill_json(body, params, config))
            .transpose()?;
        Ok(RenderedCall {
            method: endpoint.method.clone(),
            path,
            query,
            headers,
            body,
        })
    }

    /// The part of an answer `invokeEndpoint` returns.
    pub fn pick(&self, name: &str, answer: Option<&Value>) -> Option<Value> {
        let pointer = self.doc.endpoint(name).ok()?.response_pointer.as_deref();
        let answer = answer?;
        match pointer {
            None | Some("") => Some(answer.clone()),
            Some(pointer) => answer.pointer(pointer).cloned(),
        }
    }
}

/// What a path parameter keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment's text, percent-encoded (a parameter cannot add segments or a query; a
/// `..` is still refused when the call's path is joined under the base URL).
fn url_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// A JSON template filled: `"{param}"` alone takes the value with its JSON type (null when
/// absent); other strings are filled as text.
fn fill_json(template: &Value, params: &Value, config: &Value) -> AppResult<Value> {
    Ok(match template {
        Value::String(text) => {
            let whole = pieces(text).map_err(AppError::validation)?;
            match whole.as_slice() {
                [Err(Placeholder::Param(name))] => params[name.as_str()].clone(),
                [Err(Placeholder::Config(field))] => config[field.as_str()].clone(),
                _ => Value::String(render(text, |p| match p {
                    Placeholder::Param(name) => scalar_text(&params[name.as_str()], name),
                    Placeholder::Config(field) => config_text(config, field, false),
                })?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| fill_json(item, params, config))
                .collect::<AppResult<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill_json(v, params, config)?)))
                .collect::<AppResult<_>>()?,
        ),
        other => other.clone(),
    })
}

/// Checks `instance` against a template's schema: INVALID_CONFIGURATION naming each path
/// (messages never echo the values).
pub fn check_against(schema: &Value, instance: &Value, what: &str) -> AppResult<()> {
    let validator = compile_schema(schema).map_err(AppError::validation)?;
    crate::providers::catalogue::check(&validator, instance, what)
}

/// The template version an integration of `provider_key` uses: its pinned `version`, or the
/// latest. None for built-in providers.
pub async fn resolve(
    conn: &mut crate::db::DbConn,
    team_id: &str,
    provider_key: &str,
    version: Option<i32>,
) -> AppResult<Option<(store::TemplateRow, i32, TemplateDoc)>> {
    let Some(key) = provider_key.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let row = store::by_key(conn, team_id, key).await.map_err(|_| {
        AppError::validation(format!(
            "unknown provider `{provider_key}`: the team has no template `{key}`"
        ))
    })?;
    let version = version.unwrap_or(row.latest_version);
    let stored = store::version(conn, &row.id, version).await?;
    let doc = TemplateDoc::parse(&stored.document)?;
    Ok(Some((row, version, doc)))
}

/// A template version as a provider of the team's list.
pub fn as_provider(
    row: &store::TemplateRow,
    version: i32,
    doc: &TemplateDoc,
) -> crate::providers::graphql::CustomProvider {
    use crate::providers::AuthScheme;
    let (method, path) = doc
        .health_check
        .as_ref()
        .map_or(("GET".to_string(), "/".to_string()), |h| {
            (h.method.clone(), h.path.clone())
        });
    crate::providers::graphql::CustomProvider {
        key: format!("{PREFIX}{}", row.template_key),
        name: doc.name.clone(),
        description: doc.description.clone(),
        category: category_of(&doc.category).unwrap_or(ProviderCategory::Custom),
        auth_scheme: match doc.auth.kind.as_str() {
            "bearer" | "oauth2" => AuthScheme::Bearer,
            "basic" => AuthScheme::Basic,
            "header" => AuthScheme::Header,
            _ => AuthScheme::Configurable,
        },
        auth_type: doc.auth.kind.clone(),
        health_check: crate::providers::catalogue::HealthCheck { method, path },
        config_schema: doc.config_schema.clone(),
        credentials_schema: doc.credentials_schema.clone(),
        template_id: row.id.clone(),
        template_version: version,
    }
}

/// The providers template integrations use: each (template id, version) of `pairs` as its
/// template at that version, loaded in a fixed number of statements.
pub async fn providers_of(
    conn: &mut crate::db::DbConn,
    team_id: &str,
    pairs: &[(String, i32)],
) -> AppResult<
    std::collections::HashMap<
        (String, i32),
        std::sync::Arc<crate::providers::graphql::CustomProvider>,
    >,
> {
    let mut out = std::collections::HashMap::new();
    for (row, stored) in store::versions_for(conn, team_id, pairs).await? {
        let doc: TemplateDoc = serde_json::from_str(&stored.document)?;
        out.insert(
            (row.id.clone(), stored.version),
            std::sync::Arc::new(as_provider(&row, stored.version, &doc)),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_parsed_and_checked() {
        assert_eq!(
            render("/a/{x}/{config.y}", |p| Ok(match p {
                Placeholder::Param(n) => format!("P{n}"),
                Placeholder::Config(f) => format!("C{f}"),
            }))
            .unwrap(),
            "/a/Px/Cy"
        );
        assert!(pieces("/a/{x").is_err());
        assert!(pieces("/a/x}").is_err());
        assert!(pieces("/a/{x y}").is_err());
        assert!(pieces("/a/{config.}").is_err());
    }

    #[test]
    fn bodies_keep_json_types() {
        let body = json!({ "n": "{count}", "s": "id-{count}", "list": ["{tags}"] });
        let params = json!({ "count": 3, "tags": ["a", "b"] });
        assert_eq!(
            fill_json(&body, &params, &json!({})).unwrap(),
            json!({ "n": 3, "s": "id-3", "list": [["a", "b"]] })
        );
    }
}
