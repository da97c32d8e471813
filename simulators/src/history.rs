//! Service history before the simulated span: failures, repairs and preventive
//! visits between each device's installation and the fleet start, drawn event
//! by event from the tick simulation's hazard model without stepping the
//! physics through those years.
//!
//! Per device, from installation (healthy, new):
//! - degradation onsets arrive at the device's onset rate
//!   ([`Fleet::device_hazard_per_year_at`]: kind, batch and age, the age factor
//!   evaluated at each instant, so it equals the tick simulation's rate at the
//!   fleet start and is lower while the device was younger), drawn by thinning
//!   a Poisson process at the rate at the start (the highest);
//! - an onset draws its mode and onset→failure duration with the tick
//!   simulation's own function (defective-batch bearing share included);
//! - preventive visits arrive at exponential intervals of mean
//!   `preventive_interval_days` of up-time, rescheduled after every return to
//!   service as in the tick simulation; a visit during a degradation cuts it
//!   short (no failure);
//! - a failure is followed by the same 4–24 h repair, a visit by the same
//!   2–6 h stop.
//!
//! Anything not over by the fleet start is dropped: a degradation still
//! running then (the tick simulation has its own
//! [`FleetConfig::degraded_at_start`](crate::FleetConfig::degraded_at_start)),
//! and a repair or visit that would straddle it.
//!
//! The random stream of each device's history is the fleet seed's ChaCha
//! stream `2^63 + index`, disjoint from the tick simulation's streams
//! (`index`): asking for the history changes no telemetry or label.

use serde::Serialize;

use crate::calendar::DAY_MS;
use crate::fleet::{
    DeviceSpec, FailureLabel, Fleet, FleetConfig, MaintenanceEvent, YEAR_MS, defect_bearing_share,
    draw_degradation, onset_rate_per_year, pm_visit_ms, repair_ms,
};
use crate::rng::DevRng;

/// Stream offset of the history generators; the tick simulation uses streams
/// `0..devices` (at most 99 999).
const HISTORY_STREAM: u64 = 1 << 63;

/// What happened to the fleet between each device's installation and the fleet start:
/// failures (with repair end) and preventive visits, drawn from the same hazard model as the
/// tick simulation, event by event (no physics), deterministic by seed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceHistory {
    /// Failures, by failure time (then device index). Onset, failure and
    /// repair end all lie in `[install_ms, start_ms)` of the device.
    pub failures: Vec<FailureLabel>,
    /// Preventive visits, by start time (then device index); those that cut
    /// a degradation short name it.
    pub maintenance: Vec<MaintenanceEvent>,
}

impl Fleet {
    /// The fleet's service history before [`FleetConfig::start_ms`]. A pure
    /// function of the configuration: the same whenever it is called, and
    /// without effect on the tick simulation. Cost O(events).
    pub fn history_before_start(&self) -> ServiceHistory {
        let cfg = self.config();
        let mut history = ServiceHistory::default();
        for spec in self.devices() {
            device_history(cfg, spec, &mut history);
        }
        history
            .failures
            .sort_by_key(|l| (l.failure_ms, l.device, l.onset_ms));
        history
            .maintenance
            .sort_by_key(|m| (m.start_ms, m.device, m.end_ms));
        history
    }

    /// Degradation-onset rate of device `index` per year, as the tick
    /// simulation uses it (evaluated at the fleet start); `None` for an
    /// unknown index.
    pub fn device_hazard_per_year(&self, index: usize) -> Option<f64> {
        self.device_hazard_per_year_at(index, self.config().start_ms)
    }

    /// Degradation-onset rate of device `index` per year at `at_ms` (the age
    /// factor grows with time since installation); `None` for an unknown
    /// index or a time before its installation.
    pub fn device_hazard_per_year_at(&self, index: usize, at_ms: i64) -> Option<f64> {
        let spec = self.devices().get(index)?;
        (at_ms >= spec.install_ms).then(|| {
            onset_rate_per_year(
                self.config(),
                spec.kind,
                spec.defective_batch,
                spec.install_ms,
                at_ms,
            )
        })
    }
}

