//! Properties of the fleet physics: determinism, chunking independence,
//! sane labels, realistic failure counts, and degradation that moves the
//! sensors it should.

use std::collections::HashMap;

use prognos_simulators::{
    BEARING_TEMP, CURRENT, DeviceKind, FailureLabel, FailureMode, Fleet, FleetConfig, MOTOR_TEMP,
    PRESSURE, SPEED, Tick, VIBRATION_RMS, write_labels_jsonl,
};

const DAY: i64 = 86_400_000;

fn small(seed: u64) -> FleetConfig {
    FleetConfig {
        devices: 30,
        seed,
        // Many failures in a short run.
        base_hazard_per_year: 8.0,
        ..FleetConfig::default()
    }
}

fn run(cfg: FleetConfig, ticks: u64) -> (Vec<Tick>, Vec<FailureLabel>) {
    let mut f = Fleet::new(cfg).expect("valid config");
    let ticks = (0..ticks).map(|_| f.next_tick()).collect();
    (ticks, f.labels().to_vec())
}

#[test]
fn same_seed_same_output_different_seed_different() {
    let (a, la) = run(small(11), 3000);
    let (b, lb) = run(small(11), 3000);
    assert_eq!(a, b);
    assert_eq!(la, lb);
    assert!(!la.is_empty(), "the short run should see failures");
    // Byte-identical payloads too.
    for (x, y) in a.iter().zip(&b).take(50) {
        for (r, s) in x.readings.iter().zip(&y.readings) {
            assert_eq!(r.to_json(r.seq), s.to_json(s.seq));
        }
    }
    let (c, lc) = run(small(12), 3000);
    assert_ne!(a, c);
    assert_ne!(la, lc);
}

#[test]
fn chunking_does_not_matter() {
    let cfg = small(5);
    let (expected, labels) = run(cfg.clone(), 2500);

    // Reused buffer, with labels inspected between irregular chunks.
    let mut f = Fleet::new(cfg.clone()).unwrap();
    let mut buf = Tick::default();
    let mut got = Vec::new();
    let mut chunk = 1;
    while got.len() < expected.len() {
        for _ in 0..chunk.min(expected.len() - got.len()) {
            f.next_tick_into(&mut buf);
            got.push(buf.clone());
        }
        let now = f.now_ms();
        let so_far: Vec<_> = labels.iter().filter(|l| l.failure_ms < now).collect();
        // Labels appear once the failure tick is generated, never early.
        assert!(f.labels().len() <= so_far.len() + cfg.devices);
        chunk = chunk * 3 % 97 + 1;
    }
    assert_eq!(got, expected);
    assert_eq!(f.labels(), labels.as_slice());

    // The iterator is the same stream.
    let it: Vec<Tick> = Fleet::new(cfg).unwrap().take(expected.len()).collect();
    assert_eq!(it, expected);
}

#[test]
fn devices_are_independent_of_fleet_size() {
    let (a, _) = run(small(3), 1500);
    let (b, _) = run(
        FleetConfig {
            devices: 60,
            ..small(3)
        },
        1500,
    );
    for (x, y) in a.iter().zip(&b) {
        let y_first: Vec<_> = y.readings.iter().filter(|r| r.device < 30).collect();
        assert_eq!(x.readings.iter().collect::<Vec<_>>(), y_first);
    }
}

#[test]
fn device_registry_is_valid() {
    let f = Fleet::new(FleetConfig::default()).unwrap();
    let start = f.config().start_ms;
    let mut kinds = HashMap::new();
    for (i, d) in f.devices().iter().enumerate() {
        assert_eq!(d.index, i);
        assert!(
            d.id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}",
            d.id
        );
        assert!(d.id.starts_with(d.kind.as_str()));
        assert!((1..=3).contains(&d.criticality));
        assert!(d.install_ms < start);
        assert!(d.warranty_end_ms > d.install_ms);
        assert!(d.batch.starts_with('B'));
        *kinds.entry(d.kind).or_insert(0) += 1;
    }
    assert_eq!(kinds.len(), 3);
    let ids: std::collections::HashSet<_> = f.devices().iter().map(|d| &d.id).collect();
    assert_eq!(ids.len(), f.devices().len());
    let defective = f.devices().iter().filter(|d| d.defective_batch).count();
    assert!((10..=60).contains(&defective), "{defective}");
}

