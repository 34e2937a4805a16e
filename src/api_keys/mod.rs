//! Scoped API keys: creation (the full key shown once), listing, revocation, and turning a
//! presented key into a principal.

pub mod graphql;
pub mod model;
pub mod service;
pub mod store;
