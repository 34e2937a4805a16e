//! One integration-test binary: every test talks to the real server over HTTP on loopback, on
//! SQLite and on PostgreSQL.

mod support;

mod answers;
mod api_keys;
mod audit;
mod auth;
mod binary;
mod browser;
mod calls;
mod dashboard;
mod http;
mod inbound;
mod input_limits;
mod integrations;
mod jwt;
mod key_dominance;
mod key_lifecycle;
mod mapping_props;
mod metrics;
mod migrations;
mod oauth;
mod outages;
mod projects;
mod providers;
mod query_limits;
mod rate_limits;
mod redirects;
mod replicas;
mod schema;
mod secrets;
mod subscriptions;
mod sync;
mod templates;
mod tenancy;
mod units;
mod watching;
mod web;
mod webhooks;
