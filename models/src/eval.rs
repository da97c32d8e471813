//! Benchmark evaluations (SKAB, C-MAPSS FD001) as pure functions over parsed
//! data, so the CLI only reads files and prints.

use crate::detector::Detector;
use crate::error::ModelError;
use crate::metrics::BinaryMetrics;
use crate::multivariate::{KnnConfig, KnnDetector, PcaT2Q};
use crate::parse::SkabFile;
use crate::pca::PcaConfig;
use serde::{Deserialize, Serialize};

/// SKAB protocol: the first 400 rows of each file are the training part.
pub const SKAB_TRAIN_ROWS: usize = 400;

/// SKAB sensor indices the default detector uses: all but `Temperature` (4)
/// and `Thermocouple` (5). Why: both drift slowly over every experiment
/// (motor and fluid heat up), so any model frozen on the first 400 rows flags
/// the healthy tail of the file; thermal drift is better watched by a
/// univariate CUSUM than by a static multivariate model.
pub const SKAB_DEFAULT_COLUMNS: [usize; 6] = [0, 1, 2, 3, 6, 7];

/// Which multivariate method to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkabMethod {
    /// The reference PCA T² + Q (all sensors, p = 0.999, median of 5).
    PcaT2Q,
    /// k-NN similarity on the non-thermal sensors ([`KnnConfig::default`]).
    Knn,
}

/// Metrics for one file's test part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkabFileResult {
    /// File name as given by the caller.
    pub name: String,
    /// Test rows scored.
    pub rows: usize,
    /// Counts and ratios for this file.
    pub metrics: BinaryMetrics,
}

/// SKAB evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkabReport {
    /// Method evaluated.
    pub method: SkabMethod,
    /// Counts summed over all files, then ratios (the SKAB convention).
    pub overall: BinaryMetrics,
    /// Per-file results in input order.
    pub files: Vec<SkabFileResult>,
}

/// Runs `method` on one file: fit on the first 400 rows, score the rest
/// causally. Returns the 0/1 prediction for every test row.
pub fn skab_predict(file: &SkabFile, method: SkabMethod) -> Result<Vec<bool>, ModelError> {
    if file.features.len() <= SKAB_TRAIN_ROWS {
        return Err(ModelError::NotEnoughData {
            need: SKAB_TRAIN_ROWS + 1,
            got: file.features.len(),
        });
    }
    let (train, test) = file.features.split_at(SKAB_TRAIN_ROWS);
    let mut det: Box<dyn Detector> = match method {
        SkabMethod::PcaT2Q => Box::new(PcaT2Q::fit(train, &PcaConfig::default(), 5)?),
        SkabMethod::Knn => Box::new(KnnDetector::fit(
            train,
            &SKAB_DEFAULT_COLUMNS,
            KnnConfig::default(),
        )?),
    };
    test.iter()
        .map(|x| det.update(x).map(|s| s.is_anomaly))
        .collect()
}

/// Evaluates `method` on named SKAB files with the benchmark protocol.
pub fn evaluate_skab(
    files: &[(String, SkabFile)],
    method: SkabMethod,
) -> Result<SkabReport, ModelError> {
    let mut results = Vec::with_capacity(files.len());
    for (name, f) in files {
        let labels = f
            .anomaly
            .as_ref()
            .ok_or_else(|| ModelError::MissingLabels(format!("{name} has no `anomaly` column")))?;
        let pred = skab_predict(f, method)?;
        let truth = &labels[SKAB_TRAIN_ROWS..];
        results.push(SkabFileResult {
            name: name.clone(),
            rows: truth.len(),
            metrics: BinaryMetrics::from_labels(truth, &pred),
        });
    }
    Ok(SkabReport {
        method,
        overall: BinaryMetrics::sum(results.iter().map(|r| &r.metrics)),
        files: results,
    })
}

/// Global settings of the SKAB k-NN method: which sensors, and the detector
/// options. One value applies to every file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkabSettings {
    /// Sensor indices used (see [`crate::parse::SKAB_SENSORS`]).
    pub columns: Vec<usize>,
    /// k-NN options.
    pub knn: KnnConfig,
}

impl Default for SkabSettings {
    /// The shipped defaults: [`SKAB_DEFAULT_COLUMNS`] and [`KnnConfig::default`].
    fn default() -> Self {
        Self {
            columns: SKAB_DEFAULT_COLUMNS.to_vec(),
            knn: KnnConfig::default(),
        }
    }
}

