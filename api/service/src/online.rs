//! Online scoring, one component: committed telemetry → per-device fleet monitor → alert
//! events → the alert store → predictive tickets.
//!
//! Shape: [`ScoringConfig`] → [`OnlineScoring::start`] → a monitor thread and an alert task,
//! stopped by [`OnlineScoring::finish`] once the ingest (which owns the observer) has stopped.
//!
//! What the monitor knows besides the samples comes from the service store, so it needs no
//! configuration of its own: each device's model (which asset profile, if any, applies; a
//! device without one is learned from its own history) and the close codes technicians gave
//! predictive tickets (a false alarm raises that model's bar for that failure mode). Both
//! are read at start and then every `refresh_interval`, and handed to the monitor thread
//! before its next batch.
//!
//! The monitor runs on its own thread behind a bounded queue. The ingest writer only hands
//! over a batch with `try_send`; when the models fall behind, samples are skipped for scoring
//! (counted in `prognos_models_samples_skipped_total`), never for storage. Every alert event
//! is stored first and then turned into a ticket, in order, by one task: an event whose
//! ticket could not be made stays in the store without one and is picked up at the next start.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use prognos_ingest::{CommitObserver, CommittedBatch};
use prognos_models::alert::{AlertEvent, Evidence};
use prognos_models::learned::alert_pattern;
use prognos_models::monitor::{FleetMonitor, MonitorConfig};
use prognos_models::profile::{AssetProfile, builtin_rotating};
use sqlx::Row;
use tokio::sync::mpsc as tokio_mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::Service;
use crate::alerts::AlertStore;

/// One device reading: all metrics a message carried for one timestamp.
struct Sample {
    device: Arc<str>,
    ts_ms: i64,
    metrics: Vec<(Arc<str>, f64)>,
}

/// Settings of the online scoring.
#[derive(Debug, Clone)]
pub struct ScoringConfig {
    pub monitor: MonitorConfig,
    /// Asset profiles per device model; the built-in rotating-machine profile (the
    /// simulator's physics) is always there unless a profile of the same name replaces it.
    pub profiles: Vec<AssetProfile>,
    /// Batches of samples waiting for the monitor thread (0 = the default, 1024).
    pub queue_batches: usize,
    /// How often device models and close codes are read again from the store.
    pub refresh_interval: Duration,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            monitor: MonitorConfig::default(),
            profiles: Vec::new(),
            queue_batches: 0,
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// What the monitor thread is told besides samples.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Control {
    DeviceModel {
        device_id: String,
        model: String,
    },
    Feedback {
        model: String,
        failure_mode: String,
        close_code: String,
        /// Leading metric and direction of a learned alert's evidence.
        pattern: Option<String>,
        /// The failure the technician found, when the report's cause names one.
        found_mode: Option<String>,
    },
}

/// A report's cause names a failure mode when it is an identifier
/// (`bearing_wear`); free text names none.
fn mode_named_by(cause: &str) -> Option<String> {
    let c = cause.trim();
    let ok = !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then(|| c.to_string())
}

/// Where the feedback read has got to: (report time, ticket id) of the last report read.
pub(crate) type FeedbackCursor = (i64, String);

/// Device models known to the asset record.
async fn device_models(svc: &Service) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows = sqlx::query("SELECT device_id, model FROM devices WHERE model IS NOT NULL")
        .fetch_all(svc.pool())
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect())
}

/// Close codes of predictive tickets reported after `cursor`, oldest first, bounded.
pub(crate) async fn repair_feedback(
    svc: &Service,
    cursor: &FeedbackCursor,
) -> Result<(Vec<Control>, FeedbackCursor), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.created_at_ms, r.ticket_id, COALESCE(d.model, ''), t.failure_mode, r.close_code,
                COALESCE(a.evidence, ''), r.cause
           FROM service_reports r
           JOIN tickets t ON t.ticket_id = r.ticket_id
           LEFT JOIN devices d ON d.device_id = t.device_id
           LEFT JOIN alerts a ON a.alert_id = t.alert_id
          WHERE t.source = 'predictive' AND t.failure_mode IS NOT NULL
            AND r.close_code IN ('false_alarm', 'confirmed')
            AND (r.created_at_ms > $1 OR (r.created_at_ms = $1 AND r.ticket_id > $2))
          ORDER BY r.created_at_ms, r.ticket_id
          LIMIT 10000",
    )
    .bind(cursor.0)
    .bind(&cursor.1)
    .fetch_all(svc.pool())
    .await?;
    let mut next = cursor.clone();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        next = (r.get(0), r.get(1));
        let evidence: String = r.get(5);
        let pattern = serde_json::from_str::<Evidence>(&evidence)
            .ok()
            .and_then(|e| alert_pattern(&e));
        out.push(Control::Feedback {
            model: r.get(2),
            failure_mode: r.get(3),
            close_code: r.get(4),
            pattern,
            found_mode: mode_named_by(&r.get::<String, _>(6)),
        });
    }
    Ok((out, next))
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
    refresh_task: tokio::task::JoinHandle<()>,
    lookup_task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

/// Why online scoring could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read device models or close codes: {0}")]
    Store(#[from] sqlx::Error),
    #[error("cannot start the monitor thread: {0}")]
    Thread(std::io::Error),
}

