//! `prognos evaluate fleet`: drives the simulated fleet (in memory,
//! accelerated time, 10-minute samples) through the online
//! [`FleetMonitor`] and scores its alerts against the simulator's ground
//! truth with [`evaluate_alerts`].
//!
//! Definitions (also in the output):
//! - a failure is caught if an alert for that device opened after onset − 1
//!   day and before the failure; lead = failure − opening of that alert;
//! - an alert is false if it overlaps no degradation [onset, end] of that
//!   device: failed, cut short by preventive maintenance, or still under way
//!   when the run ends;
//! - device-days = devices × days.
//!
//! Deterministic: the same arguments print the same report.

use anyhow::Context;
use prognos_models::alert::{AlertEvent, AlertEventKind, Criticality};
use prognos_models::monitor::{
    AlertSpan, DegradationWindow, FleetMonitor, FleetReport, MonitorConfig, Outcome,
    evaluate_alerts,
};
use prognos_simulators::{Fleet, FleetConfig, Tick};

/// Arguments of `prognos evaluate fleet`.
#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Simulated days.
    #[arg(long, default_value_t = 90.0)]
    pub days: f64,
    /// Simulation seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Sample interval of the evaluation run.
pub const SAMPLE_INTERVAL_MS: i64 = 600_000;
const DAY_MS: f64 = 86_400_000.0;

/// Everything one evaluation run produced.
#[derive(Debug)]
pub struct FleetRun {
    /// The scored report.
    pub report: FleetReport,
    /// Every alert event, in order.
    pub events: Vec<AlertEvent>,
    /// Samples fed to the monitor.
    pub samples: u64,
    /// First tick, epoch ms.
    pub start_ms: i64,
    /// End of the run, epoch ms.
    pub end_ms: i64,
}

fn criticality(c: u8) -> Criticality {
    match c {
        0 | 1 => Criticality::Low,
        2 => Criticality::Medium,
        _ => Criticality::High,
    }
}

/// Simulates `args.days` of `args.devices` devices and monitors them with `cfg`.
pub fn simulate_and_monitor(args: &FleetArgs, cfg: MonitorConfig) -> anyhow::Result<FleetRun> {
    anyhow::ensure!(
        args.days.is_finite() && args.days > 0.0 && args.days <= 3650.0,
        "--days must be in (0, 3650]"
    );
    let mut fleet = Fleet::new(FleetConfig {
        devices: args.devices,
        seed: args.seed,
        sample_interval_ms: SAMPLE_INTERVAL_MS,
        ..FleetConfig::default()
    })
    .context("building the simulated fleet")?;
    let mut monitor = FleetMonitor::new(cfg);
    let ids: Vec<String> = fleet.devices().iter().map(|d| d.id.clone()).collect();
    for d in fleet.devices() {
        monitor.set_criticality(&d.id, criticality(d.criticality));
    }
    let start_ms = fleet.now_ms();
    let ticks = fleet.ticks_per_days(args.days);
    let mut tick = Tick::default();
    let mut events = Vec::new();
    let mut samples = 0u64;
    for _ in 0..ticks {
        fleet.next_tick_into(&mut tick);
        for r in &tick.readings {
            let Some(id) = ids.get(r.device) else {
                continue;
            };
            events.extend(monitor.observe(id, r.ts_ms, &r.metrics));
            samples += 1;
        }
    }
    let end_ms = fleet.now_ms();
    let mut truth: Vec<DegradationWindow> = fleet
        .labels()
        .iter()
        .map(|l| DegradationWindow {
            device_id: l.device_id.clone(),
            failure_mode: l.failure_mode.as_str().to_string(),
            onset_ms: l.onset_ms,
            end_ms: l.failure_ms,
            outcome: Outcome::Failed,
        })
        .collect();
    for m in fleet.maintenance() {
        if let (Some(mode), Some(onset)) = (m.interrupted_mode, m.interrupted_onset_ms) {
            truth.push(DegradationWindow {
                device_id: m.device_id.clone(),
                failure_mode: mode.as_str().to_string(),
                onset_ms: onset,
                end_ms: m.start_ms,
                outcome: Outcome::Interrupted,
            });
        }
    }
    for g in fleet.active_degradations() {
        truth.push(DegradationWindow {
            device_id: g.device_id.clone(),
            failure_mode: g.failure_mode.as_str().to_string(),
            onset_ms: g.onset_ms,
            end_ms,
            outcome: Outcome::Ongoing,
        });
    }
    let spans = AlertSpan::from_events(&events);
    let device_days = args.devices as f64 * args.days;
    let report = evaluate_alerts(&spans, &truth, start_ms, end_ms, device_days);
    Ok(FleetRun {
        report,
        events,
        samples,
        start_ms,
        end_ms,
    })
}

