//! The provider catalogue and its GraphQL surface.

pub mod catalogue;
pub mod graphql;

pub use catalogue::{AuthScheme, Provider, ProviderCategory, find, require};