/// Longest the monitor waits for the store to name a new device's model.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the store for a device's model from the monitor thread (blocking, bounded).
fn lookup_model(
    lookup: &tokio_mpsc::UnboundedSender<(String, SyncSender<Option<String>>)>,
    device_id: &str,
) -> Option<String> {
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    lookup.send((device_id.to_owned(), reply_tx)).ok()?;
    reply_rx.recv_timeout(LOOKUP_TIMEOUT).ok().flatten()
}

/// Applies what the refresh task learned, before the next batch of samples.
fn apply_controls(monitor: &mut FleetMonitor, controls: &Receiver<Control>) {
    while let Ok(c) = controls.try_recv() {
        match c {
            Control::DeviceModel { device_id, model } => {
                monitor.set_device_model(&device_id, &model)
            }
            Control::Feedback {
                model,
                failure_mode,
                close_code,
                pattern,
                found_mode,
            } => {
                let multiplier = match &pattern {
                    Some(p) => monitor.feedback_pattern(
                        &model,
                        &failure_mode,
                        p,
                        &close_code,
                        found_mode.as_deref(),
                    ),
                    None => monitor.feedback(&model, &failure_mode, &close_code),
                };
                info!(
                    model,
                    failure_mode, close_code, pattern, found_mode, multiplier, "repair feedback"
                );
            }
        }
    }
}

impl OnlineScoring {
    /// Starts the monitor thread and the alert task (needs a tokio runtime). Alerts stored
    /// earlier without a ticket (a crash between the two) get their ticket first.
    pub async fn start(
        config: ScoringConfig,
        store: AlertStore,
        svc: Service,
    ) -> Result<OnlineScoring, StartError> {
        let mut known_models = device_models(&svc).await?;
        let known_at_start: HashSet<String> = known_models.keys().cloned().collect();
        let (lookup_tx, mut lookup_rx) =
            tokio_mpsc::unbounded_channel::<(String, SyncSender<Option<String>>)>();
        let lookup_task = {
            let svc = svc.clone();
            tokio::spawn(async move {
                while let Some((device_id, reply)) = lookup_rx.recv().await {
                    let model: Option<String> =
                        sqlx::query_scalar("SELECT model FROM devices WHERE device_id = $1")
                            .bind(&device_id)
                            .fetch_optional(svc.pool())
                            .await
                            .unwrap_or_else(|e| {
                                warn!(error = %e, device_id, "cannot read a device's model");
                                None
                            })
                            .flatten();
                    let _ = reply.send(model);
                }
            })
        };
        let (feedback, mut cursor) = repair_feedback(&svc, &(i64::MIN, String::new())).await?;
        let (control_tx, control_rx) = mpsc::channel::<Control>();
        for (device_id, model) in &known_models {
            let _ = control_tx.send(Control::DeviceModel {
                device_id: device_id.clone(),
                model: model.clone(),
            });
        }
        for f in feedback {
            let _ = control_tx.send(f);
        }
        let mut profiles = vec![builtin_rotating()];
        for p in &config.profiles {
            profiles.retain(|q| q.name != p.name);
            profiles.push(p.clone());
        }
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
                monitor.set_profiles(profiles);
                let mut looked_up: HashSet<Arc<str>> = HashSet::new();
                while let Ok(batch) = rx.recv() {
                    apply_controls(&mut monitor, &control_rx);
                    for sample in &batch {
                        // A device seen for the first time: its model decides its profile,
                        // so ask the store before its first reading is scored.
                        if !known_at_start.contains(&*sample.device)
                            && looked_up.insert(sample.device.clone())
                            && let Some(model) = lookup_model(&lookup_tx, &sample.device)
                        {
                            monitor.set_device_model(&sample.device, &model);
                        }
                    }
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
            })
            .map_err(StartError::Thread)?;
        let stop = CancellationToken::new();
        let refresh_task = {
            let svc = svc.clone();
            let stop = stop.clone();
            let period = config.refresh_interval.max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    match device_models(&svc).await {
                        Ok(now) => {
                            for (device_id, model) in now {
                                if known_models.get(&device_id) != Some(&model) {
                                    known_models.insert(device_id.clone(), model.clone());
                                    let _ =
                                        control_tx.send(Control::DeviceModel { device_id, model });
                                }
                            }
                        }
                        Err(e) => warn!(error = %e, "cannot read device models"),
                    }
                    match repair_feedback(&svc, &cursor).await {
                        Ok((feedback, next)) => {
                            cursor = next;
                            for f in feedback {
                                let _ = control_tx.send(f);
                            }
                        }
                        Err(e) => warn!(error = %e, "cannot read repair feedback"),
                    }
                }
            })
        };
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
            refresh_task,
            lookup_task,
            stop,
        })
    }

    /// The commit observer to hand to the ingest.
    pub fn observer(&self) -> Arc<dyn CommitObserver> {
        self.observer.clone()
    }

    /// Waits until every alert event raised before the ingest shut down is stored and has
    /// its ticket. Call after the ingest (which holds the other observer handle) has stopped.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.refresh_task.await;
        drop(self.observer);
        if let Err(e) = self.alert_task.await {
            error!(error = %e, "alert task failed");
        }
        // The monitor thread has ended (its events are all in): nothing asks any more.
        let _ = self.lookup_task.await;
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
