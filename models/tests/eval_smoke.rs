//! Smoke evaluation on a subset of the shipped benchmarks. Floors are set
//! well below the full-run numbers (SKAB F1 0.806, FD001 RMSE 12.9) so that
//! the test catches breakage, not noise. Skips if the data is absent.

use prognos_models::eval::{SkabMethod, evaluate_skab};
use prognos_models::gbm::GbmConfig;
use prognos_models::parse::{parse_cmapss, parse_rul, parse_skab_csv};
use prognos_models::rul::{RulConfig, evaluate_cmapss};
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
        stride: 4,
        gbm: GbmConfig {
            n_trees: 60,
            learning_rate: 0.15,
            max_depth: 4,
            ..GbmConfig::default()
        },
        ..RulConfig::default()
    };
    let r = evaluate_cmapss(&train, &test, &truth, cfg).unwrap();
    println!("{:?}", r.overall);
    assert_eq!(r.overall.units, 100);
    assert!(r.overall.rmse < 18.0, "{:?}", r.overall);
}
