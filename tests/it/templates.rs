//! Custom integration templates against a local test API the tests start: registered,
//! tested, invoked by endpoint name (the API checks what it received), versioned, shared
//! through the marketplace, exported and imported; malformed ones refused with paths.

use serde_json::{Value, json};

use crate::calls::EXECUTE;
use crate::on_both_backends;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::{Backend, TestApp};

on_both_backends!(
    a_template_works_like_a_provider,
    versions_upgrades_and_deletion,
    marketplace_install_export_and_import,
    malformed_templates_are_refused_with_paths,
    a_sync_reads_and_writes_through_endpoints,
);

const TOKEN: &str = "tr-token-5e1f0c2a9b";

/// The test API: answers only with the right bearer token.
fn test_api(request: &Recorded) -> Reply {
    if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return Reply::json(401, &json!({ "error": "unauthorized" }));
    }
    let path = request.path.as_str();
    match (request.method.as_str(), path) {
        ("GET", "/api/health") => Reply::json(200, &json!({ "ok": true })),
        ("GET", p) if p.starts_with("/api/issues/") => Reply::json(
            200,
            &json!({ "issue": { "id": p.trim_start_matches("/api/issues/"), "title": "Flaky test" } }),
        ),
        ("GET", p) if p.ends_with("/issues") => Reply::json(
            200,
            &json!({ "items": [{ "id": 1 }, { "id": 2 }], "query": request.query }),
        ),
        ("POST", p) if p.ends_with("/issues") => Reply::json(201, &json!({ "issue": { "id": 7 } })),
        _ => Reply::json(404, &json!({ "error": "no such route" })),
    }
}

fn template(key: &str) -> Value {
    json!({
        "key": key,
        "name": "Test results",
        "description": "Our internal test-results service",
        "category": "TEST_MANAGEMENT",
        "configSchema": {
            "type": "object",
            "properties": { "host": { "type": "string" }, "region": { "type": "string" } },
            "required": ["host"]
        },
        "credentialsSchema": {
            "type": "object",
            "properties": { "apiToken": { "type": "string", "minLength": 1 } },
            "required": ["apiToken"],
            "additionalProperties": false
        },
        "auth": { "type": "bearer", "tokenField": "apiToken" },
        "baseUrl": "http://{config.host}/api",
        "healthCheck": { "method": "GET", "path": "/health", "expectStatus": 200 },
        "endpoints": [
            {
                "name": "getIssue", "method": "GET", "path": "/issues/{issue}",
                "paramsSchema": { "type": "object", "properties": { "issue": { "type": "integer" } }, "required": ["issue"] },
                "responsePointer": "/issue"
            },
            {
                "name": "listIssues", "method": "GET", "path": "/projects/{project}/issues",
                "query": { "state": "{state}", "limit": "{limit}" },
                "paramsSchema": { "type": "object", "properties": {
                    "project": { "type": "string" }, "state": { "enum": ["open", "closed"] },
                    "limit": { "type": "integer", "maximum": 100 }
                }, "required": ["project", "state", "limit"] },
                "responsePointer": "/items"
            },
            {
                "name": "createIssue", "method": "POST", "path": "/projects/{project}/issues",
                "headers": { "X-Source": "hub-{project}" },
                "body": { "title": "{title}", "points": "{points}", "labels": "{labels}",
                          "meta": { "origin": "integration-hub {project}" } },
                "paramsSchema": { "type": "object", "properties": {
                    "project": { "type": "string" }, "title": { "type": "string" },
                    "points": { "type": "integer" }, "labels": { "type": "array", "items": { "type": "string" } }
                }, "required": ["project", "title"] },
                "responsePointer": "/issue/id"
            }
        ]
    })
}

