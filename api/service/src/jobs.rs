//! The service's periodic jobs: the SLA timer, the webhook outbox and the hourly failure-surge
//! check. One component: [`JobsConfig`] → [`Jobs::start`] → a running task stopped by the
//! cancellation token.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Service;
use crate::webhooks::{EVENTS_PER_TURN, Outbox, WebhookTransport};

/// How often each job runs.
#[derive(Debug, Clone, Copy)]
pub struct JobsConfig {
    /// How often the SLA timer looks at open tickets.
    pub sla_interval: Duration,
    /// How often the webhook outbox looks for endpoints with due events (deliveries run
    /// concurrently between ticks; a slow endpoint never delays the next tick).
    pub webhook_interval: Duration,
    /// How often the failure-surge check runs over the service history.
    pub surge_interval: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            sla_interval: Duration::from_secs(10),
            webhook_interval: Duration::from_secs(1),
            surge_interval: Duration::from_secs(3600),
        }
    }
}

/// The running jobs.
pub struct Jobs {
    task: tokio::task::JoinHandle<()>,
}

impl Jobs {
    /// Starts every job on the current tokio runtime; webhooks go out through `transport`.
    /// They stop when `shutdown` is cancelled.
    pub fn start(
        svc: Service,
        config: JobsConfig,
        transport: Arc<dyn WebhookTransport>,
        shutdown: CancellationToken,
    ) -> Jobs {
        Jobs {
            task: tokio::spawn(run(svc, config, transport, shutdown)),
        }
    }

    /// Waits until every job has stopped (after the token is cancelled).
    pub async fn finish(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "service jobs failed");
        }
    }
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

async fn run(
    svc: Service,
    ctx: JobsConfig,
    transport: Arc<dyn WebhookTransport>,
    shutdown: CancellationToken,
) {
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
        let mut outbox = Outbox::new(svc.clone(), transport, EVENTS_PER_TURN);
        let stop = shutdown.clone();
        let period = ctx.webhook_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = outbox.tick().await {
                            tracing::error!(error = %e, "webhook outbox pass failed");
                        }
                    }
                }
            }
            outbox.shutdown().await;
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
    let _ = sla.await;
    let _ = hooks.await;
    let _ = surges.await;
}
