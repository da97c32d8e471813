//! Full benchmark run, the numbers quoted in the models report:
//! `cargo run --release -p prognos-models --example evaluate -- ../shared/data`
//! (path to the shared data directory; defaults to `../shared/data`).
//! `--cmapss` skips SKAB; `--subsets FD001,FD002` picks the C-MAPSS subsets
//! (default FD001,FD002); `--tune` also prints the cross-validation grid over
//! training units that chose the default hyper-parameters (no test data used).
use prognos_models::eval::{SkabMethod, evaluate_skab};
use prognos_models::gbm::GbmConfig;
use prognos_models::parse::{CmapssRow, parse_cmapss, parse_rul, parse_skab_csv};
use prognos_models::rul::{FeatureConfig, RulConfig, cross_validate, evaluate_cmapss};
use std::time::Instant;

/// Subset name, train rows, test rows, true RUL per test unit.
type Subset = (String, Vec<CmapssRow>, Vec<CmapssRow>, Vec<f64>);

fn grid() -> Vec<(String, RulConfig)> {
    let d = RulConfig::default();
    let mut v = vec![("default".to_string(), d)];
    // One factor at a time around the default (the first grid), then the
    // combinations of the winners.
    for cap in [115.0, 125.0, 135.0, 150.0] {
        v.push((format!("max_rul {cap}"), RulConfig { max_rul: cap, ..d }));
    }
    for (lw, a) in [(20, 0.1), (30, 0.1), (40, 0.05)] {
        v.push((
            format!("long_window {lw} ewma {a}"),
            RulConfig {
                features: FeatureConfig {
                    long_window: lw,
                    ewma_alpha: a,
                    ..d.features
                },
                ..d
            },
        ));
    }
    for depth in [4, 5, 6] {
        v.push((
            format!("depth {depth}"),
            RulConfig {
                gbm: GbmConfig {
                    max_depth: depth,
                    ..d.gbm
                },
                ..d
            },
        ));
    }
    v
}

/// Applies `key=value` overrides (comma-separated) to a configuration, for
/// `--cv --set ...` runs of the cross-validation alone.
fn apply(mut c: RulConfig, set: &str) -> Result<RulConfig, Box<dyn std::error::Error>> {
    for kv in set.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or("key=value")?;
        let f: f64 = v.parse()?;
        match k {
            "cap" => c.max_rul = f,
            "sw" => c.features.short_window = f as usize,
            "lw" => c.features.long_window = f as usize,
            "ewma" => c.features.ewma_alpha = f,
            "base" => c.features.baseline_window = f as usize,
            "smooth" => c.features.smooth_alpha = f,
            "robust" => c.features.robust_slope = f != 0.0,
            "hist" => c.regime_history = f != 0.0,
            "ens" => c.ensemble = f as usize,
            "depth" => c.gbm.max_depth = f as usize,
            "trees" => c.gbm.n_trees = f as usize,
            "lr" => c.gbm.learning_rate = f,
            "leaf" => c.gbm.min_samples_leaf = f as usize,
            "sub" => c.gbm.subsample = f,
            "stride" => c.stride = f as usize,
            "corr" => c.min_abs_corr = f,
            "tmin" => c.train_min_fraction = f,
            "cutmin" => c.interval.truncate_min_fraction = f,
            _ => return Err(format!("unknown key {k}").into()),
        }
    }
    Ok(c)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let root = args
        .iter()
        .find(|a| !a.starts_with("--") && !a.starts_with("FD"))
        .cloned()
        .unwrap_or_else(|| "../shared/data".into());
    let subsets: Vec<String> = args
        .iter()
        .position(|a| a == "--subsets")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec!["FD001".into(), "FD002".into()]);
    if !flag("--cmapss") {
        let mut files = vec![];
        for (d, ids) in [("valve1", 0..16), ("valve2", 0..4), ("other", 1..15)] {
            for i in ids {
                let t = std::fs::read_to_string(format!("{root}/skab/{d}/{i}.csv"))?;
                files.push((format!("{d}/{i}.csv"), parse_skab_csv(&t)?));
            }
        }
        for m in [SkabMethod::PcaT2Q, SkabMethod::Knn] {
            let o = evaluate_skab(&files, m)?.overall;
            println!(
                "SKAB {m:?}: precision {:.4} recall {:.4} F1 {:.4} FAR {} MAR {}",
                o.precision, o.recall, o.f1, o.far, o.mar
            );
        }
    }
    let rd = |f: &str| std::fs::read_to_string(format!("{root}/cmapss/{f}"));
    let mut data: Vec<Subset> = vec![];
    for s in &subsets {
        data.push((
            s.clone(),
            parse_cmapss(&rd(&format!("train_{s}.txt"))?)?,
            parse_cmapss(&rd(&format!("test_{s}.txt"))?)?,
            parse_rul(&rd(&format!("RUL_{s}.txt"))?)?,
        ));
    }
    if flag("--cv") {
        let set = args
            .iter()
            .position(|a| a == "--set")
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default();
        let cfg = apply(RulConfig::default(), &set)?;
        for (s, train, _, _) in &data {
            let t0 = Instant::now();
            let cv = cross_validate(train, cfg)?;
            println!(
                "CV [{set}] {s}: truncated RMSE {:.3} PHM08/100 {:.1} ({} cuts) | cycles RUL<=150 RMSE {:.3} | all {:.3} ({:.0}s)",
                cv.rmse_truncated,
                cv.score_truncated_per_100,
                cv.points_truncated,
                cv.rmse,
                cv.rmse_all,
                t0.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
    if flag("--tune") {
        let only: Option<usize> = args
            .iter()
            .position(|a| a == "--grid")
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok());
        for (i, (name, cfg)) in grid().into_iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let mut line = format!("CV {name:<28}");
            for (s, train, _, _) in &data {
                let t0 = Instant::now();
                let cv = cross_validate(train, cfg)?;
                line += &format!(
                    "  {s}: RMSE all {:.3} RMSE<=150 {:.3} PHM08/100 {:.1} ({:.0}s)",
                    cv.rmse_all,
                    cv.rmse,
                    cv.score_per_100,
                    t0.elapsed().as_secs_f64()
                );
            }
            println!("{line}");
        }
        if only.is_some() {
            return Ok(());
        }
    }
    for (s, train, test, truth) in &data {
        let t0 = Instant::now();
        let r = evaluate_cmapss(train, test, truth, RulConfig::default())?;
        let o = r.overall;
        println!(
            "C-MAPSS {s}: regimes {} sensors {:?}\n  test ({} units): RMSE {:.3} PHM08 {:.1} interval {:.0}% nominal -> {:.1}% covered, mean width {:.1}\n  CV ({} folds over training units, {} held-out cycles with RUL <= 150): RMSE {:.3} PHM08/100 {:.1}; cut like the test set ({} cuts): RMSE {:.3}  [{:.1}s]",
            r.regimes,
            r.sensors_kept,
            o.units,
            o.rmse,
            o.score,
            100.0 * o.interval_nominal,
            100.0 * o.interval_coverage,
            o.interval_mean_width,
            r.cv.folds,
            r.cv.points,
            r.cv.rmse,
            r.cv.score_per_100,
            r.cv.points_truncated,
            r.cv.rmse_truncated,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
