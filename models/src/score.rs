//! Generic per-row scoring of a CSV table (`prognos score`).

use crate::detector::Detector;
use crate::error::ModelError;
use crate::multivariate::{KnnConfig, KnnDetector, PcaT2Q};
use crate::parse::Table;
use crate::pca::PcaConfig;
use crate::stream::{StreamConfig, StreamDetector};
use crate::univariate::{Cusum, Ewma, PerColumn, RobustZ, UnivariateDetector};
use serde::{Deserialize, Serialize};

/// Detector names accepted by [`score_table`].
pub const DETECTORS: &[&str] = &["auto", "stream", "knn", "pca", "robust_z", "ewma", "cusum"];

/// Rows used as a healthy window by multivariate detectors when the caller
/// gives no `train_rows`. Fixed (not a fraction of the file) so that
/// appending rows never changes earlier scores.
pub const DEFAULT_WARMUP_ROWS: usize = 100;

/// Time-column names recognised when none is given (case-insensitive).
pub const TIME_COLUMN_NAMES: &[&str] = &["time", "timestamp", "ts", "datetime", "date"];

/// Per-row output of [`score_table`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredTable {
    /// Name of the time column (`row` when the table has none).
    pub time_column: String,
    /// Value of the time column per row (row index when absent).
    pub time: Vec<String>,
    /// Columns scored.
    pub columns: Vec<String>,
    /// Detector actually used (resolves `auto`).
    pub detector: String,
    /// Score in [0, 1]. For `stream` (the default) it is calibrated:
    /// `−log10(p) / 5` under each column's own past, alarm at 0.9; for the
    /// other detectors it is `ratio / (1 + ratio)` with the limit at 0.5.
    pub anomaly_score: Vec<f64>,
    /// Detector decision per row.
    pub is_anomaly: Vec<bool>,
}

fn univariate(name: &str, ncols: usize) -> Result<PerColumn, ModelError> {
    let mut dets: Vec<Box<dyn UnivariateDetector + Send>> = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        dets.push(match name {
            "robust_z" => Box::new(RobustZ::new(60, 3.5)?),
            "ewma" => Box::new(Ewma::new(0.2, 3.0, 50)?),
            "cusum" => Box::new(Cusum::new(0.5, 5.0, 50)?),
            other => {
                return Err(ModelError::UnknownDetector {
                    name: other.to_string(),
                    known: DETECTORS.join(", "),
                });
            }
        });
    }
    Ok(PerColumn::new(dets))
}

