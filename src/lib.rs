//! integration-hub: a self-hosted integration hub behind a GraphQL gateway.
//!
//! Imports run one way, top to bottom ([`LAYERS`]; a test holds every `crate::` path to it):
//! - **server**: `app` (start-up, routes, background upkeep), `metrics`, `live` (the
//!   WebSocket transport and shared subscriptions), `graphql` (the schema assembled from
//!   the domains, its HTTP transport, authentication of a presented credential), `graphiql`,
//!   `web` (request ids, access log, CORS, compression);
//! - **domains**, each above those it uses: `webhooks`, `sync`, `health`, `calls`, `logs`, `teams`,
//!   `api_keys`, `oauth`, `integrations`, `templates`, `projects`, `audit`, `providers`;
//! - **kernel**: `context` (the replica's state and what resolvers share) over `auth`
//!   (callers, scopes, JWT, the credential cache);
//! - **foundation**, knowing no domain: `http` (the outbound client), `logging`, `events`,
//!   `db`, `config`, `ratelimit`, `crypto`, `trace`, `error`.

pub mod api_keys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod config;
pub mod context;
pub mod crypto;
pub mod db;
pub mod error;
pub mod events;
pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod http;
pub mod integrations;
pub mod live;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod oauth;
pub mod projects;
pub mod providers;
pub mod ratelimit;
pub mod sync;
pub mod teams;
pub mod templates;
pub mod trace;
pub mod web;
pub mod webhooks;

/// The modules from the bottom up: each may use only the modules listed before it.
pub const LAYERS: [&[&str]; 4] = [
    &[
        "error",
        "trace",
        "crypto",
        "ratelimit",
        "config",
        "db",
        "events",
        "logging",
        "http",
    ],
    &["auth", "context"],
    &[
        "providers",
        "audit",
        "projects",
        "templates",
        "integrations",
        "oauth",
        "api_keys",
        "teams",
        "logs",
        "calls",
        "health",
        "sync",
        "webhooks",
    ],
    &["web", "graphiql", "graphql", "live", "metrics", "app"],
];

#[cfg(test)]
mod layering {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The top-level modules a source text names through `crate::` (grouped imports too).
    fn named_modules(source: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for line in source.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            names.insert(name);
                        }
                    }
                } else {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
        names
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn imports_run_one_way() {
        let order: Vec<&str> = super::LAYERS
            .iter()
            .flat_map(|l| l.iter().copied())
            .collect();
        let rank = |name: &str| order.iter().position(|m| *m == name);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let top = relative
                .iter()
                .next()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if matches!(top.as_str(), "lib" | "main") {
                continue;
            }
            let Some(own) = rank(&top) else {
                wrong.push(format!("{top}: not in LAYERS"));
                continue;
            };
            for name in named_modules(&std::fs::read_to_string(&file).unwrap()) {
                // The crate's exported macros live at its root.
                if matches!(name.as_str(), "with_conn" | "page_or_count") || name == top {
                    continue;
                }
                match rank(&name) {
                    Some(theirs) if theirs < own => {}
                    _ => wrong.push(format!("{} uses crate::{name}", relative.display())),
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "imports against the layers:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn grouped_and_inline_paths_are_seen() {
        let names = named_modules(
            "use crate::{db::now, error::AppError};\nlet x = crate::sync::run(); // crate::app",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["db", "error", "sync"]
        );
    }
}