#[test]
fn bad_config_is_rejected() {
    for cfg in [
        FleetConfig {
            devices: 0,
            ..FleetConfig::default()
        },
        FleetConfig {
            sample_interval_ms: 0,
            ..FleetConfig::default()
        },
        FleetConfig {
            dropout_prob: f64::NAN,
            ..FleetConfig::default()
        },
        FleetConfig {
            defective_batch: Some(6),
            ..FleetConfig::default()
        },
        FleetConfig {
            start_ms: -1,
            ..FleetConfig::default()
        },
    ] {
        assert!(Fleet::new(cfg).is_err());
    }
}

/// The reference run: 200 devices, 90 days, 10-minute samples, seed 7.
#[test]
fn reference_fleet_failure_counts_and_label_sanity() {
    let mut f = Fleet::new(FleetConfig::default()).unwrap();
    let ticks = f.ticks_per_days(90.0);
    assert_eq!(ticks, 12_960);
    let mut tick = Tick::default();
    let mut readings = 0u64;
    let mut values = 0u64;
    let mut expected_values = 0u64;
    // Last reading time and seq per device, to check downtime silence and seq.
    let mut last_seq: HashMap<usize, u64> = HashMap::new();
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); 200];
    for _ in 0..ticks {
        f.next_tick_into(&mut tick);
        for r in &tick.readings {
            readings += 1;
            values += r.metrics.len() as u64;
            expected_values += f.devices()[r.device].kind.metrics().len() as u64;
            for (_, v) in &r.metrics {
                assert!(v.is_finite());
            }
            let prev = last_seq.insert(r.device, r.seq);
            assert_eq!(r.seq, prev.map_or(0, |p| p + 1), "seq must have no gaps");
            seen[r.device].push(r.ts_ms);
        }
    }
    let specs = f.devices();
    let labels = f.labels();
    let defective_devices = specs.iter().filter(|d| d.defective_batch).count();
    let defective_failures = labels
        .iter()
        .filter(|l| specs[l.device].defective_batch)
        .count();
    let normal_failures = labels.len() - defective_failures;
    eprintln!(
        "failures {} ({} in defective batch of {} devices)",
        labels.len(),
        defective_failures,
        defective_devices
    );
    assert!((15..=40).contains(&labels.len()), "{}", labels.len());
    let rate_def = defective_failures as f64 / defective_devices as f64;
    let rate_norm = normal_failures as f64 / (200 - defective_devices) as f64;
    assert!(
        rate_def > 2.5 * rate_norm,
        "defective {rate_def} vs {rate_norm}"
    );

    // Dropouts occur, but rarely (configured 0.2 % per metric).
    let missing = 1.0 - values as f64 / expected_values as f64;
    assert!((0.0005..0.01).contains(&missing), "{missing}");
    // Downtime is a small share of device time.
    assert!(readings > 200 * ticks * 95 / 100, "{readings}");

    let end = f.now_ms();
    for l in labels {
        assert!(l.onset_ms < l.failure_ms, "{l:?}");
        assert!(l.failure_ms < l.repaired_ms, "{l:?}");
        let days = (l.failure_ms - l.onset_ms) as f64 / DAY as f64;
        assert!((4.9..=30.1).contains(&days), "{days}");
        let down = (l.repaired_ms - l.failure_ms) as f64 / 3_600_000.0;
        assert!((4.0..=24.0).contains(&down), "{down}");
        assert!(l.failure_ms < end);
        assert!(
            specs[l.device]
                .kind
                .failure_modes()
                .contains(&l.failure_mode)
        );
        // Silent while failed: no reading in [failure, repaired).
        assert!(
            !seen[l.device]
                .iter()
                .any(|&t| t >= l.failure_ms && t < l.repaired_ms),
            "{l:?}"
        );
    }
    for m in f.maintenance() {
        assert!(m.start_ms < m.end_ms);
        assert!(
            !seen[m.device]
                .iter()
                .any(|&t| t >= m.start_ms && t < m.end_ms)
        );
    }
    // Labels are in order of occurrence.
    assert!(
        labels
            .windows(2)
            .all(|w| w[0].failure_ms <= w[1].failure_ms + f.config().sample_interval_ms)
    );
}

