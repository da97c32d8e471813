//! Fleet physics: device registry, operating regimes, sensors, degradation,
//! failures, repairs and preventive maintenance, with ground-truth labels.
//!
//! Everything here is pure and deterministic: the output is a function of the
//! [`FleetConfig`] only (seed included). Time advances in fixed ticks of
//! `sample_interval_ms`; every device is stepped exactly once per tick with its
//! own random stream, so stepping one tick at a time or a thousand gives
//! byte-identical readings and labels.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::calendar::{DAY_MS, HOUR_MS, civil_from_days, day_of_year};
use crate::rng::DevRng;

/// Vibration velocity RMS, mm/s (ISO 10816 style; healthy ≈ 1–3, alarm ≈ 7).
pub const VIBRATION_RMS: &str = "vibration_rms";
/// Bearing housing temperature, °C.
pub const BEARING_TEMP: &str = "bearing_temp";
/// Motor winding temperature, °C.
pub const MOTOR_TEMP: &str = "motor_temp";
/// Motor current, A.
pub const CURRENT: &str = "current";
/// Discharge pressure, bar.
pub const PRESSURE: &str = "pressure";
/// Flow, m³/h.
pub const FLOW: &str = "flow";
/// Shaft speed, rpm.
pub const SPEED: &str = "speed";
/// Every sensor a fleet device may report.
pub const FLEET_METRICS: [&str; 7] = [
    SPEED,
    CURRENT,
    VIBRATION_RMS,
    BEARING_TEMP,
    MOTOR_TEMP,
    PRESSURE,
    FLOW,
];

const PUMP_METRICS: &[&str] = &[
    VIBRATION_RMS,
    BEARING_TEMP,
    MOTOR_TEMP,
    CURRENT,
    PRESSURE,
    FLOW,
    SPEED,
];
const MOTOR_METRICS: &[&str] = &[VIBRATION_RMS, BEARING_TEMP, MOTOR_TEMP, CURRENT, SPEED];

/// Errors from configuring the fleet or writing its ground truth.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A configuration field is out of its accepted range.
    #[error("invalid fleet config: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Writing labels or devices failed.
    #[error("writing ground truth: {0}")]
    Io(#[from] std::io::Error),
    /// Serialising labels or devices failed.
    #[error("serialising ground truth: {0}")]
    Json(#[from] serde_json::Error),
}

/// Kind of equipment; decides the sensors and the failure modes it can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Centrifugal pump with variable-speed drive.
    Pump,
    /// Fixed-speed induction motor (no pressure or flow sensors).
    Motor,
    /// Screw air compressor.
    Compressor,
}

impl DeviceKind {
    /// Lower-case name, also the device id prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pump => "pump",
            Self::Motor => "motor",
            Self::Compressor => "compressor",
        }
    }

    /// Metric names a device of this kind reports (a reading may miss some:
    /// sensor dropouts).
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            Self::Pump | Self::Compressor => PUMP_METRICS,
            Self::Motor => MOTOR_METRICS,
        }
    }

    /// Failure modes this kind can develop; motors have no seal.
    pub fn failure_modes(self) -> &'static [FailureMode] {
        match self {
            Self::Pump | Self::Compressor => &[
                FailureMode::BearingWear,
                FailureMode::SealLeak,
                FailureMode::Overheating,
            ],
            Self::Motor => &[FailureMode::BearingWear, FailureMode::Overheating],
        }
    }
}

/// How a device dies. The sensor signature of each mode:
/// - `BearingWear`: vibration rises exponentially (×4 at failure, noisier),
///   bearing temperature follows (+28 °C), current slightly up.
/// - `SealLeak`: pressure (−30 %) and flow (−35 %) drop, current up (+12 %),
///   a little extra vibration.
/// - `Overheating`: motor temperature climbs (+50 °C), current up (+25 %),
///   bearing temperature a little.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Rolling-element bearing wear.
    BearingWear,
    /// Mechanical seal leak (pumps and compressors).
    SealLeak,
    /// Winding overheating (cooling loss, insulation ageing).
    Overheating,
}

impl FailureMode {
    /// snake_case name, as in the JSON labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BearingWear => "bearing_wear",
            Self::SealLeak => "seal_leak",
            Self::Overheating => "overheating",
        }
    }

    /// Onset→failure duration: (median days, log sigma, min days, max days).
    fn duration_days(self) -> (f64, f64, f64, f64) {
        match self {
            Self::BearingWear => (18.0, 0.3, 8.0, 30.0),
            Self::SealLeak => (10.0, 0.35, 5.0, 20.0),
            Self::Overheating => (8.0, 0.3, 5.0, 15.0),
        }
    }

    /// Curvature of the severity curve: higher stays subtle longer.
    fn curvature(self) -> f64 {
        match self {
            Self::BearingWear => 5.5,
            Self::SealLeak => 2.5,
            Self::Overheating => 3.5,
        }
    }
}

/// Daily operating pattern; decides when a device runs, idles and how hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftPattern {
    /// Runs around the clock, lighter at night.
    Continuous,
    /// Runs 06:00–22:00 local every day, idle at night.
    TwoShift,
    /// Runs 08:00–18:00 local on weekdays only.
    DayShift,
}

