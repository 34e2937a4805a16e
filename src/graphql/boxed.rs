//! [`Boxed`]: a root object whose field futures live on the heap.
//!
//! The merged `Mutation` resolves a field by asking each of its parts in turn, and the future
//! doing so is as large as the largest part's: a `testConnection` or a sync mutation holds
//! several kilobytes of state (database, HTTP, journal futures nested). async-graphql builds
//! and moves that future for every mutation field, so every `executeRequest` paid for
//! copying the largest resolver of all. Parts wrapped in `Boxed` keep their futures on the
//! heap, built only when such a part is asked; the calls part, asked first (it is the
//! outermost, see `Mutation`), stays inline.

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{
    ContainerType, Context, ContextSelectionSet, ObjectType, OutputType, Positioned, ServerResult,
    Value,
};

/// `T` with its futures boxed; the same GraphQL type as `T` in every respect.
#[derive(Default)]
pub struct Boxed<T>(pub T);

impl<T: OutputType> OutputType for Boxed<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        Box::pin(self.0.resolve(ctx, field)).await
    }
}

impl<T: ContainerType> ContainerType for Boxed<T> {
    async fn resolve_field(&self, ctx: &Context<'_>) -> ServerResult<Option<Value>> {
        Box::pin(self.0.resolve_field(ctx)).await
    }

    async fn find_entity(&self, ctx: &Context<'_>, params: &Value) -> ServerResult<Option<Value>> {
        Box::pin(self.0.find_entity(ctx, params)).await
    }
}

impl<T: ObjectType> ObjectType for Boxed<T> {}
