//! What the catalogue knows of each provider's OAuth 2.0: its endpoints, default scopes,
//! whether it takes PKCE, and how its tokens are refreshed. Generic providers (`generic_rest`,
//! `graphql`) have no endpoints of their own: their apps name them.

/// How a provider's access tokens are renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum RefreshStyle {
    /// A refresh token that is replaced by a new one on every refresh (rotation).
    RotatingRefreshToken,
    /// A refresh token that stays the same across refreshes.
    RefreshToken,
    /// The grant has no refresh token; tokens are long-lived unless the provider says otherwise.
    None,
}

#[derive(Debug, Clone, async_graphql::SimpleObject)]
#[graphql(name = "ProviderOAuth")]
pub struct OAuthSpec {
    /// Where users consent (null: the app names it).
    pub authorize_url: Option<&'static str>,
    /// Where codes and refresh tokens are exchanged (null: the app names it).
    pub token_url: Option<&'static str>,
    /// RFC 7009 revocation endpoint, where the provider has one.
    pub revoke_url: Option<&'static str>,
    /// Scopes asked for when the app names none.
    pub default_scopes: Vec<&'static str>,
    /// How scopes are joined in the authorization URL (a space; Slack: a comma).
    pub scope_separator: &'static str,
    /// Takes PKCE (S256) on the authorization code grant.
    pub pkce: bool,
    pub refresh: RefreshStyle,
    /// Offers the client-credentials grant for machine-to-machine apps.
    pub client_credentials: bool,
    /// Extra parameters the authorization URL needs (Atlassian's `audience`, `prompt`).
    #[graphql(skip)]
    pub authorize_params: &'static [(&'static str, &'static str)],
}

const MICROSOFT_AUTHORIZE: &str = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize";
const MICROSOFT_TOKEN: &str = "https://login.microsoftonline.com/common/oauth2/v2.0/token";

/// The provider's OAuth 2.0, if it offers it.
pub fn spec(provider_key: &str) -> Option<OAuthSpec> {
    let generic = OAuthSpec {
        authorize_url: None,
        token_url: None,
        revoke_url: None,
        default_scopes: vec![],
        scope_separator: " ",
        pkce: true,
        refresh: RefreshStyle::RotatingRefreshToken,
        client_credentials: true,
        authorize_params: &[],
    };
    Some(match provider_key {
        "github" => OAuthSpec {
            authorize_url: Some("https://github.com/login/oauth/authorize"),
            token_url: Some("https://github.com/login/oauth/access_token"),
            default_scopes: vec!["repo", "read:user"],
            client_credentials: false,
            ..generic
        },
        "gitlab" => OAuthSpec {
            authorize_url: Some("https://gitlab.com/oauth/authorize"),
            token_url: Some("https://gitlab.com/oauth/token"),
            revoke_url: Some("https://gitlab.com/oauth/revoke"),
            default_scopes: vec!["api"],
            client_credentials: false,
            ..generic
        },
        "slack" => OAuthSpec {
            authorize_url: Some("https://slack.com/oauth/v2/authorize"),
            token_url: Some("https://slack.com/api/oauth.v2.access"),
            default_scopes: vec!["chat:write", "channels:read"],
            scope_separator: ",",
            pkce: false,
            client_credentials: false,
            ..generic
        },
        "jira" => OAuthSpec {
            authorize_url: Some("https://auth.atlassian.com/authorize"),
            token_url: Some("https://auth.atlassian.com/oauth/token"),
            default_scopes: vec![
                "read:jira-work",
                "write:jira-work",
                "read:jira-user",
                "offline_access",
            ],
            pkce: false,
            client_credentials: false,
            authorize_params: &[("audience", "api.atlassian.com"), ("prompt", "consent")],
            ..generic
        },
        "azure_devops" => OAuthSpec {
            authorize_url: Some(MICROSOFT_AUTHORIZE),
            token_url: Some(MICROSOFT_TOKEN),
            default_scopes: vec![
                "499b84ac-1321-427f-aa17-267ca6975798/.default",
                "offline_access",
            ],
            ..generic
        },
        "teams" => OAuthSpec {
            authorize_url: Some(MICROSOFT_AUTHORIZE),
            token_url: Some(MICROSOFT_TOKEN),
            default_scopes: vec![
                "ChannelMessage.Send",
                "Team.ReadBasic.All",
                "offline_access",
            ],
            ..generic
        },
        "generic_rest" | "graphql" => generic,
        _ => return None,
    })
}
