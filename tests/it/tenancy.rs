use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(teams_never_see_each_other);

async fn teams_never_see_each_other(backend: Backend) {
    let app = TestApp::start(backend).await;
    let a = app.admin_key.clone();
    let (_, b) = app.new_team("other team").await;

    let project = app.create_project(&a, "A's project").await;
    let integration = app
        .register_github(&a, &project, "A's github", "a-token")
        .await;
    let (a_key_id, _) = app.key_with(&["integrations:read"]).await;

    // B lists nothing of A's.
    let projects = app.gql(&b, "{ projects { id } }", json!({})).await;
    assert_eq!(projects.data()["projects"], json!([]));
    let keys = app.gql(&b, "{ apiKeys { id } }", json!({})).await;
    assert_eq!(
        keys.data()["apiKeys"].as_array().unwrap().len(),
        1,
        "only B's own admin key"
    );

    // B's reads and writes of A's objects are NOT_FOUND, as if they did not exist.
    let attempts = [
        format!("{{ project(id: \"{project}\") {{ id }} }}"),
        format!("{{ integration(id: \"{integration}\") {{ id }} }}"),
        format!("{{ integrations(projectId: \"{project}\") {{ edges {{ cursor }} }} }}"),
        format!("{{ apiKey(id: \"{a_key_id}\") {{ id }} }}"),
        format!(
            "mutation {{ updateProject(id: \"{project}\", input: {{ name: \"pwned\" }}) {{ id }} }}"
        ),
        format!("mutation {{ deleteProject(id: \"{project}\") }}"),
        format!(
            "mutation {{ updateIntegration(id: \"{integration}\", input: {{ name: \"pwned\" }}) {{ id }} }}"
        ),
        format!(
            "mutation {{ setIntegrationEnabled(id: \"{integration}\", enabled: false) {{ id }} }}"
        ),
        format!(
            "mutation {{ rotateIntegrationCredentials(id: \"{integration}\", credentials: {{ token: \"x\" }}) {{ id }} }}"
        ),
        format!("mutation {{ deleteIntegration(id: \"{integration}\") }}"),
        format!("mutation {{ revokeApiKey(id: \"{a_key_id}\") {{ id }} }}"),
    ];
    for attempt in &attempts {
        let answer = app.gql(&b, attempt, json!({})).await;
        assert_eq!(answer.code(), "NOT_FOUND", "{attempt}: {}", answer.body);
    }
    let into_a = app
        .gql(
            &b,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "github", "name": "x", "config": {} } }),
        )
        .await;
    assert_eq!(into_a.code(), "NOT_FOUND");

    // A's objects are untouched.
    let check = app
        .gql(
            &a,
            "query($p: ID!, $i: ID!) { project(id: $p) { name } integration(id: $i) { name enabled } }",
            json!({ "p": project, "i": integration }),
        )
        .await;
    assert_eq!(check.data()["project"]["name"], "A's project");
    assert_eq!(
        check.body["data"]["integration"],
        json!({ "name": "A's github", "enabled": true })
    );
    let keys = app.gql(&a, "{ apiKeys { status } }", json!({})).await;
    assert!(
        keys.data()["apiKeys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["status"] == "ACTIVE")
    );

    // Same names in two teams do not collide.
    app.create_project(&b, "A's project").await;
    app.stop().await;
}