/// A service region with its centre and climate (ambient temperature drives
/// all temperatures).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Region name, `[a-z]`.
    pub name: &'static str,
    /// Centre latitude, degrees.
    pub lat: f64,
    /// Centre longitude, degrees.
    pub lon: f64,
    /// Annual mean ambient temperature, °C.
    annual_mean_c: f64,
    /// Half the summer–winter swing, °C.
    annual_amp_c: f64,
}

/// The regions devices are spread over (the seed documents are Chinese
/// after-sales systems; local time is UTC+8 everywhere).
pub const REGIONS: [Region; 5] = [
    Region {
        name: "north",
        lat: 39.90,
        lon: 116.40,
        annual_mean_c: 12.5,
        annual_amp_c: 15.0,
    },
    Region {
        name: "east",
        lat: 31.23,
        lon: 121.47,
        annual_mean_c: 17.0,
        annual_amp_c: 11.0,
    },
    Region {
        name: "south",
        lat: 23.13,
        lon: 113.26,
        annual_mean_c: 22.5,
        annual_amp_c: 7.5,
    },
    Region {
        name: "west",
        lat: 30.66,
        lon: 104.07,
        annual_mean_c: 16.5,
        annual_amp_c: 10.0,
    },
    Region {
        name: "central",
        lat: 30.59,
        lon: 114.31,
        annual_mean_c: 17.0,
        annual_amp_c: 12.0,
    },
];

/// Sites per region.
const SITES_PER_REGION: usize = 4;
/// Local time offset (UTC+8), for shifts and the daily temperature cycle.
const LOCAL_OFFSET_MS: i64 = 8 * HOUR_MS;
pub(crate) const YEAR_MS: f64 = 365.25 * DAY_MS as f64;
/// Days between consecutive production batches.
const BATCH_SPACING_DAYS: i64 = 150;

/// Fleet configuration. `Default` is the reference fleet: 200 devices, seed 7,
/// from 2025-01-01T00:00Z, one sample every 10 minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Number of devices (1..=99 999).
    pub devices: usize,
    /// Seed of every random stream.
    pub seed: u64,
    /// Timestamp of the first tick, epoch ms (year 1970..3000).
    pub start_ms: i64,
    /// Tick length, ms (1 s ..= 1 day).
    pub sample_interval_ms: i64,
    /// Degradation-onset rate of a healthy pump from a normal batch, per year.
    /// Motors have 0.7×, compressors 1.3×, older devices somewhat more.
    pub base_hazard_per_year: f64,
    /// Hazard multiplier of the defective batch; the extra hazard is bearing
    /// wear (the defect is a bad bearing lot).
    pub defective_hazard_factor: f64,
    /// Number of production batches (1..=20).
    pub batches: usize,
    /// Index of the defective batch (0 = oldest), `None` for no defect.
    pub defective_batch: Option<usize>,
    /// Mean days between preventive maintenance visits; `None` disables them.
    pub preventive_interval_days: Option<f64>,
    /// Probability that a single metric is missing from a reading.
    pub dropout_prob: f64,
    /// Start some devices already degrading, as an in-service fleet would be;
    /// without it the first weeks see no failures.
    pub degraded_at_start: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            devices: 200,
            seed: 7,
            start_ms: 1_735_689_600_000, // 2025-01-01T00:00:00Z
            sample_interval_ms: 600_000,
            base_hazard_per_year: 0.5,
            defective_hazard_factor: 4.0,
            batches: 6,
            defective_batch: Some(3),
            preventive_interval_days: Some(240.0),
            dropout_prob: 0.002,
            degraded_at_start: true,
        }
    }
}

impl FleetConfig {
    /// Rejects configurations the physics cannot run (rather than panicking
    /// or producing non-finite numbers later).
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field, reason| Err(SimError::InvalidConfig { field, reason });
        if self.devices == 0 || self.devices > 99_999 {
            return bad("devices", "must be in 1..=99999");
        }
        if !(0..=32_503_680_000_000).contains(&self.start_ms) {
            return bad("start_ms", "must be between 1970 and 3000");
        }
        if !(1_000..=DAY_MS).contains(&self.sample_interval_ms) {
            return bad("sample_interval_ms", "must be in 1000..=86400000");
        }
        if !self.base_hazard_per_year.is_finite()
            || !(0.0..=365.0).contains(&self.base_hazard_per_year)
        {
            return bad("base_hazard_per_year", "must be finite and in 0..=365");
        }
        if !self.defective_hazard_factor.is_finite()
            || !(1.0..=1000.0).contains(&self.defective_hazard_factor)
        {
            return bad("defective_hazard_factor", "must be finite and in 1..=1000");
        }
        if self.batches == 0 || self.batches > 20 {
            return bad("batches", "must be in 1..=20");
        }
        if let Some(b) = self.defective_batch
            && b >= self.batches
        {
            return bad("defective_batch", "must be below batches");
        }
        if let Some(d) = self.preventive_interval_days
            && (!d.is_finite() || d < 1.0)
        {
            return bad("preventive_interval_days", "must be finite and >= 1");
        }
        if !self.dropout_prob.is_finite() || !(0.0..=1.0).contains(&self.dropout_prob) {
            return bad("dropout_prob", "must be in 0..=1");
        }
        Ok(())
    }
}

