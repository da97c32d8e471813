//! Zero-configuration detection on foreign machines (lathes, chillers from
//! `prognos_simulators::foreign`), asset profiles, routing and repair
//! feedback. Debug-fast: 8 devices × 30 days of 5-minute samples; the big
//! evaluation is `cargo run --release -p prognos-models --example foreign`.

use prognos_models::alert::{AlertEvent, AlertEventKind};
use prognos_models::learned::{GENERIC_MODE, alert_pattern};
use prognos_models::monitor::{
    AlertSpan, AnyHealth, DegradationWindow, FleetMonitor, MonitorConfig, Outcome, evaluate_alerts,
};
use prognos_models::profile::{
    AssetProfile, BUILTIN_ROTATING_TOML, Direction, Engine, FailureModeSpec, Indicator, MetricRole,
    MetricSpec, builtin_rotating,
};
use prognos_simulators::foreign::{ForeignConfig, ForeignFleet, ForeignTruth};

const DAY: i64 = 86_400_000;

fn cfg(devices: usize, days: f64, seed: u64) -> ForeignConfig {
    ForeignConfig {
        devices,
        days,
        seed,
        sample_interval_ms: 300_000,
        ..ForeignConfig::default()
    }
}

/// Feeds the fleet through `m` (device ids suffixed with `suffix`); returns
/// (sample index, event).
fn run(m: &mut FleetMonitor, fleet: ForeignFleet, suffix: &str) -> Vec<(usize, AlertEvent)> {
    for d in fleet.devices() {
        m.set_device_model(&format!("{}{suffix}", d.id), d.model);
    }
    let mut out = Vec::new();
    for (i, (id, _, ts, metrics)) in fleet.enumerate() {
        for e in m.observe(&format!("{id}{suffix}"), ts, &metrics) {
            out.push((i, e));
        }
    }
    out
}

fn opened(ev: &[(usize, AlertEvent)]) -> Vec<&AlertEvent> {
    ev.iter()
        .map(|(_, e)| e)
        .filter(|e| e.kind == AlertEventKind::Opened)
        .collect()
}

fn truth_of<'a>(t: &'a [ForeignTruth], id: &str) -> Option<&'a ForeignTruth> {
    t.iter().find(|g| g.device_id == id)
}

#[test]
fn degrading_foreign_devices_alert_early_healthy_ones_stay_quiet() {
    let fleet = ForeignFleet::new(cfg(8, 30.0, 4));
    let truth = fleet.truth();
    let (start, end) = (fleet.start_ms(), fleet.end_ms());
    let mut m = FleetMonitor::new(MonitorConfig::default());
    let ev = run(&mut m, fleet, "");
    let o = opened(&ev);
    assert_eq!(truth.len(), 4);
    for g in &truth {
        let first = o
            .iter()
            .filter(|e| e.alert.device_id == g.device_id)
            .map(|e| e.alert.opened_at_ms)
            .find(|&t| t > g.onset_ms - DAY && t < g.failure_ms);
        let lead = first.map(|t| (g.failure_ms - t) as f64 / DAY as f64);
        assert!(
            lead.is_some_and(|l| l >= 1.0),
            "{}: lead {lead:?}",
            g.device_id
        );
    }
    for e in &o {
        assert_eq!(e.alert.failure_mode, GENERIC_MODE);
        assert!(
            truth_of(&truth, &e.alert.device_id).is_some(),
            "false alert on healthy {}",
            e.alert.device_id
        );
    }
    // The same numbers through the fleet evaluation.
    let windows: Vec<DegradationWindow> = truth
        .iter()
        .map(|g| DegradationWindow {
            device_id: g.device_id.clone(),
            failure_mode: g.failure_mode.into(),
            onset_ms: g.onset_ms,
            end_ms: g.failure_ms,
            outcome: Outcome::Failed,
        })
        .collect();
    let spans = AlertSpan::from_events(ev.iter().map(|(_, e)| e));
    let r = evaluate_alerts(&spans, &windows, start, end, 8.0 * 30.0);
    assert_eq!(r.overall.recall, 1.0);
    assert!(r.overall.false_alerts_per_100_device_days <= 1.0);
    evidence_names_the_deviating_metrics(&o, &truth);
}

