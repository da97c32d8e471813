//! Foreign assets: machines the main simulator does not have, with other
//! metric names and other physics, to test zero-configuration monitoring.
//!
//! - **Lathe** (`model` `"lt-400"`): `spindle_speed` (rpm), `amps` (A),
//!   `spindle_temp` (°C), `vibration` (mm/s). Runs 06–22 h local time on
//!   weekdays (idle otherwise, still reporting: speed 0, a small standby
//!   current, cooling spindle), with unplanned stops; jobs of 20–90 min at
//!   one of four speed setpoints and a random cutting load. The spindle
//!   temperature lags the heat input (τ 40 min) and follows the workshop's
//!   ambient (daily cycle ±3 °C, seasonal ±8 °C over the year).
//!   Degradation `spindle_bearing`: `spindle_temp` up to +16 °C and
//!   `vibration` up to ×2 at failure.
//! - **Chiller** (`model` `"ch-90"`): `load_pct` (%), `discharge_pressure`
//!   (bar), `oil_temp` (°C), `motor_kw` (kW). Runs around the clock with a
//!   daily load cycle (peak afternoon), AR(1) load noise, seasonal and daily
//!   ambient (condensing pressure and power rise with ambient); the
//!   compressor stops (load 0) when demand is below 25 %. Degradation
//!   `valve_wear`: `discharge_pressure` down to −1.2 bar and `oil_temp` up to
//!   +10 °C at failure.
//!
//! Degradation severity grows convexly from 0 at onset to 1 at failure (as in
//! the main simulator). After a failure the device is silent for a 12 h
//! repair, then runs healthy. Samples every `sample_interval_ms` (default
//! 1 min); each metric goes missing with probability 0.2 %.
//!
//! Deterministic by seed: each device draws from its own ChaCha8 stream.
//! [`ForeignFleet`] is an iterator over `(device_id, model, ts_ms, metrics)`
//! in time order (devices in index order within a timestamp).

use crate::calendar::day_of_year;
use crate::rng::DevRng;
use std::f64::consts::TAU;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Repair downtime after a failure.
pub const FOREIGN_REPAIR_MS: i64 = 12 * HOUR_MS;

/// The two foreign asset types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKind {
    /// CNC lathe on a weekday two-shift pattern.
    Lathe,
    /// Screw chiller running around the clock.
    Chiller,
}

impl ForeignKind {
    /// Device model name.
    pub fn model(self) -> &'static str {
        match self {
            Self::Lathe => "lt-400",
            Self::Chiller => "ch-90",
        }
    }

    /// Metric names, in publishing order.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            Self::Lathe => &["spindle_speed", "amps", "spindle_temp", "vibration"],
            Self::Chiller => &["load_pct", "discharge_pressure", "oil_temp", "motor_kw"],
        }
    }

    /// Failure mode of the degrading variant.
    pub fn failure_mode(self) -> &'static str {
        match self {
            Self::Lathe => "spindle_bearing",
            Self::Chiller => "valve_wear",
        }
    }

    /// Metrics the degradation moves.
    pub fn degrading_metrics(self) -> &'static [&'static str] {
        match self {
            Self::Lathe => &["spindle_temp", "vibration"],
            Self::Chiller => &["discharge_pressure", "oil_temp"],
        }
    }
}

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignConfig {
    /// Devices (alternating lathe, chiller).
    pub devices: usize,
    /// Simulated days.
    pub days: f64,
    /// Seed of every random stream.
    pub seed: u64,
    /// First timestamp, epoch ms (default 2025-01-01T00:00Z).
    pub start_ms: i64,
    /// Sample interval, ms (default 1 min).
    pub sample_interval_ms: i64,
    /// Fraction of devices that degrade (devices with odd index / 2 < fraction
    /// × devices / 2 of each kind, i.e. the first ones of each kind).
    pub degrading_fraction: f64,
    /// Earliest degradation onset, days after the start (default 6).
    pub min_onset_days: f64,
    /// Probability that one metric is missing from a sample.
    pub dropout_prob: f64,
}

