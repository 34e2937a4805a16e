use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::GrantType;
use super::flow::{self, Grant};
use super::refresh::{self, Want};
use super::store::{self, AppChanges, OAuthAppRow, StateRow};
use crate::audit;
use crate::auth::{Principal, Scope, ScopeGuard, principal};
use crate::config::Config;
use crate::context::{AppState, conn, state};
use crate::db::{new_id, now};
use crate::error::{AppError, AppResult};
use crate::events::EventKind;
use crate::integrations::graphql::{IntegrationNode, reachable};
use crate::integrations::model::IntegrationRow;
use crate::providers::{self, oauth::OAuthSpec};

/// How long a connection attempt (`state`) stays usable.
pub const STATE_TTL_SECS: i64 = 600;

/// A team's OAuth app at a provider. The client secret is write-only.
pub struct OAuthAppNode(pub OAuthAppRow);

#[Object(name = "OAuthApp")]
impl OAuthAppNode {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The provider key (`github`...; `generic_rest` or `graphql` for any OAuth 2.0 server).
    async fn provider(&self) -> &str {
        &self.0.provider_key
    }
    async fn grant_type(&self) -> GrantType {
        GrantType::parse(&self.0.grant_type)
    }
    async fn client_id(&self) -> &str {
        &self.0.client_id
    }
    /// Always true: the secret is sealed and never returned.
    async fn client_secret_set(&self) -> bool {
        !self.0.client_secret_sealed.is_empty()
    }
    async fn scopes(&self) -> Vec<String> {
        self.0.scopes()
    }
    async fn authorize_url(&self) -> Option<&str> {
        self.0.authorize_url.as_deref()
    }
    async fn token_url(&self) -> &str {
        &self.0.token_url
    }
    async fn revoke_url(&self) -> Option<&str> {
        self.0.revoke_url.as_deref()
    }
    /// Extra parameters of the authorization URL.
    async fn authorize_params(&self) -> Json<serde_json::Map<String, Value>> {
        Json(self.0.authorize_params())
    }
    /// Where the provider sends users back: register this URL with the provider.
    async fn redirect_uri(&self, ctx: &Context<'_>) -> String {
        super::redirect_uri(state(ctx))
    }
    /// How many integrations connect through the app.
    async fn integration_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        Ok(store::users(&mut *conn(ctx).await?, &self.0.id).await?)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at.and_utc()
    }
}

#[derive(InputObject)]
pub struct CreateOAuthAppInput {
    /// A provider of the catalogue that offers OAuth 2.0 (`Provider.oauth`).
    pub provider: String,
    /// Default: the provider's name.
    pub name: Option<String>,
    #[graphql(default)]
    pub grant_type: GrantType,
    pub client_id: String,
    /// Sealed, never returned.
    pub client_secret: String,
    /// Default: the provider's default scopes.
    pub scopes: Option<Vec<String>>,
    /// Default: the provider's (required for generic providers' authorization-code apps).
    pub authorize_url: Option<String>,
    /// Default: the provider's (required for generic providers).
    pub token_url: Option<String>,
    /// RFC 7009 revocation endpoint; default: the provider's, if it has one.
    pub revoke_url: Option<String>,
    /// Extra authorization URL parameters (Google: `{"access_type": "offline", "prompt": "consent"}`).
    pub authorize_params: Option<Json<Value>>,
}

#[derive(InputObject)]
pub struct UpdateOAuthAppInput {
    pub name: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub revoke_url: Option<String>,
    pub authorize_params: Option<Json<Value>>,
}

#[derive(SimpleObject)]
#[graphql(name = "OAuthConnectionStart")]
pub struct OAuthConnectionStart {
    /// Open this in the user's browser.
    pub authorization_url: String,
    /// The attempt is refused after this (10 minutes).
    pub expires_at: DateTime<Utc>,
    /// Where the provider sends the user back (register it with the provider).
    pub redirect_uri: String,
}

