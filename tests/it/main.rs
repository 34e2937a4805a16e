//! One integration-test binary: every test talks to the real server over HTTP on loopback, on
//! SQLite and on PostgreSQL.

mod support;

mod api_keys;
mod auth;
mod binary;
mod http;
mod integrations;
mod migrations;
mod projects;
mod providers;
mod schema;
mod secrets;
mod tenancy;
