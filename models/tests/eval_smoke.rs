//! Smoke evaluation on a subset of the shipped benchmarks. Floors are set
//! well below the full-run numbers (SKAB F1 0.806, FD001 RMSE ~12, FD002 RMSE ~22) so that
//! the test catches breakage, not noise. Skips if the data is absent.

use prognos_models::eval::{SkabMethod, evaluate_skab};
use prognos_models::gbm::GbmConfig;
use prognos_models::parse::{parse_cmapss, parse_rul, parse_skab_csv};
use prognos_models::rul::{IntervalConfig, RulConfig, RulRegressor, evaluate_cmapss};
use std::path::PathBuf;

fn data_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if d.join("skab").is_dir() && d.join("cmapss").is_dir() {
        Some(d)
    } else {
        println!("skipping: benchmark data not found at {}", d.display());
        None
    }
}

#[test]
fn skab_subset_beats_floor() {
    let Some(d) = data_dir() else { return };
    let names = [
        "valve1/0.csv",
        "valve1/7.csv",
        "valve2/3.csv",
        "other/4.csv",
        "other/9.csv",
    ];
    let files: Vec<_> = names
        .iter()
        .map(|n| {
            let t = std::fs::read_to_string(d.join("skab").join(n)).unwrap();
            (n.to_string(), parse_skab_csv(&t).unwrap())
        })
        .collect();
    let knn = evaluate_skab(&files, SkabMethod::Knn).unwrap();
    let pca = evaluate_skab(&files, SkabMethod::PcaT2Q).unwrap();
    println!("knn {:?}\npca {:?}", knn.overall, pca.overall);
    assert!(knn.overall.f1 > 0.75, "{:?}", knn.overall);
    assert!(pca.overall.f1 > 0.6, "{:?}", pca.overall);
    assert_eq!(knn.files.len(), 5);
}

#[test]
fn cmapss_reduced_model_beats_floor() {
    let Some(d) = data_dir() else { return };
    let rd = |f: &str| std::fs::read_to_string(d.join("cmapss").join(f)).unwrap();
    let train = parse_cmapss(&rd("train_FD001.txt")).unwrap();
    let test = parse_cmapss(&rd("test_FD001.txt")).unwrap();
    let truth = parse_rul(&rd("RUL_FD001.txt")).unwrap();
    assert_eq!(
        (train.len(), test.len(), truth.len()),
        (20_631, 13_096, 100)
    );
    // A cheap configuration so the test stays fast in debug builds.
    let cfg = RulConfig {
        stride: 8,
        gbm: GbmConfig {
            n_trees: 50,
            learning_rate: 0.15,
            max_depth: 4,
            ..GbmConfig::default()
        },
        interval: IntervalConfig {
            folds: 2,
            ..IntervalConfig::default()
        },
        ..RulConfig::default()
    };
    let r = evaluate_cmapss(&train, &test, &truth, cfg).unwrap();
    println!("{:?} {:?}", r.overall, r.cv);
    assert_eq!(r.overall.units, 100);
    assert_eq!(r.regimes, 1);
    assert!(r.overall.rmse < 18.0, "{:?}", r.overall);
    // The conformal interval is calibrated on held-out training units; on
    // 100 test units a 90 % interval should cover at least ~80 %.
    assert!(r.overall.interval_coverage > 0.8, "{:?}", r.overall);
    assert!(
        r.units
            .iter()
            .all(|u| u.lower <= u.predicted && u.predicted <= u.upper)
    );
}

/// FD002 has six operating conditions: the regimes must be found from the
/// settings and the reduced model must beat the pre-regime full model
/// (RMSE 28.83 on the test set).
#[test]
fn cmapss_fd002_regimes_beat_old_model() {
    let Some(d) = data_dir() else { return };
    let p = d.join("cmapss").join("train_FD002.txt");
    if !p.exists() {
        println!("skipping: {} not found", p.display());
        return;
    }
    let rd = |f: &str| std::fs::read_to_string(d.join("cmapss").join(f)).unwrap();
    let train = parse_cmapss(&rd("train_FD002.txt")).unwrap();
    let test = parse_cmapss(&rd("test_FD002.txt")).unwrap();
    let truth = parse_rul(&rd("RUL_FD002.txt")).unwrap();
    let cfg = RulConfig {
        stride: 16,
        gbm: GbmConfig {
            n_trees: 40,
            learning_rate: 0.15,
            max_depth: 4,
            ..GbmConfig::default()
        },
        ..RulConfig::default()
    };
    let m = RulRegressor::fit(&train, cfg).unwrap();
    assert_eq!(m.regimes(), 6);
    let pred = m.predict_last(&test);
    assert_eq!(pred.len(), 259);
    let p: Vec<f64> = pred.iter().map(|(_, p)| *p).collect();
    let t: Vec<f64> = pred.iter().map(|(u, _)| truth[*u as usize - 1]).collect();
    let rmse = prognos_models::metrics::rmse(&p, &t);
    println!("FD002 reduced: RMSE {rmse:.3}");
    assert!(rmse < 25.0, "{rmse}");
}