/// `prognos evaluate fleet`.
pub fn run_fleet(args: &FleetArgs) -> anyhow::Result<()> {
    let cfg = MonitorConfig::default();
    let run = simulate_and_monitor(args, cfg.clone())?;
    let r = &run.report;
    let day = |ms: i64| (ms - run.start_ms) as f64 / DAY_MS;
    if args.json {
        let failures: Vec<serde_json::Value> = r
            .failures
            .iter()
            .map(|f| {
                // RUL (hours) the monitor estimated when the catching alert opened.
                let rul = f.first_alert_ms.and_then(|t| {
                    run.events
                        .iter()
                        .find(|e| {
                            e.kind == AlertEventKind::Opened
                                && e.alert.device_id == f.device_id
                                && e.alert.opened_at_ms == t
                        })
                        .and_then(|e| e.alert.evidence.rul_hours)
                });
                serde_json::json!({
                    "device": f.device_id,
                    "mode": f.failure_mode,
                    "onset_ms": f.onset_ms,
                    "onset_day": day(f.onset_ms),
                    "failure_ms": f.failure_ms,
                    "failure_day": day(f.failure_ms),
                    "first_alert_ms": f.first_alert_ms,
                    "lead_days": f.lead_days,
                    "detected_mode": f.detected_mode,
                    "rul_at_alert_hours": rul,
                    "true_rul_at_alert_hours": f.first_alert_ms.map(|t| (f.failure_ms - t) as f64 / 3_600_000.0),
                    "alerts": f.alerts,
                })
            })
            .collect();
        let out = serde_json::json!({
            "overall": r.overall,
            "counts": r.counts,
            "run": {
                "devices": args.devices,
                "days": args.days,
                "seed": args.seed,
                "sample_interval_ms": SAMPLE_INTERVAL_MS,
                "start_ms": run.start_ms,
                "end_ms": run.end_ms,
                "samples": run.samples,
                "device_days": r.device_days,
            },
            "failures": failures,
            "false_alerts": r.false_alerts,
            "definitions": r.definitions,
            "monitor": cfg,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "fleet evaluation: {} devices, {} days, seed {}, {} samples (10-minute interval)",
        args.devices, args.days, args.seed, run.samples
    );
    println!();
    println!(
        "{:<18} {:<13} {:>7} {:>7} {:>8} {:>6}  detected",
        "device", "mode", "onset", "failure", "alert", "lead"
    );
    for f in &r.failures {
        let alert = f
            .first_alert_ms
            .map_or_else(|| "-".to_string(), |a| format!("{:.1}", day(a)));
        let lead = f
            .lead_days
            .map_or_else(|| "-".to_string(), |l| format!("{l:.1}"));
        println!(
            "{:<18} {:<13} {:>7.1} {:>7.1} {:>8} {:>6}  {}",
            f.device_id,
            f.failure_mode,
            day(f.onset_ms),
            day(f.failure_ms),
            alert,
            lead,
            f.detected_mode.as_deref().unwrap_or("-")
        );
    }
    println!("(times in days since the start of the run)");
    if !r.false_alerts.is_empty() {
        println!();
        println!("false alerts:");
        for a in &r.false_alerts {
            println!(
                "  {:<18} {:<13} opened day {:.1}",
                a.device_id,
                a.failure_mode,
                day(a.opened_at_ms)
            );
        }
    }
    let c = &r.counts;
    println!();
    println!(
        "failures {} (degraded at start {}), caught {} (of those degraded at start {}), right mode {}",
        c.failures,
        c.failures_degraded_at_start,
        c.caught,
        c.caught_degraded_at_start,
        c.mode_correct
    );
    println!(
        "alerts {}: on failures {}, on maintenance-interrupted {}, on ongoing {}, false {}",
        c.alerts,
        c.alerts_on_failures,
        c.alerts_on_interrupted,
        c.alerts_on_ongoing,
        c.false_alerts
    );
    println!();
    println!("recall                          {:.3}", r.overall.recall);
    match r.overall.median_lead_days {
        Some(l) => println!("median lead (days)              {l:.2}"),
        None => println!("median lead (days)              -"),
    }
    println!(
        "false alerts / 100 device-days  {:.3}",
        r.overall.false_alerts_per_100_device_days
    );
    println!();
    for d in &r.definitions {
        println!("- {d}");
    }
    Ok(())
}
