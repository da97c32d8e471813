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
use prognos_models::learned::{GENERIC_MODE, alert_pattern};
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
    /// Compare without and with learning from repairs: devices are split
    /// into a training half (even index) and a test half (odd index); a
    /// technician visits each training device's alert one day after it
    /// opens and closes it `confirmed` (the device is degrading in that
    /// mode), `other_cause` (degrading in another mode) or `false_alarm`
    /// (healthy), and the close code is fed back to the monitor for the
    /// device's model. Both runs are scored on the test half only.
    #[arg(long)]
    pub repairs: bool,
    /// No asset profiles: every device goes to the zero-configuration
    /// learned detector, as a machine Prognos has no profile for would.
    #[arg(long)]
    pub no_profiles: bool,
    /// Monitor settings to change, as a JSON object with the fields of the
    /// `monitor` object this command prints (for example
    /// `{"thresholds":[0.02,0.005,0.2]}`); fields left out keep their
    /// defaults. For tuning on one seed and checking on others.
    #[arg(long, value_name = "JSON")]
    pub monitor: Option<String>,
}

/// The monitor settings of a run: the defaults, with `--monitor` applied.
fn monitor_config(args: &FleetArgs) -> anyhow::Result<MonitorConfig> {
    let Some(json) = &args.monitor else {
        return Ok(MonitorConfig::default());
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| anyhow::anyhow!("--monitor: not JSON: {e}"))?;
    let Some(fields) = value.as_object() else {
        anyhow::bail!("--monitor: expected a JSON object of monitor settings");
    };
    // serde ignores unknown fields; a misspelt one would silently change nothing.
    let known = serde_json::to_value(MonitorConfig::default())?;
    if let Some(unknown) = fields.keys().find(|k| known.get(k.as_str()).is_none()) {
        anyhow::bail!("--monitor: unknown setting `{unknown}`");
    }
    let cfg: MonitorConfig = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("--monitor: not a monitor settings object: {e}"))?;
    anyhow::ensure!(
        cfg.thresholds.iter().all(|t| t.is_finite() && *t > 0.0),
        "--monitor: thresholds must be finite and above 0"
    );
    Ok(cfg)
}

/// How long after an alert opens the technician's close code arrives.
const VISIT_DELAY_MS: i64 = 86_400_000;

/// The repair loop of a `--repairs` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repairs {
    /// No close codes reach the monitor.
    Off,
    /// Close codes of the training half reach the monitor.
    On,
}

/// Close codes given in a run, by code.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CloseCodes {
    /// The device was degrading in the alert's mode.
    pub confirmed: u64,
    /// The device was degrading in another mode.
    pub other_cause: u64,
    /// The device was healthy.
    pub false_alarm: u64,
}

/// A technician's visit: (due, device index, failure mode, learned pattern,
/// close code, failure mode found).
type Visit = (
    i64,
    usize,
    String,
    Option<String>,
    &'static str,
    Option<&'static str>,
);

/// A device takes part in the training half of a `--repairs` run.
fn in_training_half(index: usize) -> bool {
    index.is_multiple_of(2)
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
    /// Close codes fed back (training half, `--repairs` only).
    pub close_codes: CloseCodes,
}

fn criticality(c: u8) -> Criticality {
    match c {
        0 | 1 => Criticality::Low,
        2 => Criticality::Medium,
        _ => Criticality::High,
    }
}

