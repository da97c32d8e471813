//! The shape of a route table entry and the helpers handlers share. The router and the
//! OpenAPI document are both built from one table of these; an entry carries its handler and
//! the Rust types of its query, body and answer, whose schemas (`utoipa`) the document
//! publishes and the extractors enforce.

use axum::Json;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::problem::Problem;
pub(crate) use crate::schema::{SchemaFn, Schemas, inline, list, named};

/// What a route answers on success.
#[derive(Clone, Copy)]
pub enum Reply {
    /// `application/json` of this schema.
    Json(SchemaFn),
    /// A telemetry result: JSON (this schema), CSV, Arrow IPC stream or Parquet, by `format`.
    Telemetry(SchemaFn),
}

/// Documentation of one route; the OpenAPI document is generated from these.
#[derive(Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Needs an API key.
    pub auth: bool,
    /// Request body schema (a named type, in `components.schemas`).
    pub body: Option<SchemaFn>,
    /// Query parameters.
    pub query: fn() -> Vec<Parameter>,
    /// Status of success.
    pub ok: u16,
    pub reply: Reply,
    /// Error statuses beyond those that follow from the route's shape (see `openapi`).
    pub also: &'static [u16],
}

impl RouteDoc {
    /// The name of the request body's component, if the route takes a body.
    pub fn body_name(&self) -> Option<String> {
        let mut scratch = Schemas::new();
        match (self.body?)(&mut scratch) {
            RefOr::Ref(r) => r.ref_location.rsplit('/').next().map(str::to_owned),
            RefOr::T(_) => None,
        }
    }
}

pub(crate) type H = MethodRouter<AppState>;

/// A route entry under construction: `r(…).body::<B>().query::<Q>().reply(…)`.
pub(crate) struct Route {
    pub doc: RouteDoc,
    pub handler: H,
}

fn no_query() -> Vec<Parameter> {
    Vec::new()
}

fn query_of<Q: IntoParams>() -> Vec<Parameter> {
    Q::into_params(|| Some(ParameterIn::Query))
}

fn any_object(_: &mut Schemas) -> RefOr<Schema> {
    RefOr::T(Schema::Object(utoipa::openapi::schema::Object::with_type(
        utoipa::openapi::schema::Type::Object,
    )))
}

/// A route answering `ok` with `T` (a named type).
pub(crate) fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    ok: u16,
    handler: H,
) -> Route {
    Route {
        doc: RouteDoc {
            method,
            path,
            summary,
            tag,
            auth: !path.starts_with("/track") && path != "/openapi.json",
            body: None,
            query: no_query,
            ok,
            reply: Reply::Json(any_object),
            also: &[],
        },
        handler,
    }
}

impl Route {
    pub(crate) fn body<B: ToSchema>(mut self) -> Self {
        self.doc.body = Some(named::<B>);
        self
    }

    pub(crate) fn query<Q: IntoParams>(mut self) -> Self {
        self.doc.query = query_of::<Q>;
        self
    }

    /// The route can also answer these error statuses.
    pub(crate) fn also(mut self, statuses: &'static [u16]) -> Self {
        self.doc.also = statuses;
        self
    }

    pub(crate) fn reply(mut self, schema: SchemaFn) -> Self {
        self.doc.reply = Reply::Json(schema);
        self
    }

    pub(crate) fn telemetry(mut self, schema: SchemaFn) -> Self {
        self.doc.reply = Reply::Telemetry(schema);
        self
    }

    pub(crate) fn returns<T: ToSchema>(self) -> Self {
        self.reply(named::<T>)
    }

    pub(crate) fn returns_list<T: ToSchema>(self) -> Self {
        self.reply(list::<T>)
    }

    pub(crate) fn returns_inline<T: ToSchema>(self) -> Self {
        self.reply(inline::<T>)
    }
}

pub(crate) type Res = Result<Response, Problem>;

pub(crate) fn ok<T: serde::Serialize>(v: T) -> Res {
    Ok(Json(v).into_response())
}
