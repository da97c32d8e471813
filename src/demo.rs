//! `prognos demo`: the whole system on embedded defaults — a server on free loopback ports,
//! a registered simulated fleet publishing weeks of telemetry over real MQTT (QoS 1) in
//! accelerated time, a live progress line, and a summary of what landed where.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use prognos_ingest::Stats;
use prognos_service::NewDevice;
use prognos_simulators::mqtt::{BrokerAddr, Credentials, PublishConfig, publish_fleet};
use prognos_simulators::{Fleet, FleetConfig};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::serve;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Data directory to use (default: a new temporary directory, kept afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Simulated machines.
    #[arg(long, default_value_t = 50)]
    pub devices: usize,
    /// Days of history to publish, ending now.
    #[arg(long, default_value_t = 30.0)]
    pub days: f64,
    /// Minutes between readings.
    #[arg(long, default_value_t = 10)]
    pub interval_min: i64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Stop after the summary (for scripts and tests). Without it the server keeps running
    /// with the web console, and the summary prints sign-ins, until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("prognos-demo-")
            .tempdir()
            .context("cannot create a temporary data dir")?
            .keep(),
    };
    let mut settings = Settings::defaults(data_dir.clone());
    settings.mqtt_addr = ([127, 0, 0, 1], 0).into();
    settings.http_addr = ([127, 0, 0, 1], 0).into();
    settings.flush_interval = Duration::from_secs(5);

    let shutdown = CancellationToken::new();
    crate::signals::cancel_on_signal(shutdown.clone())?;
    let running = serve::start(&settings, Vec::new(), shutdown.clone()).await?;
    let mqtt = running.mqtt_addrs[0];
    eprintln!(
        "prognos demo: MQTT on {mqtt}, HTTP on http://{}/metrics, data in {}",
        running.http_addr,
        data_dir.display()
    );

    let now_ms = serve::now_us() / 1000;
    let interval_ms = args.interval_min.max(1) * 60_000;
    let days_ms = (args.days * 86_400_000.0) as i64;
    let mut fleet = Fleet::new(FleetConfig {
        devices: args.devices,
        seed: args.seed,
        start_ms: now_ms - days_ms,
        sample_interval_ms: interval_ms,
        ..FleetConfig::default()
    })?;
    let ticks = fleet.ticks_per_days(args.days);

    let mut secrets = HashMap::new();
    for device in fleet.devices() {
        let issued = running
            .registry
            .add(&NewDevice {
                device_id: device.id.clone(),
                model: Some(device.model.to_owned()),
                serial: Some(device.serial.clone()),
                batch: Some(device.batch.clone()),
                site: Some(device.site.clone()),
            })
            .await
            .map_err(|e| match e {
                // A re-used data dir already has the fleet, whose secrets were shown once.
                prognos_service::RegistryError::Duplicate(_) => anyhow::anyhow!(
                    "device {} is already registered in {}: use a new --data-dir",
                    device.id,
                    data_dir.display()
                ),
                e => e.into(),
            })?;
        secrets.insert(issued.device_id, issued.secret);
    }

    let demo_devices: Vec<prognos_demo::DemoDevice> = fleet
        .devices()
        .iter()
        .map(|d| prognos_demo::DemoDevice {
            device_id: d.id.clone(),
            model: d.model.to_owned(),
            serial: d.serial.clone(),
            batch: d.batch.clone(),
            site: d.site.clone(),
            region: d.region.to_owned(),
            lat: d.lat,
            lon: d.lon,
            criticality: d.criticality,
            firmware: d.firmware.to_owned(),
            install_ms: d.install_ms,
        })
        .collect();
    let network = prognos_demo::seed_demo_network(&running.db, &demo_devices).await?;
    eprintln!(
        "prognos demo: service network of {} providers, {} technicians, {} stock locations, {} parts in {} regions",
        network.providers, network.technicians, network.locations, network.parts, network.regions
    );
    // The years before monitoring: past breakdowns as closed tickets, for the analytics.
    let past: Vec<prognos_demo::PastRepair> = fleet
        .history_before_start()
        .failures
        .iter()
        .map(|f| prognos_demo::PastRepair {
            device_id: f.device_id.clone(),
            failure_mode: f.failure_mode.as_str().to_owned(),
            failed_ms: f.failure_ms,
            restored_ms: f.repaired_ms,
        })
        .collect();
    let imported = prognos_demo::import_history(&running.db, &past, args.seed)
        .await
        .context("cannot import the service history")?;
    eprintln!("prognos demo: {imported} past repairs imported as closed tickets");

    let mut publish =
        PublishConfig::new(BrokerAddr::new(mqtt.ip().to_string(), mqtt.port()), ticks);
    publish.credentials = Credentials::PerDevice(secrets);
    publish.time_limit = Duration::from_secs(1800);

    let progress = tokio::spawn(progress_line(running.stats.clone(), shutdown.clone()));
    let started = Instant::now();
    let report = tokio::select! {
        report = publish_fleet(&mut fleet, &publish) => Some(report?),
        _ = shutdown.cancelled() => None,
    };
    // Wait (bounded) for the ingest to have committed everything that was acknowledged.
    if let Some(report) = &report {
        let deadline = Instant::now() + Duration::from_secs(10);
        while running.stats.snapshot().messages < report.telemetry_published
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = started.elapsed();
    let alert_store = running.alert_store.clone();
    let db = running.db.clone();
    // Let the models finish the tail of the stream and the alerts become tickets, then
    // dispatch every open ticket at once (optimal assignment, parts reserved).
    settle(&db).await;
    let dispatch = dispatch_open_tickets(&db).await;
    // The technicians work the dispatched tickets; the ground truth decides the close codes.
    let mut truth: Vec<prognos_demo::Truth> = fleet
        .labels()
        .iter()
        .map(|l| prognos_demo::Truth {
            device_id: l.device_id.clone(),
            failure_mode: l.failure_mode.as_str().to_owned(),
            failed: true,
        })
        .collect();
    truth.extend(
        fleet
            .active_degradations()
            .iter()
            .map(|d| prognos_demo::Truth {
                device_id: d.device_id.clone(),
                failure_mode: d.failure_mode.as_str().to_owned(),
                failed: false,
            }),
    );
    truth.extend(fleet.maintenance().iter().filter_map(|m| {
        Some(prognos_demo::Truth {
            device_id: m.device_id.clone(),
            failure_mode: m.interrupted_mode?.as_str().to_owned(),
            failed: false,
        })
    }));
    // The busiest technician signs in to the console; when the demo keeps running, its jobs
    // stay open so that person has work to do.
    let busiest = prognos_demo::busiest_technician(&db).await?;
    let keep_open_for = busiest
        .as_ref()
        .filter(|_| !args.exit)
        .map(|b| b.0.as_str());
    let field_work = prognos_demo::complete_field_work(&db, &truth, args.seed, keep_open_for).await;
    let analytics = analytics_summary(&db).await;
    let sign_ins = prognos_demo::console_users(&db, busiest.as_ref())
        .await
        .context("cannot create the console users")?;
    let http_addr = running.http_addr;
    let (still_running, stats) = if args.exit {
        (None, running.shutdown().await?.stats)
    } else {
        // The server stays up: wait (bounded by two flush intervals) for the WAL to reach
        // Parquet, so the summary's file figures are the ones the console reads.
        let deadline = Instant::now() + 2 * settings.flush_interval + Duration::from_secs(1);
        while running.stats.snapshot().wal_lag_points > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stats = running.stats.snapshot();
        (Some(running), stats)
    };
    let tickets = tickets_by_state(&db).await.unwrap_or_default();
    let alerts = alert_store.list(None, None, 10_000).await?;
    progress.abort();
    eprintln!();

    let labels_path = data_dir.join("labels.jsonl");
    prognos_simulators::write_labels_jsonl(
        fleet.labels(),
        std::fs::File::create(&labels_path).context("cannot write labels")?,
    )?;
    let devices_path = data_dir.join("devices.jsonl");
    prognos_simulators::write_devices_jsonl(
        fleet.devices(),
        std::fs::File::create(&devices_path).context("cannot write devices")?,
    )?;

    let s = &stats;
    let telemetry = data_dir.join("telemetry");
    let files = prognos_ingest::store::Store::open(&telemetry)?.files()?;
    let on_disk: u64 = files.iter().map(|f| f.bytes).sum();
    let mut out = std::io::stdout().lock();
    writeln!(out, "Prognos demo summary")?;
    writeln!(
        out,
        "  fleet            {} devices, {} ticks of {} min ({} days), seed {}",
        args.devices, ticks, args.interval_min, args.days, args.seed
    )?;
    if let Some(r) = &report {
        writeln!(
            out,
            "  published        {} telemetry messages over MQTT QoS 1 in {:.1} s ({:.0} msg/s), {} acked, {} dropped, {} connection errors",
            r.telemetry_published,
            elapsed.as_secs_f64(),
            r.telemetry_published as f64 / elapsed.as_secs_f64().max(1e-9),
            r.acked,
            r.telemetry_dropped,
            r.connection_errors
        )?;
    } else {
        writeln!(out, "  published        interrupted")?;
    }
    writeln!(
        out,
        "  stored           {} messages, {} points",
        s.messages, s.points
    )?;
    writeln!(out, "  dead letters     {}", s.dead_letters_total)?;
    writeln!(out, "  lost by broker   {}", s.lost_by_broker)?;
    writeln!(
        out,
        "  parquet          {} files ({} written, {} partitions compacted), {} bytes on disk ({:.2} bytes/point)",
        files.len(),
        s.parquet_files,
        s.compactions,
        on_disk,
        on_disk as f64 / (s.points.max(1) as f64)
    )?;
    writeln!(
        out,
        "  failures         {} in the ground truth ({} from the defective batch)",
        fleet.labels().len(),
        fleet
            .labels()
            .iter()
            .filter(|l| fleet
                .devices()
                .get(l.device)
                .is_some_and(|d| d.defective_batch))
            .count()
    )?;
    writeln!(
        out,
        "  degrading now    {} machines in the ground truth: {}",
        fleet.active_degradations().len(),
        fleet
            .active_degradations()
            .iter()
            .map(|d| format!("{} ({})", d.device_id, d.failure_mode.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "  alerts           {} predictive alerts ({} still open){}",
        alerts.len(),
        alerts.iter().filter(|a| a.state != "resolved").count(),
        alerts
            .iter()
            .take(5)
            .map(|a| format!(
                "\n                   {} {} {} opened {}",
                a.device_id,
                a.failure_mode,
                a.severity,
                chrono::DateTime::from_timestamp_millis(a.opened_at_ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ))
            .collect::<String>()
    )?;
    writeln!(
        out,
        "  service network  {} providers, {} technicians, {} stock locations, {} part numbers",
        network.providers, network.technicians, network.locations, network.parts
    )?;
    writeln!(
        out,
        "  tickets          {}",
        if tickets.is_empty() {
            "none".to_owned()
        } else {
            tickets
                .iter()
                .map(|(state, n)| format!("{n} {state}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )?;
    match &dispatch {
        Ok(Some(result)) => writeln!(
            out,
            "  dispatch         {} assigned, {} unassigned (solved in {:.1} ms)",
            result.assignments.len(),
            result.unassigned.len(),
            result.solve_ms
        )?,
        Ok(None) => writeln!(out, "  dispatch         nothing open to dispatch")?,
        Err(e) => writeln!(out, "  dispatch         failed: {e}")?,
    }
    match &field_work {
        Ok(w) => writeln!(
            out,
            "  field work       predictive tickets closed: {} confirmed, {} other cause, {} false alarms; {} unwarned failures repaired; {} left open for the console's technician",
            w.confirmed, w.other_cause, w.false_alarms, w.missed_repaired, w.left_open
        )?,
        Err(e) => writeln!(out, "  field work       failed: {e}")?,
    }
    match &analytics {
        Ok(lines) => {
            for line in lines {
                writeln!(out, "  {line}")?;
            }
        }
        Err(e) => writeln!(out, "  analytics        failed: {e:#}")?,
    }
    if let Some(key) = &network.admin_key {
        writeln!(out, "  admin API key    {key}")?;
    }
    writeln!(out, "  console          http://{http_addr}/")?;
    for sign_in in &sign_ins {
        writeln!(
            out,
            "    sign in        {:<10} {:<14} password {}",
            sign_in.role, sign_in.name, sign_in.password
        )?;
    }
    writeln!(out, "  files")?;
    writeln!(
        out,
        "    telemetry      {}/date=*/[hour=*/]*.parquet",
        telemetry.display()
    )?;
    writeln!(
        out,
        "    dead letters   {}",
        data_dir.join("deadletter").display()
    )?;
    writeln!(
        out,
        "    registry       {}",
        data_dir.join("prognos.db").display()
    )?;
    writeln!(out, "    labels         {}", labels_path.display())?;
    writeln!(out, "    devices        {}", devices_path.display())?;
    writeln!(
        out,
        "  try              duckdb -c \"SELECT device_id, metric, count(*), avg(value) FROM read_parquet('{}/**/*.parquet', hive_partitioning = false) GROUP BY ALL ORDER BY ALL LIMIT 20\"",
        telemetry.display()
    )?;
    if let Some(running) = still_running {
        writeln!(
            out,
            "prognos demo: the server keeps running with the console at http://{http_addr}/ — Ctrl-C stops it (--exit stops after the summary)"
        )?;
        drop(out);
        shutdown.cancelled().await;
        running.wait().await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn progress_line(stats: Arc<Stats>, stop: CancellationToken) {
    let started = Instant::now();
    loop {
        let s = stats.snapshot();
        eprint!(
            "\r  {:>5.1} s  stored {:>9} messages {:>10} points  WAL lag {:>8}  dead letters {:>4}  parquet files {:>4}   ",
            started.elapsed().as_secs_f64(),
            s.messages,
            s.points,
            s.wal_lag_points,
            s.dead_letters_total,
            s.parquet_files
        );
        std::io::stderr().flush().ok();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Waits (bounded) until the alert and ticket tables stop changing.
async fn settle(db: &prognos_service::Database) {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = prognos_demo::activity_counts(db).await.ok();
        if now.is_some() && now == last {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

async fn dispatch_open_tickets(
    db: &prognos_service::Database,
) -> anyhow::Result<Option<prognos_service::dispatch::BatchResult>> {
    let open = prognos_demo::dispatchable_ticket_ids(db).await?;
    if open.is_empty() {
        return Ok(None);
    }
    let service = prognos_service::Service::new(db.clone());
    let who = prognos_service::auth::Principal::system("demo");
    let request = prognos_service::dispatch::BatchRequest { ticket_ids: open };
    Ok(Some(service.dispatch_batch(&who, &request).await?))
}

async fn tickets_by_state(db: &prognos_service::Database) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(prognos_demo::tickets_by_state(db).await?)
}

/// A few lines of failure analytics over the imported history and the live weeks.
async fn analytics_summary(db: &prognos_service::Database) -> anyhow::Result<Vec<String>> {
    use prognos_analytics::reliability;
    use prognos_service::history::{GroupBy, History};
    let now = crate::serve::now_us() / 1000;
    let history = History::load(db, now).await?;
    let mut lines = Vec::new();
    if let Some(fleet) = reliability::mtbf(&history, GroupBy::Fleet, i64::MIN, now).first() {
        lines.push(format!(
            "reliability      {} failures over {:.0} device-years: MTBF {} days, MTTR {} h",
            fleet.failures,
            fleet.operating_days / 365.25,
            fleet.mtbf_days.map_or("-".into(), |d| format!("{d:.0}")),
            fleet.mttr_hours.map_or("-".into(), |h| format!("{h:.1}")),
        ));
    }
    let weibull = reliability::weibull(&history, GroupBy::Fleet, None, None, 0.9)?;
    if let Some(fit) = weibull.groups.first().and_then(|g| g.fit.as_ref()) {
        lines.push(format!(
            "weibull          beta {:.2} [{:.2}, {:.2}], eta {:.0} days, B10 {:.0} days",
            fit.beta, fit.beta_ci.0, fit.beta_ci.1, fit.eta, fit.b10
        ));
    }
    let accuracy = prognos_analytics::kpi::model_accuracy(db, 0, now, 60.0).await?;
    if let Some(all) = accuracy.iter().find(|a| a.failure_mode == "all") {
        let pct = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{:.0}%", 100.0 * v));
        lines.push(format!(
            "model accuracy   precision {} ({} confirmed of {} closed), recall {} ({} failures missed)",
            pct(all.precision),
            all.confirmed,
            all.closed,
            pct(all.recall),
            all.missed_failures
        ));
    }
    let batches = reliability::defective_batches(&history, 0.01)?;
    let flagged: Vec<String> = batches
        .batches
        .iter()
        .filter(|b| b.flagged)
        .filter_map(|b| {
            let t = b
                .tests
                .iter()
                .find(|t| Some(&t.failure_mode) == b.flagged_on.as_ref())?;
            Some(format!(
                "{} ({}: {:.1}x the rest, p={:.1e})",
                b.batch, t.failure_mode, t.rate_ratio, t.p_value
            ))
        })
        .collect();
    lines.push(format!(
        "batches          {} tested, flagged: {}; recall list {} devices",
        batches.batches.len(),
        if flagged.is_empty() {
            "none".to_owned()
        } else {
            flagged.join(", ")
        },
        batches.recall.len()
    ));
    Ok(lines)
}