/// Evidence: which metrics deviate, by how much (baseline sigmas and
/// physical units), since when.
fn evidence_names_the_deviating_metrics(o: &[&AlertEvent], truth: &[ForeignTruth]) {
    assert!(!o.is_empty());
    for e in o {
        let g = truth_of(truth, &e.alert.device_id).expect("degrading device");
        let ev = &e.alert.evidence;
        assert!(ev.detector.starts_with("learned/"));
        // Every metric the evidence names is one the degradation moves, and
        // at least one of them is named.
        let named: Vec<&str> = g
            .metrics
            .iter()
            .copied()
            .filter(|m| ev.metrics.contains_key(&format!("deviation_sigma.{m}")))
            .collect();
        assert!(
            !named.is_empty(),
            "{}: {:?}",
            g.device_id,
            ev.metrics.keys()
        );
        for k in ev
            .metrics
            .keys()
            .filter(|k| k.starts_with("deviation_sigma."))
        {
            let metric = &k["deviation_sigma.".len()..];
            assert!(g.metrics.contains(&metric), "{}: {k}", g.device_id);
            let sig = ev.metrics[k];
            let units = ev.metrics[&format!("deviation.{metric}")];
            assert!(sig.is_finite() && units.is_finite() && sig.abs() > 1.0);
            // Pressure falls, temperatures and vibration rise.
            assert_eq!(units < 0.0, metric == "discharge_pressure", "{k} {units}");
            let since = ev.metrics[&format!("deviating_since_ms.{metric}")] as i64;
            assert!(since <= e.alert.opened_at_ms && since > g.onset_ms - 2 * DAY);
        }
        assert!(ev.ratio > 1.0 && ev.metrics.values().all(|v| v.is_finite()));
    }
}

fn lathe_profile() -> AssetProfile {
    AssetProfile {
        name: "cnc-lathe".into(),
        models: vec!["lt-400".into()],
        engine: Engine::Learned,
        criticality: None,
        metrics: vec![
            MetricSpec {
                name: "spindle_speed".into(),
                role: MetricRole::Covariate,
                slot: None,
                unit: Some("rpm".into()),
            },
            MetricSpec {
                name: "amps".into(),
                role: MetricRole::Health,
                slot: None,
                unit: Some("A".into()),
            },
            MetricSpec {
                name: "spindle_temp".into(),
                role: MetricRole::Health,
                slot: None,
                unit: Some("°C".into()),
            },
            MetricSpec {
                name: "vibration".into(),
                role: MetricRole::Health,
                slot: None,
                unit: Some("mm/s".into()),
            },
        ],
        failure_modes: vec![FailureModeSpec {
            name: "spindle_bearing".into(),
            indicator: Indicator::Residual {
                metrics: vec!["spindle_temp".into(), "vibration".into()],
                direction: Direction::Up,
            },
            threshold: None,
            failure_level: None,
        }],
    }
}

#[test]
fn a_profile_names_the_alert() {
    let fleet = ForeignFleet::new(cfg(4, 30.0, 4));
    let mut m = FleetMonitor::new(MonitorConfig::default());
    let mut profiles = vec![builtin_rotating()];
    profiles.push(lathe_profile());
    m.set_profiles(profiles);
    let ev = run(&mut m, fleet, "");
    let o = opened(&ev);
    let lathes: Vec<_> = o
        .iter()
        .filter(|e| e.alert.device_id.starts_with("lathe"))
        .collect();
    let chillers: Vec<_> = o
        .iter()
        .filter(|e| e.alert.device_id.starts_with("chiller"))
        .collect();
    assert!(!lathes.is_empty() && !chillers.is_empty());
    assert!(
        lathes
            .iter()
            .all(|e| e.alert.failure_mode == "spindle_bearing")
    );
    assert!(
        chillers
            .iter()
            .all(|e| e.alert.failure_mode == GENERIC_MODE)
    );
}