impl Default for ForeignConfig {
    fn default() -> Self {
        Self {
            devices: 40,
            days: 30.0,
            seed: 1,
            start_ms: 1_735_689_600_000,
            sample_interval_ms: 60_000,
            degrading_fraction: 0.5,
            min_onset_days: 6.0,
            dropout_prob: 0.002,
        }
    }
}

/// Ground truth of one degrading device.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignTruth {
    /// Device id.
    pub device_id: String,
    /// Model.
    pub model: &'static str,
    /// Failure mode.
    pub failure_mode: &'static str,
    /// Metrics the degradation moves.
    pub metrics: &'static [&'static str],
    /// Degradation onset, epoch ms.
    pub onset_ms: i64,
    /// Functional failure, epoch ms (then 12 h silent repair, then healthy).
    pub failure_ms: i64,
}

/// A foreign device.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignDevice {
    /// Device id (`lathe-0001`, `chiller-0002`, ...).
    pub id: String,
    /// Asset type.
    pub kind: ForeignKind,
    /// Model name.
    pub model: &'static str,
    /// Local time offset from UTC, hours.
    pub utc_offset_h: i64,
    /// Degradation, if this device degrades.
    pub degradation: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
struct State {
    rng: DevRng,
    /// Per-device scale of the machine (size), ±10 %.
    size: f64,
    /// Day of year at the start shifted per device (site climate phase).
    season_phase: f64,
    temp: f64,
    load_ar: f64,
    /// Lathe: end of the current job or stop, speed setpoint, cutting load.
    job_end: i64,
    setpoint: f64,
    cut: f64,
    stopped: bool,
}

/// Deterministic foreign fleet; an iterator of samples in time order.
#[derive(Debug, Clone)]
pub struct ForeignFleet {
    cfg: ForeignConfig,
    devices: Vec<ForeignDevice>,
    states: Vec<State>,
    ts: i64,
    end: i64,
    next_device: usize,
}

impl ForeignFleet {
    /// Builds the fleet (devices alternate lathe, chiller).
    pub fn new(cfg: ForeignConfig) -> Self {
        let n = cfg.devices;
        let mut devices = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let per_kind = n.div_ceil(2);
        let degrading_per_kind = (cfg.degrading_fraction * per_kind as f64).round() as usize;
        let days = cfg.days;
        for i in 0..n {
            let kind = if i % 2 == 0 {
                ForeignKind::Lathe
            } else {
                ForeignKind::Chiller
            };
            let mut rng = DevRng::new(cfg.seed ^ 0xF0_4E_16_0A, i as u64);
            let degrading = i / 2 < degrading_per_kind;
            // Onset and failure: failure in the last 40 % of the run, 8–14
            // days of degradation, onset not before `min_onset_days`.
            let fail_day = rng.range(0.6 * days, 0.97 * days);
            let dur = rng.range(8.0, 14.0).min(fail_day - cfg.min_onset_days);
            let degradation = (degrading && dur > 1.0).then(|| {
                let f = cfg.start_ms + (fail_day * DAY_MS as f64) as i64;
                (f - (dur * DAY_MS as f64) as i64, f)
            });
            let utc_offset_h = [0, 1, -5, 8][rng.below(4)];
            let name = match kind {
                ForeignKind::Lathe => "lathe",
                ForeignKind::Chiller => "chiller",
            };
            devices.push(ForeignDevice {
                id: format!("{name}-{:04}", i + 1),
                kind,
                model: kind.model(),
                utc_offset_h,
                degradation,
            });
            let size = rng.range(0.9, 1.1);
            let season_phase = rng.range(0.0, 365.0);
            states.push(State {
                rng,
                size,
                season_phase,
                temp: f64::NAN,
                load_ar: 0.0,
                job_end: i64::MIN,
                setpoint: 0.0,
                cut: 0.0,
                stopped: false,
            });
        }
        let end = cfg.start_ms + (cfg.days * DAY_MS as f64) as i64;
        let ts = cfg.start_ms;
        Self {
            cfg,
            devices,
            states,
            ts,
            end,
            next_device: 0,
        }
    }

    /// The devices.
    pub fn devices(&self) -> &[ForeignDevice] {
        &self.devices
    }

