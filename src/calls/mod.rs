//! Calling providers through integrations: `testConnection`, `executeRequest`,
//! `executeGraphql`, `batchExecute`.

pub mod cache;
pub mod graphql;
pub mod service;
pub mod target;
