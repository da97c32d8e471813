//! Zero-configuration monitoring of machines the monitor has no profile for:
//! `cargo run --release -p prognos-models --example foreign -- [devices] [days] [seed] [verbose] [interval_min] [degrading_fraction]`
//! (defaults 40 devices — half lathes, half chillers, half of each degrading
//! — 30 days of 1-minute samples, seed 1). Prints recall, median lead time
//! (days before failure) and false alerts per 100 device-days, with the
//! definitions of `prognos evaluate fleet`.
use prognos_models::alert::AlertEventKind;
use prognos_models::monitor::{
    AlertSpan, AnyHealth, DegradationWindow, FleetMonitor, MonitorConfig, Outcome, evaluate_alerts,
};
use prognos_simulators::foreign::{ForeignConfig, ForeignFleet};

fn main() {
    let arg = |i: usize, d: f64| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(d)
    };
    let cfg = ForeignConfig {
        devices: arg(1, 40.0) as usize,
        days: arg(2, 30.0),
        seed: arg(3, 1.0) as u64,
        sample_interval_ms: (arg(5, 1.0) * 60_000.0) as i64,
        degrading_fraction: arg(6, 0.5),
        ..ForeignConfig::default()
    };
    let verbose = arg(4, 0.0) != 0.0;
    let fleet = ForeignFleet::new(cfg.clone());
    let truth: Vec<DegradationWindow> = fleet
        .truth()
        .iter()
        .map(|t| DegradationWindow {
            device_id: t.device_id.clone(),
            failure_mode: t.failure_mode.to_string(),
            onset_ms: t.onset_ms,
            end_ms: t.failure_ms,
            outcome: Outcome::Failed,
        })
        .collect();
    let (start, end) = (fleet.start_ms(), fleet.end_ms());
    let devices: Vec<_> = fleet.devices().to_vec();
    // Tuning knobs (environment): LEARNED_THRESHOLD, LEARNED_LAMBDA, LEARNED_DRIFT,
    // LEARNED_GATE, LEARNED_CALIBRATION.
    let mut mcfg = MonitorConfig::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(v) = env("LEARNED_THRESHOLD") {
        mcfg.learned.threshold = v;
    }
    if let Some(v) = env("LEARNED_LAMBDA") {
        mcfg.learned.ewma_lambda = v;
    }
    if let Some(v) = env("LEARNED_DRIFT") {
        mcfg.learned.drift_lambda = v;
    }
    if let Some(v) = env("LEARNED_JOINT") {
        mcfg.learned.joint_covariates = v != 0.0;
    }
    if let Some(v) = env("LEARNED_GATE") {
        mcfg.learned.drift_gate = v;
    }
    if let Some(v) = env("LEARNED_CALIBRATION") {
        mcfg.learned.calibration_buckets = v as usize;
    }
    let mut monitor = FleetMonitor::new(mcfg);
    for d in &devices {
        monitor.set_device_model(&d.id, d.model);
    }
    let mut events = Vec::new();
    let mut samples = 0u64;
    let t0 = std::time::Instant::now();
    // FOREIGN_DROP=metric removes a metric from every sample (e.g. a lathe
    // that does not publish its spindle speed).
    let drop = std::env::var("FOREIGN_DROP").unwrap_or_default();
    for (id, _model, ts, mut metrics) in fleet {
        metrics.retain(|m| m.0 != drop);
        events.extend(monitor.observe(&id, ts, &metrics));
        // TRACE_DEVICE=id prints that device's health every 6 hours.
        if std::env::var("TRACE_DEVICE").is_ok_and(|t| t == id) && ts % 21_600_000 == 0 {
            println!(
                "trace day {:.2} {:?}",
                (ts - start) as f64 / 86_400_000.0,
                monitor.device_health(&id)
            );
        }
        samples += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let spans = AlertSpan::from_events(&events);
    let r = evaluate_alerts(&spans, &truth, start, end, cfg.devices as f64 * cfg.days);
    if verbose {
        for d in &devices {
            if let Some(AnyHealth::Learned(h)) = monitor.device_health(&d.id) {
                println!("{} {:?} {:?}", d.id, h.summary, h.indicators);
            }
        }
        for e in events.iter().filter(|e| e.kind == AlertEventKind::Opened) {
            println!(
                "opened {} {} day {:.1} {} ratio {:.2}",
                e.alert.device_id,
                e.alert.failure_mode,
                (e.alert.opened_at_ms - start) as f64 / 86_400_000.0,
                e.alert.evidence.detector,
                e.alert.evidence.ratio
            );
        }
        for f in &r.failures {
            println!(
                "{} onset {:.1} failure {:.1} lead {:?}",
                f.device_id,
                (f.onset_ms - start) as f64 / 86_400_000.0,
                (f.failure_ms - start) as f64 / 86_400_000.0,
                f.lead_days
            );
        }
    }
    println!(
        "foreign fleet: {} devices x {} days, seed {}, {samples} samples in {secs:.1} s",
        cfg.devices, cfg.days, cfg.seed
    );
    println!(
        "recall {:.3} ({}/{}), median lead {:.2} days, false alerts / 100 device-days {:.3} ({} false of {} alerts)",
        r.overall.recall,
        r.counts.caught,
        r.counts.failures,
        r.overall.median_lead_days.unwrap_or(f64::NAN),
        r.overall.false_alerts_per_100_device_days,
        r.counts.false_alerts,
        r.counts.alerts
    );
}