    /// First timestamp.
    pub fn start_ms(&self) -> i64 {
        self.cfg.start_ms
    }

    /// End of the run (exclusive).
    pub fn end_ms(&self) -> i64 {
        self.end
    }

    /// Ground truth: one entry per degrading device.
    pub fn truth(&self) -> Vec<ForeignTruth> {
        self.devices
            .iter()
            .filter_map(|d| {
                d.degradation.map(|(onset_ms, failure_ms)| ForeignTruth {
                    device_id: d.id.clone(),
                    model: d.model,
                    failure_mode: d.kind.failure_mode(),
                    metrics: d.kind.degrading_metrics(),
                    onset_ms,
                    failure_ms,
                })
            })
            .collect()
    }

    fn sample(&mut self, i: usize, ts: i64) -> Option<Vec<(&'static str, f64)>> {
        let d = &self.devices[i];
        let sev = match d.degradation {
            Some((_, f)) if ts >= f && ts < f + FOREIGN_REPAIR_MS => return None,
            Some((o, f)) if ts >= o && ts < f => {
                let p = (ts - o) as f64 / (f - o) as f64;
                let k: f64 = 3.0;
                ((k * p).exp() - 1.0) / (k.exp() - 1.0)
            }
            _ => 0.0,
        };
        let dt_min = self.cfg.sample_interval_ms as f64 / 60_000.0;
        let local = ts + d.utc_offset_h * HOUR_MS;
        let hour = local.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
        let days = local.div_euclid(DAY_MS);
        // 1970-01-01 was a Thursday; Monday = 0.
        let weekday = (days + 3).rem_euclid(7);
        let kind = d.kind;
        let s = &mut self.states[i];
        let doy = (day_of_year(days) as f64 + s.season_phase) % 365.0;
        let season = (TAU * (doy - 110.0) / 365.0).sin();
        let daily = (TAU * (hour - 9.0) / 24.0).sin();
        let mut out: Vec<(&'static str, f64)> = match kind {
            ForeignKind::Lathe => {
                let ambient = 19.0 + 3.0 * daily + 8.0 * season;
                let shift = weekday < 5 && (6.0..22.0).contains(&hour);
                if ts >= s.job_end {
                    // A new job or an unplanned stop.
                    s.stopped = s.rng.chance(0.12);
                    let len = if s.stopped {
                        s.rng.range(10.0, 40.0)
                    } else {
                        s.rng.range(20.0, 90.0)
                    };
                    s.job_end = ts + (len * 60_000.0) as i64;
                    s.setpoint = [800.0, 1200.0, 1800.0, 2500.0][s.rng.below(4)];
                    s.cut = s.rng.range(0.3, 1.0);
                }
                let running = shift && !s.stopped;
                let (speed, amps, heat, vib) = if running {
                    let sp = s.setpoint * (1.0 + 0.003 * s.rng.normal());
                    let r = sp / 2500.0;
                    let amps = s.size
                        * (3.0 + 12.0 * s.cut * (0.5 + 0.5 * r))
                        * (1.0 + 0.02 * s.rng.normal());
                    let heat = 18.0 * r.powf(1.2) + 6.0 * s.cut;
                    let vib = s.size
                        * (0.8 + 1.2 * r * r + 0.4 * s.cut)
                        * (1.0 + 1.0 * sev)
                        * (1.0 + 0.06 * s.rng.normal());
                    (sp, amps, heat, vib)
                } else {
                    let amps = 1.5 * (1.0 + 0.03 * s.rng.normal());
                    (0.0, amps, 0.0, 0.05 * (1.0 + 0.2 * s.rng.normal()).abs())
                };
                let target = ambient + heat + if running { 16.0 * sev } else { 0.0 };
                if s.temp.is_nan() {
                    s.temp = ambient;
                }
                s.temp += (target - s.temp) * (1.0 - (-dt_min / 40.0).exp());
                vec![
                    ("spindle_speed", speed),
                    ("amps", amps),
                    ("spindle_temp", s.temp + 0.3 * s.rng.normal()),
                    ("vibration", vib),
                ]
            }
            ForeignKind::Chiller => {
                let ambient = 16.0 + 5.0 * daily + 10.0 * season;
                let phi = (-dt_min / 180.0).exp();
                s.load_ar = s.load_ar * phi + (1.0 - phi * phi).sqrt() * 8.0 * s.rng.normal();
                let demand = 40.0
                    + 35.0 * (TAU * (hour - 9.0) / 24.0).sin().max(0.0)
                    + 1.2 * (ambient - 16.0)
                    + s.load_ar;
                let load = if demand < 25.0 {
                    0.0
                } else {
                    demand.min(100.0)
                };
                let l = load / 100.0;
                let running = load > 0.0;
                let (pressure, kw) = if running {
                    (
                        s.size * (8.0 + 4.0 * l) + 0.12 * (ambient - 16.0) - 1.2 * sev
                            + 0.05 * s.rng.normal(),
                        s.size
                            * (5.0 + 50.0 * l)
                            * (1.0 + 0.004 * (ambient - 16.0))
                            * (1.0 + 0.015 * s.rng.normal()),
                    )
                } else {
                    (
                        3.0 + 0.05 * (ambient - 16.0) + 0.05 * s.rng.normal(),
                        0.3 * (1.0 + 0.05 * s.rng.normal()),
                    )
                };
                let target = ambient
                    + if running {
                        25.0 + 20.0 * l + 10.0 * sev
                    } else {
                        5.0
                    };
                if s.temp.is_nan() {
                    s.temp = target;
                }
                s.temp += (target - s.temp) * (1.0 - (-dt_min / 30.0).exp());
                vec![
                    ("load_pct", load * (1.0 + 0.002 * s.rng.normal())),
                    ("discharge_pressure", pressure),
                    ("oil_temp", s.temp + 0.3 * s.rng.normal()),
                    ("motor_kw", kw),
                ]
            }
        };
        let p = self.cfg.dropout_prob;
        if p > 0.0 {
            let s = &mut self.states[i];
            out.retain(|_| !s.rng.chance(p));
        }
        Some(out)
    }
}

