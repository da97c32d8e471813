//! The service API over HTTP (axum): JSON under `/api/v1`, the public tracking page under
//! `/track`, and `/openapi.json` generated from the same route table the router is built from,
//! so the document always matches the real routes.
//!
//! Handlers are thin: they authenticate, parse, call the domain (`prognos_service`,
//! `prognos_analytics`) with the caller's principal and map its errors to problem details.

mod analytics;
mod openapi;
pub mod ops;
pub mod problem;
mod routes;
mod schema;
pub mod server;
mod table;
pub mod text;
/// Failed-authentication throttling lives with authentication, in the domain crate, so the
/// API and the console's sign-in share it.
pub use prognos_service::throttle;
mod validate;
pub mod webhook_client;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tower_http::compression::CompressionLayer;

use prognos_service::db::Database;
use prognos_service::webhooks::DestinationPolicy;
use prognos_service::{Clock, Service, SystemClock};

pub use table::{Reply, RouteDoc};

/// What the HTTP surface needs.
#[derive(Clone)]
pub struct ApiContext {
    pub db: Database,
    pub clock: Arc<dyn Clock>,
    /// The Parquet telemetry data set (`{data_dir}/telemetry`) the telemetry queries read.
    pub telemetry_root: Option<PathBuf>,
    /// Failed API-key authentications allowed per client address.
    pub auth_throttle: throttle::AuthThrottleConfig,
    /// Where webhooks may point (checked at registration; the transport checks again).
    pub webhook_policy: DestinationPolicy,
    /// Bounds on one telemetry series query (series asked for, points answered).
    pub telemetry_limits: prognos_analytics::telemetry::SeriesLimits,
}

impl ApiContext {
    pub fn new(db: Database) -> Self {
        ApiContext {
            db,
            clock: Arc::new(SystemClock),
            telemetry_root: None,
            auth_throttle: throttle::AuthThrottleConfig::default(),
            webhook_policy: DestinationPolicy::strict(),
            telemetry_limits: Default::default(),
        }
    }

    pub fn service(&self) -> Service {
        Service::with_clock(self.db.clone(), self.clock.clone())
            .with_webhook_policy(self.webhook_policy.clone())
    }
}

#[derive(Clone)]
pub struct AppState {
    pub svc: Service,
    pub telemetry_root: Option<Arc<PathBuf>>,
    pub auth_throttle: Arc<throttle::AuthThrottle>,
    pub telemetry_limits: prognos_analytics::telemetry::SeriesLimits,
}

/// The service API router: `/api/v1/…`, `/track/…`, `/openapi.json`, and the web console
/// (`prognos_console`) at `/`. No fallback, so it merges with other routers.
pub fn router(ctx: ApiContext) -> Router {
    let mut app: Router<AppState> = Router::new();
    for (doc, handler) in route_table() {
        app = app.route(doc.path, handler);
    }
    // One failure budget per address for API keys and console passwords alike.
    let auth_throttle = Arc::new(throttle::AuthThrottle::new(ctx.auth_throttle));
    let console = prognos_console::Console::new(ctx.service(), ctx.telemetry_root.clone())
        .with_sign_in_throttle(auth_throttle.clone());
    app.with_state(AppState {
        svc: ctx.service(),
        telemetry_root: ctx.telemetry_root.clone().map(Arc::new),
        auth_throttle,
        telemetry_limits: ctx.telemetry_limits,
    })
    // A browser asking for `/track/{code}` gets the console's page; JSON stays for the API.
    .layer(axum::middleware::from_fn_with_state(
        console.clone(),
        prognos_console::negotiate_track,
    ))
    // Only the console's pages and assets are compressed: API answers stay as they are.
    .merge(console.router().layer(CompressionLayer::new()))
}

/// Every route: the service API, the analytics and this document itself.
pub fn route_table() -> Vec<(RouteDoc, table::H)> {
    let meta = table::r(
        "GET",
        "/openapi.json",
        "This OpenAPI document",
        "meta",
        200,
        axum::routing::get(|| async { table::ok(openapi_document()) }),
    );
    std::iter::once(meta)
        .chain(routes::routes())
        .chain(analytics::routes())
        .map(|r| (r.doc, r.handler))
        .collect()
}

/// The OpenAPI document of [`route_table`].
pub fn openapi_document() -> serde_json::Value {
    openapi::document(&route_table())
}

#[cfg(test)]
mod tests;