/// Static description of a device: what the service registry would know.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceSpec {
    /// Position in [`Fleet::devices`]; `Reading::device` refers to it.
    pub index: usize,
    /// `{kind}-{index+1:04}`, `[a-z0-9-]` only: valid as MQTT client id,
    /// username and topic level.
    pub id: String,
    /// Equipment kind.
    pub kind: DeviceKind,
    /// Model name.
    pub model: &'static str,
    /// Serial number, `{model}-{batch yymm}-{index:05}`.
    pub serial: String,
    /// Production batch, `B{yyyy}-{mm}`.
    pub batch: String,
    /// Whether the batch is the defective one (ground truth, not something a
    /// registry would know).
    pub defective_batch: bool,
    /// Firmware version.
    pub firmware: &'static str,
    /// Region name (see [`REGIONS`]).
    pub region: &'static str,
    /// Site id, `site-{region}-{nn}`.
    pub site: String,
    /// Site latitude.
    pub lat: f64,
    /// Site longitude.
    pub lon: f64,
    /// Installation date, epoch ms (before the simulation start).
    pub install_ms: i64,
    /// Warranty end (two years after installation), epoch ms.
    pub warranty_end_ms: i64,
    /// Criticality 1 (low) ..= 3 (high).
    pub criticality: u8,
    /// Operating pattern.
    pub shift: ShiftPattern,
}

/// One failure event (ground truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureLabel {
    /// Device id.
    pub device_id: String,
    /// Device index.
    pub device: usize,
    /// How it failed.
    pub failure_mode: FailureMode,
    /// When degradation started (may precede the simulation start).
    pub onset_ms: i64,
    /// When the device stopped; it publishes nothing from then on.
    pub failure_ms: i64,
    /// When the repaired device runs again (may lie beyond the simulated span).
    pub repaired_ms: i64,
}

/// A preventive maintenance visit (ground truth). A visit during degradation
/// resets health: that degradation never becomes a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceEvent {
    /// Device id.
    pub device_id: String,
    /// Device index.
    pub device: usize,
    /// Start of the visit; the device is stopped and publishes nothing.
    pub start_ms: i64,
    /// End of the visit.
    pub end_ms: i64,
    /// Degradation cut short by the visit, if any.
    pub interrupted_mode: Option<FailureMode>,
    /// Its onset.
    pub interrupted_onset_ms: Option<i64>,
}

/// A degradation under way at the current time (right-censored ground truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveDegradation {
    /// Device id.
    pub device_id: String,
    /// Device index.
    pub device: usize,
    /// Failure mode developing.
    pub failure_mode: FailureMode,
    /// Onset.
    pub onset_ms: i64,
    /// When it will fail unless maintenance intervenes.
    pub scheduled_failure_ms: i64,
}

/// One device's measurements at one tick.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    /// Device index into [`Fleet::devices`].
    pub device: usize,
    /// Timestamp, epoch ms.
    pub ts_ms: i64,
    /// Per-device message sequence number: counts this device's readings
    /// from 0, so gaps only appear when messages are lost, not during downtime.
    pub seq: u64,
    /// (metric, value); values are finite and rounded to sensor resolution.
    pub metrics: Vec<(&'static str, f64)>,
}

impl Reading {
    /// Value of a metric, if present in this reading.
    pub fn get(&self, metric: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }

    /// Prognos telemetry payload
    /// `{"ts":<epoch ms>,"seq":<seq>,"metrics":{"vibration_rms":1.23,...}}`.
    pub fn to_json(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + 24 * self.metrics.len());
        self.write_json(seq, &mut out);
        out
    }

    /// Appends the payload to `out` (reuses the caller's buffer). Non-finite
    /// values are skipped: they are not JSON and never produced by the physics.
    pub fn write_json(&self, seq: u64, out: &mut Vec<u8>) {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(48 + 24 * self.metrics.len());
        // Writing into a String cannot fail.
        let _ = write!(s, "{{\"ts\":{},\"seq\":{},\"metrics\":{{", self.ts_ms, seq);
        let mut first = true;
        for (name, value) in &self.metrics {
            if !value.is_finite() {
                continue;
            }
            if !first {
                s.push(',');
            }
            first = false;
            // Metric names are crate constants of [a-z_]: no escaping needed.
            // `{}` on f64 prints the shortest round-trip form, never exponent
            // notation, which is a valid JSON number.
            let _ = write!(s, "\"{name}\":{value}");
        }
        s.push_str("}}");
        out.extend_from_slice(s.as_bytes());
    }
}

/// All readings of one tick, in device order. Devices that are down
/// (failed and under repair, or in preventive maintenance) are absent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tick {
    /// Tick timestamp, epoch ms.
    pub ts_ms: i64,
    /// Readings, ascending device index.
    pub readings: Vec<Reading>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Degradation {
    pub(crate) mode: FailureMode,
    pub(crate) onset_ms: i64,
    pub(crate) failure_ms: i64,
}