fn check_text(field: &str, text: &str, max: usize) -> AppResult<String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(AppError::validation(format!(
            "{field}: 1 to {max} characters, no control characters"
        )));
    }
    Ok(text.to_string())
}

fn check_scopes(scopes: &[String]) -> AppResult<String> {
    if scopes.len() > 50 {
        return Err(AppError::validation("scopes: at most 50"));
    }
    for scope in scopes {
        if scope.is_empty()
            || scope.len() > 200
            || scope
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err(AppError::validation(format!(
                "scopes: `{}` is not a scope (1 to 200 characters, no spaces or commas)",
                scope.chars().take(50).collect::<String>()
            )));
        }
    }
    Ok(serde_json::to_string(scopes)?)
}

const RESERVED_PARAMS: [&str; 7] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "scope",
    "code_challenge",
    "code_challenge_method",
];

fn check_params(params: &Value) -> AppResult<String> {
    let object = params
        .as_object()
        .ok_or_else(|| AppError::validation("authorizeParams: an object of strings"))?;
    if object.len() > 20 {
        return Err(AppError::validation(
            "authorizeParams: at most 20 parameters",
        ));
    }
    for (name, value) in object {
        let ok = !name.is_empty()
            && name.len() <= 100
            && !RESERVED_PARAMS.contains(&name.as_str())
            && value.as_str().is_some_and(|v| v.len() <= 500);
        if !ok {
            return Err(AppError::validation(format!(
                "authorizeParams.{}: a string of at most 500 characters, and not one of the parameters the hub sets ({})",
                name.chars().take(50).collect::<String>(),
                RESERVED_PARAMS.join(", ")
            )));
        }
    }
    Ok(params.to_string())
}

fn spec_of(provider: &str) -> AppResult<OAuthSpec> {
    let provider = providers::require(provider)?;
    providers::oauth::spec(provider.key).ok_or_else(|| {
        AppError::validation(format!(
            "provider `{}` does not connect through OAuth 2.0",
            provider.key
        ))
    })
}

/// Whether the hub may send a browser to `url` after a connection: its origin is listed in
/// `HUB_OAUTH_REDIRECT_ORIGINS`.
pub fn redirect_allowed(config: &Config, url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    if !matches!(parsed.scheme(), "http" | "https") || url.len() > 2048 {
        return false;
    }
    let origin = parsed.origin().ascii_serialization();
    config
        .oauth_redirect_origins
        .split(',')
        .map(|o| o.trim().trim_end_matches('/'))
        .any(|allowed| !allowed.is_empty() && allowed == origin)
}

/// The integration, if the caller may reach it and it connects through an app; and the app.
async fn oauth_integration(
    ctx: &Context<'_>,
    caller: &Principal,
    id: &str,
) -> AppResult<(IntegrationRow, OAuthAppRow)> {
    let row = reachable(ctx, caller, id).await?;
    let app_id = row.oauth_app_id.clone().ok_or_else(|| {
        AppError::validation(format!(
            "integration `{}` does not connect through an OAuth app (set oauthAppId)",
            row.name
        ))
    })?;
    let app = store::get(&mut *conn(ctx).await?, &caller.team_id, &app_id).await?;
    Ok((row, app))
}

async fn fresh(state: &AppState, id: &str) -> AppResult<IntegrationNode> {
    let row = store::integration(&mut state.pool.get().await?, id).await?;
    Ok(IntegrationNode::one(row))
}

#[derive(Default)]
pub struct OAuthQuery;

