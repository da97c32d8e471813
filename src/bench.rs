//! `prognos bench ingest`: the full path on loopback — N devices publishing QoS 1 over real
//! MQTT connections → broker → WAL → Parquet — and the same load against Mosquitto with a
//! subscriber that only counts. Prints one JSON object; BENCHMARKS.md records the figures.

use std::collections::HashMap;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prognos_ingest::{CommitObserver, CommittedBatch};
use prognos_service::NewDevice;
use prognos_simulators::mqtt::{BrokerAddr, Credentials, LoadConfig, LoadReport, run_load};
use prognos_simulators::{Fleet, FleetConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::serve;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Throughput, publish→durable latency, RSS, bytes/point and loss of the ingest path.
    Ingest(IngestBenchArgs),
    /// Series and fleet queries on a Parquet data set, against DuckDB on the same files.
    Query(crate::bench_query::QueryBenchArgs),
    /// The fleet-wide Weibull fit on a large simulated service history, against DuckDB.
    Weibull(crate::bench_weibull::WeibullBenchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct IngestBenchArgs {
    /// Concurrent MQTT connections (devices).
    #[arg(long, default_value_t = 50)]
    pub devices: usize,
    /// Messages each device publishes.
    #[arg(long, default_value_t = 2000)]
    pub messages: u64,
    /// Metrics per message.
    #[arg(long, default_value_t = 20)]
    pub metrics: usize,
    /// Also run the load against Mosquitto (needs the `mosquitto` binary) and print the ratio.
    #[arg(long)]
    pub mosquitto: bool,
    /// Fleet size for the bytes-per-point measurement on simulator data.
    #[arg(long, default_value_t = 50)]
    pub fleet_devices: usize,
    /// Messages per second per device for the latency run (a paced, non-saturating load run
    /// after the saturating ones); 0 skips it.
    #[arg(long, default_value_t = 20.0)]
    pub paced_rate: f64,
    /// Hard limit for each load run, seconds.
    #[arg(long, default_value_t = 300)]
    pub time_limit: u64,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::Query(args) => {
            tokio::task::spawn_blocking(move || crate::bench_query::run(args)).await?
        }
        BenchCommand::Weibull(args) => {
            tokio::task::spawn_blocking(move || crate::bench_weibull::run(args)).await?
        }
    }
}

/// Records when each message became durable, keyed by the `ts` the load generator put in it
/// (its send time, epoch ms).
#[derive(Default)]
struct DurableLatency {
    samples_ms: Mutex<Vec<i64>>,
    messages: AtomicU64,
    metrics_per_message: usize,
}

impl CommitObserver for DurableLatency {
    fn committed(&self, batch: &CommittedBatch<'_>) {
        let now_ms = serve::now_us() / 1000;
        let step = self.metrics_per_message.max(1);
        let mut samples = self
            .samples_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for row in batch.rows.iter().step_by(step) {
            samples.push(now_ms - row.ts_us / 1000);
        }
        self.messages
            .fetch_add(batch.messages.len() as u64, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Peak resident set size of this process, bytes (Linux `VmHWM`).
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// One run of the load against Prognos; returns the figures and the durable messages/s.
async fn prognos_run(
    args: &IngestBenchArgs,
    models_enabled: bool,
    rate_per_device: Option<f64>,
    ack_when_durable: bool,
) -> anyhow::Result<(serde_json::Value, f64, LoadConfig)> {
    let dir = tempfile::Builder::new()
        .prefix("prognos-bench-")
        .tempdir()?;
    let mut settings = Settings::defaults(dir.path().to_owned());
    settings.mqtt_addr = ([127, 0, 0, 1], 0).into();
    settings.http_addr = ([127, 0, 0, 1], 0).into();
    settings.flush_interval = Duration::from_secs(10);
    settings.models_enabled = models_enabled;
    settings.ack_when_durable = ack_when_durable;

    let observer = Arc::new(DurableLatency {
        metrics_per_message: args.metrics,
        ..Default::default()
    });
    let shutdown = CancellationToken::new();
    let running = serve::start(
        &settings,
        vec![observer.clone() as Arc<dyn CommitObserver>],
        shutdown.clone(),
    )
    .await?;
    let mqtt = running.mqtt_addrs[0];

    let mut load = LoadConfig::new(
        BrokerAddr::new(mqtt.ip().to_string(), mqtt.port()),
        args.devices,
        args.messages,
    );
    load.metrics_per_message = args.metrics;
    load.time_limit = Duration::from_secs(args.time_limit);
    load.rate_per_device = rate_per_device;
    let mut secrets = HashMap::new();
    for id in load.device_ids() {
        let issued = running
            .registry
            .add(&NewDevice {
                device_id: id,
                ..Default::default()
            })
            .await?;
        secrets.insert(issued.device_id, issued.secret);
    }
    load.credentials = Credentials::PerDevice(secrets);

    eprintln!(
        "bench: {} devices × {} messages × {} metrics over QoS 1 to Prognos (models {}, PUBACK {})…",
        args.devices,
        args.messages,
        args.metrics,
        if models_enabled { "on" } else { "off" },
        if ack_when_durable {
            "when durable"
        } else {
            "on arrival"
        }
    );
    let started = Instant::now();
    let report = run_load(&load).await?;
    let expected = report.sent;
    let deadline = Instant::now() + Duration::from_secs(60);
    while observer.messages.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let durable_elapsed = started.elapsed();
    let summary = running.shutdown().await?;
    let files = prognos_ingest::store::Store::open(&dir.path().join("telemetry"))?.files()?;
    let parquet_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let rss = peak_rss_bytes();

    let mut latency = observer
        .samples_ms
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    latency.sort_unstable();
    let stored_messages = summary.stats.messages;
    let stored_points = summary.stats.points;
    let secs = durable_elapsed.as_secs_f64().max(1e-9);
    let prognos = json!({
        "sent": report.sent,
        "acked": report.acked,
        "stored_messages": stored_messages,
        "stored_points": stored_points,
        "loss_messages": expected.saturating_sub(stored_messages),
        "lost_by_broker": summary.stats.lost_by_broker,
        "dead_letters": summary.stats.dead_letters_total,
        "seconds_to_durable": secs,
        "messages_per_s": stored_messages as f64 / secs,
        "points_per_s": stored_points as f64 / secs,
        "publish_to_ack_ms": {"p50": report.latency.p50_us as f64 / 1000.0, "p99": report.latency.p99_us as f64 / 1000.0},
        "publish_to_durable_ms": {"p50": percentile(&latency, 0.5), "p99": percentile(&latency, 0.99), "max": latency.last().copied().unwrap_or(0)},
        "parquet_files": files.len(),
        "parquet_bytes": parquet_bytes,
        "parquet_bytes_per_point": parquet_bytes as f64 / stored_points.max(1) as f64,
        "peak_rss_mib": rss as f64 / (1024.0 * 1024.0),
        "connection_errors": report.errors,
        "models": models_enabled,
        "ack_when_durable": ack_when_durable,
    });
    let rate = stored_messages as f64 / secs;
    Ok((prognos, rate, load))
}

async fn ingest(args: IngestBenchArgs) -> anyhow::Result<ExitCode> {
    let (prognos, rate, load) = prognos_run(&args, false, None, true).await?;
    // The baseline of the durable PUBACK: the same load acknowledged on arrival in memory.
    let (on_arrival, rate_on_arrival, _) = prognos_run(&args, false, None, false).await?;
    let (prognos_models, rate_models, _) = prognos_run(&args, true, None, true).await?;
    // The paced run lasts about 10 s.
    let paced = if args.paced_rate > 0.0 {
        let mut paced_args = args.clone();
        paced_args.messages = (args.paced_rate * 10.0).ceil() as u64;
        Some(
            prognos_run(&paced_args, true, Some(args.paced_rate), true)
                .await?
                .0,
        )
    } else {
        None
    };

    let fleet_bytes = tokio::task::spawn_blocking({
        let devices = args.fleet_devices;
        move || simulator_bytes_per_point(devices)
    })
    .await??;

    let mosquitto = if args.mosquitto {
        let mut load = load.clone();
        load.credentials = Credentials::Anonymous;
        Some(mosquitto_run(&load).await?)
    } else {
        None
    };
    let ratio = mosquitto.as_ref().map(|(r, _)| rate / r.max(1e-9));
    let out = json!({
        "load": {"devices": args.devices, "messages_per_device": args.messages, "metrics_per_message": args.metrics, "qos": 1},
        "prognos": prognos,
        "prognos_ack_on_arrival": on_arrival,
        "ack_when_durable_over_on_arrival_throughput": rate / rate_on_arrival.max(1e-9),
        "prognos_with_models": prognos_models,
        "prognos_paced_with_models": paced.map(|p| json!({
            "offered_messages_per_s": args.paced_rate * args.devices as f64,
            "offered_points_per_s": args.paced_rate * (args.devices * args.metrics) as f64,
            "result": p,
        })),
        "models_on_over_off_throughput": rate_models / rate.max(1e-9),
        "simulator_parquet": fleet_bytes,
        "mosquitto": mosquitto.map(|(rate, r)| json!({
            "messages_per_s": rate,
            "points_per_s": rate * args.metrics as f64,
            "acked": r.acked,
            "publish_to_ack_ms": {"p50": r.latency.p50_us as f64 / 1000.0, "p99": r.latency.p99_us as f64 / 1000.0},
            "note": "Mosquitto 2 with a QoS 1 subscriber that only counts (no storage)",
        })),
        "prognos_over_mosquitto_throughput": ratio,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// Parquet bytes per point for simulated fleet data (30 days at 1-minute readings) written
/// by the same store the ingest uses.
fn simulator_bytes_per_point(devices: usize) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::Builder::new()
        .prefix("prognos-bench-fleet-")
        .tempdir()?;
    let days = 30.0;
    let mut fleet = Fleet::new(FleetConfig {
        devices,
        seed: 7,
        sample_interval_ms: 60_000,
        ..FleetConfig::default()
    })?;
    let ticks = fleet.ticks_per_days(days);
    let written = crate::simulate::write_parquet(&mut fleet, ticks, dir.path())?;
    Ok(json!({
        "devices": devices,
        "days": days,
        "interval_s": 60,
        "points": written.points,
        "files": written.files,
        "bytes": written.bytes,
        "bytes_per_point": written.bytes as f64 / written.points.max(1) as f64,
        "generate_and_write_s": written.elapsed_s,
    }))
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `load` against a local Mosquitto with a QoS 1 subscriber that only counts; returns
/// messages/s (from the first publish to the subscriber's last message) and the load report.
async fn mosquitto_run(load: &LoadConfig) -> anyhow::Result<(f64, LoadReport)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false\n"
        ),
    )?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start mosquitto (apt-get install mosquitto)")?;
    let _guard = KillOnDrop(child);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let total = load.devices as u64 * load.messages_per_device;
    let received = Arc::new(AtomicU64::new(0));
    let subscriber = {
        let received = received.clone();
        let mut opts = rumqttc::MqttOptions::new("bench-counter", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10_000);
        client
            .subscribe("prognos/v1/+/telemetry", rumqttc::QoS::AtLeastOnce)
            .await?;
        tokio::spawn(async move {
            let _client = client;
            while let Ok(event) = eventloop.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = event {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("bench: same load against Mosquitto…");
    let mut load = load.clone();
    load.addr = BrokerAddr::new("127.0.0.1", port);
    let started = Instant::now();
    let report = run_load(&load).await?;
    if let Some(e) = &report.last_error {
        eprintln!(
            "bench: Mosquitto load errors: {} (last: {e})",
            report.errors
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    subscriber.abort();
    Ok((received.load(Ordering::Relaxed) as f64 / secs, report))
}