impl Degradation {
    /// Severity 0 at onset .. 1 at failure, convex so that the early part is
    /// buried in noise and the late part is unmistakable.
    fn severity(&self, ts: i64) -> f64 {
        let span = (self.failure_ms - self.onset_ms).max(1) as f64;
        let p = ((ts - self.onset_ms) as f64 / span).clamp(0.0, 1.0);
        let k = self.mode.curvature();
        ((k * p).exp() - 1.0) / (k.exp() - 1.0)
    }
}

#[derive(Debug, Clone, Copy)]
enum Condition {
    Healthy,
    Degrading(Degradation),
    /// Failed or in maintenance: publishes nothing until `until_ms`.
    Down {
        until_ms: i64,
    },
}

/// Per-device nominal operating point (varies a few percent between units).
#[derive(Debug, Clone, Copy)]
struct Nominal {
    vib: f64,
    bearing_rise: f64,
    motor_rise: f64,
    current: f64,
    pressure: f64,
    flow: f64,
    speed: f64,
    base_load: f64,
}

#[derive(Debug, Clone)]
struct Device {
    rng: DevRng,
    kind: DeviceKind,
    shift: ShiftPattern,
    region: usize,
    nominal: Nominal,
    /// Vibration baseline multiplier; re-drawn at each repair (a new bearing
    /// never sits exactly like the old one).
    vib_factor: f64,
    /// Probability of degradation onset per tick.
    onset_prob: f64,
    /// Probability that an onset is bearing wear due to the batch defect.
    defect_bearing_share: f64,
    condition: Condition,
    /// AR(1) load fluctuation around the shift's base load.
    load_ar: f64,
    /// Unplanned stop in progress until then.
    idle_until_ms: i64,
    bearing_temp: f64,
    motor_temp: f64,
    next_pm_ms: i64,
    seq: u64,
}

/// The simulated fleet. Iterate with [`Fleet::next_tick`] (or as an
/// `Iterator<Item = Tick>`, which never ends).
#[derive(Debug, Clone)]
pub struct Fleet {
    cfg: FleetConfig,
    specs: Vec<DeviceSpec>,
    devices: Vec<Device>,
    tick: i64,
    labels: Vec<FailureLabel>,
    maintenance: Vec<MaintenanceEvent>,
    // Per-tick constants derived from the interval.
    load_phi: f64,
    stop_prob: f64,
    alpha_bearing: f64,
    alpha_motor: f64,
}

/// Mean unplanned stops: one every 8 running days, lasting 2 h on average.
const STOP_EVERY_DAYS: f64 = 8.0;
const STOP_MEAN_MS: f64 = 2.0 * HOUR_MS as f64;
/// Thermal time constants.
const TAU_BEARING_MS: f64 = 40.0 * 60_000.0;
const TAU_MOTOR_MS: f64 = 25.0 * 60_000.0;
/// Load fluctuation: correlation time and stationary sigma.
const LOAD_TAU_MS: f64 = 3.0 * HOUR_MS as f64;
const LOAD_SIGMA: f64 = 0.07;

impl Fleet {
    /// Builds the registry and the initial state of every device.
    pub fn new(cfg: FleetConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        let dt = cfg.sample_interval_ms as f64;
        let batches = batch_names(&cfg);
        let mut specs = Vec::with_capacity(cfg.devices);
        let mut devices = Vec::with_capacity(cfg.devices);
        for index in 0..cfg.devices {
            let (spec, dev) = new_device(&cfg, &batches, index);
            specs.push(spec);
            devices.push(dev);
        }
        Ok(Self {
            specs,
            devices,
            tick: 0,
            labels: Vec::new(),
            maintenance: Vec::new(),
            load_phi: (-dt / LOAD_TAU_MS).exp(),
            stop_prob: 1.0 - (-dt / (STOP_EVERY_DAYS * DAY_MS as f64)).exp(),
            alpha_bearing: 1.0 - (-dt / TAU_BEARING_MS).exp(),
            alpha_motor: 1.0 - (-dt / TAU_MOTOR_MS).exp(),
            cfg,
        })
    }

    /// The configuration the fleet was built from.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// Device registry, index = `Reading::device`.
    pub fn devices(&self) -> &[DeviceSpec] {
        &self.specs
    }

    /// Timestamp of the next tick to be generated.
    pub fn now_ms(&self) -> i64 {
        self.cfg
            .start_ms
            .saturating_add(self.tick.saturating_mul(self.cfg.sample_interval_ms))
    }

    /// Number of ticks that cover `days` days (rounded up).
    pub fn ticks_per_days(&self, days: f64) -> u64 {
        let n = (days * DAY_MS as f64 / self.cfg.sample_interval_ms as f64).ceil();
        if n.is_finite() && n > 0.0 {
            n as u64
        } else {
            0
        }
    }

    /// Failures that have happened so far (failure_ms < now), in order of
    /// occurrence (tick, then device index).
    pub fn labels(&self) -> &[FailureLabel] {
        &self.labels
    }

    /// Preventive maintenance visits so far.
    pub fn maintenance(&self) -> &[MaintenanceEvent] {
        &self.maintenance
    }

