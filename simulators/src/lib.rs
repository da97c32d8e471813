//! Simulated equipment fleet for Prognos: sensor physics, degradation and
//! failures with ground-truth labels, and MQTT publishing (a fleet driver and
//! a load generator for benchmarks).
//!
//! The physics ([`Fleet`]) is pure and deterministic by seed so that demos,
//! tests and model evaluations are reproducible; the MQTT side ([`mqtt`]) is
//! the only part that does I/O.
//!
//! # Physics in one page
//! - Devices: pumps (50 %), motors (30 %), compressors (20 %); two models
//!   each; six production batches, one of them defective (4× hazard, the extra
//!   being bearing wear); five regions with sites; criticality 1..=3; a shift
//!   pattern (24/7, two shifts, weekday day shift; local time UTC+8).
//! - Sensors: `vibration_rms`, `bearing_temp`, `motor_temp`, `current`,
//!   `speed` on all kinds, plus `pressure` and `flow` on pumps and
//!   compressors. Load (shift schedule + AR(1) fluctuation + unplanned stops)
//!   moves them together; temperatures follow ambient (regional season and
//!   daily cycle) with thermal lag. While idle a device still reports (speed
//!   0, flow 0, small current, cooling temperatures).
//! - Noise, quantisation to sensor resolution, and dropouts (each metric
//!   missing with probability `dropout_prob`, default 0.2 %).
//! - Degradation: a random onset (hazard by kind, age and batch) starts one
//!   of [`FailureMode`]'s processes; severity grows convexly from 0 at onset
//!   (buried in noise) to 1 at failure. Onset→failure: bearing wear 8–30 days
//!   (median 18), seal leak 5–20 (10), overheating 5–15 (8).
//! - Failure: the device publishes nothing until repaired 4–24 h later, then
//!   runs healthy again (vibration baseline re-drawn ±10 %). Preventive
//!   visits (mean every 240 days, 2–6 h, also silent) reset health and may cut
//!   a degradation short ([`MaintenanceEvent::interrupted_mode`]).
//! - Ground truth: [`Fleet::labels`], [`Fleet::maintenance`],
//!   [`Fleet::active_degradations`]; writers [`write_labels_jsonl`],
//!   [`write_labels_json`], [`write_devices_jsonl`].
//! - Service history before the start ([`Fleet::history_before_start`]):
//!   failures and preventive visits from each installation to the start,
//!   drawn event by event from the same hazard model (age factor at each
//!   instant) on separate random streams, so the telemetry does not change.
//!   Reference fleet: 106 failures (29 in the defective batch), 417 visits.
//! - Reference run (defaults: 200 devices, seed 7, 90 days, 10-minute ticks):
//!   22 failures, 9 of them among the 29 devices of the defective batch.

mod calendar;
mod fleet;
pub mod foreign;
mod history;
pub mod mqtt;
mod rng;

pub use fleet::{
    ActiveDegradation, BEARING_TEMP, CURRENT, DeviceKind, DeviceSpec, FLOW, FailureLabel,
    FailureMode, Fleet, FleetConfig, MOTOR_TEMP, MaintenanceEvent, PRESSURE, REGIONS, Reading,
    Region, SPEED, ShiftPattern, SimError, Tick, VIBRATION_RMS, write_devices_jsonl,
    write_labels_json, write_labels_jsonl,
};
pub use history::ServiceHistory;