#[test]
fn false_alarm_feedback_suppresses_the_same_pattern() {
    // One degrading lathe; the same stream replayed under a second id after
    // the repair crew closed the first alert as a false alarm.
    let c = cfg(1, 30.0, 4);
    let mut m = FleetMonitor::new(MonitorConfig::default());
    let first = opened(&run(&mut m, ForeignFleet::new(c.clone()), "-a"))
        .first()
        .map(|e| (e.alert.opened_at_ms, e.alert.failure_mode.clone()))
        .expect("the degradation alerts");
    let mult = m.feedback("lt-400", &first.1, "false_alarm");
    assert!(mult > 1.0);
    let again = run(&mut m, ForeignFleet::new(c.clone()), "-b");
    let second = opened(&again).first().map(|e| e.alert.opened_at_ms);
    assert!(
        second.is_none_or(|t| t > first.0),
        "{second:?} vs {}",
        first.0
    );
    // Bounded both ways; other models and modes unaffected.
    for _ in 0..10 {
        m.feedback("lt-400", &first.1, "false_alarm");
    }
    assert_eq!(m.feedback_multiplier("lt-400", &first.1), 4.0);
    for _ in 0..100 {
        m.feedback("lt-400", &first.1, "confirmed");
    }
    assert_eq!(m.feedback_multiplier("lt-400", &first.1), 0.9);
    assert_eq!(m.feedback_multiplier("ch-90", &first.1), 1.0);
    assert_eq!(m.feedback("lt-400", "other", "parts_replaced"), 1.0);
}

#[test]
fn repair_feedback_acts_on_one_pattern_and_names_what_was_found() {
    // The same degrading lathe replayed under fresh ids after each round of
    // technicians' verdicts on its first alert.
    let c = cfg(1, 30.0, 4);
    let mut m = FleetMonitor::new(MonitorConfig::default());
    let first_alert = |m: &mut FleetMonitor, suffix: &str| {
        opened(&run(m, ForeignFleet::new(c.clone()), suffix))
            .first()
            .map(|e| {
                let p = alert_pattern(&e.alert.evidence).expect("a learned alert has a pattern");
                (e.alert.opened_at_ms, e.alert.failure_mode.clone(), p)
            })
    };
    let (t0, mode, pattern) = first_alert(&mut m, "-a").expect("the degradation alerts");
    assert_eq!(mode, GENERIC_MODE);
    assert!(
        pattern.ends_with('+') || pattern.ends_with('-'),
        "{pattern}"
    );

    // A false alarm on another pattern changes nothing for this one.
    let other = if pattern.starts_with("amps") {
        "vibration+"
    } else {
        "amps+"
    };
    assert!(m.feedback_pattern("lt-400", &mode, other, "false_alarm", None) > 1.0);
    assert_eq!(
        first_alert(&mut m, "-b"),
        Some((t0, mode.clone(), pattern.clone()))
    );

    // Confirmed, with the failure found: the next alert of the pattern carries its name,
    // no later than before.
    let mult = m.feedback_pattern("lt-400", &mode, &pattern, "confirmed", Some("spindle_wear"));
    assert!(mult < 1.0);
    let (t1, named, p1) = first_alert(&mut m, "-c").expect("still alerts");
    assert_eq!(
        (named.as_str(), p1.as_str()),
        ("spindle_wear", pattern.as_str())
    );
    assert!(t1 <= t0, "{t1} vs {t0}");

    // False alarms on that pattern, reported against the renamed alert, count for
    // the pattern: the alert comes later or not at all.
    for _ in 0..4 {
        m.feedback_pattern("lt-400", "spindle_wear", &pattern, "false_alarm", None);
    }
    let late = first_alert(&mut m, "-d");
    assert!(
        late.as_ref().is_none_or(|(t, _, _)| *t > t0),
        "{late:?} vs {t0}"
    );
}

#[test]
fn causal_and_finite() {
    // The same stream, cut at day 22 and whole: events of the prefix are
    // identical.
    let fleet = ForeignFleet::new(cfg(2, 30.0, 4));
    let cut_ms = fleet.start_ms() + 22 * DAY;
    let samples: Vec<_> = fleet.collect();
    let feed = |n: usize| {
        let mut m = FleetMonitor::new(MonitorConfig::default());
        let mut out = Vec::new();
        for (i, (id, model, ts, metrics)) in samples[..n].iter().enumerate() {
            m.set_device_model(id, model);
            for e in m.observe(id, *ts, metrics) {
                out.push((i, e));
            }
        }
        (m, out)
    };
    let cut = samples
        .iter()
        .position(|s| s.2 >= cut_ms)
        .expect("cut inside");
    let (a, short) = feed(cut);
    let (b, long) = feed(samples.len());
    assert!(!long.is_empty());
    let prefix: Vec<_> = long.iter().filter(|(i, _)| *i < cut).cloned().collect();
    assert_eq!(short, prefix);
    for (_, e) in &long {
        assert!(e.alert.evidence.ratio.is_finite());
        assert!(e.alert.evidence.metrics.values().all(|v| v.is_finite()));
    }
    // Learned structure: the lathe's spindle speed tells running from idle
    // and is its operating point (unless it is relearning after a repair).
    let mut monitoring = 0;
    for m in [&a, &b] {
        for id in ["lathe-0001", "chiller-0002"] {
            let Some(AnyHealth::Learned(h)) = m.device_health(id) else {
                panic!("{id} not learned");
            };
            assert!(h.indicators.values().all(|v| v.is_finite()));
            if h.phase != "monitoring" {
                continue;
            }
            monitoring += 1;
            let s = h.summary.expect("learned");
            if id.starts_with("lathe") {
                assert_eq!(s.run_metric.as_deref(), Some("spindle_speed"));
                assert_eq!(s.covariates, vec!["spindle_speed"]);
            } else {
                assert!(s.responses.contains(&"oil_temp".to_string()), "{s:?}");
            }
        }
    }
    assert!(monitoring >= 2);
}

