//! JWTs for web frontends: HS256, RS256 from a JWKS served by a local server, ES256 from a
//! PEM file; and every trick of RFC 8725's threat list refused with UNAUTHENTICATED.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(valid_tokens_are_accepted, bad_tokens_are_refused);

const SECRET: &str = "an HS256 secret of at least 32 bytes!!";
const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "integration-hub";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn claims(team: &str, roles: &[&str]) -> Value {
    let now = Utc::now().timestamp();
    json!({ "sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now, "team_id": team, "roles": roles })
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: &Value, kid: &str, private_pem: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&fixture(private_pem)).unwrap(),
    )
    .unwrap()
}

fn es256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(&fixture("ec-private.pk8.pem")).unwrap(),
    )
    .unwrap()
}

/// A token with a hand-written header and whatever signature the test wants.
fn forged(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

async fn jwks_server() -> Receiver {
    let jwks: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    Receiver::start(move |_| Reply::json(200, &jwks)).await
}

async fn app_with_jwt(backend: Backend, jwks: &Receiver) -> TestApp {
    let jwks_url = format!("{}/.well-known/jwks.json", jwks.url);
    let pem_path = format!(
        "{}/tests/fixtures/jwt/ec-public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    TestApp::start_configured(backend, move |config| {
        config.jwt_hs256_secret = Some(SECRET.into());
        config.jwt_jwks_url = Some(jwks_url);
        config.jwt_public_key_file = Some(pem_path.into());
        config.jwt_issuer = Some(ISSUER.into());
        config.jwt_audience = Some(AUDIENCE.into());
        config.jwt_leeway_secs = 5;
    })
    .await
}

const VIEWER: &str = "{ viewer { kind actor team { id } scopes expiresAt } }";

async fn valid_tokens_are_accepted(backend: Backend) {
    let jwks = jwks_server().await;
    let app = app_with_jwt(backend, &jwks).await;
    let team = app.team_id.clone();

    for token in [
        hs256(&claims(&team, &["admin"])),
        rs256(&claims(&team, &["admin"]), "test-rsa-1", "rsa-private.pem"),
        es256(&claims(&team, &["admin"])),
    ] {
        let answer = app.gql(&token, VIEWER, json!({})).await;
        let viewer = &answer.data()["viewer"];
        assert_eq!(viewer["kind"], "USER");
        assert_eq!(viewer["actor"], "user:alice");
        assert_eq!(viewer["team"]["id"], json!(team));
        assert_eq!(viewer["scopes"], json!(["admin"]));
        assert!(viewer["expiresAt"].is_string());
    }
    assert_eq!(jwks.count(), 1, "the JWKS is fetched once and cached");
    let fetch = &jwks.requests()[0];
    assert_eq!(
        (fetch.method.as_str(), fetch.path.as_str()),
        ("GET", "/.well-known/jwks.json")
    );
    assert!(
        fetch
            .header("user-agent")
            .unwrap()
            .starts_with("integration-hub/")
    );

    // Roles map to scopes: a viewer reads but cannot write; the write is audited as the user.
    let viewer_token = hs256(&claims(&team, &["viewer"]));
    app.gql(&viewer_token, "{ projects { id } }", json!({}))
        .await
        .data();
    let refused = app
        .gql(
            &viewer_token,
            "mutation { createProject(input: { name: \"x\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "FORBIDDEN");
    let admin_token = hs256(&claims(&team, &["admin"]));
    app.gql(
        &admin_token,
        "mutation { createProject(input: { name: \"by alice\" }) { id } }",
        json!({}),
    )
    .await
    .data();
    let audit = app
        .gql(
            &admin_token,
            "{ auditLog(filter: { actor: \"user:alice\" }) { edges { node { action outcome } } } }",
            json!({}),
        )
        .await;
    let actions: Vec<(String, String)> = audit.data()["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"]["action"].as_str().unwrap().into(),
                e["node"]["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("createProject".to_string(), "SUCCESS".to_string()),
            ("createProject".to_string(), "FAILURE".to_string())
        ]
    );

    // Unknown roles grant nothing.
    let nobody = hs256(&claims(&team, &["intern"]));
    assert_eq!(
        app.gql(&nobody, "{ projects { id } }", json!({}))
            .await
            .code(),
        "FORBIDDEN"
    );
    app.stop().await;
}

