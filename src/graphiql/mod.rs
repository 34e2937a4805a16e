//! GraphiQL served from the binary: pinned production builds of GraphiQL 3.8.3, React 18.3.1
//! and graphql-ws 5.16.2 (vendored in `vendor/` with their licences), loaded with integrity
//! hashes and no network at run time, and a small script of ours (`hub-graphiql.js`) that sends
//! subscriptions over a WebSocket with the Headers tab's `Authorization` in `connection_init`.

use std::sync::OnceLock;

use actix_web::{HttpResponse, web};
use base64::Engine;
use sha2::{Digest, Sha384};

/// (file name, content type, bytes), served under `/graphiql/`.
const ASSETS: [(&str, &str, &[u8]); 6] = [
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("vendor/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("vendor/react-dom.production.min.js"),
    ),
    (
        "graphql-ws.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("vendor/graphql-ws.min.js"),
    ),
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("vendor/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("vendor/graphiql.min.css"),
    ),
    (
        "hub-graphiql.js",
        "text/javascript; charset=utf-8",
        include_bytes!("hub-graphiql.js"),
    ),
];

/// The assets' path prefix: it changes with any asset, so they can be cached for good.
const PREFIX: &str = "/graphiql/3.8.3-1";

fn integrity(bytes: &[u8]) -> String {
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha384::digest(bytes))
    )
}

/// The page (built once: the integrity hashes are computed from the embedded files).
pub fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let tag = |name: &str| {
            let (_, _, bytes) = ASSETS
                .iter()
                .find(|(n, _, _)| *n == name)
                .copied()
                .unwrap_or(("", "", b""));
            let src = format!("{PREFIX}/{name}");
            let hash = integrity(bytes);
            if name.ends_with(".css") {
                format!(r#"<link rel="stylesheet" href="{src}" integrity="{hash}">"#)
            } else {
                format!(r#"<script src="{src}" integrity="{hash}"></script>"#)
            }
        };
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>integration-hub · GraphiQL</title>
{css}
<style>body {{ margin: 0; }} #graphiql {{ height: 100vh; }}</style>
</head>
<body>
<div id="graphiql">Loading…</div>
{react}
{react_dom}
{graphql_ws}
{graphiql}
{hub}
</body>
</html>
"#,
            css = tag("graphiql.min.css"),
            react = tag("react.production.min.js"),
            react_dom = tag("react-dom.production.min.js"),
            graphql_ws = tag("graphql-ws.min.js"),
            graphiql = tag("graphiql.min.js"),
            hub = tag("hub-graphiql.js"),
        )
    })
}

/// The page's answer: no framing by other sites, scripts and connections to this origin only.
pub fn page_response() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; font-src 'self' data:; connect-src 'self' ws: wss:; \
             frame-ancestors 'none'",
        ))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(page())
}

/// GET /graphiql/{version}/{file} (not found with `HUB_GRAPHIQL=false`).
pub async fn asset(
    path: web::Path<(String, String)>,
    state: web::Data<crate::context::AppState>,
) -> HttpResponse {
    let (version, name) = path.into_inner();
    if !state.config.graphiql || format!("/graphiql/{version}") != PREFIX {
        return HttpResponse::NotFound().finish();
    }
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header(("cache-control", "public, max-age=31536000, immutable"))
            .insert_header(("x-content-type-options", "nosniff"))
            .body(*bytes),
        None => HttpResponse::NotFound().finish(),
    }
}
