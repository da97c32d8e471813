//! SKAB: all-files F1 of the shipped settings and leave-one-group-out tuning.
//! `cargo run --release -p prognos-models --example skab_logo -- /work/shared/data/skab`

use prognos_models::eval::{SkabMethod, evaluate_skab, evaluate_skab_logo, skab_grid};
use prognos_models::parse::{SKAB_SENSORS, SkabFile, parse_skab_csv};
use prognos_models::stream::{StreamConfig, StreamDetector, StreamScorer};
use std::path::Path;

fn load(dir: &Path) -> Vec<(String, SkabFile)> {
    let mut files = Vec::new();
    for folder in ["valve1", "valve2", "other"] {
        let mut entries: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir.join(folder))
            .expect("SKAB folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .map(|p| {
                let n = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX);
                (n, p)
            })
            .collect();
        entries.sort();
        for (n, p) in entries {
            let text = std::fs::read_to_string(&p).expect("readable");
            files.push((
                format!("{folder}/{n}.csv"),
                parse_skab_csv(&text).expect("SKAB csv"),
            ));
        }
    }
    files
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/work/shared/data/skab".into());
    let files = load(Path::new(&dir));
    // Calibration of the stream scorer on real normal data: SKAB's
    // anomaly-free experiment (9,405 rows, 8 sensors), per column and combined.
    if let Ok(text) = std::fs::read_to_string(Path::new(&dir).join("anomaly-free/anomaly-free.csv"))
    {
        let f = parse_skab_csv(&text).expect("anomaly-free csv");
        let n = f.features.len() as f64;
        println!(
            "stream scorer on anomaly-free.csv ({} rows):",
            f.features.len()
        );
        for (j, name) in SKAB_SENSORS.iter().enumerate() {
            let mut s = StreamScorer::new(StreamConfig::default()).expect("cfg");
            let sc: Vec<f64> = f.features.iter().map(|r| s.score(r[j]).score).collect();
            let above = |t: f64| sc.iter().filter(|v| **v > t).count() as f64 / n * 100.0;
            println!(
                "  {name:<22} > 0.5: {:6.3} %  > 0.9: {:6.3} %",
                above(0.5),
                above(0.9)
            );
        }
        let mut d = StreamDetector::new(SKAB_SENSORS.len(), StreamConfig::default()).expect("cfg");
        let sc: Vec<f64> = f
            .features
            .iter()
            .map(|r| d.score_row(r).expect("row").score)
            .collect();
        let above = |t: f64| sc.iter().filter(|v| **v > t).count() as f64 / n * 100.0;
        println!(
            "  {:<22} > 0.5: {:6.3} %  > 0.9: {:6.3} %",
            "all 8 (Bonferroni)",
            above(0.5),
            above(0.9)
        );
    }
    for m in [SkabMethod::Knn, SkabMethod::PcaT2Q] {
        let r = evaluate_skab(&files, m).expect("evaluate");
        let o = r.overall;
        println!(
            "{m:?} shipped settings, all {} files: F1 {:.4} FAR {:.2} MAR {:.2}",
            r.files.len(),
            o.f1,
            o.far,
            o.mar
        );
    }
    let grid = skab_grid();
    let r = evaluate_skab_logo(&files, &grid).expect("logo");
    println!("grid of {} settings", r.grid_size);
    for f in &r.folds {
        let m = &f.held_out_metrics;
        println!(
            "held out {:<7} chosen {:?} k={} q={} thr={} mw={}  tuning F1 {:.4}  held-out F1 {:.4} FAR {:.2} MAR {:.2}  (shipped defaults on it: F1 {:.4})",
            f.held_out,
            f.chosen.columns,
            f.chosen.knn.k,
            f.chosen.knn.quantile,
            f.chosen.knn.threshold,
            f.chosen.knn.median_window,
            f.tuning_f1,
            m.f1,
            m.far,
            m.mar,
            f.default_metrics.f1
        );
    }
    let p = r.pooled_held_out;
    println!(
        "pooled held-out F1 {:.4} FAR {:.2} MAR {:.2}",
        p.f1, p.far, p.mar
    );
    println!(
        "chosen on all files (in-sample): {:?} {:?}  F1 {:.4}",
        r.all_files_chosen.columns, r.all_files_chosen.knn, r.all_files_f1
    );
}