#[Object]
impl OAuthQuery {
    /// The team's OAuth apps, oldest first (at most 100).
    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn oauth_apps(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OAuthAppNode>> {
        let caller = principal(ctx)?;
        let rows = store::list(&mut *conn(ctx).await?, &caller.team_id).await?;
        Ok(rows.into_iter().map(OAuthAppNode).collect())
    }

    #[graphql(guard = "ScopeGuard(Scope::IntegrationsRead)")]
    async fn oauth_app(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<OAuthAppNode> {
        let caller = principal(ctx)?;
        Ok(OAuthAppNode(
            store::get(&mut *conn(ctx).await?, &caller.team_id, &id).await?,
        ))
    }
}

#[derive(Default)]
pub struct OAuthMutation;

#[Object]
impl OAuthMutation {
    /// Registers the team's app at a provider; the client secret is sealed.
    #[graphql(name = "createOAuthApp", guard = "ScopeGuard(Scope::CredentialsWrite)")]
    async fn create_oauth_app(
        &self,
        ctx: &Context<'_>,
        input: CreateOAuthAppInput,
    ) -> async_graphql::Result<OAuthAppNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        let state = state(ctx);
        let spec = spec_of(&input.provider)?;
        let provider = providers::require(&input.provider)?;
        if input.grant_type == GrantType::ClientCredentials && !spec.client_credentials {
            return Err(AppError::validation(format!(
                "provider `{}` does not offer the client-credentials grant",
                provider.key
            ))
            .into());
        }
        let name = check_text("name", input.name.as_deref().unwrap_or(provider.name), 100)?;
        let client_id = check_text("clientId", &input.client_id, 512)?;
        let secret = check_text("clientSecret", &input.client_secret, 4096)?;
        let authorize_url = input
            .authorize_url
            .or(spec.authorize_url.map(str::to_string));
        let token_url = input
            .token_url
            .or(spec.token_url.map(str::to_string))
            .ok_or_else(|| AppError::validation("tokenUrl: required for this provider"))?;
        let revoke_url = input.revoke_url.or(spec.revoke_url.map(str::to_string));
        if input.grant_type == GrantType::AuthorizationCode && authorize_url.is_none() {
            return Err(AppError::validation("authorizeUrl: required for this provider").into());
        }
        for (field, url) in [
            ("authorizeUrl", authorize_url.as_deref()),
            ("tokenUrl", Some(token_url.as_str())),
            ("revokeUrl", revoke_url.as_deref()),
        ] {
            if let Some(url) = url {
                flow::check_url(state, field, url)?;
            }
        }
        let scopes = input
            .scopes
            .unwrap_or_else(|| spec.default_scopes.iter().map(|s| s.to_string()).collect());
        let id = new_id();
        let at = now();
        let row = OAuthAppRow {
            client_secret_sealed: flow::seal(state, secret.as_bytes(), &flow::secret_context(&id))?,
            id,
            team_id: caller.team_id.clone(),
            provider_key: provider.key.to_string(),
            name,
            grant_type: input.grant_type.as_str().into(),
            client_id,
            scopes: check_scopes(&scopes)?,
            authorize_url,
            token_url,
            revoke_url,
            authorize_params: match input.authorize_params {
                Some(params) => check_params(&params.0)?,
                None => "{}".into(),
            },
            created_at: at,
            updated_at: at,
        };
        store::insert(&mut *conn(ctx).await?, &row).await?;
        audit::target(ctx, "oauth_app", &row.id);
        Ok(OAuthAppNode(row))
    }

    /// Changes an app; a new client secret replaces the old one.
    #[graphql(name = "updateOAuthApp", guard = "ScopeGuard(Scope::CredentialsWrite)")]
    async fn update_oauth_app(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateOAuthAppInput,
    ) -> async_graphql::Result<OAuthAppNode> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        audit::target(ctx, "oauth_app", &id);
        let state = state(ctx);
        let mut db = conn(ctx).await?;
        let current = store::get(&mut db, &caller.team_id, &id).await?;
        for (field, url) in [
            ("authorizeUrl", input.authorize_url.as_deref()),
            ("tokenUrl", input.token_url.as_deref()),
            ("revokeUrl", input.revoke_url.as_deref()),
        ] {
            if let Some(url) = url.filter(|u| !u.is_empty()) {
                flow::check_url(state, field, url)?;
            }
        }
        let blank_to_none = |url: Option<String>| url.map(|u| Some(u).filter(|u| !u.is_empty()));
        let changes = AppChanges {
            name: input
                .name
                .as_deref()
                .map(|n| check_text("name", n, 100))
                .transpose()?,
            client_id: input
                .client_id
                .as_deref()
                .map(|c| check_text("clientId", c, 512))
                .transpose()?,
            client_secret_sealed: input
                .client_secret
                .as_deref()
                .map(|s| check_text("clientSecret", s, 4096))
                .transpose()?
                .map(|s| flow::seal(state, s.as_bytes(), &flow::secret_context(&current.id)))
                .transpose()?,
            scopes: input.scopes.as_deref().map(check_scopes).transpose()?,
            authorize_url: blank_to_none(input.authorize_url),
            token_url: input.token_url.filter(|u| !u.is_empty()),
            revoke_url: blank_to_none(input.revoke_url),
            authorize_params: input
                .authorize_params
                .map(|p| check_params(&p.0))
                .transpose()?,
            updated_at: Some(now()),
        };
        if GrantType::parse(&current.grant_type) == GrantType::AuthorizationCode
            && changes.authorize_url == Some(None)
        {
            return Err(
                AppError::validation("authorizeUrl: an authorization-code app needs one").into(),
            );
        }
        Ok(OAuthAppNode(
            store::update(&mut db, &caller.team_id, &id, &changes).await?,
        ))
    }

