//! Credentials never cross an origin. For every auth scheme, an upstream that redirects to
//! another origin (another port on loopback) gets UPSTREAM_ERROR naming the redirect and the
//! other origin receives nothing; a redirect within the origin is followed with the
//! credentials, and no `Referer` is ever sent.

use serde_json::{Value, json};

use crate::calls::{EXECUTE, TEST_CONNECTION, register};
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(
    credentials_never_follow_a_redirect_to_another_origin,
    default_headers_are_sent_under_the_credentials
);

const ALM_SIGN_IN: &str = "/qcbin/authentication-point/alm-authenticate";

/// (provider, config given the base URL, credentials, the secret that must not leak).
fn schemes(base: &str) -> Vec<(&'static str, Value, Value, &'static str)> {
    vec![
        (
            "jira",
            json!({ "baseUrl": base }),
            json!({ "email": "ci@acme.test", "apiToken": "jira-secret" }),
            "jira-secret",
        ),
        (
            "github",
            json!({ "baseUrl": base }),
            json!({ "token": "gh-secret" }),
            "gh-secret",
        ),
        (
            "gitlab",
            json!({ "baseUrl": base }),
            json!({ "token": "gl-secret" }),
            "gl-secret",
        ),
        (
            "azure_devops",
            json!({ "baseUrl": base, "organization": "acme" }),
            json!({ "personalAccessToken": "ado-secret" }),
            "ado-secret",
        ),
        (
            "testlink",
            json!({ "baseUrl": base }),
            json!({ "devKey": "tl-secret" }),
            "tl-secret",
        ),
        (
            "alm",
            json!({ "baseUrl": base, "domain": "D", "project": "P" }),
            json!({ "username": "bot", "password": "alm-secret" }),
            "session-secret",
        ),
        (
            "generic_rest",
            json!({ "baseUrl": base, "authType": "bearer" }),
            json!({ "token": "bearer-secret" }),
            "bearer-secret",
        ),
        (
            "generic_rest",
            json!({ "baseUrl": base, "authType": "basic" }),
            json!({ "username": "u", "password": "basic-secret" }),
            "basic-secret",
        ),
        (
            "generic_rest",
            json!({ "baseUrl": base, "authType": "header", "authHeader": "X-Custom-Token" }),
            json!({ "token": "header-secret" }),
            "header-secret",
        ),
        (
            "generic_rest",
            json!({ "baseUrl": base, "authType": "query", "authQueryParam": "key" }),
            json!({ "token": "query-secret" }),
            "query-secret",
        ),
    ]
}

/// Everything a recorded request carries, decoded where credentials hide (Basic).
fn everything(request: &Recorded) -> String {
    use base64::Engine;
    let mut text = format!(
        "{} {}?{} {}",
        request.method,
        request.path,
        request.query,
        request.body_text()
    );
    for (name, value) in &request.headers {
        text.push_str(&format!(" {name}: {value}"));
        if let Some(encoded) = value.strip_prefix("Basic ")
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded)
        {
            text.push_str(&String::from_utf8_lossy(&decoded));
        }
    }
    text
}

fn sign_in_or(request: &Recorded, otherwise: Reply) -> Reply {
    if request.path == ALM_SIGN_IN {
        Reply::text(200, "").with_header("set-cookie", "LWSSO_COOKIE_KEY=session-secret; Path=/")
    } else {
        otherwise
    }
}