/// Scores every row of `table` causally.
///
/// - `time_column`: explicit name, else the first header in
///   [`TIME_COLUMN_NAMES`], else none (row index).
/// - `columns`: columns to score; empty = every column except the time column.
/// - `train_rows`: the first rows form a healthy window to fit on (scored
///   in-sample). Without it, univariate detectors calibrate from the stream
///   start and multivariate ones use the first [`DEFAULT_WARMUP_ROWS`] rows,
///   which score 0. The `stream` scorer is adaptive and ignores it (it is
///   causal from the first row).
/// - `detector`: one of [`DETECTORS`]; `auto` = `stream` (calibrated
///   per-column streaming scorer, [`crate::stream`]) for any column count.
///
/// Missing cells (empty, `NaN`, `NA`, `null`) are skipped: the stream scorer
/// skips them per column; the other detectors skip rows with a missing cell
/// (score 0, state unchanged; excluded from the training window).
pub fn score_table(
    table: &Table,
    time_column: Option<&str>,
    columns: &[String],
    train_rows: Option<usize>,
    detector: &str,
) -> Result<ScoredTable, ModelError> {
    let time_idx = match time_column {
        Some(name) => Some(table.column_index(name)?),
        None => table
            .headers
            .iter()
            .position(|h| TIME_COLUMN_NAMES.iter().any(|t| t.eq_ignore_ascii_case(h))),
    };
    let columns: Vec<String> = if columns.is_empty() {
        table
            .headers
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != time_idx)
            .map(|(_, h)| h.clone())
            .collect()
    } else {
        columns.to_vec()
    };
    if columns.is_empty() {
        return Err(ModelError::InvalidParameter(
            "no value column to score".into(),
        ));
    }
    let cols: Vec<Vec<f64>> = columns
        .iter()
        .map(|c| table.numeric_column_with_missing(c))
        .collect::<Result<_, _>>()?;
    let n = table.rows.len();
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|i| cols.iter().map(|c| c[i]).collect())
        .collect();
    let name = match detector {
        "auto" => "stream",
        other => other,
    };
    if let Some(t) = train_rows
        && (t < 3 || t > n)
    {
        return Err(ModelError::InvalidParameter(format!(
            "train_rows must be in 3..={n}"
        )));
    }
    // Multivariate detectors need a fitted window; rows before `start` score 0.
    let complete = |r: &Vec<f64>| r.iter().all(|v| v.is_finite());
    let (mut det, start): (Box<dyn Detector>, usize) = match name {
        "stream" => (
            Box::new(StreamDetector::new(columns.len(), StreamConfig::default())?),
            0,
        ),
        "knn" | "pca" => {
            let fit_rows = train_rows.unwrap_or(DEFAULT_WARMUP_ROWS.min(n));
            let train: Vec<Vec<f64>> = rows[..fit_rows]
                .iter()
                .filter(|r| complete(r))
                .cloned()
                .collect();
            let train = &train[..];
            let d: Box<dyn Detector> = if name == "knn" {
                Box::new(KnnDetector::fit(train, &[], KnnConfig::default())?)
            } else {
                Box::new(PcaT2Q::fit(train, &PcaConfig::default(), 5)?)
            };
            (d, if train_rows.is_some() { 0 } else { fit_rows })
        }
        _ => {
            let mut d = univariate(name, columns.len())?;
            if let Some(t) = train_rows {
                let train: Vec<Vec<f64>> =
                    rows[..t].iter().filter(|r| complete(r)).cloned().collect();
                d.fit(&train)?;
            }
            (Box::new(d), 0)
        }
    };
    let mut anomaly_score = vec![0.0; n];
    let mut is_anomaly = vec![false; n];
    let skips_missing = name == "stream";
    for i in start..n {
        if !skips_missing && !complete(&rows[i]) {
            continue;
        }
        let s = det.update(&rows[i])?;
        anomaly_score[i] = s.anomaly_score;
        is_anomaly[i] = s.is_anomaly;
    }
    let (time_column, time) = match time_idx {
        Some(i) => (
            table.headers[i].clone(),
            table.rows.iter().map(|r| r[i].clone()).collect(),
        ),
        None => ("row".to_string(), (0..n).map(|i| i.to_string()).collect()),
    };
    Ok(ScoredTable {
        time_column,
        time,
        columns,
        detector: name.to_string(),
        anomaly_score,
        is_anomaly,
    })
}

