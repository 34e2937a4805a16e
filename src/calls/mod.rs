//! Calling providers through integrations: `executeRequest`, `executeGraphql`,
//! `batchExecute`, and the health requests the `health` domain sends through them.

pub mod graphql;
pub mod service;
pub mod target;
