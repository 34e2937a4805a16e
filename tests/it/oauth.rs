//! OAuth 2.0 connections against a local authorization server the tests start (real HTTP):
//! its authorize endpoint redirects back with a code, its token endpoint checks the client
//! secret and the PKCE verifier, rotates refresh tokens and answers `invalid_grant` once
//! consent is revoked, and its API accepts only the current access tokens.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use crate::calls::EXECUTE;
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    connects_calls_and_keeps_every_secret,
    fifty_calls_at_expiry_on_two_replicas_make_one_refresh,
    refreshes_before_expiry_and_after_a_401,
    transient_failures_and_invalid_grant,
    refused_connections_store_no_token,
    client_credentials_and_disconnect,
);

const CLIENT_ID: &str = "hub-client";
const CLIENT_SECRET: &str = "cs-9f8e7d6c5b4a39281706";
const APP_ORIGIN: &str = "http://app.example.test";

/// The authorization server's state, which tests read and steer.
struct Auth {
    codes: HashMap<String, (Option<String>, String)>,
    access: HashMap<String, Instant>,
    refresh: HashSet<String>,
    /// `expires_in` of the next tokens.
    expires_in: u64,
    counter: u64,
    deny: bool,
    revoked_all: bool,
    /// The next this many token requests answer 503.
    fail_next: usize,
    revoked: Vec<String>,
    /// Every grant_type asked, in order.
    grants: Vec<String>,
    /// Every PKCE verifier received.
    verifiers: Vec<String>,
    issued: Vec<String>,
    /// How long the token endpoint takes to answer.
    token_delay: Duration,
}

struct AuthServer {
    server: Receiver,
    auth: Arc<Mutex<Auth>>,
}

fn form(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn issue(auth: &mut Auth, with_refresh: bool) -> Value {
    auth.counter += 1;
    let access = format!("at-{}-{}", auth.counter, uuid::Uuid::new_v4().simple());
    auth.access.insert(
        access.clone(),
        Instant::now() + Duration::from_secs(auth.expires_in),
    );
    auth.issued.push(access.clone());
    let mut answer = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": auth.expires_in,
        "scope": "read write",
    });
    if with_refresh {
        let refresh = format!("rt-{}-{}", auth.counter, uuid::Uuid::new_v4().simple());
        auth.refresh.insert(refresh.clone());
        auth.issued.push(refresh.clone());
        answer["refresh_token"] = json!(refresh);
    }
    answer
}

fn answer(auth: &Arc<Mutex<Auth>>, request: &Recorded) -> Reply {
    let mut auth = auth.lock().unwrap();
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/authorize") => {
            let query = form(&request.query);
            let redirect = &query["redirect_uri"];
            let state = &query["state"];
            assert_eq!(query["client_id"], CLIENT_ID);
            assert_eq!(query["response_type"], "code");
            if auth.deny {
                return Reply::text(302, "").with_header(
                    "location",
                    &format!("{redirect}?error=access_denied&state={state}"),
                );
            }
            auth.counter += 1;
            let code = format!("code-{}", auth.counter);
            let challenge = query.get("code_challenge").cloned();
            if challenge.is_some() {
                assert_eq!(query["code_challenge_method"], "S256");
            }
            auth.codes
                .insert(code.clone(), (challenge, redirect.to_string()));
            Reply::text(302, "")
                .with_header("location", &format!("{redirect}?code={code}&state={state}"))
        }
        ("POST", "/token") => {
            let delay = auth.token_delay;
            token(&mut auth, request).after(delay)
        }
        ("POST", "/revoke") => {
            let body = form(&request.body_text());
            let token = body.get("token").cloned().unwrap_or_default();
            auth.refresh.remove(&token);
            auth.access.remove(&token);
            auth.revoked.push(token);
            Reply::text(200, "")
        }
        (_, "/api/me") => {
            let token = request
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or_default();
            match auth.access.get(token) {
                Some(until) if *until > Instant::now() => {
                    Reply::json(200, &json!({ "login": "octo" }))
                }
                _ => Reply::json(401, &json!({ "message": "Bad credentials" })),
            }
        }
        _ => Reply::text(404, "no such route"),
    }
}