/// Per-device samples of the metrics the degradation tests look at, taken
/// only while the device runs (speed > 0), so that idle periods do not blur
/// the comparison.
struct Series {
    ts: Vec<i64>,
    values: HashMap<&'static str, Vec<f64>>,
}

fn collect_running(cfg: FleetConfig, days: f64) -> (Fleet, Vec<Series>) {
    let mut f = Fleet::new(cfg).expect("valid config");
    let n = f.devices().len();
    let mut series: Vec<Series> = (0..n)
        .map(|_| Series {
            ts: Vec::new(),
            values: HashMap::new(),
        })
        .collect();
    let mut tick = Tick::default();
    for _ in 0..f.ticks_per_days(days) {
        f.next_tick_into(&mut tick);
        for r in &tick.readings {
            if r.get(SPEED).unwrap_or(0.0) <= 0.0 {
                continue;
            }
            let s = &mut series[r.device];
            // Keep series aligned: NaN where a metric dropped out.
            s.ts.push(r.ts_ms);
            for m in [VIBRATION_RMS, BEARING_TEMP, MOTOR_TEMP, CURRENT, PRESSURE] {
                s.values
                    .entry(m)
                    .or_default()
                    .push(r.get(m).unwrap_or(f64::NAN));
            }
        }
    }
    (f, series)
}

fn stats(s: &Series, metric: &str, from: i64, to: i64) -> Option<(f64, f64, usize)> {
    let vals: Vec<f64> =
        s.ts.iter()
            .zip(s.values.get(metric)?)
            .filter(|(t, v)| **t >= from && **t < to && v.is_finite())
            .map(|(_, v)| *v)
            .collect();
    if vals.len() < 20 {
        return None;
    }
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    Some((mean, sd, vals.len()))
}

#[test]
fn degradation_moves_the_right_sensors() {
    let cfg = FleetConfig {
        devices: 60,
        seed: 21,
        base_hazard_per_year: 5.0,
        preventive_interval_days: None,
        degraded_at_start: false,
        ..FleetConfig::default()
    };
    let start = cfg.start_ms;
    let (f, series) = collect_running(cfg, 60.0);
    let labels = f.labels();
    let mut checked: HashMap<FailureMode, (usize, usize)> = HashMap::new();
    let mut early_ok = 0;
    let mut early_n = 0;
    for l in labels {
        let s = &series[l.device];
        // Healthy baseline: from the start (or the previous repair) to onset.
        let prev_repair = labels
            .iter()
            .filter(|p| p.device == l.device && p.repaired_ms <= l.onset_ms)
            .map(|p| p.repaired_ms)
            .max()
            .unwrap_or(start);
        let (metric, sign, k) = match l.failure_mode {
            FailureMode::BearingWear => (VIBRATION_RMS, 1.0, 2.0),
            FailureMode::SealLeak => (PRESSURE, -1.0, 2.0),
            FailureMode::Overheating => (MOTOR_TEMP, 1.0, 2.0),
        };
        let Some((h_mean, h_sd, _)) = stats(s, metric, prev_repair, l.onset_ms) else {
            continue;
        };
        let Some((late_mean, _, _)) = stats(s, metric, l.failure_ms - 2 * DAY, l.failure_ms) else {
            continue;
        };
        let mid = stats(
            s,
            metric,
            l.onset_ms + (l.failure_ms - l.onset_ms) / 2,
            l.onset_ms + (l.failure_ms - l.onset_ms) * 6 / 10,
        );
        eprintln!(
            "{:?} z(mid) {:.1} z(last 2 days) {:.1}",
            l.failure_mode,
            mid.map_or(f64::NAN, |m| sign * (m.0 - h_mean) / h_sd),
            sign * (late_mean - h_mean) / h_sd
        );
        let e = checked.entry(l.failure_mode).or_default();
        e.0 += 1;
        if sign * (late_mean - h_mean) > k * h_sd {
            e.1 += 1;
        } else {
            eprintln!("weak {l:?}: healthy {h_mean:.2}±{h_sd:.2}, late {late_mean:.2}");
        }
        // Early degradation is subtle: the first fifth of the way is within
        // one healthy standard deviation.
        let span = l.failure_ms - l.onset_ms;
        if let Some((early_mean, _, _)) = stats(s, metric, l.onset_ms, l.onset_ms + span / 5) {
            early_n += 1;
            if (early_mean - h_mean).abs() < h_sd {
                early_ok += 1;
            }
        }
        // Bearing wear drags the bearing temperature along.
        if l.failure_mode == FailureMode::BearingWear
            && let (Some((hb, sb, _)), Some((lb, _, _))) = (
                stats(s, BEARING_TEMP, prev_repair, l.onset_ms),
                stats(s, BEARING_TEMP, l.failure_ms - DAY, l.failure_ms),
            )
        {
            assert!(lb > hb + sb, "bearing temp {hb}±{sb} -> {lb}");
        }
    }
    eprintln!("checked {checked:?}, early subtle {early_ok}/{early_n}");
    for mode in [
        FailureMode::BearingWear,
        FailureMode::SealLeak,
        FailureMode::Overheating,
    ] {
        let (n, ok) = checked.get(&mode).copied().unwrap_or((0, 0));
        assert!(n >= 3, "too few {mode:?} failures to check: {n}");
        assert!(ok * 10 >= n * 9, "{mode:?}: only {ok}/{n} clearly visible");
    }
    assert!(early_n >= 10);
    assert!(early_ok * 10 >= early_n * 8, "{early_ok}/{early_n}");
}