const CREATE: &str = "mutation($input: IntegrationTemplateInput!) { createIntegrationTemplate(input: $input) { id key providerKey latestVersion visibility } }";
const UPDATE: &str = "mutation($id: ID!, $input: IntegrationTemplateInput!) { updateIntegrationTemplate(id: $id, input: $input) { latestVersion versions { version } } }";
const REGISTER: &str = "mutation($input: RegisterIntegrationInput!) { registerIntegration(input: $input) { id providerKey templateVersion } }";
const INVOKE: &str = "mutation($id: ID!, $endpoint: String!, $params: JSON) { invokeEndpoint(integrationId: $id, endpoint: $endpoint, params: $params) { endpoint data result { status ok body } } }";

async fn create(app: &TestApp, key: &str, doc: Value) -> String {
    let answer = app.gql(key, CREATE, json!({ "input": doc })).await;
    answer.data()["createIntegrationTemplate"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn register(app: &TestApp, key: &str, project: &str, provider: &str, host: &str) -> Value {
    app.gql(
        key,
        REGISTER,
        json!({ "input": { "projectId": project, "provider": provider, "name": format!("Results at {host}"),
            "config": { "host": host, "region": "eu" }, "credentials": { "apiToken": TOKEN } } }),
    )
    .await
    .body
}

async fn invoke(app: &TestApp, key: &str, id: &str, endpoint: &str, params: Value) -> Value {
    app.gql(
        key,
        INVOKE,
        json!({ "id": id, "endpoint": endpoint, "params": params }),
    )
    .await
    .body
}

fn host_of(api: &Receiver) -> String {
    api.url.trim_start_matches("http://").to_string()
}

async fn a_template_works_like_a_provider(backend: Backend) {
    let app = TestApp::start(backend).await;
    let api = Receiver::start(test_api).await;
    let admin = app.admin_key.clone();
    create(&app, &admin, template("testres")).await;
    let project = app.create_project(&admin, "qa").await;
    let registered = register(&app, &admin, &project, "template:testres", &host_of(&api)).await;
    let node = &registered["data"]["registerIntegration"];
    assert_eq!(node["providerKey"], "template:testres", "{registered}");
    assert_eq!(node["templateVersion"], 1);
    let id = node["id"].as_str().unwrap().to_string();

    // The configuration and credentials are validated against the template's schemas.
    let bad = app
        .gql(
            &admin,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "template:testres", "name": "Bad",
                "config": { "port": 1 }, "credentials": { "apiToken": "" } } }),
        )
        .await;
    assert_eq!(bad.code(), "INVALID_CONFIGURATION");
    assert_eq!(
        app.gql(
            &admin,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "template:nope",
            "name": "X", "config": {} } })
        )
        .await
        .code(),
        "VALIDATION_FAILED"
    );

    // The health check goes to the template's path with the template's auth.
    let tested = app
        .gql(
            &admin,
            "mutation($id: ID!) { testConnection(integrationId: $id) { ok status integration { status } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        tested.data()["testConnection"]["ok"],
        true,
        "{}",
        tested.body
    );
    assert_eq!(api.requests()[0].path, "/api/health");

    // Three endpoints: path, query and body parameters, each checked by the API.
    let got = invoke(&app, &admin, &id, "getIssue", json!({ "issue": 42 })).await;
    assert_eq!(
        got["data"]["invokeEndpoint"]["data"],
        json!({ "id": "42", "title": "Flaky test" }),
        "{got}"
    );
    assert_eq!(api.requests().last().unwrap().path, "/api/issues/42");
    let listed = invoke(
        &app,
        &admin,
        &id,
        "listIssues",
        json!({ "project": "alpha", "state": "open", "limit": 5 }),
    )
    .await;
    assert_eq!(
        listed["data"]["invokeEndpoint"]["data"],
        json!([{ "id": 1 }, { "id": 2 }])
    );
    let seen = api.requests().last().unwrap().clone();
    assert_eq!(seen.path, "/api/projects/alpha/issues");
    assert_eq!(seen.query, "limit=5&state=open");
    let created = invoke(
        &app,
        &admin,
        &id,
        "createIssue",
        json!({ "project": "alpha", "title": "Flaky", "points": 3, "labels": ["ci"] }),
    )
    .await;
    assert_eq!(created["data"]["invokeEndpoint"]["data"], 7, "{created}");
    assert_eq!(created["data"]["invokeEndpoint"]["result"]["status"], 201);
    let seen = api.requests().last().unwrap().clone();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("x-source"), Some("hub-alpha"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        json!({ "title": "Flaky", "points": 3, "labels": ["ci"], "meta": { "origin": "integration-hub alpha" } }),
        "parameters keep their JSON types"
    );

    // Parameters are checked against the schema before anything is sent.
    let before = api.count();
    let refused = invoke(&app, &admin, &id, "getIssue", json!({ "issue": "abc" })).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "VALIDATION_FAILED"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("params/issue"),
        "{refused}"
    );
    let unknown = invoke(&app, &admin, &id, "deleteEverything", json!({})).await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"],
        "VALIDATION_FAILED"
    );
    // A parameter cannot climb out of the base URL.
    let escape = invoke(
        &app,
        &admin,
        &id,
        "listIssues",
        json!({ "project": "../../admin", "state": "open", "limit": 1 }),
    )
    .await;
    assert_eq!(
        escape["errors"][0]["extensions"]["code"], "VALIDATION_FAILED",
        "{escape}"
    );
    assert_eq!(api.count(), before, "nothing was sent");

    // Nor around the SSRF guard: a host the guard blocks is refused, and so is a config value
    // that would change the URL's structure.
    let blocked = register(
        &app,
        &admin,
        &project,
        "template:testres",
        "169.254.169.254",
    )
    .await;
    let blocked_id = blocked["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = invoke(&app, &admin, &blocked_id, "getIssue", json!({ "issue": 1 })).await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "UPSTREAM_BLOCKED",
        "{answer}"
    );
    let sneaky = app
        .gql(
            &admin,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "template:testres", "name": "Sneaky",
                "config": { "host": "evil.example/x?" }, "credentials": { "apiToken": TOKEN } } }),
        )
        .await;
    let sneaky_id = sneaky.data()["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = invoke(&app, &admin, &sneaky_id, "getIssue", json!({ "issue": 1 })).await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "VALIDATION_FAILED",
        "{answer}"
    );

    // executeRequest works on it too, and every call is logged.
    let raw = app
        .gql(
            &admin,
            EXECUTE,
            json!({ "id": id, "input": { "method": "GET", "path": "/health" } }),
        )
        .await;
    assert_eq!(raw.data()["executeRequest"]["status"], 200);
    let logs = app
        .gql(
            &admin,
            "query($id: ID!) { integrationLogs(integrationId: $id, first: 20) { nodes { method path status } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        logs.data()["integrationLogs"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // The template is one of the team's providers, and the integration's provider.
    let providers = app
        .gql(
            &admin,
            "{ providers(category: TEST_MANAGEMENT) { key name authScheme templateVersion configSchema } }",
            json!({}),
        )
        .await;
    let listed = providers.data()["providers"].as_array().unwrap().clone();
    let ours = listed
        .iter()
        .find(|p| p["key"] == "template:testres")
        .expect("the template is listed");
    assert_eq!(ours["authScheme"], "BEARER");
    assert_eq!(ours["templateVersion"], 1);
    assert_eq!(ours["configSchema"]["required"], json!(["host"]));
    assert!(listed.iter().any(|p| p["key"] == "testlink"));
    let (_, stranger) = app.new_team("stranger").await;
    let theirs = app.gql(&stranger, "{ providers { key } }", json!({})).await;
    assert!(
        !theirs.data()["providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["key"] == "template:testres"),
        "another team's templates are not its providers"
    );
    let own = app
        .gql(
            &admin,
            "query($id: ID!) { integration(id: $id) { provider { key templateVersion } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        own.data()["integration"]["provider"]["key"],
        "template:testres"
    );
    let filtered = app
        .gql(
            &admin,
            "query($p: ID!) { integrations(projectId: $p, filter: { provider: \"template:testres\" }) { totalCount } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(filtered.data()["integrations"]["totalCount"], 3);
    // A path parameter keeps unreserved characters and encodes the rest.
    invoke(
        &app,
        &admin,
        &id,
        "listIssues",
        json!({ "project": "team-a.b_c~d e/f", "state": "open", "limit": 1 }),
    )
    .await;
    assert_eq!(
        api.requests().last().unwrap().path,
        "/api/projects/team-a.b_c~d%20e%2Ff/issues"
    );
    // invokeEndpoint needs integrations:execute; templates need templates:* scopes.
    let (_, reader) = app.key_with(&["integrations:read", "templates:read"]).await;
    let answer = invoke(&app, &reader, &id, "getIssue", json!({ "issue": 1 })).await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let answer = app
        .gql(&reader, CREATE, json!({ "input": template("other") }))
        .await;
    assert_eq!(answer.code(), "FORBIDDEN");
    let listed = app
        .gql(
            &reader,
            "{ integrationTemplates { nodes { key } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed.data()["integrationTemplates"]["nodes"],
        json!([{ "key": "testres" }])
    );
}

async fn versions_upgrades_and_deletion(backend: Backend) {
    let app = TestApp::start(backend).await;
    let api = Receiver::start(test_api).await;
    let admin = app.admin_key.clone();
    let template_id = create(&app, &admin, template("testres")).await;
    let project = app.create_project(&admin, "qa").await;
    let registered = register(&app, &admin, &project, "template:testres", &host_of(&api)).await;
    let id = registered["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Version 2 requires a `tenant` the integration does not have, and renames an endpoint.
    let mut v2 = template("testres");
    v2["configSchema"]["properties"]["tenant"] = json!({ "type": "string" });
    v2["configSchema"]["required"] = json!(["host", "tenant"]);
    v2["endpoints"][0]["name"] = json!("fetchIssue");
    let updated = app
        .gql(&admin, UPDATE, json!({ "id": template_id, "input": v2 }))
        .await;
    assert_eq!(
        updated.data()["updateIntegrationTemplate"]["latestVersion"],
        2
    );
    assert_eq!(
        updated.data()["updateIntegrationTemplate"]["versions"],
        json!([{ "version": 1 }, { "version": 2 }])
    );
    // Each integration's provider is its template at its pinned version; a page asks the
    // database the same number of times for one template integration as for several.
    let page = "query($p: ID!) { integrations(projectId: $p) { nodes { provider { key templateVersion } } } }";
    // The fewest over five reads: a background write (usage counts, the webhook worker) may
    // land inside one.
    let fewest = || async {
        let statements = app.state.pool.statements();
        let mut fewest = u64::MAX;
        let mut answer = Value::Null;
        for _ in 0..5 {
            let before = statements.count();
            answer = app.gql(&admin, page, json!({ "p": project })).await.body;
            fewest = fewest.min(statements.count() - before);
        }
        (answer, fewest)
    };
    let (one, for_one) = fewest().await;
    assert_eq!(
        one["data"]["integrations"]["nodes"],
        json!([{ "provider": { "key": "template:testres", "templateVersion": 1 } }])
    );
    let second = app
        .gql(
            &admin,
            REGISTER,
            json!({ "input": { "projectId": project, "provider": "template:testres", "name": "Second",
                "config": { "host": host_of(&api), "tenant": "acme" }, "credentials": { "apiToken": TOKEN } } }),
        )
        .await;
    let second = second.data()["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (two, for_two) = fewest().await;
    assert_eq!(
        two["data"]["integrations"]["nodes"],
        json!([
            { "provider": { "key": "template:testres", "templateVersion": 1 } },
            { "provider": { "key": "template:testres", "templateVersion": 2 } }
        ])
    );
    assert_eq!(for_one, for_two, "statements do not grow with the page");
    app.gql(
        &admin,
        "mutation($id: ID!) { deleteIntegration(id: $id) }",
        json!({ "id": second }),
    )
    .await
    .data();
    // The integration keeps version 1 and its endpoints.
    let got = invoke(&app, &admin, &id, "getIssue", json!({ "issue": 1 })).await;
    assert_eq!(
        got["data"]["invokeEndpoint"]["result"]["status"], 200,
        "{got}"
    );
    // Upgrading checks the configuration against version 2 first.
    let upgrade = "mutation($id: ID!, $v: Int!) { upgradeIntegration(id: $id, version: $v) { templateVersion } }";
    let refused = app.gql(&admin, upgrade, json!({ "id": id, "v": 2 })).await;
    assert_eq!(refused.code(), "INVALID_CONFIGURATION");
    assert!(refused.message().contains("tenant"), "{}", refused.body);
    app.gql(
        &admin,
        "mutation($id: ID!, $c: JSON!) { updateIntegration(id: $id, input: { config: $c }) { id } }",
        json!({ "id": id, "c": { "host": host_of(&api), "tenant": "acme" } }),
    )
    .await
    .data();
    let upgraded = app.gql(&admin, upgrade, json!({ "id": id, "v": 2 })).await;
    assert_eq!(upgraded.data()["upgradeIntegration"]["templateVersion"], 2);
    let renamed = invoke(&app, &admin, &id, "fetchIssue", json!({ "issue": 1 })).await;
    assert_eq!(
        renamed["data"]["invokeEndpoint"]["result"]["status"], 200,
        "{renamed}"
    );
    let gone = invoke(&app, &admin, &id, "getIssue", json!({ "issue": 1 })).await;
    assert_eq!(gone["errors"][0]["extensions"]["code"], "VALIDATION_FAILED");
    // A version that sends the credentials to another origin (here https instead of http)
    // needs credentials:write to upgrade to.
    let mut v3 = v2.clone();
    v3["baseUrl"] = json!("https://{config.host}/api");
    app.gql(&admin, UPDATE, json!({ "id": template_id, "input": v3 }))
        .await
        .data();
    let (_, editor) = app
        .key_with(&["integrations:read", "integrations:write"])
        .await;
    let moved = app.gql(&editor, upgrade, json!({ "id": id, "v": 3 })).await;
    assert_eq!(moved.code(), "FORBIDDEN", "{}", moved.body);
    let missing = app.gql(&admin, upgrade, json!({ "id": id, "v": 9 })).await;
    assert_eq!(missing.code(), "NOT_FOUND");
    // The key cannot change between versions.
    let rekeyed = app
        .gql(
            &admin,
            UPDATE,
            json!({ "id": template_id, "input": template("other") }),
        )
        .await;
    assert_eq!(rekeyed.code(), "VALIDATION_FAILED");

    // Deletion is refused while an integration uses the template.
    let delete = "mutation($id: ID!) { deleteIntegrationTemplate(id: $id) }";
    assert_eq!(
        app.gql(&admin, delete, json!({ "id": template_id }))
            .await
            .code(),
        "CONFLICT"
    );
    app.gql(
        &admin,
        "mutation($id: ID!) { deleteIntegration(id: $id) }",
        json!({ "id": id }),
    )
    .await
    .data();
    let deleted = app.gql(&admin, delete, json!({ "id": template_id })).await;
    assert_eq!(deleted.data()["deleteIntegrationTemplate"], template_id);
}

async fn marketplace_install_export_and_import(backend: Backend) {
    let app = TestApp::start(backend).await;
    let api = Receiver::start(test_api).await;
    let admin = app.admin_key.clone();
    let template_id = create(&app, &admin, template("testres")).await;
    let (_, other) = app.new_team("other").await;
    let install = "mutation($id: ID!, $key: String) { installTemplate(id: $id, key: $key) { id key installedFrom } }";
    // Not published: another team cannot see or install it.
    assert_eq!(
        app.gql(&other, install, json!({ "id": template_id }))
            .await
            .code(),
        "NOT_FOUND"
    );
    assert_eq!(
        app.gql(
            &other,
            "query($id: ID!) { integrationTemplate(id: $id) { id } }",
            json!({ "id": template_id })
        )
        .await
        .code(),
        "NOT_FOUND"
    );
    let published = app
        .gql(
            &admin,
            "mutation($id: ID!) { publishIntegrationTemplate(id: $id, visibility: PUBLIC) { visibility } }",
            json!({ "id": template_id }),
        )
        .await;
    assert_eq!(
        published.data()["publishIntegrationTemplate"]["visibility"],
        "PUBLIC"
    );

    // The other team finds it (and the built-in providers) in the marketplace.
    let market = "query($s: String, $c: ProviderCategory) { marketplaceTemplates(search: $s, category: $c) { nodes { id builtin key name publisher latestVersion installCount } } }";
    let found = app.gql(&other, market, json!({ "s": "TEST RES" })).await;
    let nodes = found.data()["marketplaceTemplates"]["nodes"]
        .as_array()
        .unwrap()
        .clone();
    let entry = nodes
        .iter()
        .find(|n| n["builtin"] == false)
        .expect("the template is listed");
    assert_eq!(entry["key"], "testres");
    assert_eq!(entry["publisher"], "default");
    let all = app
        .gql(&other, market, json!({ "c": "TEST_MANAGEMENT" }))
        .await;
    let keys: Vec<&str> = all.data()["marketplaceTemplates"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"testlink") && keys.contains(&"testres"),
        "{keys:?}"
    );
    assert!(!keys.contains(&"jira"), "filtered by category");

    // Installed, it is the other team's own, and usable there.
    let installed = app.gql(&other, install, json!({ "id": template_id })).await;
    let copy = installed.data()["installTemplate"].clone();
    assert_eq!(copy["key"], "testres");
    assert_eq!(copy["installedFrom"], template_id);
    let project = app.create_project(&other, "theirs").await;
    let registered = register(&app, &other, &project, "template:testres", &host_of(&api)).await;
    let id = registered["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = invoke(&app, &other, &id, "getIssue", json!({ "issue": 5 })).await;
    assert_eq!(got["data"]["invokeEndpoint"]["data"]["id"], "5", "{got}");
    let counted = app.gql(&other, market, json!({ "s": "testres" })).await;
    assert!(
        counted.data()["marketplaceTemplates"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["installCount"] == 1)
    );
    // Installing twice under the same key conflicts; under another key it does not.
    assert_eq!(
        app.gql(&other, install, json!({ "id": template_id }))
            .await
            .code(),
        "CONFLICT"
    );
    app.gql(
        &other,
        install,
        json!({ "id": template_id, "key": "testres-copy" }),
    )
    .await
    .data();

    // Export and import: the document comes back the same (under a new key).
    let exported = app
        .gql(
            &admin,
            "query($id: ID!) { exportIntegrationTemplate(id: $id) }",
            json!({ "id": template_id }),
        )
        .await;
    let mut document = exported.data()["exportIntegrationTemplate"].clone();
    assert_eq!(document["format"], "integration-hub/template@1");
    document["key"] = json!("imported");
    let imported = app
        .gql(
            &admin,
            "mutation($d: JSON!) { importIntegrationTemplate(document: $d) { id key } }",
            json!({ "d": document }),
        )
        .await;
    let imported_id = imported.data()["importIntegrationTemplate"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let again = app
        .gql(
            &admin,
            "query($id: ID!) { exportIntegrationTemplate(id: $id) }",
            json!({ "id": imported_id }),
        )
        .await;
    assert_eq!(
        again.data()["exportIntegrationTemplate"],
        document,
        "round trip"
    );
    let unmarked = app
        .gql(
            &admin,
            "mutation($d: JSON!) { importIntegrationTemplate(document: $d) { id } }",
            json!({ "d": template("plain") }),
        )
        .await;
    assert_eq!(unmarked.code(), "VALIDATION_FAILED");
}

async fn malformed_templates_are_refused_with_paths(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_key.clone();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|t| t["endpoints"][2]["path"] = json!("/projects/{project}/issues/{issue}")),
            "endpoints[2].path: unknown placeholder {issue}",
        ),
        (
            Box::new(|t| t["configSchema"] = json!({ "type": "nope" })),
            "configSchema: not a valid JSON Schema",
        ),
        (
            Box::new(|t| t["auth"]["tokenField"] = json!("password")),
            "auth.tokenField: credentialsSchema has no `password`",
        ),
        (
            Box::new(|t| t["auth"]["type"] = json!("kerberos")),
            "auth.type",
        ),
        (
            Box::new(|t| t["baseUrl"] = json!("http://{config.missing}/api")),
            "baseUrl: unknown placeholder {config.missing}",
        ),
        (
            Box::new(|t| t["baseUrl"] = json!("ftp://{config.host}")),
            "baseUrl: must be an http or https URL",
        ),
        (
            Box::new(|t| t["endpoints"][1]["name"] = json!("getIssue")),
            "endpoints[1].name: `getIssue` is named twice",
        ),
        (
            Box::new(|t| t["endpoints"][0]["headers"] = json!({ "Authorization": "x" })),
            "endpoints[0].headers.Authorization",
        ),
        (
            Box::new(|t| t["endpoints"][0]["responsePointer"] = json!("issue")),
            "endpoints[0].responsePointer",
        ),
        (
            Box::new(|t| t["endpoints"][2]["body"]["x"] = json!("{nothing}")),
            "endpoints[2].body.x: unknown placeholder {nothing}",
        ),
        (
            Box::new(|t| t["endpoints"][0]["path"] = json!("/a/{unclosed")),
            "endpoints[0].path",
        ),
        (Box::new(|t| t["key"] = json!("Bad Key")), "key:"),
        (
            Box::new(|t| t["configSchema"]["$ref"] = json!("http://169.254.169.254/schema.json")),
            "configSchema: not a valid JSON Schema",
        ),
    ];
    for (change, expected) in cases {
        let mut doc = template("bad");
        change(&mut doc);
        let answer = app.gql(&admin, CREATE, json!({ "input": doc })).await;
        assert_eq!(
            answer.code(),
            "VALIDATION_FAILED",
            "{expected}: {}",
            answer.body
        );
        assert!(
            answer.message().contains(expected),
            "expected `{expected}` in: {}",
            answer.message()
        );
    }
    let listed = app
        .gql(
            &admin,
            "{ integrationTemplates { nodes { key } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed.data()["integrationTemplates"]["nodes"],
        json!([]),
        "nothing was saved"
    );
}

async fn a_sync_reads_and_writes_through_endpoints(backend: Backend) {
    let app = TestApp::start(backend).await;
    let api = Receiver::start(test_api).await;
    let admin = app.admin_key.clone();
    create(&app, &admin, template("testres")).await;
    let project = app.create_project(&admin, "qa").await;
    let source = register(&app, &admin, &project, "template:testres", &host_of(&api)).await;
    let source = source["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = register(
        &app,
        &admin,
        &project,
        "template:testres",
        &format!("localhost:{}", api.url.rsplit(':').next().unwrap()),
    )
    .await;
    let target = target["data"]["registerIntegration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let config = crate::sync::create_config(
        &app,
        json!({ "projectId": project, "name": "issues", "sourceIntegrationId": source, "targetIntegrationId": target,
            "sourceRead": { "endpoint": "listIssues", "params": { "project": "alpha", "state": "open", "limit": 10 }, "recordsPointer": "/items" },
            "targetWrite": { "createEndpoint": "createIssue" },
            "sourceKey": "id", "targetKey": "title",
            "mappings": [
                { "target": "title", "source": "id", "transformers": [{ "kind": "TO_STRING" }] },
                { "target": "project", "source": "project", "transformers": [{ "kind": "DEFAULT", "value": "beta" }] },
            ] }),
    )
    .await;
    let run = crate::sync::run_to_end(&app, &config).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["recordsRead"], 2);
    assert_eq!(run["recordsWritten"], 2);
    let requests = api.requests();
    let read = requests.iter().find(|r| r.method == "GET").unwrap();
    assert_eq!(read.path, "/api/projects/alpha/issues");
    assert!(read.query.contains("state=open"), "{}", read.query);
    let mut titles: Vec<Value> = requests
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| {
            assert_eq!(r.path, "/api/projects/beta/issues");
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["title"].clone()
        })
        .collect();
    titles.sort_by_key(|t| t.to_string());
    assert_eq!(titles, vec![json!("1"), json!("2")]);
}
