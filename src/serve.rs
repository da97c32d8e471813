//! `prognos serve`: broker + ingest + HTTP, wired together, with graceful shutdown.
//!
//! Shutdown order matters for durability: stop accepting MQTT connections, let the link
//! reader drain what the router already acknowledged, then let the ingest commit and write
//! everything to Parquet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prognos_broker::{
    AuthCheck, Authenticator, Broker, ClientLogin, DurableAck, IngestLink, LinkEvent, TopicAcl,
};
use prognos_http::ops::{self as http, Health};
use prognos_ingest::{CommitObserver, Ingest, IngestSummary, Message, Stats, Submitter};
use prognos_service::jobs::{Jobs, JobsConfig};
use prognos_service::online::{OnlineScoring, ScoringConfig};
use prognos_service::{AlertStore, Database, DeviceRegistry, MqttClientRegistry, Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Settings;

/// The registry answers the broker's authentication questions: devices, then named clients.
struct RegistryAuth {
    devices: DeviceRegistry,
    clients: MqttClientRegistry,
}

/// Passes the ingest's durability confirmations to the broker, which sends the PUBACKs.
struct AckWhenDurable(DurableAck);

impl CommitObserver for AckWhenDurable {
    fn committed(&self, _batch: &prognos_ingest::CommittedBatch<'_>) {}

    fn durable(&self, token: u64) {
        self.0.confirm(token);
    }
}

impl AuthCheck for RegistryAuth {
    fn check<'a>(
        &'a self,
        device_id: &'a str,
        secret: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(self.devices.verify_secret(device_id, secret))
    }

    fn client<'a>(
        &'a self,
        login: ClientLogin<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<TopicAcl>> + Send + 'a>> {
        Box::pin(async move {
            let rules = self
                .clients
                .login(login.username, login.password, login.client_id)
                .await?;
            Some(TopicAcl {
                publish: rules.publish,
                subscribe: rules.subscribe,
                deny: rules.deny,
            })
        })
    }
}

/// A running server, for callers that drive it (demo, bench, tests).
pub struct Running {
    pub mqtt_addrs: Vec<SocketAddr>,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub stats: Arc<Stats>,
    pub registry: DeviceRegistry,
    pub alert_store: AlertStore,
    pub db: Database,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<IngestSummary>>,
}

impl Running {
    /// Requests a graceful stop and waits for it.
    pub async fn shutdown(self) -> anyhow::Result<IngestSummary> {
        self.stop.cancel();
        self.task.await.context("server task failed")?
    }

    pub async fn wait(self) -> anyhow::Result<IngestSummary> {
        self.task.await.context("server task failed")?
    }
}