#[test]
fn routing_by_model_and_by_metric_names() {
    let mut m = FleetMonitor::new(MonitorConfig::default());
    let pump = [
        ("speed", 2950.0),
        ("current", 30.0),
        ("vibration_rms", 1.8),
        ("bearing_temp", 40.0),
        ("motor_temp", 50.0),
    ];
    let lathe = [("spindle_speed", 1200.0), ("amps", 8.0)];
    // Unknown model, simulator metric names → the built-in physics profile.
    m.observe("p", 0, &pump);
    assert!(matches!(
        m.device_health("p"),
        Some(AnyHealth::RotatingMachine(_))
    ));
    // Unknown model, other names → learned.
    m.observe("l", 0, &lathe);
    assert!(matches!(m.device_health("l"), Some(AnyHealth::Learned(_))));
    // A model no profile names, with the physics profile's metrics → that physics (the
    // service record's model name need not be the simulator's); with other metrics → learned.
    m.set_device_model("q", "no-such-model");
    m.observe("q", 0, &pump);
    assert!(matches!(
        m.device_health("q"),
        Some(AnyHealth::RotatingMachine(_))
    ));
    m.set_device_model("s", "no-such-model");
    m.observe("s", 0, &lathe);
    assert!(matches!(m.device_health("s"), Some(AnyHealth::Learned(_))));
    // The simulator's models → physics.
    m.set_device_model("r", "cp-200");
    m.observe("r", 0, &lathe);
    assert!(matches!(
        m.device_health("r"),
        Some(AnyHealth::RotatingMachine(_))
    ));
}