fn token(auth: &mut Auth, request: &Recorded) -> Reply {
    let body = form(&request.body_text());
    let grant = body.get("grant_type").cloned().unwrap_or_default();
    auth.grants.push(grant.clone());
    if auth.fail_next > 0 {
        auth.fail_next -= 1;
        return Reply::json(503, &json!({ "error": "temporarily_unavailable" }));
    }
    if body.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || body.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return Reply::json(401, &json!({ "error": "invalid_client" }));
    }
    match grant.as_str() {
        "authorization_code" => {
            let Some((challenge, redirect)) = auth.codes.remove(&body["code"]) else {
                return Reply::json(400, &json!({ "error": "invalid_grant" }));
            };
            if body.get("redirect_uri") != Some(&redirect) {
                return Reply::json(400, &json!({ "error": "invalid_grant" }));
            }
            if let Some(challenge) = challenge {
                let verifier = body.get("code_verifier").cloned().unwrap_or_default();
                auth.verifiers.push(verifier.clone());
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(verifier.as_bytes()));
                if computed != challenge {
                    return Reply::json(
                        400,
                        &json!({ "error": "invalid_grant", "error_description": "PKCE verification failed" }),
                    );
                }
            }
            Reply::json(200, &issue(auth, true))
        }
        "refresh_token" => {
            let token = body.get("refresh_token").cloned().unwrap_or_default();
            if auth.revoked_all || !auth.refresh.remove(&token) {
                return Reply::json(
                    400,
                    &json!({ "error": "invalid_grant", "error_description": "the refresh token is not valid" }),
                );
            }
            // Rotation: the old refresh token is spent.
            Reply::json(200, &issue(auth, true))
        }
        "client_credentials" => Reply::json(200, &issue(auth, false)),
        _ => Reply::json(400, &json!({ "error": "unsupported_grant_type" })),
    }
}

impl AuthServer {
    async fn start() -> Self {
        let auth = Arc::new(Mutex::new(Auth {
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashSet::new(),
            expires_in: 3600,
            counter: 0,
            deny: false,
            revoked_all: false,
            fail_next: 0,
            revoked: vec![],
            grants: vec![],
            verifiers: vec![],
            issued: vec![],
            token_delay: Duration::ZERO,
        }));
        let shared = auth.clone();
        let server = Receiver::start(move |request| answer(&shared, request)).await;
        Self { server, auth }
    }

    fn set(&self, change: impl FnOnce(&mut Auth)) {
        change(&mut self.auth.lock().unwrap());
    }

    fn grants(&self, grant: &str) -> usize {
        self.auth
            .lock()
            .unwrap()
            .grants
            .iter()
            .filter(|g| *g == grant)
            .count()
    }

    /// Tokens handed to API calls, in order.
    fn bearers(&self) -> Vec<String> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == "/api/me")
            .filter_map(|r| r.header("authorization").map(str::to_string))
            .collect()
    }
}

const CREATE_APP: &str = "mutation($input: CreateOAuthAppInput!) { createOAuthApp(input: $input) { id name provider grantType clientId clientSecretSet scopes tokenUrl redirectUri integrationCount } }";
const REGISTER_OAUTH: &str = "mutation($input: RegisterIntegrationInput!) { registerIntegration(input: $input) { id status credentials { isSet } oauth { status } } }";
const OAUTH: &str = "query($id: ID!) { integration(id: $id) { status lastError credentials { isSet fields } oauth { appId status scopes expiresAt lastRefreshedAt lastError refreshable } } }";
const START: &str = "mutation($id: ID!, $after: String) { startOAuthConnection(integrationId: $id, redirectAfter: $after) { authorizationUrl expiresAt redirectUri } }";
const REFRESH: &str = "mutation($id: ID!) { refreshOAuthToken(integrationId: $id) { oauth { status expiresAt lastRefreshedAt } } }";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Setup {
    app: TestApp,
    auth: AuthServer,
    app_id: String,
    integration: String,
    /// Every GraphQL answer body the hub gave, to scan for secrets.
    answers: Vec<String>,
}

