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
