//! The shape of a route table entry and the helpers handlers share. The router and the
//! OpenAPI document are both built from one table of these.

use axum::Json;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use crate::AppState;
use crate::problem::Problem;

/// Documentation of one route; the OpenAPI document is generated from these.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Needs an API key.
    pub auth: bool,
    /// Request body schema name (in `components.schemas`).
    pub body: Option<&'static str>,
    pub query: &'static [(&'static str, &'static str)],
    /// Status of success.
    pub ok: u16,
}

pub(crate) type H = MethodRouter<AppState>;

pub(crate) fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    body: Option<&'static str>,
    ok: u16,
    handler: H,
) -> (RouteDoc, H) {
    (
        RouteDoc {
            method,
            path,
            summary,
            tag,
            auth: !path.starts_with("/track") && path != "/openapi.json",
            body,
            query: &[],
            ok,
        },
        handler,
    )
}

pub(crate) fn q(
    mut route: (RouteDoc, H),
    query: &'static [(&'static str, &'static str)],
) -> (RouteDoc, H) {
    route.0.query = query;
    route
}

pub(crate) type Res = Result<Response, Problem>;

pub(crate) fn ok<T: serde::Serialize>(v: T) -> Res {
    Ok(Json(v).into_response())
}
