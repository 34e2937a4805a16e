use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

on_both_backends!(create_list_update_delete, duplicate_and_invalid_names);

async fn create_list_update_delete(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let a = app.create_project(&key, "Alpha").await;
    let b = app.create_project(&key, "Beta").await;

    let list = app.gql(&key, "{ projects { id name } }", json!({})).await;
    let names: Vec<&str> = list.data()["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alpha", "Beta"]);

    let updated = app
        .gql(
            &key,
            "mutation($id: ID!) { updateProject(id: $id, input: { name: \"Alpha 2\", description: \"d\" }) { name description } }",
            json!({ "id": a }),
        )
        .await;
    assert_eq!(
        updated.data()["updateProject"],
        json!({ "name": "Alpha 2", "description": "d" })
    );

    let one = app
        .gql(
            &key,
            "query($id: ID!) { project(id: $id) { name description } }",
            json!({ "id": a }),
        )
        .await;
    assert_eq!(one.data()["project"]["name"], "Alpha 2");

    // Deleting a project removes its integrations too.
    let integration = app
        .register_github(&key, &b, "gh", "ghp_token_value_1")
        .await;
    let deleted = app
        .gql(
            &key,
            "mutation($id: ID!) { deleteProject(id: $id) }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(deleted.data()["deleteProject"], json!(b));
    let gone = app
        .gql(
            &key,
            "query($id: ID!) { integration(id: $id) { id } }",
            json!({ "id": integration }),
        )
        .await;
    assert_eq!(gone.code(), "NOT_FOUND");
    let gone = app
        .gql(
            &key,
            "query($id: ID!) { project(id: $id) { id } }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(gone.code(), "NOT_FOUND");
    app.stop().await;
}

async fn duplicate_and_invalid_names(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    app.create_project(&key, "Same").await;
    let again = app
        .gql(
            &key,
            "mutation { createProject(input: { name: \"Same\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(again.code(), "CONFLICT");
    let empty = app
        .gql(
            &key,
            "mutation { createProject(input: { name: \"  \" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(empty.code(), "VALIDATION_FAILED");
    let list = app.gql(&key, "{ projects { name } }", json!({})).await;
    assert_eq!(
        list.data()["projects"].as_array().unwrap().len(),
        1,
        "nothing half-written"
    );
    app.stop().await;
}
