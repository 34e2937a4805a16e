use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Backend, REGISTER, TestApp};

on_both_backends!(
    register_read_update_enable_rotate_delete,
    invalid_configuration_credentials_and_provider,
    pagination_and_filters,
    concurrent_creates,
    reseal_moves_credentials_to_the_active_key,
    only_credential_writers_point_credentials_elsewhere,
);

const GET: &str = "query($id: ID!) { integration(id: $id) {
    id name projectId providerKey enabled status lastError config
    provider { key category }
    credentials { isSet fields keyId updatedAt }
} }";

async fn register_read_update_enable_rotate_delete(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let project = app.create_project(&key, "P").await;

    let created = app
        .gql(
            &key,
            REGISTER,
            json!({ "input": {
                "projectId": project, "provider": "jira", "name": "Jira Cloud",
                "config": { "baseUrl": "https://acme.atlassian.net", "defaultProjectKey": "QA" },
                "credentials": { "email": "ci@acme.test", "apiToken": "jira-secret-token-123" }
            }}),
        )
        .await;
    let integration = created.data()["registerIntegration"].clone();
    let id = integration["id"].as_str().unwrap().to_string();
    assert_eq!(integration["status"], "PENDING");
    assert_eq!(integration["enabled"], true);
    assert_eq!(integration["credentials"]["isSet"], true);
    assert_eq!(
        integration["credentials"]["fields"],
        json!(["apiToken", "email"])
    );
    assert_eq!(integration["credentials"]["keyId"], "test1");
    assert!(!created.body.to_string().contains("jira-secret-token-123"));

    let read = app.gql(&key, GET, json!({ "id": id })).await;
    let read = &read.data()["integration"];
    assert_eq!(read["projectId"], json!(project));
    assert_eq!(
        read["provider"],
        json!({ "key": "jira", "category": "PROJECT_MANAGEMENT" })
    );
    assert_eq!(read["config"]["baseUrl"], "https://acme.atlassian.net");
    assert!(!read.to_string().contains("jira-secret-token-123"));

    let updated = app
        .gql(
            &key,
            "mutation($id: ID!, $input: UpdateIntegrationInput!) { updateIntegration(id: $id, input: $input) { name config } }",
            json!({ "id": id, "input": { "name": "Jira", "config": { "baseUrl": "https://other.atlassian.net" } } }),
        )
        .await;
    assert_eq!(
        updated.data()["updateIntegration"],
        json!({ "name": "Jira", "config": { "baseUrl": "https://other.atlassian.net" } })
    );
    let bad_update = app
        .gql(
            &key,
            "mutation($id: ID!) { updateIntegration(id: $id, input: { config: { baseUrl: \"ftp://x\" } }) { name } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(bad_update.code(), "INVALID_CONFIGURATION");
    let after = app.gql(&key, GET, json!({ "id": id })).await;
    assert_eq!(
        after.data()["integration"]["config"]["baseUrl"],
        "https://other.atlassian.net",
        "failed update wrote nothing"
    );

    let disabled = app
        .gql(
            &key,
            "mutation($id: ID!) { setIntegrationEnabled(id: $id, enabled: false) { enabled } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(disabled.data()["setIntegrationEnabled"]["enabled"], false);

    let before = after.data()["integration"]["credentials"]["updatedAt"].clone();
    let rotated = app
        .gql(
            &key,
            "mutation($id: ID!, $c: JSON!) { rotateIntegrationCredentials(id: $id, credentials: $c) { credentials { isSet fields updatedAt } } }",
            json!({ "id": id, "c": { "email": "new@acme.test", "apiToken": "rotated-token-456" } }),
        )
        .await;
    let creds = &rotated.data()["rotateIntegrationCredentials"]["credentials"];
    assert_eq!(creds["fields"], json!(["apiToken", "email"]));
    assert_ne!(creds["updatedAt"], before);
    let opened = {
        let row = integration_hub::integrations::store::get(
            &mut app.state.pool.get().await.unwrap(),
            &app.team_id,
            &id,
        )
        .await
        .map_err(|e| e.message())
        .unwrap();
        integration_hub::integrations::service::open_credentials(&app.state.keyring, &row)
            .map_err(|e| e.message())
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        opened,
        json!({ "email": "new@acme.test", "apiToken": "rotated-token-456" })
    );

    let missing_field = app
        .gql(
            &key,
            "mutation($id: ID!) { rotateIntegrationCredentials(id: $id, credentials: { email: \"x@y.z\" }) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(missing_field.code(), "INVALID_CONFIGURATION");

    let deleted = app
        .gql(
            &key,
            "mutation($id: ID!) { deleteIntegration(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(deleted.data()["deleteIntegration"], json!(id));
    let gone = app.gql(&key, GET, json!({ "id": id })).await;
    assert_eq!(gone.code(), "NOT_FOUND");
    let again = app
        .gql(
            &key,
            "mutation($id: ID!) { deleteIntegration(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(again.code(), "NOT_FOUND");
    app.stop().await;
}

async fn invalid_configuration_credentials_and_provider(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let project = app.create_project(&key, "P").await;
    let register = |input: Value| {
        let app = &app;
        let key = key.clone();
        async move { app.gql(&key, REGISTER, json!({ "input": input })).await }
    };

    // Missing required baseUrl, wrong type, unknown property.
    let bad_config = register(json!({
        "projectId": project, "provider": "jira", "name": "J",
        "config": { "defaultProjectKey": 7, "colour": "red" },
        "credentials": { "email": "a@b.c", "apiToken": "t" }
    }))
    .await;
    assert_eq!(bad_config.code(), "INVALID_CONFIGURATION");
    let paths: Vec<&str> = bad_config.body["errors"][0]["extensions"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/defaultProjectKey"), "{paths:?}");
    assert!(paths.contains(&"/"), "{paths:?}");

    let bad_credentials = register(json!({
        "projectId": project, "provider": "github", "name": "G",
        "config": {}, "credentials": { "token": 12345, "password": "hunter2-secret" }
    }))
    .await;
    assert_eq!(bad_credentials.code(), "INVALID_CONFIGURATION");
    let text = bad_credentials.body.to_string();
    assert!(text.contains("/token"), "{text}");
    assert!(
        !text.contains("12345") && !text.contains("hunter2-secret"),
        "credential values echoed: {text}"
    );

    let unknown = register(json!({
        "projectId": project, "provider": "myspace", "name": "M", "config": {}
    }))
    .await;
    assert_eq!(unknown.code(), "VALIDATION_FAILED");
    assert!(unknown.message().contains("unknown provider `myspace`"));

    let no_project = register(json!({
        "projectId": "00000000-0000-0000-0000-000000000000", "provider": "github", "name": "G", "config": {}
    }))
    .await;
    assert_eq!(no_project.code(), "NOT_FOUND");

    app.register_github(&key, &project, "dup", "tok-1").await;
    let dup = register(
        json!({ "projectId": project, "provider": "github", "name": "dup", "config": {} }),
    )
    .await;
    assert_eq!(dup.code(), "CONFLICT");

    let list = app
        .gql(
            &key,
            "query($p: ID!) { integrations(projectId: $p) { edges { node { name } } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(
        list.data()["integrations"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the valid one exists"
    );
    app.stop().await;
}

const LIST: &str = "query($p: ID!, $f: IntegrationFilterInput, $first: Int, $after: String) {
    integrations(projectId: $p, filter: $f, first: $first, after: $after) {
        edges { cursor node { name providerKey enabled } }
        pageInfo { hasNextPage endCursor }
    }
}";

async fn pagination_and_filters(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let project = app.create_project(&key, "P").await;
    let other = app.create_project(&key, "Other").await;
    app.register_github(&key, &other, "elsewhere", "t").await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let name = format!("gh-{i}");
        let id = app.register_github(&key, &project, &name, "t").await;
        if i % 2 == 0 {
            app.gql(
                &key,
                "mutation($id: ID!) { setIntegrationEnabled(id: $id, enabled: false) { id } }",
                json!({ "id": id }),
            )
            .await
            .data();
        }
        expected.push(name);
    }
    app.gql(
        &key,
        REGISTER,
        json!({ "input": { "projectId": project, "provider": "slack", "name": "slack", "config": {} } }),
    )
    .await
    .data();
    expected.push("slack".into());

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = app
            .gql(
                &key,
                LIST,
                json!({ "p": project, "first": 3, "after": after }),
            )
            .await;
        let conn = &page.data()["integrations"];
        for edge in conn["edges"].as_array().unwrap() {
            seen.push(edge["node"]["name"].as_str().unwrap().to_string());
        }
        pages += 1;
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = Some(conn["pageInfo"]["endCursor"].as_str().unwrap().to_string());
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    let names = |answer: crate::support::Answer| -> Vec<String> {
        answer.data()["integrations"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let slack = app
        .gql(
            &key,
            LIST,
            json!({ "p": project, "f": { "provider": "slack" } }),
        )
        .await;
    assert_eq!(names(slack), ["slack"]);
    let comms = app
        .gql(
            &key,
            LIST,
            json!({ "p": project, "f": { "category": "COMMUNICATION" } }),
        )
        .await;
    assert_eq!(names(comms), ["slack"]);
    let disabled = app
        .gql(
            &key,
            LIST,
            json!({ "p": project, "f": { "enabled": false } }),
        )
        .await;
    assert_eq!(names(disabled), ["gh-0", "gh-2", "gh-4", "gh-6"]);
    let pending = app.gql(&key, LIST, json!({ "p": project, "f": { "status": "PENDING", "provider": "github", "enabled": true } })).await;
    assert_eq!(names(pending), ["gh-1", "gh-3", "gh-5"]);
    let connected = app
        .gql(
            &key,
            LIST,
            json!({ "p": project, "f": { "status": "CONNECTED" } }),
        )
        .await;
    assert!(names(connected).is_empty());

    let bad_cursor = app
        .gql(&key, LIST, json!({ "p": project, "after": "garbage!" }))
        .await;
    assert_eq!(bad_cursor.code(), "VALIDATION_FAILED");
    let too_many = app
        .gql(&key, LIST, json!({ "p": project, "first": 1000 }))
        .await;
    assert_eq!(too_many.code(), "VALIDATION_FAILED");
    app.stop().await;
}

async fn concurrent_creates(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let project = app.create_project(&key, "P").await;

    // 16 distinct names at once: all succeed.
    let distinct = futures_util::future::join_all((0..16).map(|i| {
        app.gql(
            &key,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "github", "name": format!("n{i}"), "config": {}, "credentials": { "token": format!("t{i}") } } }),
        )
    }))
    .await;
    for answer in &distinct {
        answer.data();
    }

    // 8 racing creates of one name: exactly one wins, the rest get CONFLICT.
    let racing = futures_util::future::join_all((0..8).map(|_| {
        app.gql(
            &key,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "github", "name": "same", "config": {} } }),
        )
    }))
    .await;
    let won = racing
        .iter()
        .filter(|a| a.body.get("errors").is_none())
        .count();
    assert_eq!(won, 1, "{racing:?}");
    assert!(
        racing
            .iter()
            .filter(|a| a.body.get("errors").is_some())
            .all(|a| a.code() == "CONFLICT")
    );

    let all = app
        .gql(&key, LIST, json!({ "p": project, "first": 100 }))
        .await;
    assert_eq!(
        all.data()["integrations"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        17
    );
    app.stop().await;
}

async fn reseal_moves_credentials_to_the_active_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let key = app.admin_key.clone();
    let project = app.create_project(&key, "P").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.register_github(&key, &project, &format!("g{i}"), &format!("token-{i}"))
                .await,
        );
    }
    let old_keys = app.state.config.encryption_keys.clone().unwrap();

    // A new active key in front of the old one, as an operator rotating keys would configure.
    let mut config = integration_hub::config::Config::clone(&app.state.config);
    config.encryption_keys = Some(format!(
        "{},{old_keys}",
        integration_hub::crypto::Keyring::generate_spec("test2")
    ));
    let app = app.restart(config).await;

    let before = app.gql(&key, GET, json!({ "id": ids[0] })).await;
    assert_eq!(
        before.data()["integration"]["credentials"]["keyId"],
        "test1"
    );

    let (_, not_admin) = app
        .key_with(&["integrations:write", "credentials:write"])
        .await;
    let refused = app
        .gql(
            &not_admin,
            "mutation { resealCredentials { resealed } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "FORBIDDEN");

    let resealed = app
        .gql(
            &key,
            "mutation { resealCredentials { resealed activeKeyId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        resealed.data()["resealCredentials"],
        json!({ "resealed": 3, "activeKeyId": "test2" })
    );
    let again = app
        .gql(
            &key,
            "mutation { resealCredentials { resealed } }",
            json!({}),
        )
        .await;
    assert_eq!(again.data()["resealCredentials"]["resealed"], 0);

    // The values survive and now open with the new key alone.
    let mut config = integration_hub::config::Config::clone(&app.state.config);
    let new_only = config
        .encryption_keys
        .clone()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    config.encryption_keys = Some(new_only);
    let app = app.restart(config).await;
    for (i, id) in ids.iter().enumerate() {
        let after = app.gql(&key, GET, json!({ "id": id })).await;
        assert_eq!(after.data()["integration"]["credentials"]["keyId"], "test2");
        let row = integration_hub::integrations::store::get(
            &mut app.state.pool.get().await.unwrap(),
            &app.team_id,
            id,
        )
        .await
        .map_err(|e| e.message())
        .unwrap();
        let opened =
            integration_hub::integrations::service::open_credentials(&app.state.keyring, &row)
                .map_err(|e| e.message())
                .unwrap();
        assert_eq!(opened, Some(json!({ "token": format!("token-{i}") })));
    }
    app.stop().await;
}