#[test]
fn sensors_follow_load() {
    // Current and (for pumps) flow rise and fall together with the regime.
    let cfg = FleetConfig {
        devices: 20,
        base_hazard_per_year: 0.0,
        ..FleetConfig::default()
    };
    let mut f = Fleet::new(cfg).expect("valid config");
    let mut pairs: HashMap<usize, Vec<(f64, f64)>> = HashMap::new();
    for _ in 0..f.ticks_per_days(7.0) {
        let t = f.next_tick();
        for r in &t.readings {
            if let (Some(c), Some(v)) = (r.get(CURRENT), r.get(VIBRATION_RMS)) {
                pairs.entry(r.device).or_default().push((c, v));
            }
        }
    }
    for (d, p) in pairs {
        let n = p.len() as f64;
        let (mx, my) = (
            p.iter().map(|x| x.0).sum::<f64>() / n,
            p.iter().map(|x| x.1).sum::<f64>() / n,
        );
        let cov = p.iter().map(|(x, y)| (x - mx) * (y - my)).sum::<f64>();
        let vx = p.iter().map(|(x, _)| (x - mx).powi(2)).sum::<f64>();
        let vy = p.iter().map(|(_, y)| (y - my).powi(2)).sum::<f64>();
        let corr = cov / (vx * vy).sqrt();
        assert!(corr > 0.5, "device {d}: current/vibration corr {corr}");
    }
}

#[test]
fn telemetry_payload_shape() {
    let mut f = Fleet::new(small(1)).unwrap();
    let t = f.next_tick();
    let r = &t.readings[0];
    let json = r.to_json(42);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["ts"], t.ts_ms);
    assert_eq!(v["seq"], 42);
    let m = v["metrics"].as_object().unwrap();
    assert_eq!(m.len(), r.metrics.len());
    for (name, value) in &r.metrics {
        assert_eq!(m[*name].as_f64().unwrap(), *value);
    }
    let kind = f.devices()[r.device].kind;
    assert!(m.keys().all(|k| kind.metrics().contains(&k.as_str())));
    if kind == DeviceKind::Motor {
        assert!(!m.contains_key(PRESSURE));
    }
}

#[test]
fn labels_round_trip_as_json_lines() {
    let (_, labels) = run(small(2), 3000);
    assert!(!labels.is_empty());
    let mut out = Vec::new();
    write_labels_jsonl(&labels, &mut out).unwrap();
    let back: Vec<FailureLabel> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, labels);
    let line: serde_json::Value =
        serde_json::from_str(std::str::from_utf8(&out).unwrap().lines().next().unwrap()).unwrap();
    for key in [
        "device_id",
        "failure_mode",
        "onset_ms",
        "failure_ms",
        "repaired_ms",
    ] {
        assert!(line.get(key).is_some(), "{key}");
    }
}