/// The grid of global settings searched by [`evaluate_skab_logo`]: sensors
/// (non-thermal 6 or all 8) × k ∈ {1, 3, 5, 10} × LOO quantile ∈ {0.9, 0.95,
/// 0.99, 1} × alarm multiplier 0.5..=1.5 (step 0.1) × median window ∈ {1, 5,
/// 11, 21, 31, 61} (2,112 settings).
pub fn skab_grid() -> Vec<SkabSettings> {
    let mut out = Vec::new();
    for columns in [SKAB_DEFAULT_COLUMNS.to_vec(), (0..8).collect::<Vec<_>>()] {
        for k in [1, 3, 5, 10] {
            for quantile in [0.9, 0.95, 0.99, 1.0] {
                for t in 5..=15 {
                    for median_window in [1, 5, 11, 21, 31, 61] {
                        out.push(SkabSettings {
                            columns: columns.clone(),
                            knn: KnnConfig {
                                k,
                                quantile,
                                threshold: t as f64 / 10.0,
                                median_window,
                            },
                        });
                    }
                }
            }
        }
    }
    out
}

/// [`skab_predict`] for the k-NN method with explicit global settings.
pub fn skab_predict_with(
    file: &SkabFile,
    settings: &SkabSettings,
) -> Result<Vec<bool>, ModelError> {
    if file.features.len() <= SKAB_TRAIN_ROWS {
        return Err(ModelError::NotEnoughData {
            need: SKAB_TRAIN_ROWS + 1,
            got: file.features.len(),
        });
    }
    let (train, test) = file.features.split_at(SKAB_TRAIN_ROWS);
    let mut det = KnnDetector::fit(train, &settings.columns, settings.knn)?;
    test.iter()
        .map(|x| det.update(x).map(|s| s.is_anomaly))
        .collect()
}

/// One leave-one-group-out fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkabFold {
    /// The group held out (`valve1`, `valve2` or `other`).
    pub held_out: String,
    /// Settings chosen on the other groups (best summed F1 there).
    pub chosen: SkabSettings,
    /// F1 of the chosen settings on the groups it was chosen on.
    pub tuning_f1: f64,
    /// Metrics of the chosen settings on the held-out group.
    pub held_out_metrics: BinaryMetrics,
    /// Metrics of the shipped defaults on the held-out group, for reference.
    pub default_metrics: BinaryMetrics,
}

/// Leave-one-group-out report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkabLogoReport {
    /// Number of settings searched per fold.
    pub grid_size: usize,
    /// One fold per group, in first-appearance order.
    pub folds: Vec<SkabFold>,
    /// Held-out counts summed over the folds (every file scored once, by
    /// settings that never saw its group), then ratios.
    pub pooled_held_out: BinaryMetrics,
    /// Settings chosen on all groups together (the in-sample figure).
    pub all_files_chosen: SkabSettings,
    /// In-sample F1 of those settings on all files (optimistic).
    pub all_files_f1: f64,
}

/// The group of a file named `group/file.csv` (the part before the first `/`).
pub fn skab_group(name: &str) -> &str {
    name.split('/').next().unwrap_or(name)
}

/// Cached neighbour distances of one file for one sensor set.
struct FileCache {
    /// Per test row, the ascending nearest distances (up to the largest k).
    test: Vec<Vec<f64>>,
    /// Per training row, the same leave-one-out.
    loo: Vec<Vec<f64>>,
    truth: Vec<bool>,
}

fn rolling_median(xs: &[f64], window: usize) -> Vec<f64> {
    let mut rm = crate::multivariate::RollingMedian::new(window);
    xs.iter().map(|x| rm.push(*x).0).collect()
}

