//! Sync configurations, field mappings and the sync engine: records moved between two
//! integrations without code.

pub mod engine;
pub mod graphql;
pub mod mapping;
pub mod pager;
pub mod service;
pub mod spec;
pub mod store;
pub mod writes;
