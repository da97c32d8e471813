//! Fleet reliability from the service history: MTBF and MTTR by group, Weibull life
//! distributions with right-censoring, defective-batch detection with the recall list, the
//! region × failure-mode heatmap and surge alerts. Pure functions over a loaded [`History`].

use std::collections::{BTreeMap, HashMap};

use prognos_stats::reliability::{
    LifeObs, PlotPoint, RateComparison, WeibullComparison, WeibullFit, compare_poisson_rates,
    compare_weibull, fit_weibull, weibull_probability_plot,
};
use serde::Serialize;

use super::AnalyticsError;
use prognos_service::history::{DAY_MS, DeviceLife, FailureRecord, GroupBy, History, YEAR_DAYS};
use prognos_service::ms_to_rfc3339;

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

// ---------------------------------------------------------------------------------------
// MTBF / MTTR

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct MtbfRow {
    pub group: String,
    pub devices: usize,
    pub failures: usize,
    pub operating_days: f64,
    /// Operating time per failure; `None` without failures (then `operating_days` is a
    /// lower bound of it).
    pub mtbf_days: Option<f64>,
    /// Mean time to restore: failure reported → service restored.
    pub mttr_hours: Option<f64>,
    /// MTBF / (MTBF + MTTR).
    pub availability: Option<f64>,
    pub failures_per_device_year: f64,
}