    /// Degradations under way now (already started, not yet failed).
    pub fn active_degradations(&self) -> Vec<ActiveDegradation> {
        let now = self.now_ms();
        self.devices
            .iter()
            .zip(&self.specs)
            .filter_map(|(d, s)| match d.condition {
                Condition::Degrading(g) if g.onset_ms < now => Some(ActiveDegradation {
                    device_id: s.id.clone(),
                    device: s.index,
                    failure_mode: g.mode,
                    onset_ms: g.onset_ms,
                    scheduled_failure_ms: g.failure_ms,
                }),
                _ => None,
            })
            .collect()
    }

    /// Generates the next tick.
    pub fn next_tick(&mut self) -> Tick {
        let mut tick = Tick::default();
        self.next_tick_into(&mut tick);
        tick
    }

    /// Generates the next tick into `tick`, reusing its allocations (the fast
    /// path for bulk generation).
    pub fn next_tick_into(&mut self, tick: &mut Tick) {
        let ts = self.now_ms();
        tick.ts_ms = ts;
        let mut used = 0;
        for i in 0..self.devices.len() {
            if used == tick.readings.len() {
                tick.readings.push(Reading::default());
            }
            let reading = &mut tick.readings[used];
            reading.metrics.clear();
            if self.step_device(i, ts, reading) {
                used += 1;
            }
        }
        tick.readings.truncate(used);
        self.tick = self.tick.saturating_add(1);
    }

    /// Steps device `i` at `ts`; fills `out` and returns true when the device
    /// publishes a reading this tick.
    fn step_device(&mut self, i: usize, ts: i64, out: &mut Reading) -> bool {
        let pm_mean_ms = self.cfg.preventive_interval_days.map(|d| d * DAY_MS as f64);
        let dropout = self.cfg.dropout_prob;
        let (load_phi, stop_prob, a_b, a_m) = (
            self.load_phi,
            self.stop_prob,
            self.alpha_bearing,
            self.alpha_motor,
        );
        let spec = &self.specs[i];
        let d = &mut self.devices[i];
        let ambient = ambient_c(&REGIONS[d.region], ts);

        // 1. Downtime: nothing is published; on return the device is healthy,
        // cold, and its next preventive visit is rescheduled.
        if let Condition::Down { until_ms } = d.condition {
            if ts < until_ms {
                return false;
            }
            d.condition = Condition::Healthy;
            d.bearing_temp = ambient;
            d.motor_temp = ambient;
            d.vib_factor = d.rng.range(0.9, 1.1);
            d.idle_until_ms = ts;
            if let Some(mean) = pm_mean_ms {
                d.next_pm_ms = ts.saturating_add(d.rng.exponential(mean) as i64);
            }
        }

        // 2. Preventive maintenance resets health, even mid-degradation.
        if pm_mean_ms.is_some() && ts >= d.next_pm_ms {
            let end = ts + pm_visit_ms(&mut d.rng);
            let (mode, onset) = match d.condition {
                Condition::Degrading(g) => (Some(g.mode), Some(g.onset_ms)),
                _ => (None, None),
            };
            self.maintenance.push(MaintenanceEvent {
                device_id: spec.id.clone(),
                device: i,
                start_ms: ts,
                end_ms: end,
                interrupted_mode: mode,
                interrupted_onset_ms: onset,
            });
            d.condition = Condition::Down { until_ms: end };
            return false;
        }

        // 3. Degradation onset or failure.
        match d.condition {
            Condition::Healthy if d.rng.chance(d.onset_prob) => {
                let g = draw_degradation(&mut d.rng, d.kind, d.defect_bearing_share, ts);
                d.condition = Condition::Degrading(g);
            }
            Condition::Degrading(g) if ts >= g.failure_ms => {
                let repaired = g.failure_ms + repair_ms(&mut d.rng);
                self.labels.push(FailureLabel {
                    device_id: spec.id.clone(),
                    device: i,
                    failure_mode: g.mode,
                    onset_ms: g.onset_ms,
                    failure_ms: g.failure_ms,
                    repaired_ms: repaired,
                });
                d.condition = Condition::Down { until_ms: repaired };
                return false;
            }
            _ => {}
        }
        let (s_bearing, s_leak, s_heat) = match d.condition {
            Condition::Degrading(g) => {
                let s = g.severity(ts);
                match g.mode {
                    FailureMode::BearingWear => (s, 0.0, 0.0),
                    FailureMode::SealLeak => (0.0, s, 0.0),
                    FailureMode::Overheating => (0.0, 0.0, s),
                }
            }
            _ => (0.0, 0.0, 0.0),
        };

        // 4. Operating regime: shift schedule, AR(1) load, unplanned stops.
        let noise_ar = d.rng.normal();
        d.load_ar =
            d.load_ar * load_phi + (1.0 - load_phi * load_phi).sqrt() * LOAD_SIGMA * noise_ar;
        let scheduled = scheduled_load(d.shift, d.nominal.base_load, ts);
        if scheduled.is_some() && ts >= d.idle_until_ms && d.rng.chance(stop_prob) {
            d.idle_until_ms = ts + d.rng.exponential(STOP_MEAN_MS) as i64;
        }
        let load = match scheduled {
            Some(base) if ts >= d.idle_until_ms => Some((base + d.load_ar).clamp(0.2, 1.0)),
            _ => None,
        };

        // 5. Physics.
        let n = &d.nominal;
        let (vib, bearing_target, motor_target, current, pressure, flow, speed) = match load {
            Some(l) => {
                let speed_factor = if d.kind == DeviceKind::Pump {
                    0.8 + 0.2 * l
                } else {
                    1.0
                };
                (
                    n.vib
                        * d.vib_factor
                        * (0.6 + 0.4 * l)
                        * (1.0 + 3.0 * s_bearing)
                        * (1.0 + 0.25 * s_leak),
                    ambient + n.bearing_rise * (0.4 + 0.6 * l) + 28.0 * s_bearing + 6.0 * s_heat,
                    ambient
                        + n.motor_rise * (0.35 + 0.65 * l)
                        + 50.0 * s_heat
                        + 4.0 * s_bearing
                        + 4.0 * s_leak,
                    n.current
                        * (0.3 + 0.7 * l)
                        * (1.0 + 0.10 * s_bearing + 0.25 * s_heat + 0.12 * s_leak),
                    n.pressure * (0.6 + 0.4 * l) * (1.0 - 0.30 * s_leak),
                    n.flow * (0.35 + 0.65 * l) * speed_factor * (1.0 - 0.35 * s_leak),
                    n.speed * speed_factor * (1.0 - 0.01 * l),
                )
            }
            None => (
                n.vib * 0.05,
                ambient + 1.0,
                ambient + 1.0,
                n.current * 0.01,
                n.pressure * 0.08 * (1.0 - 0.5 * s_leak),
                0.0,
                0.0,
            ),
        };
        d.bearing_temp += (bearing_target - d.bearing_temp) * a_b;
        d.motor_temp += (motor_target - d.motor_temp) * a_m;

        // 6. Sensor noise (a failing bearing also gets noisier), dropouts and
        // quantisation to sensor resolution. Every metric always draws its
        // noise and dropout so the random stream does not depend on dropouts.
        let running = load.is_some();
        let vib_sigma = 0.07 * (1.0 + 1.5 * s_bearing);
        let values = [
            (
                VIBRATION_RMS,
                (vib * (1.0 + vib_sigma * d.rng.normal())).max(0.01),
                1000.0,
            ),
            (BEARING_TEMP, d.bearing_temp + 0.35 * d.rng.normal(), 100.0),
            (MOTOR_TEMP, d.motor_temp + 0.5 * d.rng.normal(), 100.0),
            (
                CURRENT,
                (current * (1.0 + 0.015 * d.rng.normal())).max(0.0),
                100.0,
            ),
            (
                PRESSURE,
                (pressure * (1.0 + 0.015 * d.rng.normal())).max(0.0),
                1000.0,
            ),
            (FLOW, (flow * (1.0 + 0.02 * d.rng.normal())).max(0.0), 10.0),
            (
                SPEED,
                if running {
                    (speed + 3.0 * d.rng.normal()).max(0.0)
                } else {
                    0.0
                },
                1.0,
            ),
        ];
        let metrics = d.kind.metrics();
        for (name, value, resolution) in values {
            if !metrics.contains(&name) {
                continue;
            }
            if d.rng.chance(dropout) {
                continue;
            }
            let q = (value * resolution).round() / resolution;
            if q.is_finite() {
                out.metrics.push((name, q));
            }
        }
        out.device = i;
        out.ts_ms = ts;
        out.seq = d.seq;
        d.seq += 1;
        true
    }
}

