//! The provider catalogue: what the hub knows about each kind of tool it connects to. Each
//! entry's JSON Schemas are served to UIs to draw forms and used to validate what users send.

use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::{Value, json};

use crate::error::{AppError, FieldProblem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum ProviderCategory {
    ProjectManagement,
    VersionControl,
    Communication,
    TestManagement,
    CiCd,
    Monitoring,
    CloudStorage,
    Cad,
    Simulation,
    Custom,
}

/// How credentials are presented to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum AuthScheme {
    /// `Authorization: Basic` from two credential fields (Jira: email + API token).
    Basic,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A token in a provider-specific header (GitLab `PRIVATE-TOKEN`).
    Header,
    /// `Authorization: Basic` with an empty user and a personal access token (Azure DevOps).
    BasicPat,
    /// A developer key passed inside XML-RPC calls (TestLink).
    DevKey,
    /// A sign-in request that returns a session cookie (ALM).
    Session,
    /// Chosen in the integration's configuration (generic REST and GraphQL).
    Configurable,
}

/// The request that tells whether an integration works.
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct HealthCheck {
    pub method: String,
    pub path: String,
}

pub struct Provider {
    pub key: &'static str,
    pub name: &'static str,
    pub category: ProviderCategory,
    pub auth_scheme: AuthScheme,
    pub default_base_url: Option<&'static str>,
    pub health_check: HealthCheck,
    pub docs_url: &'static str,
    pub config_schema: Value,
    pub credentials_schema: Value,
    config_validator: Validator,
    credentials_validator: Validator,
}

impl Provider {
    /// Checks a configuration document against this provider's schema.
    pub fn validate_config(&self, config: &Value) -> Result<(), AppError> {
        check(&self.config_validator, config, "configuration")
    }

    /// Checks credentials; messages never echo the submitted values.
    pub fn validate_credentials(&self, credentials: &Value) -> Result<(), AppError> {
        check(&self.credentials_validator, credentials, "credentials")
    }
}

/// Checks `instance` against a compiled schema: INVALID_CONFIGURATION naming each path (at
/// most 20), with messages that never echo the values. Also what templates' schemas use.
pub fn check(validator: &Validator, instance: &Value, what: &str) -> Result<(), AppError> {
    let problems: Vec<FieldProblem> = validator
        .iter_errors(instance)
        .take(20)
        .map(|err| {
            let path = err.instance_path().to_string();
            FieldProblem {
                path: if path.is_empty() { "/".into() } else { path },
                message: err.masked().to_string(),
            }
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    let summary = problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(AppError::InvalidConfiguration {
        message: format!("invalid {what}: {summary}"),
        problems,
    })
}

pub fn all() -> &'static [Provider] {
    &CATALOGUE
}

pub fn find(key: &str) -> Option<&'static Provider> {
    CATALOGUE.iter().find(|p| p.key == key)
}

/// Looks a provider up, or answers VALIDATION_FAILED naming the known keys.
pub fn require(key: &str) -> Result<&'static Provider, AppError> {
    find(key).ok_or_else(|| {
        let known: Vec<&str> = CATALOGUE.iter().map(|p| p.key).collect();
        AppError::Validation {
            message: format!(
                "unknown provider `{key}`; known providers: {}",
                known.join(", ")
            ),
            problems: vec![FieldProblem {
                path: "provider".into(),
                message: "unknown provider".into(),
            }],
        }
    })
}

const URL_PATTERN: &str = r"^https?://[^\s/?#]+(/[^\s?#]*)?$";

fn base_url(required_description: &str) -> Value {
    json!({
        "type": "string",
        "title": "Base URL",
        "description": required_description,
        "pattern": URL_PATTERN,
        "maxLength": 2048
    })
}