/// Opens the store, binds every port (so a port in use is an error here), and starts
/// serving. `shutdown` stops it gracefully.
pub async fn start(
    settings: &Settings,
    mut observers: Vec<Arc<dyn CommitObserver>>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
    let db = Database::open_file(&settings.data_dir.join("prognos.db")).await?;
    let registry = DeviceRegistry::new(db.clone());
    let alert_store = AlertStore::new(db.clone());
    let metrics = http::metrics_handle().context("cannot install the metrics recorder")?;
    let online = if settings.models_enabled {
        let scoring = ScoringConfig {
            profiles: settings.profiles.clone(),
            ..ScoringConfig::default()
        };
        let online = OnlineScoring::start(scoring, alert_store.clone(), Service::new(db.clone()))
            .await
            .context("cannot start the online models")?;
        observers.push(online.observer());
        Some(online)
    } else {
        None
    };
    let mut service_api = prognos_http::ApiContext::new(db.clone());
    service_api.telemetry_root = Some(settings.data_dir.join("telemetry"));
    service_api.auth_throttle = settings.auth_throttle;
    service_api.webhook_policy = settings.webhook_policy.clone();
    service_api.telemetry_limits = settings.telemetry_limits;
    let jobs_config = JobsConfig {
        sla_interval: settings.sla_check_interval,
        ..JobsConfig::default()
    };
    // The webhook transport checks each connection with the same policy registration used.
    let webhook_transport = prognos_http::webhook_client::HyperTransport::new(
        service_api.service().webhook_policy().clone(),
        settings.webhook_ca_file.as_deref(),
    )
    .context("config: service.webhook_ca_file")?;

    let http_listener = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", settings.http_addr))?;
    let http_addr = http_listener.local_addr()?;
    let auth = Authenticator::with_throttle(
        Arc::new(RegistryAuth {
            devices: registry.clone(),
            clients: MqttClientRegistry::new(db.clone()),
        }),
        settings.mqtt_auth_throttle.clone(),
    );
    let mut broker = Broker::start(&settings.broker_config(), auth).await?;
    let mqtt_addrs = broker.local_addrs();
    let link = broker
        .take_ingest_link()
        .context("the broker has no ingest link")?;
    // Devices' PUBACKs wait for this: the ingest tells the router what its fsync covered.
    observers.push(Arc::new(AckWhenDurable(link.durable_ack())));

    let ingest = tokio::task::spawn_blocking({
        let config = settings.ingest_config();
        move || Ingest::start(config, observers)
    })
    .await??;
    let stats = ingest.stats();
    let health = Arc::new(Health {
        mqtt: broker.health(),
        ..Health::default()
    });
    let tls_reload = broker.tls_reload();
    if !tls_reload.is_empty() {
        crate::signals::reload_tls_on_hangup(tls_reload, shutdown.clone())?;
    }

    let stop = shutdown.child_token();
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let submitter = ingest.submitter();
        let reader_stop = reader_stop.clone();
        let health = health.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("ingest-link-reader".into())
            .spawn(move || {
                let result = read_link(link, submitter, &reader_stop);
                match &result {
                    Err(ReadError::RouterGone(e)) => {
                        error!(error = %e, "MQTT router lost: shutting down");
                        health.router_lost.store(true, Ordering::Relaxed);
                        stop.cancel();
                    }
                    Err(ReadError::IngestClosed) => {
                        error!("the ingest stopped accepting (see its error): shutting down");
                        health.ingest_failed.store(true, Ordering::Relaxed);
                        stop.cancel();
                    }
                    Ok(()) => {}
                }
                result
            })
            .context("cannot start the link reader")?
    };

    let broker_task = tokio::spawn(broker.serve(stop.clone()));
    let jobs = Jobs::start(
        service_api.service(),
        jobs_config,
        Arc::new(webhook_transport),
        stop.clone(),
    );
    let http_task = tokio::spawn(http::serve(
        http_listener,
        prognos_http::router(service_api),
        http::AppState {
            stats: stats.clone(),
            health: health.clone(),
            metrics,
        },
        settings.http_limits,
        stop.clone(),
    ));
    info!(mqtt = ?mqtt_addrs, http = %http_addr, data_dir = %settings.data_dir.display(), "Prognos serving");

    let task = {
        let stop = stop.clone();
        let health = health.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            let began = Instant::now();
            broker_task.await.ok();
            reader_stop.store(true, Ordering::Relaxed);
            let reader_result = tokio::task::spawn_blocking(move || reader.join()).await;
            let summary = tokio::task::spawn_blocking(move || ingest.shutdown()).await??;
            if let Some(online) = online {
                online.finish().await;
            }
            http_task.await.ok();
            jobs.finish().await;
            info!(
                elapsed_ms = began.elapsed().as_millis() as u64,
                points = summary.stats.points,
                "drained to Parquet"
            );
            match reader_result {
                Ok(Ok(Ok(()))) => Ok(summary),
                Ok(Ok(Err(e))) => Err(anyhow::anyhow!(e)),
                _ => {
                    health.ingest_failed.store(true, Ordering::Relaxed);
                    anyhow::bail!("the link reader panicked")
                }
            }
        })
    };

    Ok(Running {
        mqtt_addrs,
        http_addr,
        data_dir: settings.data_dir.clone(),
        stats,
        registry,
        alert_store,
        db,
        stop,
        task,
    })
}

/// Longest a drain waits for the router to go quiet after shutdown starts.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);
const DRAIN_IDLE: Duration = Duration::from_millis(200);
const BATCH_MESSAGES: usize = 2048;

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    RouterGone(#[from] prognos_broker::LinkError),
    #[error("the ingest stopped before the broker")]
    IngestClosed,
}

/// Moves publishes from the router to the ingest queue, in batches. Never touches disk, so
/// it keeps up with the router as long as the queue has room.
fn read_link(
    mut link: IngestLink,
    submitter: Submitter,
    stop: &AtomicBool,
) -> Result<(), ReadError> {
    // `offset`: the link offset of the batch's last publish. Once the ingest has made the
    // batch durable, the router acknowledges every publish up to it.
    let submit = |batch: &mut Vec<Message>, offset: &mut Option<u64>| {
        let messages = std::mem::take(batch);
        match offset.take() {
            Some(offset) => submitter.submit_tracked(messages, offset),
            None => submitter.submit(messages),
        }
        .map_err(|_| ReadError::IngestClosed)
    };
    let mut last_offset: Option<u64> = None;
    let mut batch = Vec::with_capacity(BATCH_MESSAGES);
    let mut draining_since: Option<Instant> = None;
    loop {
        let timeout = if !batch.is_empty() {
            Duration::from_millis(1)
        } else if draining_since.is_some() {
            DRAIN_IDLE
        } else {
            Duration::from_millis(100)
        };
        match link.recv_timeout(timeout)? {
            Some(LinkEvent::Publish(publish)) => {
                if publish.offset.is_some() {
                    last_offset = publish.offset;
                }
                batch.push(Message {
                    topic: publish.topic,
                    payload: publish.payload,
                    received_us: now_us(),
                });
                if batch.len() >= BATCH_MESSAGES {
                    submit(&mut batch, &mut last_offset)?;
                }
            }
            Some(LinkEvent::Lost(count)) => submitter.report_lost(count),
            None => {
                if !batch.is_empty() {
                    submit(&mut batch, &mut last_offset)?;
                    continue;
                }
                if draining_since.is_some() {
                    return Ok(());
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            let since = *draining_since.get_or_insert_with(Instant::now);
            if since.elapsed() > DRAIN_LIMIT {
                return submit(&mut batch, &mut last_offset);
            }
        }
    }
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