impl Iterator for ForeignFleet {
    /// `(device_id, model, ts_ms, metrics)`.
    type Item = (String, &'static str, i64, Vec<(&'static str, f64)>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.ts >= self.end || self.devices.is_empty() {
                return None;
            }
            let i = self.next_device;
            let ts = self.ts;
            self.next_device += 1;
            if self.next_device >= self.devices.len() {
                self.next_device = 0;
                self.ts += self.cfg.sample_interval_ms.max(1);
            }
            if let Some(m) = self.sample(i, ts) {
                let d = &self.devices[i];
                return Some((d.id.clone(), d.model, ts, m));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_time_ordered_and_finite() {
        let cfg = ForeignConfig {
            devices: 4,
            days: 2.0,
            ..ForeignConfig::default()
        };
        let a: Vec<_> = ForeignFleet::new(cfg.clone()).collect();
        let b: Vec<_> = ForeignFleet::new(cfg).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].2 <= w[1].2));
        assert!(a.iter().all(|s| s.3.iter().all(|(_, v)| v.is_finite())));
        assert!(a.len() > 4 * 2 * 1440 * 9 / 10);
        // Lathes idle at night and at weekends, run in the shift.
        let lathe_speeds: Vec<f64> = a
            .iter()
            .filter(|s| s.1 == "lt-400")
            .filter_map(|s| s.3.iter().find(|m| m.0 == "spindle_speed").map(|m| m.1))
            .collect();
        assert!(lathe_speeds.contains(&0.0));
        assert!(lathe_speeds.iter().any(|v| *v > 500.0));
    }

    #[test]
    fn truth_lies_inside_the_run() {
        let f = ForeignFleet::new(ForeignConfig::default());
        let t = f.truth();
        assert_eq!(t.len(), 20);
        for g in &t {
            assert!(g.onset_ms >= f.start_ms() + 6 * DAY_MS - 1);
            assert!(g.failure_ms < f.end_ms() && g.onset_ms < g.failure_ms);
        }
    }
}
