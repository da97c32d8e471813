//! Online scoring, one component: committed telemetry → per-device fleet monitor → alert
//! events → the alert store → predictive tickets.
//!
//! Shape: [`ScoringConfig`] → [`OnlineScoring::start`] → a monitor thread and an alert task,
//! stopped by [`OnlineScoring::finish`] once the ingest (which owns the observer) has stopped.
//!
//! The monitor runs on its own thread behind a bounded queue. The ingest writer only hands
//! over a batch with `try_send`; when the models fall behind, samples are skipped for scoring
//! (counted in `prognos_models_samples_skipped_total`), never for storage. Every alert event
//! is stored first and then turned into a ticket, in order, by one task: an event whose
//! ticket could not be made stays in the store without one and is picked up at the next start.

use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};

use prognos_ingest::{CommitObserver, CommittedBatch};
use prognos_models::alert::AlertEvent;
use prognos_models::monitor::{FleetMonitor, MonitorConfig};
use tokio::sync::mpsc as tokio_mpsc;
use tracing::{error, info};

use crate::Service;
use crate::alerts::AlertStore;

/// One device reading: all metrics a message carried for one timestamp.
struct Sample {
    device: Arc<str>,
    ts_ms: i64,
    metrics: Vec<(Arc<str>, f64)>,
}

/// Settings of the online scoring.
#[derive(Debug, Clone, Default)]
pub struct ScoringConfig {
    pub monitor: MonitorConfig,
    /// Batches of samples waiting for the monitor thread (0 = the default, 1024).
    pub queue_batches: usize,
}

struct SampleFeed {
    tx: SyncSender<Vec<Sample>>,
}

impl CommitObserver for SampleFeed {
    fn committed(&self, batch: &CommittedBatch<'_>) {
        let mut samples: Vec<Sample> = Vec::new();
        for row in batch.rows {
            let ts_ms = row.ts_us.div_euclid(1000);
            match samples.last_mut() {
                Some(s) if s.ts_ms == ts_ms && s.device == row.device => {
                    s.metrics.push((row.metric.clone(), row.value));
                }
                _ => samples.push(Sample {
                    device: row.device.clone(),
                    ts_ms,
                    metrics: vec![(row.metric.clone(), row.value)],
                }),
            }
        }
        if samples.is_empty() {
            return;
        }
        let n = samples.len() as u64;
        match self.tx.try_send(samples) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("prognos_models_samples_skipped_total").increment(n);
            }
        }
    }
}

/// The running online scoring.
pub struct OnlineScoring {
    observer: Arc<dyn CommitObserver>,
    alert_task: tokio::task::JoinHandle<()>,
}

impl OnlineScoring {
    /// Starts the monitor thread and the alert task (needs a tokio runtime). Alerts stored
    /// earlier without a ticket (a crash between the two) get their ticket first.
    pub fn start(
        config: ScoringConfig,
        store: AlertStore,
        svc: Service,
    ) -> std::io::Result<OnlineScoring> {
        let queue = if config.queue_batches == 0 {
            1024
        } else {
            config.queue_batches
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<Sample>>(queue);
        let (event_tx, mut event_rx) = tokio_mpsc::unbounded_channel::<AlertEvent>();
        let monitor_config = config.monitor;
        std::thread::Builder::new()
            .name("models-monitor".into())
            .spawn(move || {
                let mut monitor = FleetMonitor::new(monitor_config);
                while let Ok(batch) = rx.recv() {
                    for sample in &batch {
                        let metric_refs: Vec<(&str, f64)> =
                            sample.metrics.iter().map(|(m, v)| (&**m, *v)).collect();
                        for event in monitor.observe(&sample.device, sample.ts_ms, &metric_refs) {
                            if event_tx.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    metrics::counter!("prognos_models_samples_total").increment(batch.len() as u64);
                }
            })?;
        let alert_task = tokio::spawn(async move {
            tickets_for_stored_alerts(&svc, &store).await;
            while let Some(event) = event_rx.recv().await {
                match store.apply(&event).await {
                    Ok(id) => {
                        metrics::counter!("prognos_alerts_events_total", "kind" => format!("{:?}", event.kind).to_lowercase()).increment(1);
                        info!(alert_id = id, kind = ?event.kind, device = event.alert.device_id, mode = event.alert.failure_mode, severity = ?event.alert.severity, "alert");
                    }
                    Err(e) => {
                        error!(error = %e, "cannot persist an alert event");
                        continue;
                    }
                }
                match svc.apply_alert_event(&event).await {
                    Ok(Some(id)) => tracing::debug!(ticket_id = id, "alert → ticket"),
                    Ok(None) => {}
                    Err(e) => error!(error = %e, "cannot turn an alert into a ticket"),
                }
            }
        });
        Ok(OnlineScoring {
            observer: Arc::new(SampleFeed { tx }),
            alert_task,
        })
    }

    /// The commit observer to hand to the ingest.
    pub fn observer(&self) -> Arc<dyn CommitObserver> {
        self.observer.clone()
    }

    /// Waits until every alert event raised before the ingest shut down is stored and has
    /// its ticket. Call after the ingest (which holds the other observer handle) has stopped.
    pub async fn finish(self) {
        drop(self.observer);
        if let Err(e) = self.alert_task.await {
            error!(error = %e, "alert task failed");
        }
    }
}

/// Turns stored active alerts without a ticket into tickets (after a restart).
async fn tickets_for_stored_alerts(svc: &Service, store: &AlertStore) {
    match store.without_ticket().await {
        Ok(events) => {
            for event in events {
                if let Err(e) = svc.apply_alert_event(&event).await {
                    error!(error = %e, "cannot turn a stored alert into a ticket");
                }
            }
        }
        Err(e) => error!(error = %e, "cannot read alerts without tickets"),
    }
}
