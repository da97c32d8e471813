//! The simulated-fleet evaluation of `prognos evaluate fleet` (same
//! definitions, 10-minute samples), runnable from the models crate:
//! `cargo run --release -p prognos-models --example fleet -- [devices] [days] [seed] [models]`
//! (defaults 200, 90, 7; `models` = `1` tells the monitor each device's model,
//! as the binary will once it loads the registry; default `0` = unknown
//! models, routed by their metric names; `2` = no profiles, every device on
//! the zero-configuration learned detector).
use prognos_models::alert::Criticality;
use prognos_models::monitor::{
    AlertSpan, DegradationWindow, FleetMonitor, MonitorConfig, Outcome, evaluate_alerts,
};
use prognos_simulators::{Fleet, FleetConfig, Tick};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, d: f64| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(d)
    };
    let devices = arg(1, 200.0) as usize;
    let days = arg(2, 90.0);
    let seed = arg(3, 7.0) as u64;
    let mode = arg(4, 0.0);
    let set_models = mode != 0.0;
    let mut fleet = Fleet::new(FleetConfig {
        devices,
        seed,
        sample_interval_ms: 600_000,
        ..FleetConfig::default()
    })?;
    // Learned-detector knobs (environment): LEARNED_THRESHOLD, LEARNED_JOINT (0/1).
    let mut mcfg = MonitorConfig::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(v) = env("LEARNED_THRESHOLD") {
        mcfg.learned.threshold = v;
    }
    if let Some(v) = env("LEARNED_JOINT") {
        mcfg.learned.joint_covariates = v != 0.0;
    }
    let mut monitor = FleetMonitor::new(mcfg);
    if mode == 2.0 {
        // No profiles at all: every device goes to the learned detector.
        monitor.set_profiles(Vec::new());
    }
    let ids: Vec<String> = fleet.devices().iter().map(|d| d.id.clone()).collect();
    for d in fleet.devices() {
        let c = match d.criticality {
            0 | 1 => Criticality::Low,
            2 => Criticality::Medium,
            _ => Criticality::High,
        };
        monitor.set_criticality(&d.id, c);
        if set_models {
            monitor.set_device_model(&d.id, d.model);
        }
    }
    let start_ms = fleet.now_ms();
    let ticks = fleet.ticks_per_days(days);
    let mut tick = Tick::default();
    let mut events = Vec::new();
    for _ in 0..ticks {
        fleet.next_tick_into(&mut tick);
        for r in &tick.readings {
            if let Some(id) = ids.get(r.device) {
                events.extend(monitor.observe(id, r.ts_ms, &r.metrics));
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
    let spans = AlertSpan::from_events(&events);
    let r = evaluate_alerts(&spans, &truth, start_ms, end_ms, devices as f64 * days);
    println!(
        "fleet {devices} devices {days} days seed {seed} mode {mode} (0 unknown models, 1 models set, 2 no profiles): recall {:.3} median lead {:.2} days, false alerts/100 device-days {:.3}",
        r.overall.recall,
        r.overall.median_lead_days.unwrap_or(f64::NAN),
        r.overall.false_alerts_per_100_device_days
    );
    println!("{}", serde_json::to_string(&r.counts)?);
    Ok(())
}
