//! OAuth 2.0 connections: a team's apps at providers, the authorization-code flow with PKCE
//! and a single-use `state` (`startOAuthConnection` → the provider → `/oauth/callback`), the
//! client-credentials grant, and the token life cycle: refreshed before expiry by a background
//! task and on demand, once per integration across every replica (single-flight), with
//! rotated refresh tokens stored in the same write as the access token.
//!
//! The tokens are the integration's sealed credentials (`accessToken`, `refreshToken`), so
//! everything that protects credentials (sealing, re-sealing, redaction from logs and answers)
//! protects them too; the rest of the life cycle (expiry, granted scopes, status, the last
//! error, a generation bumped on every change) is kept on the integration's row.

pub mod callback;
pub mod flow;
pub mod graphql;
pub mod refresh;
pub mod store;

use serde_json::{Value, json};

pub use crate::integrations::oauth::OAuthStatus;

/// How an app obtains tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum, Default)]
#[graphql(name = "OAuthGrantType")]
pub enum GrantType {
    /// A user consents in the browser (with PKCE where the provider takes it).
    #[default]
    AuthorizationCode,
    /// Machine to machine: the app's own credentials buy the token.
    ClientCredentials,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::ClientCredentials => "client_credentials",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "client_credentials" => Self::ClientCredentials,
            _ => Self::AuthorizationCode,
        }
    }
}

/// The credentials document an OAuth integration's tokens are sealed as.
pub fn credentials_of(access_token: &str, refresh_token: Option<&str>) -> Value {
    let mut doc = json!({ "accessToken": access_token, "tokenType": "Bearer" });
    if let Some(refresh) = refresh_token {
        doc["refreshToken"] = json!(refresh);
    }
    doc
}

/// The callback URL to register at every provider: `HUB_PUBLIC_URL` + `/oauth/callback`.
pub fn redirect_uri(state: &crate::context::AppState) -> String {
    format!("{}/oauth/callback", state.public_base())
}