/// Appends one device's history (unsorted across devices, in time order for
/// this device).
fn device_history(cfg: &FleetConfig, spec: &DeviceSpec, out: &mut ServiceHistory) {
    let end = cfg.start_ms;
    let mut rng = DevRng::new(cfg.seed, HISTORY_STREAM | spec.index as u64);
    let pm_mean_ms = cfg.preventive_interval_days.map(|d| d * DAY_MS as f64);
    let next_pm_after = |rng: &mut DevRng, t: i64| {
        pm_mean_ms.map_or(i64::MAX, |mean| {
            t.saturating_add(rng.exponential(mean) as i64)
        })
    };
    let rate =
        |t: i64| onset_rate_per_year(cfg, spec.kind, spec.defective_batch, spec.install_ms, t);
    // The age factor only grows, so the rate at the start bounds the rate
    // over the whole history: candidates at that rate, thinned.
    let max_rate = rate(end);
    let candidate_mean_ms = if max_rate > 0.0 {
        Some(YEAR_MS / max_rate)
    } else {
        None
    };
    let share = defect_bearing_share(cfg, spec.defective_batch);

    let mut t = spec.install_ms;
    let mut next_pm = next_pm_after(&mut rng, t);
    while t < end {
        // Healthy from t: the next onset, if it comes before the next visit.
        let until = next_pm.min(end);
        let mut onset = None;
        if let Some(mean) = candidate_mean_ms {
            let mut c = t;
            loop {
                c = c.saturating_add(rng.exponential(mean) as i64);
                if c >= until {
                    break;
                }
                if rng.uniform() * max_rate < rate(c) {
                    onset = Some(c);
                    break;
                }
            }
        }
        let interrupted = match onset {
            None => None,
            Some(onset_ms) => {
                let g = draw_degradation(&mut rng, spec.kind, share, onset_ms);
                // The tick simulation checks the visit before the failure.
                if g.failure_ms < next_pm {
                    if g.failure_ms >= end {
                        break;
                    }
                    let repaired = g.failure_ms.saturating_add(repair_ms(&mut rng));
                    if repaired >= end {
                        break;
                    }
                    out.failures.push(FailureLabel {
                        device_id: spec.id.clone(),
                        device: spec.index,
                        failure_mode: g.mode,
                        onset_ms: g.onset_ms,
                        failure_ms: g.failure_ms,
                        repaired_ms: repaired,
                    });
                    t = repaired;
                    next_pm = next_pm_after(&mut rng, t);
                    continue;
                }
                Some(g)
            }
        };
        // A preventive visit, healthy or cutting a degradation short.
        if next_pm >= end {
            break;
        }
        let visit_end = next_pm.saturating_add(pm_visit_ms(&mut rng));
        if visit_end >= end {
            break;
        }
        out.maintenance.push(MaintenanceEvent {
            device_id: spec.id.clone(),
            device: spec.index,
            start_ms: next_pm,
            end_ms: visit_end,
            interrupted_mode: interrupted.map(|g| g.mode),
            interrupted_onset_ms: interrupted.map(|g| g.onset_ms),
        });
        t = visit_end;
        next_pm = next_pm_after(&mut rng, t);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::fleet::{DeviceKind, FailureMode};

    fn fleet(devices: usize, seed: u64) -> Fleet {
        Fleet::new(FleetConfig {
            devices,
            seed,
            ..FleetConfig::default()
        })
        .expect("valid config")
    }

    #[test]
    fn deterministic_by_seed_and_independent_of_ticking() {
        let a = fleet(300, 11).history_before_start();
        assert!(!a.failures.is_empty() && !a.maintenance.is_empty());
        assert_eq!(a, fleet(300, 11).history_before_start());
        assert_ne!(a.failures, fleet(300, 12).history_before_start().failures);
        assert_ne!(
            a.maintenance,
            fleet(300, 12).history_before_start().maintenance
        );
        // A fleet that has run still reports the same history.
        let mut f = fleet(300, 11);
        for _ in 0..200 {
            f.next_tick();
        }
        assert_eq!(a, f.history_before_start());
        // A device's history does not depend on how many others exist.
        let small = fleet(100, 11).history_before_start();
        let head: Vec<_> = a.failures.iter().filter(|l| l.device < 100).collect();
        assert_eq!(head, small.failures.iter().collect::<Vec<_>>());
    }

    #[test]
    fn history_does_not_change_the_tick_simulation() {
        let mut plain = fleet(50, 3);
        let mut asked = fleet(50, 3);
        let h = asked.history_before_start();
        assert!(!h.failures.is_empty());
        for _ in 0..500 {
            assert_eq!(plain.next_tick(), asked.next_tick());
        }
        assert_eq!(plain.labels(), asked.labels());
        assert_eq!(plain.maintenance(), asked.maintenance());
    }

    #[test]
    fn events_lie_in_service_life_are_sorted_and_do_not_overlap() {
        let f = Fleet::new(FleetConfig {
            devices: 500,
            seed: 5,
            // Many events, and many visits interrupting degradations.
            base_hazard_per_year: 3.0,
            preventive_interval_days: Some(30.0),
            ..FleetConfig::default()
        })
        .expect("valid config");
        let start = f.config().start_ms;
        let h = f.history_before_start();
        assert!(h.failures.len() > 1000, "{}", h.failures.len());
        assert!(
            h.maintenance
                .iter()
                .filter(|m| m.interrupted_mode.is_some())
                .count()
                > 100
        );
        assert!(
            h.failures
                .windows(2)
                .all(|w| w[0].failure_ms <= w[1].failure_ms)
        );
        assert!(
            h.maintenance
                .windows(2)
                .all(|w| w[0].start_ms <= w[1].start_ms)
        );
        // Busy intervals per device: degradation through repair, visits (with
        // the degradation they cut short).
        let mut busy: HashMap<usize, Vec<(i64, i64)>> = HashMap::new();
        for l in &h.failures {
            let spec = &f.devices()[l.device];
            assert_eq!(l.device_id, spec.id);
            assert!(spec.kind.failure_modes().contains(&l.failure_mode));
            assert!(spec.install_ms <= l.onset_ms, "{l:?}");
            assert!(l.onset_ms < l.failure_ms && l.failure_ms < l.repaired_ms);
            assert!(l.repaired_ms < start, "{l:?}");
            let days = (l.failure_ms - l.onset_ms) as f64 / DAY_MS as f64;
            assert!((5.0..=30.0).contains(&days), "{days}");
            let hours = (l.repaired_ms - l.failure_ms) as f64 / 3_600_000.0;
            assert!((4.0..=24.0).contains(&hours), "{hours}");
            busy.entry(l.device)
                .or_default()
                .push((l.onset_ms, l.repaired_ms));
        }
        for m in &h.maintenance {
            let spec = &f.devices()[m.device];
            assert_eq!(m.device_id, spec.id);
            assert_eq!(
                m.interrupted_mode.is_some(),
                m.interrupted_onset_ms.is_some()
            );
            let from = m.interrupted_onset_ms.unwrap_or(m.start_ms);
            assert!(spec.install_ms <= from && from <= m.start_ms, "{m:?}");
            assert!(m.start_ms < m.end_ms && m.end_ms < start, "{m:?}");
            let hours = (m.end_ms - m.start_ms) as f64 / 3_600_000.0;
            assert!((2.0..=6.0).contains(&hours), "{hours}");
            busy.entry(m.device).or_default().push((from, m.end_ms));
        }
        for (device, mut spans) in busy {
            spans.sort_unstable();
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "device {device}: {w:?}");
            }
        }
    }

    /// Failures the model implies for a device before the start. With onset
    /// rate λ and preventive rate μ, up-time is a renewal process: a healthy
    /// spell (Exp(λ+μ)) then, with probability λ/(λ+μ), a degradation lasting
    /// min(D, Exp(μ)); the device is healthy a fraction 1 / (1 + λ·E[min(D,
    /// Exp(μ))]) of its up-time, and an onset at t fails before the start
    /// with probability E[e^(−μD); D < start − t].
    struct Model {
        /// By kind and defectiveness, estimated with the simulation's own
        /// degradation draw.
        moments: HashMap<(DeviceKind, bool), Moments>,
    }

    struct Moments {
        /// Durations D (ms, ascending) with the cumulative mean of e^(−μD).
        cumulative: Vec<(i64, f64)>,
        /// E[min(D, Exp(μ))], years.
        mean_degrading_years: f64,
    }

    impl Model {
        fn new(cfg: &FleetConfig) -> Self {
            let mu_per_ms = cfg
                .preventive_interval_days
                .map_or(0.0, |d| 1.0 / (d * DAY_MS as f64));
            let mut moments = HashMap::new();
            for (k, kind) in [DeviceKind::Pump, DeviceKind::Motor, DeviceKind::Compressor]
                .into_iter()
                .enumerate()
            {
                for defective in [false, true] {
                    let share = defect_bearing_share(cfg, defective);
                    let mut rng = DevRng::new(99, 2 * k as u64 + u64::from(defective));
                    let n = 100_000;
                    let mut durations: Vec<i64> = (0..n)
                        .map(|_| draw_degradation(&mut rng, kind, share, 0).failure_ms)
                        .collect();
                    durations.sort_unstable();
                    let mut m = 0.0;
                    let mut q = 0.0;
                    let mut cumulative = Vec::with_capacity(n);
                    for d in durations {
                        let survive = (-mu_per_ms * d as f64).exp();
                        q += survive / n as f64;
                        m += if mu_per_ms > 0.0 {
                            (1.0 - survive) / mu_per_ms
                        } else {
                            d as f64
                        };
                        cumulative.push((d, q));
                    }
                    moments.insert(
                        (kind, defective),
                        Moments {
                            cumulative,
                            mean_degrading_years: m / n as f64 / YEAR_MS,
                        },
                    );
                }
            }
            Self { moments }
        }

        /// (expected failures, service years) of device `index` before the start.
        fn device(&self, f: &Fleet, index: usize) -> (f64, f64) {
            let spec = &f.devices()[index];
            let Moments {
                cumulative,
                mean_degrading_years: m,
            } = &self.moments[&(spec.kind, spec.defective_batch)];
            // E[e^(−μD); D < s].
            let fails_within = |s: i64| {
                let k = cumulative.partition_point(|(d, _)| *d < s);
                k.checked_sub(1).map_or(0.0, |k| cumulative[k].1)
            };
            let start = f.config().start_ms;
            let steps = 300;
            let dt = (start - spec.install_ms) as f64 / steps as f64;
            let mut failures = 0.0;
            for s in 0..steps {
                let t = spec.install_ms + ((s as f64 + 0.5) * dt) as i64;
                let lambda = f.device_hazard_per_year_at(index, t).expect("in service");
                failures += lambda / (1.0 + lambda * m) * fails_within(start - t) * dt / YEAR_MS;
            }
            (failures, (start - spec.install_ms) as f64 / YEAR_MS)
        }
    }

    /// Observed and expected failure counts, exposure (service years minus
    /// downtime) and visits, per group (defective batch or not).
    #[derive(Debug, Default, Clone, Copy)]
    struct Tally {
        failures: f64,
        expected: f64,
        exposure_years: f64,
        visits: f64,
        bearing: f64,
    }

    impl Tally {
        fn rate(&self) -> f64 {
            self.failures / self.exposure_years
        }
        fn expected_rate(&self) -> f64 {
            self.expected / self.exposure_years
        }
        fn add(&mut self, o: &Tally) {
            self.failures += o.failures;
            self.expected += o.expected;
            self.exposure_years += o.exposure_years;
            self.visits += o.visits;
            self.bearing += o.bearing;
        }
    }

    /// [others, defective] for one fleet.
    fn tally(f: &Fleet, model: &Model) -> [Tally; 2] {
        let h = f.history_before_start();
        let mut t = [Tally::default(); 2];
        let mut years = [0.0; 2];
        for i in 0..f.devices().len() {
            let g = usize::from(f.devices()[i].defective_batch);
            let (failures, life) = model.device(f, i);
            t[g].expected += failures;
            years[g] += life;
        }
        let mut down_ms = [0i64; 2];
        for l in &h.failures {
            let g = usize::from(f.devices()[l.device].defective_batch);
            t[g].failures += 1.0;
            if l.failure_mode == FailureMode::BearingWear {
                t[g].bearing += 1.0;
            }
            down_ms[g] += l.repaired_ms - l.failure_ms;
        }
        for m in &h.maintenance {
            let g = usize::from(f.devices()[m.device].defective_batch);
            t[g].visits += 1.0;
            down_ms[g] += m.end_ms - m.start_ms;
        }
        for g in 0..2 {
            t[g].exposure_years = years[g] - down_ms[g] as f64 / YEAR_MS;
            // The model's rate is per up-time: expected failures over the
            // observed exposure (downtime is a fraction of a percent).
            t[g].expected *= t[g].exposure_years / years[g];
        }
        t
    }

    /// |observed/expected − 1| in Poisson standard deviations.
    fn sigmas(observed: f64, expected: f64) -> f64 {
        (observed - expected).abs() / expected.sqrt()
    }

    #[test]
    fn failure_rates_follow_the_hazard_model() {
        let f = fleet(2000, 7);
        let cfg = f.config().clone();
        let model = Model::new(&cfg);
        let [others, defective] = tally(&f, &model);
        let ratio = defective.rate() / others.rate();
        let expected_ratio = defective.expected_rate() / others.expected_rate();
        // Poisson: relative sd of the ratio sqrt(1/n₁ + 1/n₂).
        let ratio_sd = (1.0 / defective.expected + 1.0 / others.expected).sqrt();
        let mut all = others;
        all.add(&defective);
        eprintln!(
            "defective {:.3}/y ({} failures, expected {:.3}/y), others {:.3}/y ({} failures, \
             expected {:.3}/y), ratio {ratio:.2} (model {expected_ratio:.2} ± {:.2}), overall \
             {:.3}/y vs model {:.3}/y",
            defective.rate(),
            defective.failures,
            defective.expected_rate(),
            others.rate(),
            others.failures,
            others.expected_rate(),
            ratio_sd * expected_ratio,
            all.rate(),
            all.expected_rate()
        );
        // The model's ratio is below the factor 4: the defective batch is
        // younger than most (age factor), and its longer bearing-wear
        // degradations are cut short by preventive visits more often.
        assert!((2.5..6.0).contains(&ratio), "ratio {ratio}");
        assert!(
            (ratio / expected_ratio - 1.0).abs() < 3.5 * ratio_sd,
            "ratio {ratio}, model {expected_ratio} ± {}",
            ratio_sd * expected_ratio
        );
        assert!(
            (all.rate() / all.expected_rate() - 1.0).abs() < 0.2,
            "overall {} vs {}",
            all.rate(),
            all.expected_rate()
        );
        for g in [&others, &defective, &all] {
            assert!(sigmas(g.failures, g.expected) < 3.5, "{g:?}");
        }
        // The defect is bearing wear.
        assert!(
            defective.bearing / defective.failures > 0.75,
            "{defective:?}"
        );
        assert!(others.bearing / others.failures < 0.6, "{others:?}");
    }

    /// Ten 2,000-device fleets pooled: tight enough to see the age factor,
    /// the visits interrupting degradations and the visit rate itself.
    #[test]
    fn pooled_rates_match_the_model_closely() {
        let model = Model::new(&FleetConfig::default());
        let mut pooled = [Tally::default(); 2];
        for seed in 100..110 {
            let t = tally(&fleet(2000, seed), &model);
            pooled[0].add(&t[0]);
            pooled[1].add(&t[1]);
        }
        let [others, defective] = pooled;
        let mut all = others;
        all.add(&defective);
        let ratio = defective.rate() / others.rate();
        let expected_ratio = defective.expected_rate() / others.expected_rate();
        let ratio_sd = (1.0 / defective.expected + 1.0 / others.expected).sqrt();
        eprintln!(
            "pooled: ratio {ratio:.3} (model {expected_ratio:.3} ± {:.3}), overall {:.4}/y vs \
             model {:.4}/y, visits {:.3}/y",
            ratio_sd * expected_ratio,
            all.rate(),
            all.expected_rate(),
            all.visits / all.exposure_years
        );
        assert!((ratio / expected_ratio - 1.0).abs() < 4.0 * ratio_sd);
        for g in [&others, &defective, &all] {
            assert!(sigmas(g.failures, g.expected) < 4.0, "{g:?}");
        }
        // Visits: one per 240 days of up-time on average.
        let visits_expected = all.exposure_years * 365.25 / 240.0;
        assert!(sigmas(all.visits, visits_expected) < 4.0, "{all:?}");
    }

    #[test]
    fn no_preventive_maintenance_no_hazard() {
        let f = Fleet::new(FleetConfig {
            devices: 200,
            preventive_interval_days: None,
            ..FleetConfig::default()
        })
        .expect("valid config");
        let h = f.history_before_start();
        assert!(h.maintenance.is_empty());
        assert!(!h.failures.is_empty());
        let f = Fleet::new(FleetConfig {
            devices: 200,
            base_hazard_per_year: 0.0,
            ..FleetConfig::default()
        })
        .expect("valid config");
        let h = f.history_before_start();
        assert!(h.failures.is_empty());
        assert!(h.maintenance.iter().all(|m| m.interrupted_mode.is_none()));
        assert!(!h.maintenance.is_empty());
    }

    #[test]
    fn hazard_accessors() {
        let f = fleet(20, 7);
        let start = f.config().start_ms;
        for (i, spec) in f.devices().iter().enumerate() {
            let now = f.device_hazard_per_year(i).expect("known device");
            let young = f
                .device_hazard_per_year_at(i, spec.install_ms)
                .expect("installed");
            assert!(young <= now && young > 0.0);
            assert_eq!(f.device_hazard_per_year_at(i, start), Some(now));
            assert_eq!(f.device_hazard_per_year_at(i, spec.install_ms - 1), None);
        }
        assert_eq!(f.device_hazard_per_year(20), None);
    }

    #[test]
    fn five_thousand_devices_is_cheap() {
        let f = fleet(5000, 7);
        let t0 = std::time::Instant::now();
        let h = f.history_before_start();
        let took = t0.elapsed();
        eprintln!(
            "5000 devices: {} failures, {} visits in {took:?}",
            h.failures.len(),
            h.maintenance.len()
        );
        // Generous for an unoptimised build on a shared machine.
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }
}
