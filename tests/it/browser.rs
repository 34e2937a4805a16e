//! In a real browser (headless Chromium, no network but loopback): a page on another origin
//! calls the hub with a key — allowed with `HUB_CORS_ORIGINS`, refused without — and GraphiQL,
//! served by the hub itself, renders, runs a query and receives a subscription's events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::browser::Browser;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    a_page_on_another_origin_calls_the_hub,
    graphiql_runs_offline_with_live_subscriptions,
);

/// What a page's `fetch` of `{ viewer { kind } }` from the hub gives: the kind and the
/// request id it could read, or what the browser threw.
fn fetch_viewer(hub: &str, key: &str) -> String {
    format!(
        r#"fetch("{hub}/graphql", {{
            method: "POST",
            headers: {{ "content-type": "application/json", "authorization": "Bearer {key}" }},
            body: JSON.stringify({{ query: "{{ viewer {{ kind }} }}" }}),
        }}).then(async (r) => ({{ kind: (await r.json()).data.viewer.kind, requestId: r.headers.get("x-request-id") }}),
                 (e) => ({{ blocked: String(e) }}))"#
    )
}

async fn a_page_on_another_origin_calls_the_hub(backend: Backend) {
    let site = Receiver::start(|_| Reply {
        status: 200,
        headers: vec![("content-type".into(), "text/html".into())],
        body: b"<!doctype html><title>app</title><p>an app on another origin</p>".to_vec(),
        delay: None,
    })
    .await;
    let origin = site.url.trim_end_matches('/').to_string();
    let mut browser = Browser::launch().await;

    let app =
        TestApp::start_configured(backend, |config| config.cors_origins = origin.clone()).await;
    let tab = browser.open(&format!("{origin}/")).await;
    // Up to three tries: on a loaded machine a fetch can fail once for reasons of the
    // browser's own (seen once in a full run); CORS refusing it would fail every try.
    let mut answer = Value::Null;
    for _ in 0..3 {
        answer = browser
            .eval(&tab, &fetch_viewer(&app.base, &app.admin_key))
            .await;
        if answer["kind"] == "API_KEY" {
            break;
        }
        eprintln!("the page's fetch did not get the answer: {answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(answer["kind"], "API_KEY", "{answer}");
    assert!(
        answer["requestId"].is_string(),
        "X-Request-Id is readable: {answer}"
    );
    app.stop().await;

    // Without HUB_CORS_ORIGINS the browser keeps the answer from the page.
    let app = TestApp::start(backend).await;
    let answer = browser
        .eval(&tab, &fetch_viewer(&app.base, &app.admin_key))
        .await;
    assert!(
        answer["blocked"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{answer}"
    );
    app.stop().await;
}

async fn graphiql_runs_offline_with_live_subscriptions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "P").await;
    let mut browser = Browser::launch().await;
    let tab = browser.open(&format!("{}/graphql", app.base)).await;
    // It renders (every script loaded from the hub, integrity checked, no other host).
    let rendered = browser
        .wait_for(
            &tab,
            "!!document.querySelector('.graphiql-container .graphiql-execute-button')",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(rendered, json!(true), "GraphiQL rendered");

    // A query, through the page's fetcher with the Headers tab's header.
    let headers = format!(
        r#"{{ headers: {{ Authorization: "Bearer {}" }} }}"#,
        app.admin_key
    );
    let query = browser
        .eval(
            &tab,
            &format!(r#"window.hubFetcher({{ query: "{{ viewer {{ kind }} }}" }}, {headers})"#),
        )
        .await;
    assert_eq!(query["data"]["viewer"]["kind"], "API_KEY", "{query}");

    // A subscription over the WebSocket, authenticated by the same header in connection_init.
    browser
        .eval(
            &tab,
            &format!(
                r#"(async () => {{
                    window.events = [];
                    const iterator = window.hubFetcher(
                        {{ query: "subscription($p: ID!) {{ integrationEvents(projectId: $p) {{ ... on IntegrationEvent {{ kind name }} }} }}",
                           variables: {{ p: "{project}" }} }},
                        {headers});
                    (async () => {{
                        try {{ for await (const result of iterator) window.events.push(result); }}
                        catch (e) {{ window.events.push({{ thrown: String(e) }}); }}
                    }})();
                    return true;
                }})()"#
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.gql(
        &app.admin_key,
        "mutation($p: ID!) { registerIntegration(input: { projectId: $p, provider: \"generic_rest\", name: \"seen\", config: { baseUrl: \"http://127.0.0.1:9\" }, credentials: {} }) { id } }",
        json!({ "p": project }),
    )
    .await
    .data();
    let events = browser
        .wait_for(
            &tab,
            "window.events.length && window.events",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        events[0]["data"]["integrationEvents"],
        json!({ "kind": "CREATED", "name": "seen" }),
        "{events}"
    );
    app.stop().await;
}
