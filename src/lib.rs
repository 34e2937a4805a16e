//! integration-hub: a self-hosted integration hub behind a GraphQL gateway.

pub mod api_keys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod graphql;
pub mod integrations;
pub mod projects;
pub mod providers;
pub mod ratelimit;
pub mod teams;