#[test]
fn profiles_parse_from_toml_and_json() {
    let p: AssetProfile = toml::from_str(BUILTIN_ROTATING_TOML).expect("shipped TOML parses");
    assert_eq!(p, builtin_rotating());
    let lathe = lathe_profile();
    let json = serde_json::to_string(&lathe).expect("serialises");
    let back: AssetProfile = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, lathe);
    let doc: AssetProfile = toml::from_str(
        r#"
name = "cnc-lathe"
models = ["lt-400"]
criticality = "high"

[[metrics]]
name = "spindle_speed"
role = "covariate"

[[failure_modes]]
name = "spindle_bearing"
threshold = 4.0
indicator = { kind = "residual", metrics = ["spindle_temp", "vibration"], direction = "up" }
"#,
    )
    .expect("example parses");
    assert_eq!(doc.engine, Engine::Learned);
    assert_eq!(doc.failure_modes[0].threshold, Some(4.0));
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let mut m = FleetMonitor::new(MonitorConfig::default());
    let mut x = prognos_stats::sample::XorShift::new(9);
    for i in 0..6 * 288 {
        let ts = i * 300_000;
        let r = x.next_f64();
        // One metric only; a constant metric; NaN and infinities; a metric
        // appearing late; an empty reading; a duplicate timestamp.
        m.observe("one", ts, &[("t", 20.0 + r)]);
        m.observe("const", ts, &[("a", 1.0), ("b", 2.0)]);
        m.observe(
            "junk",
            ts,
            &[("a", f64::NAN), ("b", f64::INFINITY), ("c", r)],
        );
        let late = [("a", r), ("late", 3.0 * r)];
        m.observe("late", ts, if i > 1000 { &late[..] } else { &late[..1] });
        m.observe("empty", ts, &[]);
        m.observe("one", ts, &[("t", 1e9)]);
    }
    for id in ["one", "const", "junk", "late"] {
        match m.device_health(id) {
            Some(AnyHealth::Learned(h)) => {
                assert!(h.indicators.values().all(|v| v.is_finite()), "{id}")
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert!(m.active_alerts().is_empty());
}

/// The order of the metrics inside a reading carries no meaning (a JSON object has none):
/// reversing it changes no event.
#[test]
fn metric_order_inside_a_reading_changes_nothing() {
    let run = |reverse: bool| {
        let fleet = ForeignFleet::new(cfg(4, 30.0, 3));
        let mut m = FleetMonitor::new(MonitorConfig::default());
        let mut events = Vec::new();
        for (device, _, ts, mut metrics) in fleet {
            if reverse {
                metrics.reverse();
            }
            for e in m.observe(&device, ts, &metrics) {
                events.push((device.clone(), ts, format!("{:?}", e.kind)));
            }
        }
        events
    };
    let forward = run(false);
    assert!(!forward.is_empty(), "the fleet raises alerts");
    assert_eq!(forward, run(true));
}

/// A continuous fixed-speed machine whose baseline never stopped: `speed` (the name-hinted
/// covariate, which hardly moves with load), `current` and a winding temperature lagging
/// the load, ambient with a daily cycle. Unplanned stops of `stops` (day,
/// hours) cool it to ambient; from `drift_from_day` the winding heats up by 1 °C a day.
fn continuous_machine(
    m: &mut FleetMonitor,
    id: &str,
    stops: &[(f64, f64)],
    drift_from_day: Option<f64>,
) -> Vec<AlertEvent> {
    m.set_device_model(id, "hx-9");
    let step = 300_000i64;
    let start = 1_700_000_000_000i64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut temp = 50.0;
    let mut load_ar = 0.0;
    let mut out = Vec::new();
    for i in 0..(20 * DAY / step) {
        let ts = start + i * step;
        let day = (ts - start) as f64 / DAY as f64;
        let hour = (ts.rem_euclid(DAY)) as f64 / 3_600_000.0;
        let ambient = 20.0 + 3.0 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
        let stopped = stops.iter().any(|&(d, h)| day >= d && day < d + h / 24.0);
        load_ar = 0.97 * load_ar + 0.25 * noise();
        let load = if stopped {
            0.0
        } else {
            (0.8 + if (6.0..22.0).contains(&hour) {
                0.2
            } else {
                -0.15
            } + load_ar)
                .clamp(0.3, 1.0)
        };
        let drift = drift_from_day.map_or(0.0, |d| (day - d).max(0.0));
        let target = ambient + 35.0 * load + drift;
        temp += (target - temp) * (1.0 - (-(step as f64) / 3_600_000.0).exp());
        let (speed, current) = if stopped {
            (0.0, 0.3)
        } else {
            (
                1480.0 * (1.0 - 0.01 * load) + 3.0 * noise(),
                30.0 * (0.3 + 0.7 * load) + 0.3 * noise(),
            )
        };
        let metrics = [
            ("speed", speed),
            ("current", current),
            ("winding_temp", temp + 0.2 * noise()),
        ];
        out.extend(m.observe(id, ts, &metrics));
    }
    out
}

/// The first unplanned stop of a machine that never stopped while its baseline was learned
/// is a stop, not every metric failing at once: no alert during or after it (the restart's
/// thermal transient is waited out), and a real fault after such stops still alerts.
#[test]
fn a_stop_the_baseline_never_saw_is_not_an_anomaly() {
    let stops = [(9.0, 5.0), (12.5, 3.0), (15.2, 8.0)];
    let mut m = FleetMonitor::new(MonitorConfig::default());
    let quiet = continuous_machine(&mut m, "hx-1", &stops, None);
    let opened: Vec<_> = quiet
        .iter()
        .filter(|e| e.kind == AlertEventKind::Opened)
        .collect();
    assert!(opened.is_empty(), "stops raised alerts: {opened:#?}");

    let mut m = FleetMonitor::new(MonitorConfig::default());
    let faulty = continuous_machine(&mut m, "hx-2", &stops, Some(13.0));
    let first = faulty
        .iter()
        .find(|e| e.kind == AlertEventKind::Opened)
        .expect("the heating winding raised no alert");
    assert!(
        first
            .alert
            .evidence
            .metrics
            .contains_key("deviation.winding_temp")
    );
}