fn secret(title: &str) -> Value {
    json!({ "type": "string", "title": title, "minLength": 1, "maxLength": 8192, "writeOnly": true })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

struct Entry {
    key: &'static str,
    name: &'static str,
    category: ProviderCategory,
    auth_scheme: AuthScheme,
    default_base_url: Option<&'static str>,
    health: (&'static str, &'static str),
    docs_url: &'static str,
    config_schema: Value,
    credentials_schema: Value,
}

fn build(entry: Entry) -> Provider {
    let compile = |schema: &Value| {
        jsonschema::validator_for(schema)
            .unwrap_or_else(|err| panic!("provider `{}` has an invalid schema: {err}", entry.key))
    };
    Provider {
        config_validator: compile(&entry.config_schema),
        credentials_validator: compile(&entry.credentials_schema),
        key: entry.key,
        name: entry.name,
        category: entry.category,
        auth_scheme: entry.auth_scheme,
        default_base_url: entry.default_base_url,
        health_check: HealthCheck {
            method: entry.health.0.into(),
            path: entry.health.1.into(),
        },
        docs_url: entry.docs_url,
        config_schema: entry.config_schema,
        credentials_schema: entry.credentials_schema,
    }
}

static CATALOGUE: LazyLock<Vec<Provider>> = LazyLock::new(|| {
    use AuthScheme::*;
    use ProviderCategory::*;
    let optional_base = base_url("Override the provider's default API address");
    let generic_auth = json!({
        "type": "string",
        "enum": ["none", "bearer", "basic", "header", "query"],
        "default": "none"
    });
    vec![
        Entry {
            key: "jira",
            name: "Jira",
            category: ProjectManagement,
            auth_scheme: Basic,
            default_base_url: None,
            health: ("GET", "/rest/api/3/myself"),
            docs_url: "https://developer.atlassian.com/cloud/jira/platform/rest/v3/",
            config_schema: object(
                json!({
                    "baseUrl": base_url("Your site, e.g. https://example.atlassian.net"),
                    "defaultProjectKey": { "type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,19}$" }
                }),
                &["baseUrl"],
            ),
            credentials_schema: object(
                json!({ "email": { "type": "string", "minLength": 3, "maxLength": 320 }, "apiToken": secret("API token") }),
                &["email", "apiToken"],
            ),
        },
        Entry {
            key: "github",
            name: "GitHub",
            category: VersionControl,
            auth_scheme: Bearer,
            default_base_url: Some("https://api.github.com"),
            health: ("GET", "/user"),
            docs_url: "https://docs.github.com/rest",
            config_schema: object(
                json!({ "baseUrl": optional_base, "owner": { "type": "string", "maxLength": 100 } }),
                &[],
            ),
            credentials_schema: object(json!({ "token": secret("Personal access token") }), &["token"]),
        },
        Entry {
            key: "gitlab",
            name: "GitLab",
            category: VersionControl,
            auth_scheme: Header,
            default_base_url: Some("https://gitlab.com"),
            health: ("GET", "/api/v4/user"),
            docs_url: "https://docs.gitlab.com/ee/api/rest/",
            config_schema: object(json!({ "baseUrl": optional_base }), &[]),
            credentials_schema: object(json!({ "token": secret("PRIVATE-TOKEN") }), &["token"]),
        },
        Entry {
            key: "slack",
            name: "Slack",
            category: Communication,
            auth_scheme: Bearer,
            default_base_url: Some("https://slack.com/api"),
            health: ("POST", "/auth.test"),
            docs_url: "https://api.slack.com/web",
            config_schema: object(
                json!({ "baseUrl": optional_base, "defaultChannel": { "type": "string", "maxLength": 100 } }),
                &[],
            ),
            credentials_schema: object(json!({ "botToken": secret("Bot token (xoxb-...)") }), &["botToken"]),
        },
        Entry {
            key: "azure_devops",
            name: "Azure DevOps",
            category: ProjectManagement,
            auth_scheme: BasicPat,
            default_base_url: Some("https://dev.azure.com"),
            health: ("GET", "/{organization}/_apis/projects?api-version=7.1"),
            docs_url: "https://learn.microsoft.com/rest/api/azure/devops/",
            config_schema: object(
                json!({
                    "baseUrl": optional_base,
                    "organization": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$" }
                }),
                &["organization"],
            ),
            credentials_schema: object(
                json!({ "personalAccessToken": secret("Personal access token") }),
                &["personalAccessToken"],
            ),
        },
        Entry {
            key: "testlink",
            name: "TestLink",
            category: TestManagement,
            auth_scheme: DevKey,
            default_base_url: None,
            health: ("POST", "/lib/api/xmlrpc/v1/xmlrpc.php"),
            docs_url: "https://github.com/TestLinkOpenSourceTRMS/testlink-code",
            config_schema: object(
                json!({ "baseUrl": base_url("Your TestLink server, e.g. https://testlink.example.com") }),
                &["baseUrl"],
            ),
            credentials_schema: object(json!({ "devKey": secret("Developer key") }), &["devKey"]),
        },
        Entry {
            key: "zephyr_scale",
            name: "Zephyr Scale",
            category: TestManagement,
            auth_scheme: Bearer,
            default_base_url: Some("https://api.zephyrscale.smartbear.com/v2"),
            health: ("GET", "/healthcheck"),
            docs_url: "https://support.smartbear.com/zephyr-scale-cloud/api-docs/",
            config_schema: object(
                json!({ "baseUrl": optional_base, "projectKey": { "type": "string", "maxLength": 20 } }),
                &[],
            ),
            credentials_schema: object(json!({ "apiToken": secret("API access token") }), &["apiToken"]),
        },
        Entry {
            key: "alm",
            name: "OpenText ALM / Quality Center",
            category: TestManagement,
            auth_scheme: Session,
            default_base_url: None,
            health: ("POST", "/qcbin/authentication-point/alm-authenticate"),
            docs_url: "https://admhelp.microfocus.com/alm/api_refs/REST/",
            config_schema: object(
                json!({
                    "baseUrl": base_url("Your ALM server, e.g. https://alm.example.com"),
                    "domain": { "type": "string", "minLength": 1, "maxLength": 100 },
                    "project": { "type": "string", "minLength": 1, "maxLength": 100 }
                }),
                &["baseUrl", "domain", "project"],
            ),
            credentials_schema: object(
                json!({ "username": { "type": "string", "minLength": 1, "maxLength": 256 }, "password": secret("Password") }),
                &["username", "password"],
            ),
        },
        Entry {
            key: "teams",
            name: "Microsoft Teams",
            category: Communication,
            auth_scheme: Bearer,
            default_base_url: Some("https://graph.microsoft.com/v1.0"),
            health: ("GET", "/me"),
            docs_url: "https://learn.microsoft.com/graph/api/resources/teams-api-overview",
            config_schema: object(
                json!({ "baseUrl": optional_base, "teamId": { "type": "string", "maxLength": 100 } }),
                &[],
            ),
            credentials_schema: object(json!({ "accessToken": secret("Access token") }), &["accessToken"]),
        },
        Entry {
            key: "generic_rest",
            name: "Generic REST API",
            category: Custom,
            auth_scheme: Configurable,
            default_base_url: None,
            health: ("GET", "/"),
            docs_url: "https://spec.openapis.org/oas/latest.html",
            config_schema: object(
                json!({
                    "baseUrl": base_url("The API's base address"),
                    "authType": generic_auth,
                    "authHeader": { "type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$" },
                    "authQueryParam": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$" },
                    "healthCheckMethod": { "type": "string", "enum": ["GET", "HEAD", "POST"] },
                    "healthCheckPath": { "type": "string", "pattern": "^/", "maxLength": 2048 },
                    "defaultHeaders": {
                        "type": "object",
                        "additionalProperties": { "type": "string", "maxLength": 1024 },
                        "maxProperties": 50,
                        // Credentials and framing belong to the hub.
                        "propertyNames": {
                            "pattern": "^[A-Za-z0-9-]{1,64}$",
                            "not": { "pattern": "(?i)^(authorization|cookie|host|content-length|transfer-encoding|connection|upgrade|te|private-token|proxy-.*|x-forwarded-.*)$" }
                        }
                    }
                }),
                &["baseUrl"],
            ),
            credentials_schema: object(
                json!({
                    "token": secret("Token"),
                    "username": { "type": "string", "maxLength": 256 },
                    "password": secret("Password")
                }),
                &[],
            ),
        },
        Entry {
            key: "graphql",
            name: "GraphQL API",
            category: Custom,
            auth_scheme: Configurable,
            default_base_url: None,
            health: ("POST", "{ __typename }"),
            docs_url: "https://graphql.org/learn/serving-over-http/",
            config_schema: object(
                json!({
                    "baseUrl": base_url("The GraphQL endpoint"),
                    "authType": generic_auth,
                    "authHeader": { "type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$" },
                    "healthQuery": { "type": "string", "maxLength": 10000 }
                }),
                &["baseUrl"],
            ),
            credentials_schema: object(
                json!({
                    "token": secret("Token"),
                    "username": { "type": "string", "maxLength": 256 },
                    "password": secret("Password")
                }),
                &[],
            ),
        },
    ]
    .into_iter()
    .map(build)
    .collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_builds_with_the_named_providers() {
        let keys: Vec<&str> = all().iter().map(|p| p.key).collect();
        for key in [
            "jira",
            "github",
            "gitlab",
            "slack",
            "azure_devops",
            "testlink",
            "zephyr_scale",
            "alm",
            "teams",
            "generic_rest",
            "graphql",
        ] {
            assert!(keys.contains(&key), "{key} missing");
        }
    }

    #[test]
    fn credential_errors_do_not_echo_values() {
        let jira = find("jira").unwrap();
        let err = jira
            .validate_credentials(
                &json!({ "email": "a@b.c", "apiToken": 12345678, "extra": "s3cr3t-value" }),
            )
            .unwrap_err();
        let AppError::InvalidConfiguration { message, problems } = err else {
            panic!()
        };
        assert!(
            !message.contains("12345678") && !message.contains("s3cr3t-value"),
            "{message}"
        );
        assert!(
            problems.iter().any(|p| p.path == "/apiToken"),
            "{problems:?}"
        );
    }
}
