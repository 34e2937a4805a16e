//! A key manages only keys it dominates: the caller's scopes ⊇ the key's scopes and the
//! caller's reach ⊇ the key's reach. Every key-management operation is tried for every pair
//! of key profiles (with fresh keys per cell) and the verdict compared with a table written
//! out by hand; a refused operation must leave the target key working and unchanged.

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(
    every_operation_on_every_pair,
    lists_and_metadata_follow_the_rule
);

/// The key profiles of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// `admin`, whole team.
    Admin,
    /// `api_keys:read`, `api_keys:write`, whole team.
    KeyManager,
    /// `integrations:read`, whole team.
    SingleScope,
    /// key management and `integrations:read`, limited to project 1.
    ProjectLimited,
    /// key management, limited to integration 1 (in project 1).
    IntegrationLimited,
    /// `admin`, limited to project 1.
    ProjectAdmin,
}

use Profile::*;

const PROFILES: [Profile; 6] = [
    Admin,
    KeyManager,
    SingleScope,
    ProjectLimited,
    IntegrationLimited,
    ProjectAdmin,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Update,
    Roll,
    Revoke,
}

const OPS: [Op; 4] = [Op::Read, Op::Update, Op::Roll, Op::Revoke];

/// The expected verdict for `caller` acting on another key of profile `target`, by hand.
fn expected(caller: Profile, target: Profile) -> &'static str {
    match (caller, target) {
        (Admin, _) => "OK",
        // No key-management scope at all.
        (SingleScope, _) => "FORBIDDEN",
        // Whole team, but fewer scopes than admin keys and keys with integrations:read.
        (KeyManager, KeyManager | IntegrationLimited) => "OK",
        (KeyManager, _) => "FORBIDDEN",
        // Limited callers do not see keys reaching beyond them.
        (ProjectLimited, ProjectLimited | IntegrationLimited) => "OK",
        (ProjectLimited, ProjectAdmin) => "FORBIDDEN",
        (ProjectLimited, _) => "NOT_FOUND",
        (IntegrationLimited, IntegrationLimited) => "OK",
        (IntegrationLimited, _) => "NOT_FOUND",
        (ProjectAdmin, ProjectLimited | IntegrationLimited | ProjectAdmin) => "OK",
        (ProjectAdmin, _) => "NOT_FOUND",
    }
}

/// The verdict for a key acting on itself: it may always roll and revoke itself; reading and
/// changing itself needs the scopes.
fn expected_on_itself(profile: Profile, op: Op) -> &'static str {
    match (profile, op) {
        (_, Op::Roll | Op::Revoke) => "OK",
        (SingleScope, _) => "FORBIDDEN",
        _ => "OK",
    }
}

struct Fixture {
    project: String,
    integration: String,
}

impl Fixture {
    async fn new(app: &TestApp) -> Self {
        let project = app.create_project(&app.admin_key, "one").await;
        let integration = app
            .register_github(&app.admin_key, &project, "gh", "t")
            .await;
        Self {
            project,
            integration,
        }
    }

    fn input(&self, profile: Profile) -> Value {
        let keys = ["api_keys:read", "api_keys:write"];
        let (scopes, projects, integrations): (Vec<&str>, Value, Value) = match profile {
            Admin => (vec!["admin"], Value::Null, Value::Null),
            KeyManager => (keys.to_vec(), Value::Null, Value::Null),
            SingleScope => (vec!["integrations:read"], Value::Null, Value::Null),
            ProjectLimited => (
                vec!["api_keys:read", "api_keys:write", "integrations:read"],
                json!([self.project]),
                Value::Null,
            ),
            IntegrationLimited => (keys.to_vec(), Value::Null, json!([self.integration])),
            ProjectAdmin => (vec!["admin"], json!([self.project]), Value::Null),
        };
        json!({ "name": format!("{profile:?}"), "scopes": scopes,
                "allowedProjectIds": projects, "allowedIntegrationIds": integrations })
    }