impl Iterator for Fleet {
    type Item = Tick;

    fn next(&mut self) -> Option<Tick> {
        Some(self.next_tick())
    }
}

/// Base load of the shift at `ts`, `None` when the device is scheduled idle.
fn scheduled_load(shift: ShiftPattern, base: f64, ts: i64) -> Option<f64> {
    let local = ts + LOCAL_OFFSET_MS;
    let hour = local.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
    // 1970-01-01 was a Thursday; 0 = Sunday.
    let weekday = (local.div_euclid(DAY_MS) + 4).rem_euclid(7);
    let day = (6.0..22.0).contains(&hour);
    match shift {
        ShiftPattern::Continuous => Some(if day { base } else { base * 0.65 }),
        ShiftPattern::TwoShift => day.then_some(base),
        ShiftPattern::DayShift => {
            ((1..=5).contains(&weekday) && (8.0..18.0).contains(&hour)).then_some(base)
        }
    }
}

/// Ambient temperature: regional annual cycle (coldest around 20 January)
/// plus a daily cycle peaking at 15:00 local.
fn ambient_c(region: &Region, ts: i64) -> f64 {
    let local = ts + LOCAL_OFFSET_MS;
    let days = local.div_euclid(DAY_MS);
    let doy = day_of_year(days) as f64;
    let hour = local.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
    let annual = -region.annual_amp_c * (std::f64::consts::TAU * (doy - 20.0) / 365.25).cos();
    let daily = 4.0 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
    region.annual_mean_c + annual + daily
}

