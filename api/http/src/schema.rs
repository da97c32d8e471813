//! Schemas of Rust types for the OpenAPI document and for the extractors that enforce them
//! (`utoipa`): the one place both the route table and `problem` take them from.

use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{Ref, RefOr};

/// Named schemas collected while the document is built.
pub(crate) type Schemas = Vec<(String, RefOr<Schema>)>;
/// The schema of a type: adds what it refers to to the collection, returns its own.
pub(crate) type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

/// A named type: `$ref` to its component.
pub(crate) fn named<T: ToSchema>(out: &mut Schemas) -> RefOr<Schema> {
    T::schemas(out);
    out.push((T::name().into_owned(), T::schema()));
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// A list of a named type.
pub(crate) fn list<T: ToSchema>(out: &mut Schemas) -> RefOr<Schema> {
    let item = named::<T>(out);
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .into()
}

/// A type written out in place (generic wrappers such as `Paged<T>`).
pub(crate) fn inline<T: ToSchema>(out: &mut Schemas) -> RefOr<Schema> {
    T::schemas(out);
    T::schema()
}