/// Confusion counts of every grid setting on one file, from the cache.
/// Mirrors [`KnnDetector`] exactly: limit = quantile of the LOO mean-of-k
/// distances (floored), trailing median of distance/limit, alarm when the
/// median exceeds the multiplier.
fn grid_counts(cache: &FileCache, grid: &[(usize, &SkabSettings)], out: &mut [BinaryMetrics]) {
    use std::collections::HashMap;
    let mut medians: HashMap<(usize, usize), Vec<f64>> = HashMap::new();
    let mut limits: HashMap<(usize, u64), f64> = HashMap::new();
    for &(gi, s) in grid {
        let k = s.knn.k;
        let mw = s.knn.median_window;
        let limit = *limits
            .entry((k, s.knn.quantile.to_bits()))
            .or_insert_with(|| {
                let loo: Vec<f64> = cache
                    .loo
                    .iter()
                    .map(|d| crate::multivariate::mean_of_first(d, k))
                    .collect();
                prognos_stats::sample::quantile(&loo, s.knn.quantile).max(1e-6)
            });
        let med = medians.entry((k, mw)).or_insert_with(|| {
            let raw: Vec<f64> = cache
                .test
                .iter()
                .map(|d| crate::multivariate::mean_of_first(d, k))
                .collect();
            rolling_median(&raw, mw)
        });
        let pred: Vec<bool> = med
            .iter()
            .map(|m| m / limit / s.knn.threshold > 1.0)
            .collect();
        let m = BinaryMetrics::from_labels(&cache.truth, &pred);
        let o = &mut out[gi];
        o.tp += m.tp;
        o.fp += m.fp;
        o.fn_ += m.fn_;
        o.tn += m.tn;
    }
}

/// Chooses, among `grid`, the settings with the best F1 over `files`
/// (counts summed over the files; ties go to the earlier setting).
fn choose(
    caches: &[(String, Vec<FileCache>)],
    column_sets: &[Vec<usize>],
    grid: &[SkabSettings],
    include: impl Fn(&str) -> bool,
) -> (usize, f64) {
    let mut totals = vec![BinaryMetrics::default(); grid.len()];
    for (name, per_cols) in caches {
        if !include(skab_group(name)) {
            continue;
        }
        for (ci, cols) in column_sets.iter().enumerate() {
            let sub: Vec<(usize, &SkabSettings)> = grid
                .iter()
                .enumerate()
                .filter(|(_, s)| &s.columns == cols)
                .collect();
            grid_counts(&per_cols[ci], &sub, &mut totals);
        }
    }
    let mut best = (0, f64::NEG_INFINITY);
    for (i, t) in totals.iter().enumerate() {
        let f1 = BinaryMetrics::sum([t]).f1;
        if f1 > best.1 {
            best = (i, f1);
        }
    }
    best
}

