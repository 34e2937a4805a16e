//! Where a call goes and how it is signed: the URL under the integration's base URL (no
//! scheme or host switching, no `..` escape) and the provider's auth scheme applied to it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::error::{AppError, AppResult};
use crate::providers::{AuthScheme, Provider};

/// The integration's base URL: its configured `baseUrl`, else the provider's default.
pub fn base_url(provider: &Provider, config: &Value) -> AppResult<url::Url> {
    let text = config["baseUrl"]
        .as_str()
        .or(provider.default_base_url)
        .ok_or_else(|| AppError::validation("the integration has no baseUrl"))?;
    url::Url::parse(text)
        .map_err(|_| AppError::validation("the integration's baseUrl is not a URL"))
}

fn invalid_path(reason: &str) -> AppError {
    AppError::validation(format!("invalid path: {reason}"))
}

/// At most this many query parameters (list items counted) a call may add.
pub const MAX_QUERY_PARAMS: usize = 100;
/// The longest path a call may name.
pub const MAX_PATH_CHARS: usize = 4096;

/// `path` (with an optional `?query`) joined under `base`, plus `query` parameters. The result
/// keeps the base's scheme, host and port, and stays under its path.
pub fn join(
    base: &url::Url,
    path: &str,
    query: Option<&Map<String, Value>>,
) -> AppResult<url::Url> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(invalid_path("it must start with a single /"));
    }
    if path.chars().count() > MAX_PATH_CHARS {
        return Err(invalid_path(&format!(
            "it is longer than {MAX_PATH_CHARS} characters"
        )));
    }
    let params: usize = query
        .into_iter()
        .flatten()
        .map(|(_, v)| v.as_array().map_or(1, Vec::len))
        .sum();
    if params > MAX_QUERY_PARAMS {
        return Err(AppError::validation(format!(
            "query: at most {MAX_QUERY_PARAMS} parameters"
        )));
    }
    if path.contains("://")
        || path.contains('\\')
        || path.contains('#')
        || path.chars().any(char::is_control)
    {
        return Err(invalid_path(
            "it may not contain a scheme, backslash, fragment or control character",
        ));
    }
    let (path_part, query_part) = path.split_once('?').unwrap_or((path, ""));
    let decoded = percent_decode(path_part);
    if decoded
        .split(['/', '\\'])
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err(invalid_path("`.` and `..` segments are not allowed"));
    }
    let mut url = base.clone();
    // `/` is the base itself (a GraphQL endpoint, say); anything else goes under it.
    let joined = if path_part == "/" {
        base.path().to_string()
    } else {
        format!("{}{}", base.path().trim_end_matches('/'), path_part)
    };
    url.set_path(&joined);
    url.set_query(None);
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in url::form_urlencoded::parse(base.query().unwrap_or_default().as_bytes()) {
            pairs.append_pair(&k, &v);
        }
        for (k, v) in url::form_urlencoded::parse(query_part.as_bytes()) {
            pairs.append_pair(&k, &v);
        }
        for (key, value) in query.into_iter().flatten() {
            match value {
                Value::Array(items) => {
                    for item in items {
                        pairs.append_pair(key, &scalar(item)?);
                    }
                }
                other => {
                    pairs.append_pair(key, &scalar(other)?);
                }
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let same_origin =
        url.scheme() == base.scheme() && url.host() == base.host() && url.port() == base.port();
    if !same_origin || !url.path().starts_with(base.path().trim_end_matches('/')) {
        return Err(invalid_path("it leaves the integration's base URL"));
    }
    Ok(url)
}

fn scalar(value: &Value) -> AppResult<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(AppError::validation(
            "query values must be strings, numbers, booleans or lists of them",
        )),
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn header(value: &str) -> AppResult<HeaderValue> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        AppError::validation("credentials contain characters not allowed in a header")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `Authorization: Bearer <token>`, marked sensitive (an OAuth access token).
pub fn bearer(token: &str) -> AppResult<HeaderValue> {
    header(&format!("Bearer {token}"))
}

fn cred<'a>(credentials: &'a Value, field: &str) -> &'a str {
    credentials[field].as_str().unwrap_or_default()
}

/// The secret the provider's scheme sends as a token.
fn token(credentials: &Value) -> &str {
    [
        "token",
        "botToken",
        "apiToken",
        "accessToken",
        "personalAccessToken",
    ]
    .iter()
    .map(|f| cred(credentials, f))
    .find(|t| !t.is_empty())
    .unwrap_or_default()
}

fn basic(user: &str, password: &str) -> AppResult<HeaderValue> {
    header(&format!(
        "Basic {}",
        B64.encode(format!("{user}:{password}"))
    ))
}