/// Pointing an integration at another origin sends its stored credentials there: a key that
/// may change integrations but not credentials cannot do it (nor through a template version);
/// a path under the same origin, or an integration without credentials, it may change.
async fn only_credential_writers_point_credentials_elsewhere(backend: Backend) {
    let app = TestApp::start(backend).await;
    let project = app.create_project(&app.admin_key, "p").await;
    let with_secret = app
        .gql(
            &app.admin_key,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "jira", "name": "Jira",
                "config": { "baseUrl": "https://acme.atlassian.net" },
                "credentials": { "email": "ci@acme.test", "apiToken": "tok-1234" } } }),
        )
        .await;
    let id = with_secret.data()["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, editor) = app
        .key_with(&["integrations:read", "integrations:write"])
        .await;
    let update = "mutation($id: ID!, $c: JSON!) { updateIntegration(id: $id, input: { config: $c }) { config } }";
    let moved = app
        .gql(
            &editor,
            update,
            json!({ "id": id, "c": { "baseUrl": "https://evil.example" } }),
        )
        .await;
    assert_eq!(moved.code(), "FORBIDDEN");
    assert!(
        moved.message().contains("credentials:write"),
        "{}",
        moved.body
    );
    for sneaky in [
        "http://acme.atlassian.net",
        "https://acme.atlassian.net:8443",
    ] {
        let answer = app
            .gql(
                &editor,
                update,
                json!({ "id": id, "c": { "baseUrl": sneaky } }),
            )
            .await;
        assert_eq!(
            answer.code(),
            "FORBIDDEN",
            "{sneaky}: scheme and port are the origin too"
        );
    }
    let same = app
        .gql(
            &editor,
            update,
            json!({ "id": id, "c": { "baseUrl": "https://acme.atlassian.net/", "defaultProjectKey": "QA" } }),
        )
        .await;
    assert_eq!(
        same.data()["updateIntegration"]["config"]["defaultProjectKey"],
        "QA"
    );
    let admin = app
        .gql(
            &app.admin_key,
            update,
            json!({ "id": id, "c": { "baseUrl": "https://other.atlassian.net" } }),
        )
        .await;
    admin.data();
    // Without stored credentials there is nothing to send: any origin.
    let bare = app
        .gql(
            &app.admin_key,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "jira", "name": "Bare",
                "config": { "baseUrl": "https://acme.atlassian.net" } } }),
        )
        .await;
    let bare = bare.data()["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let anywhere = app
        .gql(
            &editor,
            update,
            json!({ "id": bare, "c": { "baseUrl": "https://elsewhere.example" } }),
        )
        .await;
    anywhere.data();
}