/// MTBF, MTTR and availability per group over `[from_ms, to_ms)`.
pub fn mtbf(history: &History, group_by: GroupBy, from_ms: i64, to_ms: i64) -> Vec<MtbfRow> {
    let by_device = history.failures_by_device();
    #[derive(Default)]
    struct Acc {
        devices: usize,
        failures: usize,
        operating_days: f64,
        restore_hours: Vec<f64>,
    }
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    for d in &history.devices {
        let failures = by_device
            .get(d.device_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let acc = groups.entry(group_by.key(d)).or_default();
        acc.devices += 1;
        acc.operating_days += history.operating_days(d, failures, from_ms, to_ms);
        for f in failures
            .iter()
            .filter(|f| f.at_ms >= from_ms && f.at_ms < to_ms)
        {
            acc.failures += 1;
            if let Some(restored) = f.restored_ms {
                acc.restore_hours
                    .push((restored - f.at_ms).max(0) as f64 / 3_600_000.0);
            }
        }
    }
    groups
        .into_iter()
        .map(|(group, a)| {
            let mtbf_days = (a.failures > 0).then(|| a.operating_days / a.failures as f64);
            let mttr_hours = mean(a.restore_hours.iter().copied());
            MtbfRow {
                group,
                devices: a.devices,
                failures: a.failures,
                operating_days: a.operating_days,
                mtbf_days,
                mttr_hours,
                availability: match (mtbf_days, mttr_hours) {
                    (Some(up), Some(down)) => Some(up / (up + down / 24.0)),
                    _ => None,
                },
                failures_per_device_year: if a.operating_days > 0.0 {
                    a.failures as f64 / (a.operating_days / YEAR_DAYS)
                } else {
                    0.0
                },
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Weibull

/// Lives of the devices for which `include` holds, in days, assuming a repair renews the
/// unit: installation → first failure, each restoration → next failure, and the last
/// restoration → `as_of` as a suspension. With a `mode`, failures of other modes end a life
/// as suspensions (competing risks).
pub fn lives(
    history: &History,
    mode: Option<&str>,
    include: impl Fn(&DeviceLife) -> bool,
) -> Vec<LifeObs> {
    lives_of(history, &history.failures_by_device(), mode, include)
}

/// [`lives`] with the failures already grouped by device (one grouping per request).
fn lives_of(
    history: &History,
    by_device: &HashMap<&str, Vec<&FailureRecord>>,
    mode: Option<&str>,
    include: impl Fn(&DeviceLife) -> bool,
) -> Vec<LifeObs> {
    let mut out = Vec::new();
    for d in history.devices.iter().filter(|d| include(d)) {
        let mut start = d.install_ms;
        for f in by_device.get(d.device_id.as_str()).into_iter().flatten() {
            if f.at_ms <= start {
                continue;
            }
            out.push(LifeObs {
                time: (f.at_ms - start) as f64 / DAY_MS,
                failed: mode.is_none_or(|m| m == f.failure_mode),
            });
            start = f.restored_ms.unwrap_or(f.at_ms).max(f.at_ms);
        }
        if history.as_of_ms > start {
            out.push(LifeObs {
                time: (history.as_of_ms - start) as f64 / DAY_MS,
                failed: false,
            });
        }
    }
    out
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct WeibullGroup {
    pub group: String,
    pub devices: usize,
    pub failures: usize,
    pub suspensions: usize,
    /// `None` when the group has too few failures to fit (`error` says why).
    #[schema(value_type = Option<Object>)]
    pub fit: Option<WeibullFit>,
    pub error: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub probability_plot: Vec<PlotPoint>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct WeibullReport {
    pub group_by: GroupBy,
    pub failure_mode: Option<String>,
    pub unit: &'static str,
    pub groups: Vec<WeibullGroup>,
    /// With `compare`: that group against all other devices.
    pub comparison: Option<GroupComparison>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct GroupComparison {
    pub group: String,
    #[schema(value_type = Option<Object>)]
    pub weibull: Option<WeibullComparison>,
    pub weibull_error: Option<String>,
    /// Failure rate of the group against the rest (one-sided exact test); `None` without
    /// any failure.
    #[schema(value_type = Option<Object>)]
    pub rate: Option<RateComparison>,
}

/// Weibull fits per group (lives in days), optionally for one failure mode, optionally
/// comparing one group with the rest of the fleet.
pub fn weibull(
    history: &History,
    group_by: GroupBy,
    mode: Option<&str>,
    compare: Option<&str>,
    confidence: f64,
) -> Result<WeibullReport, AnalyticsError> {
    let by_device = history.failures_by_device();
    let mut devices_per_group: BTreeMap<String, usize> = BTreeMap::new();
    for d in &history.devices {
        *devices_per_group.entry(group_by.key(d)).or_default() += 1;
    }
    let mut groups = Vec::new();
    for (key, devices) in devices_per_group {
        let obs = lives_of(history, &by_device, mode, |d| group_by.key(d) == key);
        let failures = obs.iter().filter(|o| o.failed).count();
        let (fit, error) = match fit_weibull(&obs, confidence) {
            Ok(fit) => (Some(fit), None),
            Err(e) => (None, Some(e.to_string())),
        };
        groups.push(WeibullGroup {
            group: key,
            devices,
            failures,
            suspensions: obs.len() - failures,
            fit,
            error,
            probability_plot: weibull_probability_plot(&obs),
        });
    }
    let comparison = match compare {
        None => None,
        Some(target) => {
            if !groups.iter().any(|g| g.group == target) {
                return Err(AnalyticsError::UnknownName {
                    name: "compare",
                    message: format!("no {group_by:?} group named {target:?}").to_lowercase(),
                });
            }
            let inside = lives_of(history, &by_device, mode, |d| group_by.key(d) == target);
            let outside = lives_of(history, &by_device, mode, |d| group_by.key(d) != target);
            let (weibull, weibull_error) = match compare_weibull(&inside, &outside, confidence) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let (fa, ea) = failures_and_exposure(&inside);
            let (fb, eb) = failures_and_exposure(&outside);
            Some(GroupComparison {
                group: target.to_owned(),
                weibull,
                weibull_error,
                rate: compare_poisson_rates(fa, ea, fb, eb, confidence).ok(),
            })
        }
    };
    Ok(WeibullReport {
        group_by,
        failure_mode: mode.map(str::to_owned),
        unit: "days",
        groups,
        comparison,
    })
}

/// Failures and exposure in device-years.
fn failures_and_exposure(obs: &[LifeObs]) -> (u64, f64) {
    let failures = obs.iter().filter(|o| o.failed).count() as u64;
    let days: f64 = obs.iter().map(|o| o.time).sum();
    (failures, days / YEAR_DAYS)
}

// ---------------------------------------------------------------------------------------
// Defective batches and the recall list

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct RateTest {
    /// A failure mode, or "all".
    pub failure_mode: String,
    pub failures: u64,
    /// Rate of the batch over the rate of all other devices.
    pub rate_ratio: f64,
    /// The confidence interval: [lower, upper].
    #[schema(value_type = Vec<f64>, min_items = 2, max_items = 2)]
    pub rate_ratio_ci: (f64, f64),
    /// One-sided: is the batch's rate higher?
    pub p_value: f64,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct BatchRow {
    pub batch: String,
    pub devices: usize,
    pub failures: u64,
    pub device_years: f64,
    pub failures_per_device_year: f64,
    /// All failures, then each failure mode, against the rest of the fleet.
    pub tests: Vec<RateTest>,
    pub flagged: bool,
    /// The test that flagged it (the most significant one).
    pub flagged_on: Option<String>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct RecallDevice {
    pub device_id: String,
    pub serial: String,
    pub model: String,
    pub batch: String,
    pub region: String,
    pub site_id: String,
    pub customer_id: String,
    pub installed: String,
    pub failures: usize,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct BatchReport {
    /// How batches are judged, in words.
    pub test: String,
    pub alpha: f64,
    /// The per-test level after the Bonferroni correction.
    pub level: f64,
    pub batches: Vec<BatchRow>,
    /// Devices of flagged batches still in the field (every registered device is).
    pub recall: Vec<RecallDevice>,
}

/// Flags batches whose failure rate is significantly above the rest of the fleet. For each
/// batch, exact one-sided conditional Poisson tests of its failures per device-year against
/// all other devices' — for all failures and for each failure mode, because a defect (a bad
/// bearing lot) shows in one mode far more clearly than in the total. Every test runs at
/// `alpha` divided by the number of tests (Bonferroni), so the chance of flagging any healthy
/// batch stays below `alpha`.
pub fn defective_batches(history: &History, alpha: f64) -> Result<BatchReport, AnalyticsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(AnalyticsError::invalid("alpha", "must be in (0, 1)"));
    }
    let by_device = history.failures_by_device();
    #[derive(Default)]
    struct Acc {
        devices: usize,
        failures: u64,
        days: f64,
        modes: BTreeMap<String, u64>,
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let mut fleet_modes: BTreeMap<String, u64> = BTreeMap::new();
    for d in &history.devices {
        let Some(batch) = &d.batch else { continue };
        let failures = by_device
            .get(d.device_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let a = acc.entry(batch.clone()).or_default();
        a.devices += 1;
        a.days += history.operating_days(d, failures, i64::MIN, i64::MAX);
        for f in failures {
            a.failures += 1;
            *a.modes.entry(f.failure_mode.clone()).or_default() += 1;
            *fleet_modes.entry(f.failure_mode.clone()).or_default() += 1;
        }
    }
    let total_failures: u64 = acc.values().map(|a| a.failures).sum();
    let total_years: f64 = acc.values().map(|a| a.days).sum::<f64>() / YEAR_DAYS;
    let tests_per_batch = 1 + fleet_modes.len();
    let level = alpha / (acc.len() * tests_per_batch).max(1) as f64;
    let mut batches = Vec::new();
    for (batch, a) in &acc {
        let years = a.days / YEAR_DAYS;
        let rest_years = total_years - years;
        if years <= 0.0 || rest_years <= 0.0 {
            continue;
        }
        let mut tests = Vec::new();
        let counts = std::iter::once(("all", a.failures, total_failures)).chain(
            fleet_modes
                .iter()
                .map(|(m, total)| (m.as_str(), a.modes.get(m).copied().unwrap_or(0), *total)),
        );
        for (mode, inside, total) in counts {
            if total == 0 {
                continue;
            }
            let cmp =
                compare_poisson_rates(inside, years, total - inside, rest_years, 1.0 - alpha)?;
            tests.push(RateTest {
                failure_mode: mode.to_owned(),
                failures: inside,
                rate_ratio: cmp.rate_ratio,
                rate_ratio_ci: cmp.rate_ratio_ci,
                p_value: cmp.p_value,
            });
        }
        let best = tests
            .iter()
            .min_by(|x, y| x.p_value.total_cmp(&y.p_value))
            .filter(|t| t.p_value < level);
        batches.push(BatchRow {
            batch: batch.clone(),
            devices: a.devices,
            failures: a.failures,
            device_years: years,
            failures_per_device_year: a.failures as f64 / years,
            flagged: best.is_some(),
            flagged_on: best.map(|t| t.failure_mode.clone()),
            tests,
        });
    }
    let flagged: Vec<&str> = batches
        .iter()
        .filter(|b| b.flagged)
        .map(|b| b.batch.as_str())
        .collect();
    let recall = history
        .devices
        .iter()
        .filter(|d| d.batch.as_deref().is_some_and(|b| flagged.contains(&b)))
        .map(|d| RecallDevice {
            device_id: d.device_id.clone(),
            serial: d.serial.clone(),
            model: d.model.clone(),
            batch: d.batch.clone().unwrap_or_default(),
            region: d.region.clone(),
            site_id: d.site_id.clone(),
            customer_id: d.customer_id.clone(),
            installed: ms_to_rfc3339(d.install_ms),
            failures: by_device.get(d.device_id.as_str()).map_or(0, Vec::len),
        })
        .collect();
    Ok(BatchReport {
        test: format!(
            "exact one-sided conditional Poisson tests of each batch's failures per device-year \
             against all other devices, for all failures and per failure mode; Bonferroni: \
             flagged when p < {alpha} / ({} batches x {tests_per_batch} tests)",
            acc.len()
        ),
        alpha,
        level,
        batches,
        recall,
    })
}

// ---------------------------------------------------------------------------------------
// Heatmap

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct HeatCell {
    pub region: String,
    pub failure_mode: String,
    pub failures: u64,
    /// Failures per 100 device-years of operation in the region over the period.
    pub per_100_device_years: f64,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct Heatmap {
    pub from: String,
    pub to: String,
    pub regions: Vec<String>,
    pub failure_modes: Vec<String>,
    /// `counts[r][m]`: failures in region `regions[r]` of mode `failure_modes[m]`.
    pub counts: Vec<Vec<u64>>,
    pub device_years: Vec<f64>,
    pub cells: Vec<HeatCell>,
}

/// Failure counts and rates by region × failure mode over `[from_ms, to_ms)`.
pub fn heatmap(history: &History, from_ms: i64, to_ms: i64) -> Heatmap {
    let by_device = history.failures_by_device();
    let mut regions: BTreeMap<String, f64> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut modes: BTreeMap<String, ()> = BTreeMap::new();
    for d in &history.devices {
        let failures = by_device
            .get(d.device_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        *regions.entry(d.region.clone()).or_default() +=
            history.operating_days(d, failures, from_ms, to_ms) / YEAR_DAYS;
        for f in failures
            .iter()
            .filter(|f| f.at_ms >= from_ms && f.at_ms < to_ms)
        {
            modes.insert(f.failure_mode.clone(), ());
            *counts
                .entry((d.region.clone(), f.failure_mode.clone()))
                .or_default() += 1;
        }
    }
    let region_names: Vec<String> = regions.keys().cloned().collect();
    let mode_names: Vec<String> = modes.into_keys().collect();
    let mut matrix = Vec::new();
    let mut cells = Vec::new();
    for (region, years) in &regions {
        let mut row = Vec::new();
        for mode in &mode_names {
            let n = counts
                .get(&(region.clone(), mode.clone()))
                .copied()
                .unwrap_or(0);
            row.push(n);
            cells.push(HeatCell {
                region: region.clone(),
                failure_mode: mode.clone(),
                failures: n,
                per_100_device_years: if *years > 0.0 {
                    100.0 * n as f64 / years
                } else {
                    0.0
                },
            });
        }
        matrix.push(row);
    }
    Heatmap {
        from: ms_to_rfc3339(from_ms.max(0)),
        to: ms_to_rfc3339(to_ms.min(history.as_of_ms)),
        regions: region_names,
        failure_modes: mode_names,
        counts: matrix,
        device_years: regions.values().copied().collect(),
        cells,
    }
}

// ---------------------------------------------------------------------------------------
// Surge alerts: the rule lives with the service job that raises them (one definition); the
// analytics show the same report.

pub use prognos_service::surges::{SurgeAlert, SurgeReport, SurgeRule, WeeklyCounts};

/// The weekly failure counts per mode and the surges of the latest weeks, by
/// [`prognos_service::surges::surges`].
pub fn surges(history: &History, rule: SurgeRule) -> Result<SurgeReport, AnalyticsError> {
    prognos_service::surges::surges(history, rule).map_err(|e| match e {
        prognos_service::ServiceError::Validation { field, message } => {
            AnalyticsError::InvalidParameter {
                name: field,
                message,
            }
        }
        prognos_service::ServiceError::Sql(e) => AnalyticsError::Sql(e),
        other => AnalyticsError::invalid("surge rule", other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn device(id: &str, batch: &str, region: &str, install_day: i64) -> DeviceLife {
        DeviceLife {
            device_id: id.into(),
            serial: format!("SN-{id}"),
            model: "P-100".into(),
            batch: Some(batch.into()),
            firmware: Some("1.0".into()),
            region: region.into(),
            site_id: format!("site-{region}"),
            customer_id: "c".into(),
            install_ms: install_day * DAY,
        }
    }

    fn failure(device: &str, mode: &str, day: i64, restore_hours: i64) -> FailureRecord {
        FailureRecord {
            ticket_id: format!("t-{device}-{day}"),
            device_id: device.into(),
            failure_mode: mode.into(),
            source: "api".into(),
            at_ms: day * DAY,
            restored_ms: Some(day * DAY + restore_hours * 3_600_000),
            provider_id: None,
            close_code: None,
        }
    }

    /// Two devices over 100 days: a fails on day 30 (12 h) and day 70 (36 h), b never.
    fn tiny() -> History {
        History {
            devices: vec![device("a", "B1", "north", 0), device("b", "B1", "south", 0)],
            failures: vec![
                failure("a", "bearing_wear", 30, 12),
                failure("a", "seal_leak", 70, 36),
            ],
            as_of_ms: 100 * DAY,
        }
    }

    #[test]
    fn mtbf_and_mttr_match_a_hand_computation() {
        let rows = mtbf(&tiny(), GroupBy::Fleet, i64::MIN, i64::MAX);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        // Operating: a = 100 d − 0.5 d − 1.5 d = 98 d, b = 100 d → 198 d over 2 failures.
        assert_eq!(r.failures, 2);
        assert!((r.operating_days - 198.0).abs() < 1e-9);
        assert!((r.mtbf_days.unwrap() - 99.0).abs() < 1e-9);
        assert!((r.mttr_hours.unwrap() - 24.0).abs() < 1e-9);
        assert!((r.availability.unwrap() - 99.0 / 100.0).abs() < 1e-9);
        assert!((r.failures_per_device_year - 2.0 / (198.0 / 365.25)).abs() < 1e-9);

        let by_region = mtbf(&tiny(), GroupBy::Region, i64::MIN, i64::MAX);
        let south = by_region.iter().find(|r| r.group == "south").unwrap();
        assert_eq!((south.failures, south.mtbf_days), (0, None));
        assert!((south.operating_days - 100.0).abs() < 1e-9);
    }

    #[test]
    fn lives_renew_at_repair_and_censor_other_modes() {
        let h = tiny();
        let all = lives(&h, None, |_| true);
        // a: 30 d (failed), 70 − 30.5 = 39.5 d (failed), 100 − 71.5 = 28.5 d (censored);
        // b: 100 d (censored).
        let expect = [(30.0, true), (39.5, true), (28.5, false), (100.0, false)];
        assert_eq!(all.len(), 4);
        for (obs, (t, failed)) in all.iter().zip(expect) {
            assert!((obs.time - t).abs() < 1e-9, "{obs:?}");
            assert_eq!(obs.failed, failed);
        }
        let bearing = lives(&h, Some("bearing_wear"), |_| true);
        assert_eq!(bearing.iter().filter(|o| o.failed).count(), 1);
        assert_eq!(bearing.len(), 4);
    }

    #[test]
    fn heatmap_counts_by_region_and_mode_in_the_period() {
        let map = heatmap(&tiny(), 0, 50 * DAY);
        assert_eq!(map.regions, vec!["north", "south"]);
        assert_eq!(map.failure_modes, vec!["bearing_wear"]);
        assert_eq!(map.counts, vec![vec![1], vec![0]]);
        let north = &map.cells[0];
        // 49.5 operating days in the window for a.
        assert!((north.per_100_device_years - 100.0 / (49.5 / 365.25)).abs() < 1e-6);
    }

    /// 60 devices in 3 batches over two years; batch B2 fails four times as often.
    fn fleet_with_a_bad_batch() -> History {
        let mut devices = Vec::new();
        let mut failures = Vec::new();
        for i in 0..60 {
            let batch = ["B1", "B2", "B3"][i % 3];
            let id = format!("d{i:02}");
            devices.push(device(&id, batch, ["north", "south"][i % 2], 0));
            // Healthy: a failure every 400 days; bad batch: every 100 days (phase-shifted).
            let period = if batch == "B2" { 100 } else { 400 };
            let mut day = 20 + (i as i64 * 7) % period;
            while day < 730 {
                failures.push(failure(&id, "bearing_wear", day, 8));
                day += period;
            }
        }
        failures.sort_by(|a, b| (&a.device_id, a.at_ms).cmp(&(&b.device_id, b.at_ms)));
        History {
            devices,
            failures,
            as_of_ms: 730 * DAY,
        }
    }

    #[test]
    fn the_bad_batch_is_flagged_and_recalled_and_no_other() {
        let report = defective_batches(&fleet_with_a_bad_batch(), 0.01).unwrap();
        let flagged: Vec<&str> = report
            .batches
            .iter()
            .filter(|b| b.flagged)
            .map(|b| b.batch.as_str())
            .collect();
        assert_eq!(flagged, vec!["B2"]);
        assert_eq!(report.recall.len(), 20);
        assert!(report.recall.iter().all(|d| d.batch == "B2"));
        let b2 = report.batches.iter().find(|b| b.batch == "B2").unwrap();
        assert!(b2.tests[0].rate_ratio > 3.0, "{b2:?}");
        assert_eq!(b2.tests[0].failure_mode, "all");
        assert_eq!(b2.tests.len(), 2);
        assert!(matches!(
            defective_batches(&fleet_with_a_bad_batch(), 1.5),
            Err(AnalyticsError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn weibull_per_group_and_comparison_of_the_bad_batch() {
        let h = fleet_with_a_bad_batch();
        let report = weibull(&h, GroupBy::Batch, None, Some("B2"), 0.9).unwrap();
        assert_eq!(report.groups.len(), 3);
        let eta = |g: &str| {
            report
                .groups
                .iter()
                .find(|x| x.group == g)
                .and_then(|x| x.fit.as_ref())
                .map(|f| f.eta)
                .unwrap()
        };
        assert!(eta("B2") < eta("B1") / 2.0);
        let cmp = report.comparison.unwrap();
        assert!(cmp.rate.unwrap().p_value < 1e-6);
        assert!(cmp.weibull.unwrap().p_value < 1e-3);
        assert!(matches!(
            weibull(&h, GroupBy::Batch, None, Some("B9"), 0.9),
            Err(AnalyticsError::UnknownName {
                name: "compare",
                ..
            })
        ));
        // No failures at all: each group reports why it has no fit instead of failing.
        let quiet = History {
            failures: Vec::new(),
            ..h
        };
        let report = weibull(&quiet, GroupBy::Fleet, None, None, 0.9).unwrap();
        assert!(report.groups[0].fit.is_none() && report.groups[0].error.is_some());
    }

    #[test]
    fn a_weekly_surge_is_flagged_with_its_batch() {
        let mut h = fleet_with_a_bad_batch();
        // Replace the history with a steady one failure a week, then 6 in the last week,
        // all from batch B3.
        h.failures.clear();
        for w in 0..20 {
            let d = format!("d{:02}", (w * 3) % 60);
            h.failures
                .push(failure(&d, "seal_leak", 730 - 140 + w * 7 + 1, 4));
        }
        for k in 0..6 {
            let d = format!("d{:02}", 2 + 3 * k);
            h.failures.push(failure(&d, "overheating", 726, 4));
        }
        h.failures
            .sort_by(|a, b| (&a.device_id, a.at_ms).cmp(&(&b.device_id, b.at_ms)));
        let report = surges(&h, SurgeRule::default()).unwrap();
        assert_eq!(report.alerts.len(), 1, "{:?}", report.alerts);
        let alert = &report.alerts[0];
        assert_eq!(alert.failure_mode, "overheating");
        assert_eq!(alert.failures, 6);
        assert_eq!(alert.top_batch.as_deref(), Some("B3"));
        assert!((alert.top_batch_share - 1.0).abs() < 1e-9);
        // The steady mode is shown week by week but raises nothing.
        let steady = report
            .weeks
            .iter()
            .find(|w| w.failure_mode == "seal_leak")
            .unwrap();
        assert_eq!(steady.counts.len(), 12);
        assert!(steady.counts.iter().all(|&c| c <= 1));
        let bad = SurgeRule {
            recent: 13,
            ..SurgeRule::default()
        };
        assert!(matches!(
            surges(&h, bad),
            Err(AnalyticsError::InvalidParameter { ref name, .. }) if name == "recent"
        ));
        // An empty history is not an error.
        let empty = History::default();
        assert!(
            surges(&empty, SurgeRule::default())
                .unwrap()
                .alerts
                .is_empty()
        );
        assert!(defective_batches(&empty, 0.01).unwrap().batches.is_empty());
        // Devices but no failure at all: every batch tested, none flagged.
        let quiet = History {
            failures: Vec::new(),
            ..fleet_with_a_bad_batch()
        };
        let report = defective_batches(&quiet, 0.01).unwrap();
        assert_eq!(report.batches.len(), 3);
        assert!(
            report
                .batches
                .iter()
                .all(|b| !b.flagged && b.tests.is_empty())
        );
        assert!(mtbf(&empty, GroupBy::Model, 0, 1).is_empty());
    }
}