/// Batch names `B{yyyy}-{mm}`, oldest first, produced every 150 days ending
/// 30 days before the start.
fn batch_names(cfg: &FleetConfig) -> Vec<(String, i64)> {
    (0..cfg.batches)
        .map(|k| {
            let back = (cfg.batches - k) as i64 * BATCH_SPACING_DAYS + 30;
            let produced = cfg.start_ms - back * DAY_MS;
            let (y, m, _) = civil_from_days(produced.div_euclid(DAY_MS));
            (format!("B{y:04}-{m:02}"), produced)
        })
        .collect()
}

fn draw_mode(rng: &mut DevRng, kind: DeviceKind, defect_bearing_share: f64) -> FailureMode {
    if rng.chance(defect_bearing_share) {
        return FailureMode::BearingWear;
    }
    let weights: &[f64] = match kind {
        DeviceKind::Pump => &[0.45, 0.35, 0.20],
        DeviceKind::Motor => &[0.6, 0.4],
        DeviceKind::Compressor => &[0.4, 0.25, 0.35],
    };
    let modes = kind.failure_modes();
    modes[rng.weighted(weights).min(modes.len() - 1)]
}

/// Duration of a repair after a failure: 4–24 h, uniform.
pub(crate) fn repair_ms(rng: &mut DevRng) -> i64 {
    (rng.range(4.0, 24.0) * HOUR_MS as f64) as i64
}

/// Duration of a preventive maintenance visit: 2–6 h, uniform.
pub(crate) fn pm_visit_ms(rng: &mut DevRng) -> i64 {
    (rng.range(2.0, 6.0) * HOUR_MS as f64) as i64
}

/// A degradation starting at `onset_ms`: its mode (the defective batch's
/// extra hazard is bearing wear) and when it will fail.
pub(crate) fn draw_degradation(
    rng: &mut DevRng,
    kind: DeviceKind,
    defect_bearing_share: f64,
    onset_ms: i64,
) -> Degradation {
    let mode = draw_mode(rng, kind, defect_bearing_share);
    let (median, sigma, lo, hi) = mode.duration_days();
    let days = rng.lognormal_clipped(median, sigma, lo, hi);
    Degradation {
        mode,
        onset_ms,
        failure_ms: onset_ms + (days * DAY_MS as f64) as i64,
    }
}

/// Degradation-onset rate of a healthy device at `at_ms`, per year: kind, age
/// (wear-out: older units somewhat more) and batch. The tick simulation
/// evaluates it once, at the fleet start.
pub(crate) fn onset_rate_per_year(
    cfg: &FleetConfig,
    kind: DeviceKind,
    defective: bool,
    install_ms: i64,
    at_ms: i64,
) -> f64 {
    let kind_factor = match kind {
        DeviceKind::Pump => 1.0,
        DeviceKind::Motor => 0.7,
        DeviceKind::Compressor => 1.3,
    };
    let age_years = (at_ms - install_ms) as f64 / YEAR_MS;
    let age_factor = (age_years / 2.0).sqrt().clamp(0.6, 1.5);
    let batch_factor = if defective {
        cfg.defective_hazard_factor
    } else {
        1.0
    };
    cfg.base_hazard_per_year * kind_factor * age_factor * batch_factor
}

/// Probability that an onset is bearing wear caused by the batch defect: the
/// defective batch's extra hazard, `(factor − 1) / factor`; 0 elsewhere.
pub(crate) fn defect_bearing_share(cfg: &FleetConfig, defective: bool) -> f64 {
    if defective {
        (cfg.defective_hazard_factor - 1.0) / cfg.defective_hazard_factor
    } else {
        0.0
    }
}

const PUMP_MODELS: [&str; 2] = ["cp-150", "cp-200"];
const MOTOR_MODELS: [&str; 2] = ["im-75", "im-110"];
const COMPRESSOR_MODELS: [&str; 2] = ["sc-37", "sc-55"];
const FIRMWARES: [&str; 3] = ["1.4.2", "1.5.0", "2.0.1"];

