//! The service's periodic jobs: the SLA timer, the webhook outbox and the hourly failure-surge
//! check. One component: [`JobsConfig`] → [`Jobs::start`] → a running task stopped by the
//! cancellation token.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Service;

/// How often each job runs.
#[derive(Debug, Clone, Copy)]
pub struct JobsConfig {
    /// How often the SLA timer looks at open tickets.
    pub sla_interval: Duration,
    /// How often the webhook outbox is drained.
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
    /// Starts every job on the current tokio runtime; they stop when `shutdown` is cancelled.
    pub fn start(svc: Service, config: JobsConfig, shutdown: CancellationToken) -> Jobs {
        Jobs {
            task: tokio::spawn(run(svc, config, shutdown)),
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

async fn run(svc: Service, ctx: JobsConfig, shutdown: CancellationToken) {
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
    let _ = sla.await;
    let _ = hooks.await;
    let _ = surges.await;
}
