//! The provider catalogue and its GraphQL surface.

pub mod catalogue;
pub mod graphql;
pub mod oauth;

pub use catalogue::{AuthScheme, Provider, ProviderCategory, find, require};