fn new_device(cfg: &FleetConfig, batches: &[(String, i64)], index: usize) -> (DeviceSpec, Device) {
    let mut rng = DevRng::new(cfg.seed, index as u64);
    let kind = match rng.weighted(&[0.5, 0.3, 0.2]) {
        0 => DeviceKind::Pump,
        1 => DeviceKind::Motor,
        _ => DeviceKind::Compressor,
    };
    let big = rng.chance(0.4);
    let (model, size) = match (kind, big) {
        (DeviceKind::Pump, b) => (PUMP_MODELS[usize::from(b)], if b { 1.3 } else { 1.0 }),
        (DeviceKind::Motor, b) => (MOTOR_MODELS[usize::from(b)], if b { 1.45 } else { 1.0 }),
        (DeviceKind::Compressor, b) => {
            (COMPRESSOR_MODELS[usize::from(b)], if b { 1.5 } else { 1.0 })
        }
    };
    let batch_idx = rng.below(batches.len());
    let (batch, produced_ms) = batches
        .get(batch_idx)
        .cloned()
        .unwrap_or_else(|| ("B0000-00".to_owned(), cfg.start_ms));
    let defective = cfg.defective_batch == Some(batch_idx);
    let install_ms =
        (produced_ms + (rng.range(20.0, 150.0) * DAY_MS as f64) as i64).min(cfg.start_ms - DAY_MS);
    let region = rng.below(REGIONS.len());
    let site_no = rng.below(SITES_PER_REGION);
    let r = &REGIONS[region];
    let firmware = FIRMWARES[rng.weighted(&[0.3, 0.5, 0.2]).min(FIRMWARES.len() - 1)];
    let criticality = 1 + rng.weighted(&[0.5, 0.35, 0.15]).min(2) as u8;
    let shift = match rng.weighted(&[0.4, 0.4, 0.2]) {
        0 => ShiftPattern::Continuous,
        1 => ShiftPattern::TwoShift,
        _ => ShiftPattern::DayShift,
    };
    let yymm = batch.get(3..5).unwrap_or("00").to_owned() + batch.get(6..8).unwrap_or("00");
    let spec = DeviceSpec {
        index,
        id: format!("{}-{:04}", kind.as_str(), index + 1),
        kind,
        model,
        serial: format!("{}-{}-{:05}", model.to_uppercase(), yymm, index + 1),
        batch,
        defective_batch: defective,
        firmware,
        region: r.name,
        site: format!("site-{}-{:02}", r.name, site_no + 1),
        lat: r.lat + 0.11 * site_no as f64 - 0.15,
        lon: r.lon - 0.09 * site_no as f64 + 0.12,
        install_ms,
        warranty_end_ms: install_ms + 730 * DAY_MS,
        criticality,
        shift,
    };

    let mut v = |x: f64| x * rng.range(0.92, 1.08);
    let nominal = match kind {
        DeviceKind::Pump => Nominal {
            vib: v(1.8),
            bearing_rise: v(25.0),
            motor_rise: v(40.0),
            current: v(32.0 * size),
            pressure: v(6.0),
            flow: v(80.0 * size),
            speed: v(2950.0).min(3000.0),
            base_load: 0.0,
        },
        DeviceKind::Motor => Nominal {
            vib: v(1.4),
            bearing_rise: v(22.0),
            motor_rise: v(45.0),
            current: v(55.0 * size),
            pressure: 0.0,
            flow: 0.0,
            speed: 1480.0,
            base_load: 0.0,
        },
        DeviceKind::Compressor => Nominal {
            vib: v(2.6),
            bearing_rise: v(30.0),
            motor_rise: v(50.0),
            current: v(75.0 * size),
            pressure: v(8.0),
            flow: v(600.0 * size),
            speed: 2980.0,
            base_load: 0.0,
        },
    };
    let nominal = Nominal {
        base_load: rng.range(0.6, 0.9),
        ..nominal
    };

    let per_year = onset_rate_per_year(cfg, kind, defective, install_ms, cfg.start_ms);
    let dt_years = cfg.sample_interval_ms as f64 / YEAR_MS;
    let onset_prob = 1.0 - (-per_year * dt_years).exp();
    let defect_bearing_share = defect_bearing_share(cfg, defective);

    // An in-service fleet has some units already degrading: probability of
    // being inside a degradation window in steady state, λ·E[T] / (1 + λ·E[T]).
    let mut condition = Condition::Healthy;
    if cfg.degraded_at_start {
        let mean_days = 13.0;
        let x = per_year / 365.25 * mean_days;
        if rng.chance(x / (1.0 + x)) {
            let g = draw_degradation(&mut rng, kind, defect_bearing_share, cfg.start_ms);
            let span = g.failure_ms - g.onset_ms;
            let back = (rng.range(0.0, 0.95) * span as f64) as i64;
            condition = Condition::Degrading(Degradation {
                onset_ms: g.onset_ms - back,
                failure_ms: g.failure_ms - back,
                ..g
            });
        }
    }
    let ambient = ambient_c(r, cfg.start_ms);
    let next_pm_ms = cfg
        .preventive_interval_days
        .map(|d| cfg.start_ms + rng.exponential(d * DAY_MS as f64) as i64)
        .unwrap_or(i64::MAX);
    let device = Device {
        kind,
        shift,
        region,
        vib_factor: 1.0,
        onset_prob,
        defect_bearing_share,
        condition,
        load_ar: 0.0,
        idle_until_ms: cfg.start_ms,
        bearing_temp: ambient + nominal.bearing_rise * 0.5,
        motor_temp: ambient + nominal.motor_rise * 0.5,
        nominal,
        next_pm_ms,
        seq: 0,
        rng,
    };
    (spec, device)
}

/// Writes labels as JSON lines (one object per line).
pub fn write_labels_jsonl<W: Write>(labels: &[FailureLabel], mut w: W) -> Result<(), SimError> {
    for l in labels {
        serde_json::to_writer(&mut w, l)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Writes labels as one JSON array.
pub fn write_labels_json<W: Write>(labels: &[FailureLabel], mut w: W) -> Result<(), SimError> {
    serde_json::to_writer_pretty(&mut w, labels)?;
    w.flush()?;
    Ok(())
}

/// Writes the device registry as JSON lines (for seeding the service registry).
pub fn write_devices_jsonl<W: Write>(devices: &[DeviceSpec], mut w: W) -> Result<(), SimError> {
    for d in devices {
        serde_json::to_writer(&mut w, d)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}