    /// A new key of `profile`, made by the team's admin: (id, secret).
    async fn key(&self, app: &TestApp, profile: Profile) -> (String, String) {
        let answer = app
            .gql(
                &app.admin_key,
                "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { key apiKey { id } } }",
                json!({ "input": self.input(profile) }),
            )
            .await;
        let data = &answer.data()["createApiKey"];
        (
            data["apiKey"]["id"].as_str().unwrap().to_string(),
            data["key"].as_str().unwrap().to_string(),
        )
    }
}

/// Runs `op` on key `id` with `caller`; returns the verdict ("OK" or the error code) and data.
async fn run(app: &TestApp, caller: &str, op: Op, id: &str) -> (String, Value) {
    let query = match op {
        Op::Read => "query($id: ID!) { apiKey(id: $id) { id } }",
        Op::Update => {
            "mutation($id: ID!) { updateApiKey(id: $id, input: { name: \"renamed\" }) { id } }"
        }
        Op::Roll => {
            "mutation($id: ID!) { rollApiKey(id: $id, gracePeriodSeconds: 0) { key apiKey { id } } }"
        }
        Op::Revoke => "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
    };
    let answer = app.gql(caller, query, json!({ "id": id })).await;
    if answer.body.get("errors").is_some() {
        (answer.code().to_string(), Value::Null)
    } else {
        ("OK".into(), answer.body["data"].clone())
    }
}

/// The stored state of a key as the team's admin sees it.
async fn state_of(app: &TestApp, id: &str) -> Value {
    app.gql(
        &app.admin_key,
        "query($id: ID!) { apiKey(id: $id) { name scopes status allowedProjectIds allowedIntegrationIds previousSecretExpiresAt } }",
        json!({ "id": id }),
    )
    .await
    .data()["apiKey"]
        .clone()
}

async fn works(app: &TestApp, key: &str) -> bool {
    let answer = app.gql(key, "{ viewer { actor } }", json!({})).await;
    answer.body.get("errors").is_none()
}