/// Honest tuning on SKAB: for each group (valve1, valve2, other), choose the
/// k-NN method's global settings from `grid` on the other groups' files (best
/// summed F1), then score the held-out group with them. Also reports the
/// settings chosen on all files (in-sample, optimistic).
pub fn evaluate_skab_logo(
    files: &[(String, SkabFile)],
    grid: &[SkabSettings],
) -> Result<SkabLogoReport, ModelError> {
    if grid.is_empty() {
        return Err(ModelError::InvalidParameter("empty settings grid".into()));
    }
    let mut groups: Vec<String> = Vec::new();
    for (name, _) in files {
        let g = skab_group(name).to_string();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    if groups.len() < 2 {
        return Err(ModelError::InvalidParameter(
            "leave-one-group-out needs at least two groups".into(),
        ));
    }
    let mut column_sets: Vec<Vec<usize>> = Vec::new();
    for s in grid {
        if !column_sets.contains(&s.columns) {
            column_sets.push(s.columns.clone());
        }
    }
    let max_k = grid.iter().map(|s| s.knn.k).max().unwrap_or(1);
    let mut caches = Vec::with_capacity(files.len());
    for (name, f) in files {
        let labels = f
            .anomaly
            .as_ref()
            .ok_or_else(|| ModelError::MissingLabels(format!("{name} has no `anomaly` column")))?;
        if f.features.len() <= SKAB_TRAIN_ROWS {
            return Err(ModelError::NotEnoughData {
                need: SKAB_TRAIN_ROWS + 1,
                got: f.features.len(),
            });
        }
        let (train, test) = f.features.split_at(SKAB_TRAIN_ROWS);
        let mut per_cols = Vec::with_capacity(column_sets.len());
        for cols in &column_sets {
            let cfg = KnnConfig {
                k: max_k,
                ..KnnConfig::default()
            };
            let det = KnnDetector::fit(train, cols, cfg)?;
            let (t, loo) = det.neighbour_table(test, max_k)?;
            per_cols.push(FileCache {
                test: t,
                loo,
                truth: labels[SKAB_TRAIN_ROWS..].to_vec(),
            });
        }
        caches.push((name.clone(), per_cols));
    }
    let score_group = |settings: &SkabSettings, group: &str| -> Result<BinaryMetrics, ModelError> {
        let mut parts = Vec::new();
        for (name, f) in files {
            if skab_group(name) != group {
                continue;
            }
            let pred = skab_predict_with(f, settings)?;
            let truth = f.anomaly.as_deref().unwrap_or(&[]);
            parts.push(BinaryMetrics::from_labels(&truth[SKAB_TRAIN_ROWS..], &pred));
        }
        Ok(BinaryMetrics::sum(parts.iter()))
    };
    let mut folds = Vec::with_capacity(groups.len());
    for g in &groups {
        let (best, tuning_f1) = choose(&caches, &column_sets, grid, |x| x != g);
        let chosen = grid[best].clone();
        folds.push(SkabFold {
            held_out: g.clone(),
            held_out_metrics: score_group(&chosen, g)?,
            default_metrics: score_group(&SkabSettings::default(), g)?,
            chosen,
            tuning_f1,
        });
    }
    let pooled_held_out = BinaryMetrics::sum(folds.iter().map(|f| &f.held_out_metrics));
    let (best, all_files_f1) = choose(&caches, &column_sets, grid, |_| true);
    Ok(SkabLogoReport {
        grid_size: grid.len(),
        folds,
        pooled_held_out,
        all_files_chosen: grid[best].clone(),
        all_files_f1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prognos_stats::sample::XorShift;

    /// A SKAB-like file: 8 sensors of noise, a shift of `size` on sensors
    /// 0..3 from row `onset` to the end, labelled.
    fn file(seed: u64, onset: usize, size: f64) -> SkabFile {
        let mut rng = XorShift::new(seed);
        let n = SKAB_TRAIN_ROWS + 80;
        let features: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..8)
                    .map(|j| rng.next_f64() + if i >= onset && j < 3 { size } else { 0.0 })
                    .collect()
            })
            .collect();
        SkabFile {
            timestamps: vec![String::new(); n],
            features,
            anomaly: Some((0..n).map(|i| i >= onset).collect()),
            changepoint: None,
        }
    }

    #[test]
    fn logo_chooses_on_other_groups_and_the_cache_matches_the_detector() {
        let files: Vec<(String, SkabFile)> = vec![
            ("a/0.csv".into(), file(1, 440, 0.8)),
            ("a/1.csv".into(), file(2, 430, 0.5)),
            ("b/0.csv".into(), file(3, 450, 0.7)),
            ("c/0.csv".into(), file(4, 420, 0.6)),
        ];
        let grid: Vec<SkabSettings> = [(3, 0.95, 0.8, 1), (5, 0.99, 1.0, 5), (1, 0.9, 1.5, 11)]
            .iter()
            .map(|&(k, quantile, threshold, median_window)| SkabSettings {
                columns: vec![0, 1, 2, 3],
                knn: KnnConfig {
                    k,
                    quantile,
                    threshold,
                    median_window,
                },
            })
            .collect();
        let r = evaluate_skab_logo(&files, &grid).unwrap();
        assert_eq!(r.folds.len(), 3);
        assert_eq!(r.folds[0].held_out, "a");
        for fold in &r.folds {
            // The cached tuning F1 equals the real detector's on the tuning groups.
            let mut parts = Vec::new();
            for (name, f) in &files {
                if skab_group(name) == fold.held_out {
                    continue;
                }
                let pred = skab_predict_with(f, &fold.chosen).unwrap();
                let truth = f.anomaly.as_ref().unwrap();
                parts.push(BinaryMetrics::from_labels(&truth[SKAB_TRAIN_ROWS..], &pred));
            }
            let real = BinaryMetrics::sum(parts.iter()).f1;
            assert!(
                (real - fold.tuning_f1).abs() < 1e-12,
                "{real} {}",
                fold.tuning_f1
            );
            assert!(fold.held_out_metrics.f1 > 0.5);
        }
        assert!(evaluate_skab_logo(&files[..2], &grid).is_err());
        assert!(evaluate_skab_logo(&files, &[]).is_err());
    }
}