/// Simulates `args.days` of `args.devices` devices and monitors them with `cfg`.
/// With `repairs` on, close codes of the training half are fed back and
/// only the test half is scored (see [`FleetArgs::repairs`]); with
/// `args.repairs` and `repairs` off, the same test half is scored without
/// feedback.
pub fn simulate_and_monitor(
    args: &FleetArgs,
    cfg: MonitorConfig,
    repairs: Repairs,
) -> anyhow::Result<FleetRun> {
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
    if args.no_profiles {
        monitor.set_profiles(Vec::new());
    }
    let ids: Vec<String> = fleet.devices().iter().map(|d| d.id.clone()).collect();
    let models: Vec<&'static str> = fleet.devices().iter().map(|d| d.model).collect();
    for d in fleet.devices() {
        monitor.set_criticality(&d.id, criticality(d.criticality));
        if args.repairs {
            // Feedback is kept per device model, which the registry knows.
            monitor.set_device_model(&d.id, d.model);
        }
    }
    let index: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    // (due, device index, failure mode, pattern, close code), in due order.
    let mut visits: std::collections::VecDeque<Visit> = std::collections::VecDeque::new();
    let mut close_codes = CloseCodes::default();
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
            let new = monitor.observe(id, r.ts_ms, &r.metrics);
            if repairs == Repairs::On && in_training_half(r.device) {
                let opened: Vec<&AlertEvent> = new
                    .iter()
                    .filter(|e| e.kind == AlertEventKind::Opened)
                    .collect();
                if !opened.is_empty() {
                    let active = fleet.active_degradations();
                    for e in opened {
                        let found = active.iter().find(|g| g.device == r.device);
                        // A technician confirms a generic alert on a degrading
                        // machine and names what was found.
                        let generic = e.alert.failure_mode == GENERIC_MODE;
                        let (code, found_mode) = match found {
                            Some(g)
                                if generic || g.failure_mode.as_str() == e.alert.failure_mode =>
                            {
                                close_codes.confirmed += 1;
                                ("confirmed", Some(g.failure_mode.as_str()))
                            }
                            Some(_) => {
                                close_codes.other_cause += 1;
                                ("other_cause", None)
                            }
                            None => {
                                close_codes.false_alarm += 1;
                                ("false_alarm", None)
                            }
                        };
                        visits.push_back((
                            e.alert.opened_at_ms + VISIT_DELAY_MS,
                            r.device,
                            e.alert.failure_mode.clone(),
                            alert_pattern(&e.alert.evidence),
                            code,
                            found_mode,
                        ));
                    }
                }
            }
            events.extend(new);
            samples += 1;
        }
        let now = fleet.now_ms();
        while visits.front().is_some_and(|v| v.0 <= now) {
            if let Some((_, device, mode, pattern, code, found)) = visits.pop_front() {
                let model = models.get(device).copied().unwrap_or("");
                match pattern {
                    Some(p) => monitor.feedback_pattern(model, &mode, &p, code, found),
                    None => monitor.feedback(model, &mode, code),
                };
            }
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
    let mut spans = AlertSpan::from_events(&events);
    let mut device_days = args.devices as f64 * args.days;
    if args.repairs {
        let test = |id: &str| index.get(id).is_some_and(|&i| !in_training_half(i));
        spans.retain(|s| test(&s.device_id));
        truth.retain(|w| test(&w.device_id));
        let n = (0..args.devices).filter(|&i| !in_training_half(i)).count();
        device_days = n as f64 * args.days;
    }
    let report = evaluate_alerts(&spans, &truth, start_ms, end_ms, device_days);
    Ok(FleetRun {
        report,
        events,
        samples,
        start_ms,
        end_ms,
        close_codes,
    })
}