async fn every_operation_on_every_pair(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = Fixture::new(&app).await;
    let mut wrong = Vec::new();
    for caller_profile in PROFILES {
        for target_profile in PROFILES {
            for op in OPS {
                let (_, caller) = fixture.key(&app, caller_profile).await;
                let (target_id, target) = fixture.key(&app, target_profile).await;
                let before = state_of(&app, &target_id).await;
                let (verdict, data) = run(&app, &caller, op, &target_id).await;
                let want = expected(caller_profile, target_profile);
                if verdict != want {
                    wrong.push(format!(
                        "{caller_profile:?} {op:?} {target_profile:?}: got {verdict}, want {want}"
                    ));
                    continue;
                }
                if verdict != "OK" {
                    // Refused: the target is untouched and its secret still works.
                    assert_eq!(state_of(&app, &target_id).await, before);
                    assert!(works(&app, &target).await, "refused op broke the target");
                    continue;
                }
                match op {
                    Op::Roll => {
                        // The new secret carries the target's scopes, no more.
                        let new = data["rollApiKey"]["key"].as_str().unwrap();
                        assert!(!works(&app, &target).await, "grace 0 ends the old secret");
                        let scopes = app.gql(new, "{ viewer { scopes } }", json!({})).await;
                        assert_eq!(
                            scopes.data()["viewer"]["scopes"],
                            before["scopes"],
                            "rolling never widens a key"
                        );
                    }
                    Op::Revoke => assert!(!works(&app, &target).await),
                    Op::Update => assert_eq!(state_of(&app, &target_id).await["name"], "renamed"),
                    Op::Read => assert!(works(&app, &target).await),
                }
            }
        }
        // The key acting on itself.
        for op in OPS {
            let (id, key) = fixture.key(&app, caller_profile).await;
            let (verdict, _) = run(&app, &key, op, &id).await;
            let want = expected_on_itself(caller_profile, op);
            if verdict != want {
                wrong.push(format!(
                    "{caller_profile:?} {op:?} itself: got {verdict}, want {want}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    app.stop().await;
}

async fn lists_and_metadata_follow_the_rule(backend: Backend) {
    const SECRET: &str = "an HS256 secret of at least 32 bytes!!";
    let app = TestApp::start_configured(backend, |config| {
        config.jwt_hs256_secret = Some(SECRET.into());
        config.jwt_issuer = Some("https://idp.test".into());
        config.jwt_audience = Some("hub".into());
        config.jwt_roles.insert(
            "keys".into(),
            vec!["api_keys:read".into(), "api_keys:write".into()],
        );
    })
    .await;
    let fixture = Fixture::new(&app).await;
    let (project_key_id, project_key) = fixture.key(&app, ProjectLimited).await;
    let (integration_key_id, _) = fixture.key(&app, IntegrationLimited).await;
    let (single_id, _) = fixture.key(&app, SingleScope).await;
    let (manager_id, manager) = fixture.key(&app, KeyManager).await;

    // A limited key lists only the keys within its reach and scopes.
    let listed = app.gql(&project_key, "{ apiKeys { id } }", json!({})).await;
    let mut ids: Vec<&str> = listed.data()["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![project_key_id.as_str(), integration_key_id.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let listed = app.gql(&manager, "{ apiKeys { id } }", json!({})).await;
    let ids: Vec<&str> = listed.data()["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&manager_id.as_str()) && ids.contains(&integration_key_id.as_str()));
    assert!(
        !ids.contains(&single_id.as_str()),
        "single holds integrations:read"
    );
    assert_eq!(ids.len(), 2, "not the admin key either: {ids:?}");

    // Metadata (createdBy included) needs api_keys:read, even on a key one may revoke.
    let answer = app
        .gql(
            &app.admin_key,
            "mutation { createApiKey(input: { name: \"w\", scopes: [\"api_keys:write\"] }) { key } }",
            json!({}),
        )
        .await;
    let writer = answer.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (victim, _) = app.key_with(&["api_keys:write"]).await;
    let leaked = app
        .gql(
            &writer,
            "mutation($id: ID!) { updateApiKey(id: $id, input: { name: \"x\" }) { id createdBy } }",
            json!({ "id": victim }),
        )
        .await;
    assert_eq!(leaked.code(), "FORBIDDEN");
    assert!(
        !leaked.body.to_string().contains("api_key:"),
        "{}",
        leaked.body
    );

    // A key that expires cannot mint one that lives longer.
    let expiring = app
        .gql(
            &app.admin_key,
            "mutation($at: DateTime!) { createApiKey(input: { name: \"e\", scopes: [\"api_keys:read\", \"api_keys:write\"], expiresAt: $at }) { key } }",
            json!({ "at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339() }),
        )
        .await;
    let expiring = expiring.data()["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let forever = app
        .gql(
            &expiring,
            "mutation { createApiKey(input: { name: \"f\", scopes: [\"api_keys:read\"] }) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(forever.code(), "FORBIDDEN");

    // JWT users follow the same rule with their role's scopes.
    let now = Utc::now().timestamp();
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "bob", "iss": "https://idp.test", "aud": "hub", "exp": now + 600,
                 "team_id": app.team_id, "roles": ["keys"] }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let admin_id = app
        .gql(&app.admin_key, "{ viewer { apiKeyId } }", json!({}))
        .await
        .data()["viewer"]["apiKeyId"]
        .as_str()
        .unwrap()
        .to_string();
    for op in OPS {
        assert_eq!(
            run(&app, &token, op, &admin_id).await.0,
            "FORBIDDEN",
            "{op:?}"
        );
        assert_eq!(
            run(&app, &token, op, &single_id).await.0,
            "FORBIDDEN",
            "{op:?}"
        );
    }
    assert_eq!(
        run(&app, &token, Op::Read, &integration_key_id).await.0,
        "OK"
    );
    assert_eq!(
        run(&app, &token, Op::Revoke, &integration_key_id).await.0,
        "OK"
    );
    assert!(works(&app, &app.admin_key).await);
    app.stop().await;
}