impl Setup {
    async fn new(
        backend: Backend,
        grant: &str,
        change: impl FnOnce(&mut integration_hub::config::Config),
    ) -> Self {
        let auth = AuthServer::start().await;
        let app = TestApp::start_configured(backend, |config| {
            config.oauth_redirect_origins = APP_ORIGIN.into();
            config.oauth_refresh_scan_secs = 0;
            change(config);
        })
        .await;
        let project = app.create_project(&app.admin_key, "oauth").await;
        let created = app
            .gql(
                &app.admin_key,
                CREATE_APP,
                json!({ "input": {
                    "provider": "generic_rest",
                    "name": "Local OAuth",
                    "grantType": grant,
                    "clientId": CLIENT_ID,
                    "clientSecret": CLIENT_SECRET,
                    "scopes": ["read", "write"],
                    "authorizeUrl": auth.server.url("/authorize"),
                    "tokenUrl": auth.server.url("/token"),
                    "revokeUrl": auth.server.url("/revoke"),
                }}),
            )
            .await;
        let app_node = created.data()["createOAuthApp"].clone();
        assert_eq!(app_node["clientSecretSet"], true);
        assert_eq!(app_node["scopes"], json!(["read", "write"]));
        assert_eq!(
            app_node["redirectUri"],
            format!("{}/oauth/callback", app.base)
        );
        let app_id = app_node["id"].as_str().unwrap().to_string();
        let registered = app
            .gql(
                &app.admin_key,
                REGISTER_OAUTH,
                json!({ "input": {
                    "projectId": project,
                    "provider": "generic_rest",
                    "name": "Local API",
                    "config": { "baseUrl": auth.server.url("/api"), "healthCheckPath": "/me" },
                    "oauthAppId": app_id,
                }}),
            )
            .await;
        let node = registered.data()["registerIntegration"].clone();
        assert_eq!(node["oauth"]["status"], "NOT_CONNECTED");
        assert_eq!(node["credentials"]["isSet"], false);
        let integration = node["id"].as_str().unwrap().to_string();
        Self {
            answers: vec![created.body.to_string(), registered.body.to_string()],
            app,
            auth,
            app_id,
            integration,
        }
    }

    async fn gql(&mut self, query: &str, variables: Value) -> crate::support::Answer {
        let answer = self.app.gql(&self.app.admin_key, query, variables).await;
        self.answers.push(answer.body.to_string());
        answer
    }

    async fn oauth(&mut self) -> Value {
        let id = self.integration.clone();
        self.gql(OAUTH, json!({ "id": id })).await.data()["integration"].clone()
    }

    async fn start(&mut self, after: Option<&str>) -> crate::support::Answer {
        let id = self.integration.clone();
        self.gql(START, json!({ "id": id, "after": after })).await
    }

