//! integration-hub: a self-hosted integration hub behind a GraphQL gateway.

pub mod api_keys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod config;
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
pub mod projects;
pub mod providers;
pub mod ratelimit;
pub mod sync;
pub mod teams;
pub mod web;