/// Signs a request per the provider's auth scheme. Session sign-ins (ALM) are done by the
/// caller, which passes the session cookie in `session`.
pub fn apply_auth(
    provider: &Provider,
    config: &Value,
    credentials: &Value,
    url: &mut url::Url,
    headers: &mut HeaderMap,
    session: Option<&str>,
) -> AppResult<()> {
    match provider.auth_scheme {
        AuthScheme::Basic => {
            headers.insert(
                AUTHORIZATION,
                basic(cred(credentials, "email"), cred(credentials, "apiToken"))?,
            );
        }
        AuthScheme::Bearer => {
            headers.insert(
                AUTHORIZATION,
                header(&format!("Bearer {}", token(credentials)))?,
            );
        }
        AuthScheme::Header => {
            headers.insert(
                HeaderName::from_static("private-token"),
                header(token(credentials))?,
            );
        }
        AuthScheme::BasicPat => {
            headers.insert(
                AUTHORIZATION,
                basic("", cred(credentials, "personalAccessToken"))?,
            );
        }
        AuthScheme::DevKey => {}
        AuthScheme::Session => {
            if let Some(cookie) = session {
                headers.insert(reqwest::header::COOKIE, header(cookie)?);
            }
        }
        AuthScheme::Configurable => match config["authType"].as_str().unwrap_or("none") {
            "bearer" => {
                headers.insert(
                    AUTHORIZATION,
                    header(&format!("Bearer {}", cred(credentials, "token")))?,
                );
            }
            "basic" => {
                headers.insert(
                    AUTHORIZATION,
                    basic(cred(credentials, "username"), cred(credentials, "password"))?,
                );
            }
            "header" => {
                let name = config["authHeader"].as_str().unwrap_or("X-API-Key");
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| AppError::validation("authHeader is not a header name"))?;
                headers.insert(name, header(cred(credentials, "token"))?);
            }
            "query" => {
                let param = config["authQueryParam"].as_str().unwrap_or("api_key");
                url.query_pairs_mut()
                    .append_pair(param, cred(credentials, "token"));
            }
            _ => {}
        },
    }
    Ok(())
}

/// Signs a request per a template's auth scheme, with the credential fields it names.
/// (`oauth2` templates are signed with the connection's token by the caller.)
pub fn apply_template_auth(
    auth: &crate::templates::AuthSpec,
    credentials: &Value,
    url: &mut url::Url,
    headers: &mut HeaderMap,
) -> AppResult<()> {
    let field = |name: &Option<String>| cred(credentials, name.as_deref().unwrap_or_default());
    match auth.kind.as_str() {
        "bearer" => {
            headers.insert(
                AUTHORIZATION,
                header(&format!("Bearer {}", field(&auth.token_field)))?,
            );
        }
        "basic" => {
            headers.insert(
                AUTHORIZATION,
                basic(field(&auth.username_field), field(&auth.password_field))?,
            );
        }
        "header" => {
            let name = auth.header_name.as_deref().unwrap_or("X-API-Key");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| AppError::validation("auth.headerName is not a header name"))?;
            headers.insert(name, header(field(&auth.token_field))?);
        }
        "query" => {
            let param = auth.query_param.as_deref().unwrap_or("api_key");
            url.query_pairs_mut()
                .append_pair(param, field(&auth.token_field));
        }
        _ => {}
    }
    Ok(())
}

/// Every credential value worth hiding from logs and answers.
pub fn secret_values(credentials: Option<&Value>) -> Vec<String> {
    let mut secrets: Vec<String> = credentials
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "email" | "username"))
                .filter_map(|(_, v)| v.as_str())
                .filter(|v| v.len() >= 4)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    // Encoded forms a log could also show.
    let encoded: Vec<String> = secrets
        .iter()
        .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect())
        .collect();
    secrets.extend(encoded);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> url::Url {
        url::Url::parse(url).unwrap()
    }

    #[test]
    fn paths_stay_under_the_base() {
        let b = base("https://api.example.com/v2");
        assert_eq!(
            join(&b, "/items?x=1", None).unwrap().as_str(),
            "https://api.example.com/v2/items?x=1"
        );
        let q = serde_json::json!({ "a": "b c", "n": [1, 2] });
        assert_eq!(
            join(&b, "/s", q.as_object()).unwrap().as_str(),
            "https://api.example.com/v2/s?a=b+c&n=1&n=2"
        );
        for bad in [
            "items",
            "//evil.com/x",
            "/../admin",
            "/a/%2e%2e/b",
            "/a/..%2fb",
            "http://evil.com",
            "/x\\y",
            "/a#b",
            "/a/./b",
        ] {
            assert!(join(&b, bad, None).is_err(), "{bad}");
        }
    }
}