async fn bad_tokens_are_refused(backend: Backend) {
    let jwks = jwks_server().await;
    let app = app_with_jwt(backend, &jwks).await;
    let team = app.team_id.clone();
    let now = Utc::now().timestamp();
    let good = claims(&team, &["admin"]);
    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(field);
        c
    };

    let valid = hs256(&good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let tampered = format!(
        "{head}.{}.{signature}",
        B64.encode(with("roles", json!(["admin", "root"])).to_string())
    );
    let attacker = Receiver::start(|_| Reply::json(200, &json!({ "keys": [] }))).await;
    let mut jku_header = Header::new(Algorithm::RS256);
    jku_header.kid = Some("test-rsa-1".into());
    jku_header.jku = Some(format!("{}/jwks.json", attacker.url));
    let jku = encode(
        &jku_header,
        &good,
        &EncodingKey::from_rsa_pem(&fixture("other-rsa-private.pem")).unwrap(),
    )
    .unwrap();
    let embedded_jwk = forged(
        &json!({ "alg": "RS256", "typ": "JWT", "jwk": { "kty": "RSA", "n": "AQAB", "e": "AQAB" } }),
        &good,
        "c2ln",
    );

    let cases: Vec<(&str, String)> = vec![
        ("expired", hs256(&with("exp", json!(now - 600)))),
        ("not yet valid", hs256(&with("nbf", json!(now + 600)))),
        (
            "wrong issuer",
            hs256(&with("iss", json!("https://evil.test"))),
        ),
        ("wrong audience", hs256(&with("aud", json!("someone-else")))),
        ("missing exp", hs256(&without("exp"))),
        ("missing sub", hs256(&without("sub"))),
        ("missing team", hs256(&without("team_id"))),
        (
            "unknown team",
            hs256(&with("team_id", json!("no-such-team"))),
        ),
        (
            "wrong key",
            rs256(&good, "test-rsa-1", "other-rsa-private.pem"),
        ),
        (
            "wrong HS secret",
            encode(
                &Header::new(Algorithm::HS256),
                &good,
                &EncodingKey::from_secret(b"another secret of at least thirty-two bytes"),
            )
            .unwrap(),
        ),
        ("tampered payload", tampered),
        (
            "empty signature",
            format!("{head}.{}.", rest.split_once('.').unwrap().0),
        ),
        (
            "alg none",
            forged(&json!({ "alg": "none", "typ": "JWT" }), &good, ""),
        ),
        ("alg None", forged(&json!({ "alg": "None" }), &good, "")),
        // The RSA public key used as an HMAC secret: the classic algorithm confusion.
        (
            "HS256 with the RSA public key",
            encode(
                &Header::new(Algorithm::HS256),
                &good,
                &EncodingKey::from_secret(&fixture("rsa-public.pem")),
            )
            .unwrap(),
        ),
        // A JWKS key (bound to RS256) named by kid in an HS256 token.
        ("kid of an RS256 key on HS256", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("test-rsa-1".into());
            encode(&header, &good, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
        }),
        ("jku to the attacker's keys", jku),
        ("embedded jwk", embedded_jwk),
        (
            "unknown kid",
            rs256(&good, "../../etc/passwd", "rsa-private.pem"),
        ),
        ("RS384 not configured", {
            let mut header = Header::new(Algorithm::RS384);
            header.kid = Some("test-rsa-1".into());
            encode(
                &header,
                &good,
                &EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).unwrap(),
            )
            .unwrap()
        }),
        ("garbage", "not.a.jwt".into()),
        ("two parts", "eyJhbGciOiJIUzI1NiJ9.e30".into()),
    ];
    for (what, token) in &cases {
        let answer = app.gql(token, "{ viewer { actor } }", json!({})).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        assert_eq!(answer.code(), "UNAUTHENTICATED", "{what}");
        let expected = match *what {
            "expired" => "expired",
            "not yet valid" => "not valid yet",
            "wrong issuer" => "issuer",
            "wrong audience" => "audience",
            "missing exp" | "missing sub" => "required claim",
            "missing team" => "team_id",
            "unknown team" => "team does not exist",
            "kid of an RS256 key on HS256" | "RS384 not configured" => "algorithm not accepted",
            "jku to the attacker's keys" | "embedded jwk" => "reference their own keys",
            "unknown kid" => "unknown key",
            "alg none" | "alg None" | "garbage" | "two parts" => "malformed",
            _ => "signature",
        };
        assert!(
            answer.message().contains(expected),
            "{what}: {}",
            answer.message()
        );
    }
    assert_eq!(attacker.count(), 0, "a token's jku is never fetched");
    // One refetch for the unknown kid at most, however many such tokens arrive.
    let fetches = jwks.count();
    assert!(fetches <= 2, "JWKS fetched {fetches} times");
    for _ in 0..5 {
        app.gql(
            &rs256(&good, "another-unknown", "rsa-private.pem"),
            "{ viewer { actor } }",
            json!({}),
        )
        .await;
    }
    assert_eq!(
        jwks.count(),
        fetches,
        "unknown kids do not hammer the JWKS endpoint"
    );
    app.stop().await;
}
