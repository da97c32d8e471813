//! `prognos simulate`: the simulated fleet, either published over MQTT to a running server
//! or generated in accelerated time straight into a Parquet data set (through the ingest's
//! store, so the files are exactly what the pipeline would have written).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use prognos_ingest::Row;
use prognos_ingest::store::Store;
use prognos_simulators::mqtt::{BrokerAddr, Credentials, Pace, PublishConfig, publish_fleet};
use prognos_simulators::{Fleet, FleetConfig};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    #[arg(long, default_value_t = 90.0)]
    pub days: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Minutes between readings.
    #[arg(long, default_value_t = 10)]
    pub interval_min: i64,
    /// First timestamp, RFC 3339 (default: `--days` before now).
    #[arg(long)]
    pub start: Option<String>,
    /// Write a Parquet data set (`telemetry/…`), labels and devices here, in accelerated time.
    #[arg(long, conflicts_with = "mqtt_addr")]
    pub out: Option<PathBuf>,
    /// Publish over MQTT to this broker instead.
    #[arg(long)]
    pub mqtt_addr: Option<std::net::SocketAddr>,
    /// JSON object {device_id: secret} for MQTT authentication (from `prognos device add`).
    #[arg(long, requires = "mqtt_addr")]
    pub credentials: Option<PathBuf>,
    /// Simulated-time speed-up for MQTT (1 = real time); default as fast as possible.
    #[arg(long, requires = "mqtt_addr")]
    pub speedup: Option<f64>,
    /// With --mqtt-addr: write the ground-truth labels (JSON lines) here after publishing.
    #[arg(long, requires = "mqtt_addr")]
    pub labels: Option<PathBuf>,
    /// With --mqtt-addr: write {device_id: secret} for every fleet device registered in this
    /// data dir's registry first (convenience for demos and tests).
    #[arg(long, requires = "mqtt_addr")]
    pub register_in: Option<PathBuf>,
}

const ROWS_PER_FILE: usize = 4_000_000;

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let interval_ms = args.interval_min.max(1) * 60_000;
    let start_ms = match &args.start {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--start {text:?} is not RFC 3339"))?
            .timestamp_millis(),
        None => crate::serve::now_us() / 1000 - (args.days * 86_400_000.0) as i64,
    };
    let mut fleet = Fleet::new(FleetConfig {
        devices: args.devices,
        seed: args.seed,
        start_ms,
        sample_interval_ms: interval_ms,
        ..FleetConfig::default()
    })?;
    let ticks = fleet.ticks_per_days(args.days);

    if let Some(addr) = args.mqtt_addr {
        let mut publish =
            PublishConfig::new(BrokerAddr::new(addr.ip().to_string(), addr.port()), ticks);
        if let Some(data_dir) = &args.register_in {
            let db = prognos_service::Database::open_file(&data_dir.join("prognos.db")).await?;
            let registry = prognos_service::DeviceRegistry::new(db);
            let mut secrets = std::collections::HashMap::new();
            for d in fleet.devices() {
                let issued = registry
                    .add(&prognos_service::NewDevice {
                        device_id: d.id.clone(),
                        model: Some(d.model.to_owned()),
                        serial: Some(d.serial.clone()),
                        batch: Some(d.batch.clone()),
                        site: Some(d.site.clone()),
                    })
                    .await?;
                secrets.insert(issued.device_id, issued.secret);
            }
            publish.credentials = Credentials::PerDevice(secrets);
        }
        if let Some(path) = &args.credentials {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            publish.credentials =
                Credentials::PerDevice(serde_json::from_str(&text).with_context(|| {
                    format!("{} is not a JSON object of secrets", path.display())
                })?);
        }
        if let Some(x) = args.speedup {
            publish.pace = Pace::Speedup(x);
        }
        let report = publish_fleet(&mut fleet, &publish).await?;
        if let Some(path) = &args.labels {
            prognos_simulators::write_labels_jsonl(
                fleet.labels(),
                std::fs::File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            )?;
        }
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({
                "devices": report.devices,
                "ticks": report.ticks,
                "published": report.telemetry_published,
                "acked": report.acked,
                "dropped": report.telemetry_dropped,
                "connection_errors": report.connection_errors,
                "elapsed_s": report.elapsed.as_secs_f64(),
            }))?
        );
        return Ok(if report.connections_failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let out = args
        .out
        .context("give --out DIR (Parquet) or --mqtt-addr HOST:PORT (MQTT)")?;
    let written =
        tokio::task::spawn_blocking(move || write_parquet(&mut fleet, ticks, &out)).await??;
    println!("{}", serde_json::to_string(&written)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, serde::Serialize)]
pub struct Written {
    pub points: u64,
    pub files: usize,
    pub bytes: u64,
    pub failures: usize,
    pub elapsed_s: f64,
    pub telemetry: PathBuf,
    pub labels: PathBuf,
}

/// Generates `ticks` ticks into `out/telemetry`, `out/labels.jsonl`, `out/devices.jsonl`.
pub fn write_parquet(
    fleet: &mut Fleet,
    ticks: u64,
    out: &std::path::Path,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let store = Store::open(&out.join("telemetry"))?;
    let names: Vec<std::sync::Arc<str>> = fleet
        .devices()
        .iter()
        .map(|d| std::sync::Arc::from(d.id.as_str()))
        .collect();
    let mut metric_names: std::collections::HashMap<&'static str, std::sync::Arc<str>> =
        Default::default();
    let mut rows: Vec<Row> = Vec::with_capacity(ROWS_PER_FILE);
    let mut batch_no = 0u64;
    let mut points = 0u64;
    for _ in 0..ticks {
        let tick = fleet.next_tick();
        for reading in tick.readings {
            for (metric, value) in reading.metrics {
                let metric = metric_names
                    .entry(metric)
                    .or_insert_with(|| std::sync::Arc::from(metric))
                    .clone();
                rows.push(Row {
                    device: names[reading.device].clone(),
                    metric,
                    ts_us: reading.ts_ms * 1000,
                    value,
                });
            }
        }
        if rows.len() >= ROWS_PER_FILE {
            batch_no += 1;
            points += rows.len() as u64;
            store.write_flush(std::mem::take(&mut rows), batch_no, batch_no)?;
        }
    }
    if !rows.is_empty() {
        batch_no += 1;
        points += rows.len() as u64;
        store.write_flush(rows, batch_no, batch_no)?;
    }
    let policy = prognos_ingest::store::CompactionPolicy::closed(2);
    store.compact(batch_no, &policy)?;
    // Every day is closed: merge each into its day file, as the ingest does once a day ends.
    store.compact_days(batch_no, &policy)?;
    let files = store.files()?;
    let labels = out.join("labels.jsonl");
    prognos_simulators::write_labels_jsonl(fleet.labels(), std::fs::File::create(&labels)?)?;
    prognos_simulators::write_devices_jsonl(
        fleet.devices(),
        std::fs::File::create(out.join("devices.jsonl"))?,
    )?;
    Ok(Written {
        points,
        files: files.len(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        failures: fleet.labels().len(),
        elapsed_s: started.elapsed().as_secs_f64(),
        telemetry: store.root().to_owned(),
        labels,
    })
}