/// `prognos evaluate fleet`.
pub fn run_fleet(args: &FleetArgs) -> anyhow::Result<()> {
    let cfg = monitor_config(args)?;
    if args.repairs {
        return run_repairs(args, cfg);
    }
    let run = simulate_and_monitor(args, cfg.clone(), Repairs::Off)?;
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
        // Each false alert with the learned pattern that opened it (leading metric and
        // direction), to see what the detector mistakes for wear.
        let false_alerts: Vec<serde_json::Value> = r
            .false_alerts
            .iter()
            .map(|a| {
                let opened = run.events.iter().find(|e| {
                    e.kind == AlertEventKind::Opened
                        && e.alert.device_id == a.device_id
                        && e.alert.opened_at_ms == a.opened_at_ms
                });
                serde_json::json!({
                    "device_id": a.device_id,
                    "failure_mode": a.failure_mode,
                    "opened_at_ms": a.opened_at_ms,
                    "opened_day": day(a.opened_at_ms),
                    "resolved_at_ms": a.resolved_at_ms,
                    "pattern": opened.and_then(|e| alert_pattern(&e.alert.evidence)),
                    "ratio": opened.map(|e| e.alert.evidence.ratio),
                    "evidence": opened.map(|e| e.alert.evidence.metrics.clone()),
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
            "false_alerts": false_alerts,
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
    if let Some(l) = r.overall.median_lead_at_onset_days {
        println!("  ceiling: alert at onset       {l:.2}");
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

/// `prognos evaluate fleet --repairs`: the same simulation twice, without
/// and with the training half's close codes fed back, scored on the test half.
fn run_repairs(args: &FleetArgs, cfg: MonitorConfig) -> anyhow::Result<()> {
    let off = simulate_and_monitor(args, cfg.clone(), Repairs::Off)?;
    let on = simulate_and_monitor(args, cfg, Repairs::On)?;
    if args.json {
        let out = serde_json::json!({
            "run": {
                "devices": args.devices,
                "days": args.days,
                "seed": args.seed,
                "no_profiles": args.no_profiles,
                "scored": "test half (odd device index)",
                "test_device_days": off.report.device_days,
            },
            "without_repairs": { "overall": off.report.overall, "counts": off.report.counts },
            "with_repairs": {
                "overall": on.report.overall,
                "counts": on.report.counts,
                "close_codes_from_training_half": on.close_codes,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "fleet evaluation with learning from repairs: {} devices, {} days, seed {}{}",
        args.devices,
        args.days,
        args.seed,
        if args.no_profiles {
            ", no profiles"
        } else {
            ""
        }
    );
    println!(
        "scored on the test half ({} device-days); close codes from the training half: {} confirmed, {} other cause, {} false alarm",
        off.report.device_days,
        on.close_codes.confirmed,
        on.close_codes.other_cause,
        on.close_codes.false_alarm
    );
    println!();
    println!(
        "{:<18} {:>7} {:>12} {:>22}",
        "", "recall", "median lead", "false / 100 dev-days"
    );
    for (name, r) in [
        ("without repairs", &off.report),
        ("with repairs", &on.report),
    ] {
        let lead = r
            .overall
            .median_lead_days
            .map_or_else(|| "-".to_string(), |l| format!("{l:.2}"));
        println!(
            "{:<18} {:>7.3} {:>12} {:>22.3}",
            name, r.overall.recall, lead, r.overall.false_alerts_per_100_device_days
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `--monitor` changes only the fields it names, and a value that is
    /// not a monitor settings object is refused with the flag's name.
    #[test]
    fn monitor_settings_override_only_what_they_name() {
        let mut args = FleetArgs {
            devices: 1,
            days: 1.0,
            seed: 7,
            json: false,
            repairs: false,
            no_profiles: false,
            monitor: Some(r#"{"thresholds":[0.02,0.005,0.2]}"#.into()),
        };
        let cfg = monitor_config(&args).unwrap();
        assert_eq!(cfg.thresholds, [0.02, 0.005, 0.2]);
        assert_eq!(cfg.ewma_lambda, MonitorConfig::default().ewma_lambda);
        for bad in [
            r#"{"thresholds":[0.02]}"#,
            r#"{"thresholds":[0.0,0.005,0.2]}"#,
            "[1,2]",
            "{",
            r#"{"threshold":[0.02,0.005,0.2]}"#,
        ] {
            args.monitor = Some(bad.into());
            let e = monitor_config(&args).unwrap_err().to_string();
            assert!(e.starts_with("--monitor:"), "{bad}: {e}");
        }
        args.monitor = None;
        assert_eq!(monitor_config(&args).unwrap(), MonitorConfig::default());
    }

    /// The repair loop scores only the test half, feeds only the training
    /// half's close codes, and is deterministic.
    #[test]
    fn repairs_split_the_fleet_and_feed_only_the_training_half() {
        let args = FleetArgs {
            devices: 16,
            days: 60.0,
            seed: 7,
            json: false,
            repairs: true,
            no_profiles: true,
            monitor: None,
        };
        let off = simulate_and_monitor(&args, MonitorConfig::default(), Repairs::Off).unwrap();
        let on = simulate_and_monitor(&args, MonitorConfig::default(), Repairs::On).unwrap();
        let c = &off.close_codes;
        assert_eq!(c.confirmed + c.other_cause + c.false_alarm, 0);
        let c = &on.close_codes;
        assert!(c.confirmed + c.other_cause + c.false_alarm > 0, "{c:?}");
        // The same failures are scored in both runs, all on the test half.
        let ids: Vec<String> = Fleet::new(FleetConfig {
            devices: args.devices,
            seed: args.seed,
            sample_interval_ms: SAMPLE_INTERVAL_MS,
            ..FleetConfig::default()
        })
        .unwrap()
        .devices()
        .iter()
        .map(|d| d.id.clone())
        .collect();
        let test_half: Vec<&String> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| !in_training_half(*i))
            .map(|(_, id)| id)
            .collect();
        for run in [&off, &on] {
            assert!(
                run.report
                    .failures
                    .iter()
                    .all(|f| test_half.contains(&&f.device_id))
            );
            assert!(
                run.report
                    .false_alerts
                    .iter()
                    .all(|s| test_half.contains(&&s.device_id))
            );
        }
        let failures = |r: &FleetRun| -> Vec<(String, i64)> {
            r.report
                .failures
                .iter()
                .map(|f| (f.device_id.clone(), f.failure_ms))
                .collect()
        };
        assert_eq!(failures(&off), failures(&on));
        assert!((on.report.device_days - 8.0 * 60.0).abs() < 1e-9);
        let again = simulate_and_monitor(&args, MonitorConfig::default(), Repairs::On).unwrap();
        assert_eq!(again.events.len(), on.events.len());
        assert_eq!(
            again.report.overall.false_alerts_per_100_device_days,
            on.report.overall.false_alerts_per_100_device_days
        );
    }
}
