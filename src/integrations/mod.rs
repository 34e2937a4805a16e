//! Integrations: a provider configured for a project, with sealed, write-only credentials.

pub mod graphql;
pub mod insight;
pub mod model;
pub mod oauth;
pub mod service;
pub mod store;