    /// Deletes an app; refused (CONFLICT) while integrations connect through it.
    #[graphql(name = "deleteOAuthApp", guard = "ScopeGuard(Scope::CredentialsWrite)")]
    async fn delete_oauth_app(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let caller = principal(ctx)?;
        caller.require_unrestricted()?;
        audit::target(ctx, "oauth_app", &id);
        store::delete(&mut *conn(ctx).await?, &caller.team_id, &id).await?;
        Ok(id)
    }

    /// Starts connecting an integration through its OAuth app: open `authorizationUrl` in
    /// the user's browser. The provider sends the user back to `/oauth/callback`, and the
    /// hub then to `redirectAfter` (an origin of `HUB_OAUTH_REDIRECT_ORIGINS`).
    #[graphql(
        name = "startOAuthConnection",
        guard = "ScopeGuard(Scope::CredentialsWrite)"
    )]
    async fn start_oauth_connection(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
        redirect_after: Option<String>,
    ) -> async_graphql::Result<OAuthConnectionStart> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let state = state(ctx);
        if let Some(url) = &redirect_after
            && !redirect_allowed(&state.config, url)
        {
            return Err(AppError::validation(
                "redirectAfter: its origin is not one of HUB_OAUTH_REDIRECT_ORIGINS",
            )
            .into());
        }
        let (row, app) = oauth_integration(ctx, caller, &integration_id).await?;
        if GrantType::parse(&app.grant_type) != GrantType::AuthorizationCode {
            return Err(AppError::validation(
                "the app uses the client-credentials grant: connectOAuthClientCredentials",
            )
            .into());
        }
        let spec = providers::oauth::spec(&app.provider_key);
        let state_value = flow::random_token(32);
        let verifier = flow::random_token(48);
        let redirect_uri = super::redirect_uri(state);
        let url = flow::authorization_url(
            &app,
            &redirect_uri,
            &state_value,
            spec.as_ref()
                .is_none_or(|s| s.pkce)
                .then_some(verifier.as_str()),
            spec.as_ref(),
        )?;
        let at = now();
        let expires_at = at + chrono::Duration::seconds(STATE_TTL_SECS);
        store::insert_state(
            &mut *conn(ctx).await?,
            &StateRow {
                state_hash: flow::sha256_b64(&state_value),
                team_id: caller.team_id.clone(),
                integration_id: row.id.clone(),
                verifier_sealed: flow::seal(
                    state,
                    verifier.as_bytes(),
                    &flow::verifier_context(&row.id),
                )?,
                redirect_after,
                expires_at,
                created_at: at,
            },
        )
        .await?;
        Ok(OAuthConnectionStart {
            authorization_url: url.to_string(),
            expires_at: expires_at.and_utc(),
            redirect_uri,
        })
    }

    /// Connects an integration whose app uses the client-credentials grant: the hub obtains
    /// a token at once (and a new one before it expires).
    #[graphql(
        name = "connectOAuthClientCredentials",
        guard = "ScopeGuard(Scope::CredentialsWrite)"
    )]
    async fn connect_oauth_client_credentials(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let state = state(ctx);
        let (row, app) = oauth_integration(ctx, caller, &integration_id).await?;
        if GrantType::parse(&app.grant_type) != GrantType::ClientCredentials {
            return Err(AppError::validation(
                "the app uses the authorization-code grant: startOAuthConnection",
            )
            .into());
        }
        let secret = flow::open(
            state,
            &app.client_secret_sealed,
            &flow::secret_context(&app.id),
        )?;
        let granted = flow::request_tokens(state, &app, &secret, Grant::ClientCredentials)
            .await
            .map_err(|failure| AppError::UpstreamError(failure.message()))?;
        refresh::save(state, &row, &granted, None, false).await?;
        refresh::publish(
            state,
            EventKind::IntegrationConnected,
            &row,
            "connected",
            None,
        );
        Ok(fresh(state, &row.id).await?)
    }

    /// Refreshes the integration's token now (once, even if other calls ask at the same time).
    #[graphql(
        name = "refreshOAuthToken",
        guard = "ScopeGuard(Scope::CredentialsWrite)"
    )]
    async fn refresh_oauth_token(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let state = state(ctx);
        let (row, _) = oauth_integration(ctx, caller, &integration_id).await?;
        refresh::token(state, &row.id, Want::NewerThan(row.oauth_generation)).await?;
        Ok(fresh(state, &row.id).await?)
    }

    /// Forgets the integration's tokens, revoking them at the provider where it supports
    /// revocation (RFC 7009). A failed revocation is reported in `oauth.lastError`; the
    /// tokens are forgotten anyway.
    #[graphql(
        name = "disconnectOAuth",
        guard = "ScopeGuard(Scope::CredentialsWrite)"
    )]
    async fn disconnect_oauth(
        &self,
        ctx: &Context<'_>,
        integration_id: ID,
    ) -> async_graphql::Result<IntegrationNode> {
        let caller = principal(ctx)?;
        audit::target(ctx, "integration", &integration_id);
        let state = state(ctx);
        let (row, app) = oauth_integration(ctx, caller, &integration_id).await?;
        let credentials = crate::integrations::service::open_credentials(&state.keyring, &row)?;
        let mut note = None;
        if let (Some(revoke_url), Some(credentials)) = (&app.revoke_url, &credentials) {
            let secret = flow::open(
                state,
                &app.client_secret_sealed,
                &flow::secret_context(&app.id),
            )?;
            let (token, hint) = match credentials["refreshToken"].as_str() {
                Some(refresh) => (refresh, "refresh_token"),
                None => (
                    credentials["accessToken"].as_str().unwrap_or_default(),
                    "access_token",
                ),
            };
            if let Err(why) = flow::revoke(state, &app, &secret, revoke_url, token, hint).await {
                note = Some(format!(
                    "disconnected, but the provider did not confirm the revocation: {why}"
                ));
            }
        }
        let row =
            store::clear_tokens(&mut state.pool.get().await?, &row.id, note.as_deref()).await?;
        state.changed(crate::context::peers::Change::Integration(row.id.clone()));
        refresh::publish(
            state,
            EventKind::IntegrationUpdated,
            &row,
            &row.status,
            None,
        );
        Ok(IntegrationNode::one(row))
    }
}