async fn credentials_never_follow_a_redirect_to_another_origin(backend: Backend) {
    let elsewhere = Receiver::start(|_| Reply::json(200, &json!({ "landed": true }))).await;
    let landing = format!("{}/landing?from=redirect", elsewhere.url);
    let away = Receiver::start(move |request| {
        sign_in_or(
            request,
            Reply::text(302, "").with_header("location", &landing),
        )
    })
    .await;
    let home = Receiver::start(|request| match request.path.as_str() {
        "/old" => Reply::text(302, "").with_header("location", "/new"),
        _ => sign_in_or(request, Reply::json(200, &json!({ "path": request.path }))),
    })
    .await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;

    for (i, (provider, config, credentials, secret)) in schemes(&away.url).into_iter().enumerate() {
        let id = register(
            &app,
            &project,
            provider,
            &format!("away{i}"),
            config,
            credentials,
        )
        .await;
        let answer = app
            .gql(
                &app.admin_key,
                EXECUTE,
                json!({ "id": id, "input": { "method": "GET", "path": "/hop" } }),
            )
            .await;
        assert_eq!(
            answer.code(),
            "UPSTREAM_ERROR",
            "{provider} {secret}: {}",
            answer.body
        );
        assert!(
            answer.message().contains("redirected to another origin"),
            "{}",
            answer.message()
        );
        assert!(
            answer.message().contains(&elsewhere.url),
            "names the redirect: {}",
            answer.message()
        );
        let checked = app
            .gql(&app.admin_key, TEST_CONNECTION, json!({ "id": id }))
            .await;
        // ALM's check is its sign-in, which this upstream answers; every other check is
        // redirected away and fails.
        let signs_in_only = provider == "alm";
        assert_eq!(
            checked.data()["testConnection"]["ok"],
            signs_in_only,
            "{provider} {secret}"
        );
        assert_eq!(
            elsewhere.count(),
            0,
            "{provider}: the other origin received a request"
        );
        for request in away.requests() {
            assert!(
                request.header("referer").is_none(),
                "{provider}: Referer sent"
            );
        }
    }

    // Within the origin, redirects are followed and the credentials go along.
    for (i, (provider, config, credentials, secret)) in schemes(&home.url).into_iter().enumerate() {
        if provider == "testlink" || (provider == "generic_rest" && secret == "query-secret") {
            // TestLink signs only its XML-RPC body, and a query credential is part of the
            // URL the redirect replaces: both are checked on the first hop below.
            continue;
        }
        let id = register(
            &app,
            &project,
            provider,
            &format!("home{i}"),
            config,
            credentials,
        )
        .await;
        let answer = app
            .gql(
                &app.admin_key,
                EXECUTE,
                json!({ "id": id, "input": { "method": "GET", "path": "/old" } }),
            )
            .await;
        let result = &answer.data()["executeRequest"];
        assert_eq!(result["status"], 200, "{provider} {secret}");
        assert_eq!(result["body"]["path"], "/new");
        let landed = home.requests().pop().unwrap();
        assert_eq!(landed.path, "/new");
        assert!(
            everything(&landed).contains(secret),
            "{provider}: credential kept within the origin"
        );
        assert!(
            landed.header("referer").is_none(),
            "{provider}: Referer sent"
        );
    }
    let query = register(
        &app,
        &project,
        "generic_rest",
        "home-query",
        json!({ "baseUrl": home.url, "authType": "query", "authQueryParam": "key" }),
        json!({ "token": "query-secret" }),
    )
    .await;
    app.gql(
        &app.admin_key,
        EXECUTE,
        json!({ "id": query, "input": { "method": "GET", "path": "/old" } }),
    )
    .await
    .data();
    let first_hop = home
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/old")
        .unwrap();
    assert_eq!(first_hop.query, "key=query-secret");
    assert!(
        home.requests()
            .iter()
            .all(|r| r.header("referer").is_none())
    );
    app.stop().await;
}

async fn default_headers_are_sent_under_the_credentials(backend: Backend) {
    let server = Receiver::start(|_| Reply::json(200, &json!({}))).await;
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let id = register(
        &app,
        &project,
        "generic_rest",
        "defaults",
        json!({ "baseUrl": server.url, "authType": "header", "authHeader": "X-Custom-Token",
                "defaultHeaders": { "X-Team": "qa", "Accept": "application/xml", "X-Custom-Token": "spoof" } }),
        json!({ "token": "real-token" }),
    )
    .await;
    app.gql(
        &app.admin_key,
        EXECUTE,
        json!({ "id": id, "input": { "method": "GET", "path": "/x", "headers": { "Accept": "application/json" } } }),
    )
    .await
    .data();
    let sent = server.requests().pop().unwrap();
    assert_eq!(sent.header("x-team"), Some("qa"), "defaults are sent");
    assert_eq!(
        sent.header("accept"),
        Some("application/json"),
        "the caller's header wins"
    );
    assert_eq!(
        sent.header("x-custom-token"),
        Some("real-token"),
        "credentials win"
    );
    app.gql(&app.admin_key, TEST_CONNECTION, json!({ "id": id }))
        .await
        .data();
    assert_eq!(
        server.requests().pop().unwrap().header("x-team"),
        Some("qa"),
        "checks send them too"
    );

    // Credentials and framing headers cannot be defaults.
    for name in [
        "Authorization",
        "cookie",
        "Host",
        "Content-Length",
        "Proxy-Authorization",
        "PRIVATE-TOKEN",
        "X-Forwarded-For",
    ] {
        let answer = app
            .gql(
                &app.admin_key,
                REGISTER,
                json!({ "input": { "projectId": project, "provider": "generic_rest", "name": format!("bad {name}"),
                    "config": { "baseUrl": server.url, "defaultHeaders": { name: "x" } } } }),
            )
            .await;
        assert_eq!(answer.code(), "INVALID_CONFIGURATION", "{name}");
    }
    app.stop().await;
}