impl ScoredTable {
    /// Renders `time,anomaly_score,is_anomaly` CSV (scores with 6 decimals).
    pub fn to_csv(&self) -> String {
        let mut out = format!("{},anomaly_score,is_anomaly\n", self.time_column);
        for ((t, s), a) in self
            .time
            .iter()
            .zip(&self.anomaly_score)
            .zip(&self.is_anomaly)
        {
            out.push_str(&format!("{t},{s:.6},{}\n", u8::from(*a)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_table;

    fn csv(n: usize, step_at: usize) -> String {
        let mut s = String::from("ts;value\n");
        for i in 0..n {
            let v = ((i * 7919) % 13) as f64 / 13.0 + if i >= step_at { 10.0 } else { 0.0 };
            s.push_str(&format!("{i};{v}\n"));
        }
        s
    }

    #[test]
    fn single_column_auto_detects_step() {
        let t = parse_table(&csv(300, 200)).unwrap();
        let r = score_table(&t, None, &[], None, "auto").unwrap();
        assert_eq!(r.detector, "stream");
        assert_eq!(r.time_column, "ts");
        assert!(r.is_anomaly[200]);
        assert!(r.is_anomaly[..200].iter().filter(|a| **a).count() <= 2);
        assert!(r.anomaly_score.iter().all(|s| (0.0..=1.0).contains(s)));
        assert!(r.to_csv().starts_with("ts,anomaly_score,is_anomaly\n0,"));
    }

    #[test]
    fn every_detector_runs_and_errors_are_typed() {
        let t = parse_table(&csv(300, 200)).unwrap();
        for d in DETECTORS {
            let r = score_table(&t, Some("ts"), &["value".into()], Some(150), d).unwrap();
            assert_eq!(r.anomaly_score.len(), 300, "{d}");
            if r.detector == "stream" {
                // The stream scorer fires at the onset, then adapts.
                assert!(r.is_anomaly[200..205].iter().any(|a| *a), "{d}");
            } else {
                assert!(r.is_anomaly[250], "{d}");
            }
        }
        assert!(matches!(
            score_table(&t, None, &[], None, "nope"),
            Err(ModelError::UnknownDetector { .. })
        ));
        assert!(matches!(
            score_table(&t, Some("x"), &[], None, "auto"),
            Err(ModelError::Parse(_))
        ));
    }

    #[test]
    fn knn_and_pca_flag_a_change_of_a_column_constant_in_training() {
        // `a` is constant for the first 150 rows (the warm-up window), `b`
        // is too; both move at row 200.
        let mut text = String::from("ts,a,b\n");
        for i in 0..300 {
            let (a, b) = if i < 200 { (5.0, 0.0) } else { (5.01, 0.3) };
            text.push_str(&format!("{i},{a},{b}\n"));
        }
        let t = parse_table(&text).unwrap();
        for d in ["knn", "pca"] {
            let r = score_table(&t, None, &[], Some(150), d).unwrap();
            assert!(
                r.is_anomaly[..200].iter().all(|a| !*a),
                "{d} {:?}",
                &r.anomaly_score[..5]
            );
            assert!(r.is_anomaly[220..].iter().all(|a| *a), "{d}");
            assert!(r.anomaly_score.iter().all(|s| s.is_finite()), "{d}");
        }
    }

    #[test]
    fn missing_cells_are_skipped_not_fatal() {
        let mut text = String::from("ts,a,b\n");
        for i in 0..300 {
            let a = if i % 17 == 0 {
                String::new()
            } else {
                format!("{}", (i % 5) as f64 + if i >= 200 { 20.0 } else { 0.0 })
            };
            let b = if i % 23 == 0 {
                "NaN".to_string()
            } else {
                format!("{}", (i % 3) as f64)
            };
            text.push_str(&format!("{i},{a},{b}\n"));
        }
        let t = parse_table(&text).unwrap();
        for d in DETECTORS {
            let r = score_table(&t, None, &[], Some(100), d).unwrap();
            assert!(
                r.anomaly_score.iter().all(|s| (0.0..=1.0).contains(s)),
                "{d}"
            );
        }
        let r = score_table(&t, None, &[], None, "auto").unwrap();
        assert!(r.is_anomaly[200..205].iter().any(|a| *a));
        assert_eq!(r.anomaly_score[0], 0.0);
        assert!(matches!(
            score_table(
                &parse_table("t,v\n1,abc\n").unwrap(),
                None,
                &[],
                None,
                "auto"
            ),
            Err(ModelError::Parse(_))
        ));
    }

    #[test]
    fn the_binary_tests_series_is_flagged_after_the_shift_only() {
        // Same series as tests/score.rs (LCG noise ±0.3 around 10, +5 at 200).
        let mut text = String::from("timestamp,value\n");
        let mut x: u64 = 12345;
        for i in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((x >> 33) % 1000) as f64 / 1000.0 * 0.6 - 0.3;
            let v = 10.0 + noise + if i >= 200 { 5.0 } else { 0.0 };
            text.push_str(&format!(
                "2026-01-01T00:{:02}:{:02}Z,{v:.3}\n",
                i / 60,
                i % 60
            ));
        }
        let r = score_table(&parse_table(&text).unwrap(), None, &[], None, "auto").unwrap();
        let before = r.is_anomaly[..200].iter().filter(|a| **a).count();
        assert!(before <= 3, "{before}");
        assert!(r.is_anomaly[200..220].iter().any(|a| *a));
    }
}