    /// The browser's part: opens the authorization URL and follows the provider back to the
    /// hub's callback; returns the callback's answer (status, location, page).
    async fn consent(&mut self, after: Option<&str>) -> (u16, Option<String>, String, String) {
        let started = self.start(after).await;
        let url = started.data()["startOAuthConnection"]["authorizationUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let browser = no_redirects();
        let at_provider = browser.get(&url).send().await.unwrap();
        assert_eq!(at_provider.status().as_u16(), 302);
        let back = at_provider.headers()["location"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            back.starts_with(&format!("{}/oauth/callback?", self.app.base)),
            "the provider sends the browser to the hub: {back}"
        );
        let (status, location, page) = callback(&back).await;
        (status, location, page, back)
    }

    async fn call(&mut self) -> Value {
        let id = self.integration.clone();
        let answer = self
            .gql(
                EXECUTE,
                json!({ "id": id, "input": { "method": "GET", "path": "/me" } }),
            )
            .await;
        answer.body.clone()
    }
}

async fn callback(url: &str) -> (u16, Option<String>, String) {
    let response = no_redirects().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    (status, location, response.text().await.unwrap())
}

async fn connects_calls_and_keeps_every_secret(backend: Backend) {
    let mut s = Setup::new(backend, "AUTHORIZATION_CODE", |_| {}).await;
    let mut events = s.app.state.events.subscribe();
    let (status, location, _, back) = s.consent(Some("http://app.example.test/done?tab=1")).await;
    assert_eq!(status, 303, "the browser goes back to the app");
    assert_eq!(
        location.as_deref(),
        Some("http://app.example.test/done?tab=1")
    );
    assert_eq!(s.auth.grants("authorization_code"), 1);
    let verifier = s.auth.auth.lock().unwrap().verifiers[0].clone();
    assert!(
        verifier.len() >= 43,
        "a PKCE verifier was checked by the server"
    );

    let node = s.oauth().await;
    assert_eq!(node["status"], "CONNECTED");
    assert_eq!(node["oauth"]["status"], "CONNECTED");
    assert_eq!(node["oauth"]["appId"], s.app_id);
    assert_eq!(node["oauth"]["scopes"], json!(["read", "write"]));
    assert_eq!(node["oauth"]["refreshable"], true);
    assert!(node["oauth"]["expiresAt"].is_string());
    assert_eq!(
        node["credentials"]["fields"],
        json!(["accessToken", "refreshToken", "tokenType"])
    );
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.kind == integration_hub::events::EventKind::IntegrationConnected {
                return event;
            }
        }
    })
    .await
    .expect("integration.connected published");
    assert_eq!(connected.subject_id, s.integration);

    // Calls carry the access token, and so does the connection test.
    let answer = s.call().await;
    assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
    let id = s.integration.clone();
    let tested = s
        .gql(
            "mutation($id: ID!) { testConnection(integrationId: $id) { ok } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(tested.data()["testConnection"]["ok"], true);
    let access = s.auth.auth.lock().unwrap().issued[0].clone();
    assert!(
        s.auth
            .bearers()
            .iter()
            .all(|b| *b == format!("Bearer {access}")),
        "every call carried the access token"
    );

    // The state is single use.
    let (status, _, page) = callback(&back).await;
    assert_eq!(status, 400);
    assert!(page.contains("already used"), "{page}");
    assert_eq!(s.auth.grants("authorization_code"), 1, "no second exchange");

    // Secrets: not in the database in clear, not in any answer.
    let issued = s.auth.auth.lock().unwrap().issued.clone();
    let state_value = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let logs = s
        .gql(
            "query($id: ID!) { integrationLogs(integrationId: $id, first: 50) { nodes { path error } } }",
            json!({ "id": id }),
        )
        .await;
    assert!(
        !logs.data()["integrationLogs"]["nodes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    s.app.state.journal.flush().await.unwrap();
    let dumped = crate::secrets::dump(&s.app).await;
    assert!(dumped.contains(&s.integration), "the dump holds the rows");
    let answers = s.answers.join("\n");
    for secret in issued
        .iter()
        .chain([CLIENT_SECRET.to_string(), verifier].iter())
    {
        assert!(
            !dumped.contains(secret.as_str()),
            "{secret} is in the database in clear"
        );
        assert!(
            !answers.contains(secret.as_str()),
            "{secret} is in an answer"
        );
    }
    // The state travels in the authorization URL the caller opens; only its hash is stored.
    assert!(
        !dumped.contains(&state_value),
        "the state is stored in clear"
    );
}

async fn fifty_calls_at_expiry_on_two_replicas_make_one_refresh(backend: Backend) {
    let mut s = Setup::new(backend, "AUTHORIZATION_CODE", |_| {}).await;
    // The first token expires at once (within the hub's 5 s margin); the next lasts.
    s.auth.set(|a| a.expires_in = 1);
    let (status, _, page, _) = s.consent(None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Connected"), "{page}");
    // A token endpoint that takes its time: every call arrives while the refresh is on.
    s.auth.set(|a| {
        a.expires_in = 3600;
        a.token_delay = Duration::from_millis(300);
    });
    let replica = s.app.start_replica().await;
    let urls = [
        s.app.graphql_url(),
        format!("http://{}/graphql", replica.addr),
    ];
    let calls = (0..50).map(|i| {
        let url = urls[i % 2].clone();
        let client = s.app.client.clone();
        let key = s.app.admin_key.clone();
        let id = s.integration.clone();
        async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "query": EXECUTE, "variables": { "id": id, "input": { "method": "GET", "path": "/me" } } }))
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    for answer in &answers {
        assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
    }
    assert_eq!(
        s.auth.grants("refresh_token"),
        1,
        "fifty calls on two replicas at expiry make exactly one token request"
    );
    let node = s.oauth().await;
    assert_eq!(node["oauth"]["status"], "CONNECTED");
    assert!(node["oauth"]["lastRefreshedAt"].is_string());
    replica.stop().await;
}

async fn refreshes_before_expiry_and_after_a_401(backend: Backend) {
    let mut s = Setup::new(backend, "AUTHORIZATION_CODE", |config| {
        config.oauth_refresh_scan_secs = 1;
        config.oauth_refresh_before_secs = 25;
    })
    .await;
    // 30 s tokens, refreshed 25 s before they expire: the refresher renews within seconds.
    s.auth.set(|a| a.expires_in = 30);
    let (status, _, _, _) = s.consent(None).await;
    assert_eq!(status, 200);
    s.auth.set(|a| a.expires_in = 3600);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.auth.grants("refresh_token") == 0 {
        assert!(
            Instant::now() < deadline,
            "the background refresher renewed the token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.auth.grants("refresh_token"),
        1,
        "renewed once, then valid for an hour"
    );
    let node = s.oauth().await;
    assert_eq!(node["oauth"]["status"], "CONNECTED");
    assert!(node["oauth"]["lastRefreshedAt"].is_string());
    let answer = s.call().await;
    assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
    let renewed = s.auth.auth.lock().unwrap().issued[2].clone();
    assert_eq!(
        s.auth.bearers().last().unwrap(),
        &format!("Bearer {renewed}"),
        "the call used the renewed token"
    );

    // The server rotated the refresh token: a refresh now works only with the one stored.
    let id = s.integration.clone();
    let refreshed = s.gql(REFRESH, json!({ "id": id })).await;
    assert_eq!(
        refreshed.data()["refreshOAuthToken"]["oauth"]["status"],
        "CONNECTED"
    );
    assert_eq!(s.auth.grants("refresh_token"), 2);

    // The provider stops accepting the access token: 401 → one refresh → the call retried.
    s.auth.set(|a| a.access.clear());
    let answer = s.call().await;
    assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
    assert_eq!(
        s.auth.grants("refresh_token"),
        3,
        "one refresh after the 401"
    );
    let bearers = s.auth.bearers();
    assert_ne!(bearers[bearers.len() - 1], bearers[bearers.len() - 2]);
}

async fn transient_failures_and_invalid_grant(backend: Backend) {
    let mut s = Setup::new(backend, "AUTHORIZATION_CODE", |_| {}).await;
    s.consent(None).await;
    let id = s.integration.clone();
    // Two 503s, then an answer: retried with backoff, connected.
    s.auth.set(|a| a.fail_next = 2);
    let refreshed = s.gql(REFRESH, json!({ "id": id })).await;
    assert_eq!(
        refreshed.data()["refreshOAuthToken"]["oauth"]["status"],
        "CONNECTED"
    );
    assert_eq!(s.auth.grants("refresh_token"), 3);

    // The token endpoint keeps failing while the token still works: not marked failed.
    s.auth.set(|a| a.fail_next = 100);
    let failed = s.gql(REFRESH, json!({ "id": id })).await;
    assert_eq!(failed.code(), "UPSTREAM_ERROR");
    let node = s.oauth().await;
    assert_eq!(node["oauth"]["status"], "CONNECTED");
    assert_ne!(node["status"], "ERROR");
    assert!(
        node["oauth"]["lastError"]
            .as_str()
            .unwrap()
            .contains("status 503")
    );
    let answer = s.call().await;
    assert_eq!(
        answer["data"]["executeRequest"]["status"], 200,
        "the token still works"
    );
    s.auth.set(|a| a.fail_next = 0);

    // Consent revoked: invalid_grant → ERROR with the reason, and integration.oauth_failed.
    let mut events = s.app.state.events.subscribe();
    s.auth.set(|a| a.revoked_all = true);
    let refused = s.gql(REFRESH, json!({ "id": id })).await;
    assert_eq!(refused.code(), "UPSTREAM_ERROR");
    assert!(
        refused.message().contains("invalid_grant"),
        "{}",
        refused.body
    );
    let node = s.oauth().await;
    assert_eq!(node["status"], "ERROR");
    assert_eq!(node["oauth"]["status"], "FAILED");
    assert!(
        node["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    let failed_event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.kind == integration_hub::events::EventKind::IntegrationOAuthFailed {
                return event;
            }
        }
    })
    .await
    .expect("integration.oauth_failed published");
    assert!(
        failed_event.payload["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    // Calls say why instead of sending a dead token.
    let requests_before = s.auth.server.count();
    let answer = s.call().await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("connect it again")
    );
    assert_eq!(s.auth.server.count(), requests_before, "nothing was sent");
    // Connecting again heals it.
    s.auth.set(|a| a.revoked_all = false);
    s.consent(None).await;
    let node = s.oauth().await;
    assert_eq!(node["status"], "CONNECTED");
    assert_eq!(node["oauth"]["status"], "CONNECTED");
    assert!(node["oauth"]["lastError"].is_null());

    // A token that has actually expired while the endpoint fails: EXPIRED and ERROR, until
    // a refresh succeeds.
    s.auth.set(|a| a.expires_in = 1);
    s.consent(None).await;
    s.auth.set(|a| {
        a.expires_in = 3600;
        a.fail_next = 100;
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answer = s.call().await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR");
    let node = s.oauth().await;
    assert_eq!(node["oauth"]["status"], "EXPIRED");
    assert_eq!(node["status"], "ERROR");
    s.auth.set(|a| a.fail_next = 0);
    let answer = s.call().await;
    assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
    let node = s.oauth().await;
    assert_eq!(node["oauth"]["status"], "CONNECTED");
    assert_eq!(node["status"], "CONNECTED");
    // Each of these mutations was audited.
    let audited = s
        .gql(
            "{ auditLog(filter: { action: \"refreshOAuthToken\" }, first: 50) { nodes { outcome targetId } } }",
            json!({}),
        )
        .await;
    let rows = audited.data()["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .clone();
    assert!(rows.iter().any(|r| r["outcome"] == "SUCCESS"), "{rows:?}");
    assert!(rows.iter().any(|r| r["outcome"] == "FAILURE"));
    assert!(rows.iter().all(|r| r["targetId"] == s.integration.as_str()));
}

async fn refused_connections_store_no_token(backend: Backend) {
    let mut s = Setup::new(backend, "AUTHORIZATION_CODE", |_| {}).await;
    // A redirect to an origin not listed is refused before anything starts.
    let refused = s.start(Some("https://evil.example/steal")).await;
    assert_eq!(refused.code(), "VALIDATION_FAILED");
    assert!(refused.message().contains("HUB_OAUTH_REDIRECT_ORIGINS"));
    // The user refuses at the provider.
    s.auth.set(|a| a.deny = true);
    let (status, location, page, _) = s.consent(Some("http://app.example.test/done")).await;
    assert_eq!((status, location), (400, None));
    assert!(page.contains("access_denied"), "{page}");
    let node = s.oauth().await;
    assert_eq!(node["oauth"]["status"], "NOT_CONNECTED");
    assert_eq!(node["credentials"]["isSet"], false);
    assert!(
        node["lastError"]
            .as_str()
            .unwrap()
            .contains("access_denied")
    );
    s.auth.set(|a| a.deny = false);
    // An attempt older than its 10 minutes is refused, and says so.
    let started = s.start(None).await;
    let url = started.data()["startOAuthConnection"]["authorizationUrl"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let mut conn = s.app.state.pool.get().await.unwrap();
        integration_hub::with_conn!(&mut conn, |c| diesel_async::RunQueryDsl::execute(
            diesel::sql_query("UPDATE oauth_states SET expires_at = '2000-01-01 00:00:00'"),
            c
        )
        .await)
        .unwrap();
    }
    let back = no_redirects().get(&url).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, _, page) = callback(&back).await;
    assert_eq!(status, 400);
    assert!(page.contains("expired"), "{page}");
    assert_eq!(
        s.auth.grants("authorization_code"),
        0,
        "no exchange for an expired attempt"
    );
    // A state that was never issued.
    let (status, _, page) = callback(&format!(
        "{}/oauth/callback?code=x&state=forged",
        s.app.base
    ))
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("unknown"), "{page}");
    let (status, _, _) = callback(&format!("{}/oauth/callback?code=x", s.app.base)).await;
    assert_eq!(status, 400);
    // A wrong client secret: the exchange fails, nothing is stored.
    let app_id = s.app_id.clone();
    s.gql(
        "mutation($id: ID!) { updateOAuthApp(id: $id, input: { clientSecret: \"wrong-secret\" }) { id } }",
        json!({ "id": app_id }),
    )
    .await
    .data();
    let (status, _, page, _) = s.consent(None).await;
    assert_eq!(status, 400);
    assert!(page.contains("invalid_client"), "{page}");
    let node = s.oauth().await;
    assert_eq!(node["credentials"]["isSet"], false);
    assert!(
        node["oauth"]["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_client")
    );

    // The app is refused deletion while used; keys without credentials:write cannot touch
    // apps or connect; another team sees none of it.
    let deleted = s
        .gql(
            "mutation($id: ID!) { deleteOAuthApp(id: $id) }",
            json!({ "id": app_id }),
        )
        .await;
    assert_eq!(deleted.code(), "CONFLICT");
    let (_, reader) = s
        .app
        .key_with(&["integrations:read", "integrations:write"])
        .await;
    let id = s.integration.clone();
    for (query, variables) in [
        (START, json!({ "id": id, "after": null })),
        (REFRESH, json!({ "id": id })),
        (
            "mutation($id: ID!) { deleteOAuthApp(id: $id) }",
            json!({ "id": app_id }),
        ),
        (
            "mutation($id: ID!) { disconnectOAuth(integrationId: $id) { id } }",
            json!({ "id": id }),
        ),
    ] {
        let answer = s.app.gql(&reader, query, variables).await;
        assert_eq!(answer.code(), "FORBIDDEN", "{query}");
    }
    let (_, other) = s.app.new_team("other").await;
    let theirs = s.app.gql(&other, "{ oauthApps { id } }", json!({})).await;
    assert_eq!(theirs.data()["oauthApps"], json!([]));
    let theirs = s
        .app
        .gql(
            &other,
            "query($id: ID!) { oauthApp(id: $id) { id } }",
            json!({ "id": app_id }),
        )
        .await;
    assert_eq!(theirs.code(), "NOT_FOUND");
    let project = s.app.create_project(&other, "theirs").await;
    let borrowed = s
        .app
        .gql(
            &other,
            REGISTER_OAUTH,
            json!({ "input": { "projectId": project, "provider": "generic_rest", "name": "x",
                "config": { "baseUrl": "http://127.0.0.1:9/api" }, "oauthAppId": app_id } }),
        )
        .await;
    assert_eq!(
        borrowed.code(),
        "NOT_FOUND",
        "another team's app cannot be used"
    );
    let started = s
        .app
        .gql(&other, START, json!({ "id": id, "after": null }))
        .await;
    assert_eq!(started.code(), "NOT_FOUND");
    // Credentials cannot be pasted over an OAuth connection.
    let pasted = s
        .gql(
            "mutation($id: ID!) { rotateIntegrationCredentials(id: $id, credentials: { token: \"x\" }) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(pasted.code(), "VALIDATION_FAILED");
}

async fn client_credentials_and_disconnect(backend: Backend) {
    let mut s = Setup::new(backend, "CLIENT_CREDENTIALS", |_| {}).await;
    let id = s.integration.clone();
    let connected = s
        .gql(
            "mutation($id: ID!) { connectOAuthClientCredentials(integrationId: $id) { status oauth { status refreshable } } }",
            json!({ "id": id }),
        )
        .await;
    let node = &connected.data()["connectOAuthClientCredentials"];
    assert_eq!(node["status"], "CONNECTED");
    assert_eq!(node["oauth"]["status"], "CONNECTED");
    assert_eq!(node["oauth"]["refreshable"], false);
    assert_eq!(s.auth.grants("client_credentials"), 1);
    let answer = s.call().await;
    assert_eq!(answer["data"]["executeRequest"]["status"], 200, "{answer}");
    // Renewing a client-credentials token asks for a new one with the app's credentials.
    let refreshed = s.gql(REFRESH, json!({ "id": id })).await;
    assert_eq!(
        refreshed.data()["refreshOAuthToken"]["oauth"]["status"],
        "CONNECTED"
    );
    assert_eq!(s.auth.grants("client_credentials"), 2);
    // An authorization-code start is refused for this app.
    assert_eq!(s.start(None).await.code(), "VALIDATION_FAILED");

    // Disconnecting revokes at the provider and forgets the token.
    let current = s.auth.auth.lock().unwrap().issued.last().unwrap().clone();
    let disconnected = s
        .gql(
            "mutation($id: ID!) { disconnectOAuth(integrationId: $id) { status credentials { isSet } oauth { status lastError } } }",
            json!({ "id": id }),
        )
        .await;
    let node = &disconnected.data()["disconnectOAuth"];
    assert_eq!(node["status"], "DISCONNECTED");
    assert_eq!(node["credentials"]["isSet"], false);
    assert_eq!(node["oauth"]["status"], "NOT_CONNECTED");
    assert!(
        node["oauth"]["lastError"].is_null(),
        "the revocation was confirmed"
    );
    assert_eq!(s.auth.auth.lock().unwrap().revoked, vec![current]);
    let answer = s.call().await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"],
        "VALIDATION_FAILED"
    );
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not connected")
    );
    // Once nothing uses it, the app can go.
    let app_id = s.app_id.clone();
    let deleted = s
        .gql(
            "mutation($id: ID!) { deleteIntegration(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    deleted.data();
    let deleted = s
        .gql(
            "mutation($id: ID!) { deleteOAuthApp(id: $id) }",
            json!({ "id": app_id }),
        )
        .await;
    assert_eq!(deleted.data()["deleteOAuthApp"], app_id);
}

/// The built binary, logging at debug level, through a whole OAuth life (connect, calls, a
/// refresh after a 401, a refused grant, a failed exchange, disconnect): no token, client
/// secret, code, PKCE verifier or state in its logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oauth_secret_reaches_the_logs() {
    use crate::support::process;
    let db = crate::support::TestDb::new(Backend::Sqlite).await;
    let auth = AuthServer::start().await;
    let hub = process::start_with(
        &db,
        &[
            ("HUB_OUTBOUND_ALLOW", "127.0.0.1/32"),
            ("HUB_OAUTH_REDIRECT_ORIGINS", APP_ORIGIN),
        ],
    )
    .await;
    let admin = process::admin_key_in(&hub.stdout).expect("the first start prints a key");
    let addr = hub.addr.clone();
    let gql = |query: &'static str, variables: Value| {
        let (addr, admin) = (addr.clone(), admin.clone());
        async move { process::gql(&addr, &admin, query, variables).await }
    };
    let project = process::create_project(&addr, &admin).await;
    let app = gql(
        CREATE_APP,
        json!({ "input": {
            "provider": "generic_rest", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
            "authorizeUrl": auth.server.url("/authorize"), "tokenUrl": auth.server.url("/token"),
            "revokeUrl": auth.server.url("/revoke"),
        }}),
    )
    .await;
    let app_id = app["data"]["createOAuthApp"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let registered = gql(
        REGISTER_OAUTH,
        json!({ "input": { "projectId": project, "provider": "generic_rest", "name": "Local API",
            "config": { "baseUrl": auth.server.url("/api") }, "oauthAppId": app_id } }),
    )
    .await;
    let id = registered["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut callbacks = Vec::new();
    let connect = || async {
        let started = gql(START, json!({ "id": id, "after": null })).await;
        let url = started["data"]["startOAuthConnection"]["authorizationUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let back = no_redirects().get(&url).send().await.unwrap().headers()["location"]
            .to_str()
            .unwrap()
            .to_string();
        let (status, _, _) = callback(&back).await;
        (status, back)
    };
    let (status, back) = connect().await;
    assert_eq!(status, 200);
    callbacks.push(back);
    let call = json!({ "id": id, "input": { "method": "GET", "path": "/me" } });
    assert_eq!(
        gql(EXECUTE, call.clone()).await["data"]["executeRequest"]["status"],
        200
    );
    auth.set(|a| a.access.clear());
    assert_eq!(
        gql(EXECUTE, call.clone()).await["data"]["executeRequest"]["status"],
        200
    );
    auth.set(|a| a.revoked_all = true);
    let refused = gql(REFRESH, json!({ "id": id })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR");
    auth.set(|a| a.revoked_all = false);
    // A second connection, and its state used twice (refused).
    let (status, back) = connect().await;
    assert_eq!(status, 200);
    callbacks.push(back.clone());
    assert_eq!(callback(&back).await.0, 400);
    gql(
        "mutation($id: ID!) { disconnectOAuth(integrationId: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    let logs = process::stop(hub).await;
    assert!(
        logs.contains("OAuth connection failed"),
        "the logs were captured: {logs}"
    );
    let recorded = auth.auth.lock().unwrap();
    let mut secrets: Vec<String> = recorded.issued.clone();
    secrets.extend(recorded.verifiers.iter().cloned());
    secrets.push(CLIENT_SECRET.to_string());
    for back in &callbacks {
        for (name, value) in url::Url::parse(back).unwrap().query_pairs() {
            if name == "state" || name == "code" {
                secrets.push(value.to_string());
            }
        }
    }
    assert!(
        secrets.len() >= 10,
        "tokens, verifiers, codes and states were planted"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "{secret} is in the logs");
    }
}
