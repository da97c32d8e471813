//! The service API over HTTP (axum): JSON under `/api/v1`, the public tracking page under
//! `/track`, and `/openapi.json` generated from the same route table the router is built from,
//! so the document always matches the real routes.
//!
//! Wiring (done by the binary):
//! ```ignore
//! let ctx = prognos_api::http::ApiContext::new(db.clone(), alerts_sender);
//! let app = my_router.merge(prognos_api::http::router(ctx.clone()));
//! tokio::spawn(prognos_api::http::run_background(ctx, shutdown.clone()));
//! ```

mod analytics;
mod openapi;
pub mod problem;
mod routes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prognos_models::alert::AlertEvent;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::service::{Clock, Service, SystemClock};

pub use openapi::openapi_document;
pub use routes::route_table;

/// What the HTTP surface and the background tasks need.
#[derive(Clone)]
pub struct ApiContext {
    pub db: Database,
    /// Alert events from the online models; predictive tickets are made from them.
    pub alerts: Option<broadcast::Sender<AlertEvent>>,
    pub clock: Arc<dyn Clock>,
    /// How often the SLA timer looks at open tickets.
    pub sla_interval: Duration,
    /// How often the webhook outbox is drained.
    pub webhook_interval: Duration,
    /// How often the failure-surge check runs over the service history.
    pub surge_interval: Duration,
    /// The Parquet telemetry data set (`{data_dir}/telemetry`) the telemetry queries read.
    pub telemetry_root: Option<PathBuf>,
}

impl ApiContext {
    pub fn new(db: Database, alerts: Option<broadcast::Sender<AlertEvent>>) -> Self {
        ApiContext {
            db,
            alerts,
            clock: Arc::new(SystemClock),
            sla_interval: Duration::from_secs(10),
            webhook_interval: Duration::from_secs(1),
            surge_interval: Duration::from_secs(3600),
            telemetry_root: None,
        }
    }

    pub fn service(&self) -> Service {
        Service::with_clock(self.db.clone(), self.clock.clone())
    }
}

#[derive(Clone)]
pub struct AppState {
    pub svc: Service,
    pub telemetry_root: Option<Arc<PathBuf>>,
}

/// The service API router: `/api/v1/…`, `/track/…`, `/openapi.json`. No fallback, so it
/// merges with other routers.
pub fn router(ctx: ApiContext) -> Router {
    let mut app: Router<AppState> = Router::new();
    for (doc, handler) in routes::route_table() {
        app = app.route(doc.path, handler);
    }
    app.with_state(AppState {
        svc: ctx.service(),
        telemetry_root: ctx.telemetry_root.clone().map(Arc::new),
    })
}

/// Runs `pass` every `period` until `stop` is cancelled.
fn every<F, Fut>(
    period: Duration,
    stop: CancellationToken,
    mut pass: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => pass().await,
            }
        }
    })
}

/// Turns stored active alerts without a ticket into tickets (after a restart or a lag).
async fn catch_up(svc: &Service, store: &crate::alerts::AlertStore) {
    match store.without_ticket().await {
        Ok(events) => {
            for event in events {
                if let Err(e) = svc.apply_alert_event(&event).await {
                    tracing::error!(error = %e, "cannot turn a stored alert into a ticket");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read alerts without tickets"),
    }
}

/// The SLA timer, the webhook outbox and the alert → ticket consumer, until `shutdown`.
pub async fn run_background(ctx: ApiContext, shutdown: CancellationToken) {
    let svc = ctx.service();
    let sla = {
        let svc = svc.clone();
        every(ctx.sla_interval, shutdown.clone(), move || {
            let svc = svc.clone();
            async move {
                match svc.sla_tick().await {
                    Ok(t) if t.warnings + t.breaches > 0 => {
                        tracing::info!(warnings = t.warnings, breaches = t.breaches, "SLA timer");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "SLA timer pass failed"),
                }
            }
        })
    };
    let hooks = {
        let svc = svc.clone();
        every(ctx.webhook_interval, shutdown.clone(), move || {
            let svc = svc.clone();
            async move {
                if let Err(e) = svc.deliver_webhooks(100).await {
                    tracing::error!(error = %e, "webhook delivery pass failed");
                }
            }
        })
    };
    let surges = {
        let svc = svc.clone();
        every(ctx.surge_interval, shutdown.clone(), move || {
            let svc = svc.clone();
            async move {
                if let Err(e) = svc.raise_surge_alerts().await {
                    tracing::error!(error = %e, "failure-surge check failed");
                }
            }
        })
    };
    let consumer = ctx.alerts.as_ref().map(|sender| {
        let mut rx = sender.subscribe();
        let svc = svc.clone();
        let stop = shutdown.clone();
        let store = crate::alerts::AlertStore::new(ctx.db.clone());
        tokio::spawn(async move {
            // Subscribed first, so nothing falls between the catch-up and the stream.
            catch_up(&svc, &store).await;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => break,
                    event = rx.recv() => event,
                };
                match event {
                    Ok(event) => match svc.apply_alert_event(&event).await {
                        Ok(Some(id)) => tracing::debug!(ticket_id = id, "alert → ticket"),
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "cannot turn an alert into a ticket"),
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "alert consumer lagged; catching up from the alert store"
                        );
                        catch_up(&svc, &store).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    });
    let _ = sla.await;
    let _ = hooks.await;
    let _ = surges.await;
    if let Some(c) = consumer {
        let _ = c.await;
    }
}

#[cfg(test)]
mod tests;
