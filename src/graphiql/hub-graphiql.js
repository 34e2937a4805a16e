// integration-hub's GraphiQL: queries and mutations over POST, subscriptions over a WebSocket
// (graphql-transport-ws) whose `connection_init` carries the Headers tab's Authorization.
(function () {
  "use strict";
  var url = location.origin + "/graphql";
  var wsUrl = url.replace(/^http/, "ws");
  var clients = {};

  // One WebSocket client per credential.
  function wsClient(headers) {
    var auth = headers.Authorization || headers.authorization || "";
    if (!clients[auth]) {
      clients[auth] = graphqlWs.createClient({
        url: wsUrl,
        lazy: true,
        connectionParams: auth ? { Authorization: auth } : {},
      });
    }
    return clients[auth];
  }

  // The type of the operation `operationName` (or the only one) selects.
  function operationType(query, operationName) {
    var re = /(^|[\s}])(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?/g;
    var match, first = null;
    var text = query.replace(/#[^\n]*/g, "").replace(/"""[\s\S]*?"""|"(?:\\.|[^"\\])*"/g, '""');
    while ((match = re.exec(text))) {
      if (!first) first = match[2];
      if (operationName && match[3] === operationName) return match[2];
    }
    return first || "query";
  }

  function fetcher(params, opts) {
    var headers = Object.assign({}, (opts && opts.headers) || {});
    if (operationType(params.query || "", params.operationName) === "subscription") {
      return wsClient(headers).iterate({
        query: params.query,
        variables: params.variables,
        operationName: params.operationName || undefined,
      });
    }
    return fetch(url, {
      method: "POST",
      headers: Object.assign(
        {
          "content-type": "application/json",
          accept: "application/graphql-response+json, application/json",
        },
        headers
      ),
      body: JSON.stringify(params),
    }).then(function (response) {
      return response.json();
    });
  }
  window.hubFetcher = fetcher;

  var example = [
    "# Put your API key (or JWT) in the Headers tab:",
    '# { "Authorization": "Bearer ihk_..." }',
    "",
    "query Viewer {",
    "  viewer { kind teamId scopes }",
    "  projects { id name }",
    "}",
    "",
    "# Live: the team's integration events (run it, then change an integration)",
    "subscription Events($projectId: ID!) {",
    "  integrationEvents(projectId: $projectId) {",
    "    ... on IntegrationEvent { kind name providerKey }",
    "  }",
    "}",
    "",
  ].join("\n");

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: example,
      defaultHeaders: '{ "Authorization": "Bearer " }',
      shouldPersistHeaders: false,
    })
  );
})();
