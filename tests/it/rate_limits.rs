//! Per-caller quotas: 429 with Retry-After and RATE_LIMITED over quota, RateLimit headers on
//! every answer, one key's flood leaving others untouched, and the quota refilling.

use std::time::Duration;

use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    per_key_quota,
    anonymous_and_failed_requests_count_per_address,
    an_unreachable_redis_leaves_quotas_to_each_replica
);

/// Redis for the global quotas: `TEST_REDIS_URL`, default the local one. The suite needs it
/// (`.ci/run` starts it); a Redis that cannot be reached fails the test.
pub(crate) fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key allowed `requests` per hour (so nothing refills during the test).
async fn key_allowed(app: &TestApp, requests: u32) -> String {
    let created = app
        .gql(
            &app.admin_key,
            "mutation($n: Int!) { createApiKey(input: { name: \"metered\", scopes: [\"integrations:read\"], rateLimit: { requests: $n, periodSeconds: 3600 } }) { key } }",
            json!({ "n": requests }),
        )
        .await;
    created.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many of `rounds` × the servers' requests with `key` were admitted (round robin).
async fn admitted(app: &TestApp, servers: &[String], key: &str, rounds: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..rounds {
        for server in servers {
            let answer = app
                .client
                .post(format!("{server}/graphql"))
                .bearer_auth(key)
                .json(&json!({ "query": "{ projects { id } }" }))
                .send()
                .await
                .unwrap();
            match answer.status().as_u16() {
                200 => admitted += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
    }
    admitted
}

/// Without `HUB_REDIS_URL` each replica keeps its own count (documented: quotas are then per
/// replica). With Redis the quota is global: `replicas::three_processes_on_one_database`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_keeps_its_own_quota() {
    let app = TestApp::start(Backend::Postgres).await;
    let replica = app.start_replica().await;
    let servers = [app.base.clone(), format!("http://{}", replica.addr)];
    let key = key_allowed(&app, 10).await;
    assert_eq!(admitted(&app, &servers, &key, 15).await, 20);
    replica.stop().await;
    app.stop().await;
}

/// With Redis configured but not answering, requests are neither refused nor held up: each
/// replica's own limiter decides (a key allowed 3 gets 3), and the fallbacks are counted.
async fn an_unreachable_redis_leaves_quotas_to_each_replica(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.redis_url = Some("redis://127.0.0.1:1".into());
        config.metrics_token = Some("metrics-token-for-redis-test".into());
    })
    .await;
    let key = key_allowed(&app, 3).await;
    let started = std::time::Instant::now();
    assert_eq!(
        admitted(&app, std::slice::from_ref(&app.base), &key, 5).await,
        3
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered without waiting on Redis: {:?}",
        started.elapsed()
    );
    let scrape = app
        .client
        .get(format!("{}/metrics", app.base))
        .bearer_auth("metrics-token-for-redis-test")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fallbacks: f64 = scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix("hub_rate_limit_fallbacks_total ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(fallbacks >= 5.0, "fallbacks counted: {fallbacks}");
    app.stop().await;
}

async fn per_key_quota(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    let created = app
        .gql(
            &admin,
            "mutation { createApiKey(input: { name: \"tight\", scopes: [\"integrations:read\"], rateLimit: { requests: 3, periodSeconds: 3600 } }) { key } }",
            json!({}),
        )
        .await;
    let tight = created.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, other) = app.key_with(&["integrations:read"]).await;

    let first = app.gql(&tight, "{ projects { id } }", json!({})).await;
    first.data();
    assert_eq!(first.header("ratelimit-limit"), Some("3"));
    assert_eq!(first.header("ratelimit-remaining"), Some("2"));
    assert_eq!(first.header("ratelimit-policy"), Some("3;w=3600;burst=3"));
    assert!(first.header("ratelimit-reset").is_some());
    app.gql(&tight, "{ projects { id } }", json!({}))
        .await
        .data();
    app.gql(&tight, "{ projects { id } }", json!({}))
        .await
        .data();

    let refused = app.gql(&tight, "{ projects { id } }", json!({})).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.code(), "RATE_LIMITED");
    assert!(
        refused.body["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));

    // Another key is not slowed by the first one's flood.
    for _ in 0..20 {
        assert_eq!(
            app.gql(&tight, "{ __typename }", json!({})).await.status,
            429
        );
        app.gql(&other, "{ projects { id } }", json!({}))
            .await
            .data();
    }

    // A quota refills: two a second, so after a second without requests one more is admitted.
    let created = app
        .gql(
            &admin,
            "mutation { createApiKey(input: { name: \"refill\", scopes: [\"integrations:read\"], rateLimit: { requests: 2, periodSeconds: 1 } }) { key } }",
            json!({}),
        )
        .await;
    let refill = created.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut refused = false;
    for _ in 0..20 {
        if app.gql(&refill, "{ __typename }", json!({})).await.status == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the quota runs out");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.gql(&refill, "{ projects { id } }", json!({}))
        .await
        .data();

    // The viewer sees its own standing.
    let viewer = app
        .gql(
            &other,
            "{ viewer { rateLimit { limit remaining policy } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        viewer.data()["viewer"]["rateLimit"]["policy"],
        "100000;w=60;burst=100000"
    );
    app.stop().await;
}

async fn anonymous_and_failed_requests_count_per_address(backend: Backend) {
    let app = TestApp::start_configured(backend, |config| {
        config.rate_limit_anonymous = "5/1h".into();
    })
    .await;
    for _ in 0..3 {
        let anonymous = app.gql("", "{ __typename }", json!({})).await;
        assert_eq!(anonymous.status, 200);
        assert!(anonymous.header("ratelimit-limit").is_some());
    }
    // Bad keys draw from the same address quota: guessing keys gets throttled.
    for _ in 0..2 {
        assert_eq!(
            app.gql("ihk_bad", "{ __typename }", json!({})).await.status,
            401
        );
    }
    let throttled = app.gql("ihk_bad", "{ __typename }", json!({})).await;
    assert_eq!((throttled.status, throttled.code()), (429, "RATE_LIMITED"));
    assert_eq!(app.gql("", "{ __typename }", json!({})).await.status, 429);
    // A valid key has its own quota.
    app.gql(&app.admin_key, "{ projects { id } }", json!({}))
        .await
        .data();
    app.stop().await;
}
