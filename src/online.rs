//! Online models: committed telemetry → per-device fleet monitor → alert events, persisted in
//! SQL and published on an in-process channel (the ticket service subscribes to it).
//!
//! The monitor runs on its own thread behind a bounded queue. The ingest writer only hands
//! over a batch with `try_send`; when the models fall behind, samples are skipped for scoring
//! (counted in `prognos_models_samples_skipped_total`), never for storage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};

use prognos_api::AlertStore;
use prognos_ingest::{CommitObserver, CommittedBatch};
use prognos_models::alert::AlertEvent;
use prognos_models::monitor::{FleetMonitor, MonitorConfig};
use tokio::sync::{broadcast, mpsc as tokio_mpsc};
use tracing::{error, info};

/// One device reading: all metrics a message carried for one timestamp.
struct Sample {
    device: Arc<str>,
    ts_ms: i64,
    metrics: Vec<(Arc<str>, f64)>,
}

/// Batches of samples waiting for the monitor thread.
const QUEUE_BATCHES: usize = 1024;

struct SampleFeed {
    tx: SyncSender<Vec<Sample>>,
    skipped: AtomicU64,
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
                self.skipped.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("prognos_models_samples_skipped_total").increment(n);
            }
        }
    }
}

/// The running online models.
pub struct OnlineModels {
    pub observer: Arc<dyn CommitObserver>,
    pub alerts: broadcast::Sender<AlertEvent>,
    persister: tokio::task::JoinHandle<()>,
}

impl OnlineModels {
    /// Starts the monitor thread and the persister task (needs a tokio runtime).
    pub fn start(store: AlertStore, config: MonitorConfig) -> std::io::Result<OnlineModels> {
        let (tx, rx) = mpsc::sync_channel::<Vec<Sample>>(QUEUE_BATCHES);
        let (event_tx, mut event_rx) = tokio_mpsc::unbounded_channel::<AlertEvent>();
        let (alerts, _) = broadcast::channel(1024);
        std::thread::Builder::new()
            .name("models-monitor".into())
            .spawn(move || {
                let mut monitor = FleetMonitor::new(config);
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
        let persister = {
            let alerts = alerts.clone();
            tokio::spawn(async move {
                while let Some(event) = event_rx.recv().await {
                    match store.apply(&event).await {
                        Ok(id) => {
                            metrics::counter!("prognos_alerts_events_total", "kind" => format!("{:?}", event.kind).to_lowercase()).increment(1);
                            info!(alert_id = id, kind = ?event.kind, device = event.alert.device_id, mode = event.alert.failure_mode, severity = ?event.alert.severity, "alert");
                        }
                        Err(e) => error!(error = %e, "cannot persist an alert event"),
                    }
                    // Nobody listening is fine: the alert is in the store.
                    let _ = alerts.send(event);
                }
            })
        };
        Ok(OnlineModels {
            observer: Arc::new(SampleFeed {
                tx,
                skipped: AtomicU64::new(0),
            }),
            alerts,
            persister,
        })
    }

    /// Waits until every alert event raised before the ingest shut down is persisted. Call
    /// after the ingest (which owns the observer) has stopped.
    pub async fn finish(self) {
        drop(self.observer);
        if let Err(e) = self.persister.await {
            error!(error = %e, "alert persister failed");
        }
    }
}
