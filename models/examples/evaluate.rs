//! Full benchmark run, the numbers quoted in the models report:
//! `cargo run --release -p prognos-models --example evaluate -- ../shared/data`
//! (path to the shared data directory; defaults to `../shared/data`).
use prognos_models::eval::{SkabMethod, evaluate_skab};
use prognos_models::parse::{parse_cmapss, parse_rul, parse_skab_csv};
use prognos_models::rul::{RulConfig, evaluate_cmapss};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data".into());
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
    let rd = |f: &str| std::fs::read_to_string(format!("{root}/cmapss/{f}"));
    let train = parse_cmapss(&rd("train_FD001.txt")?)?;
    let test = parse_cmapss(&rd("test_FD001.txt")?)?;
    let truth = parse_rul(&rd("RUL_FD001.txt")?)?;
    let r = evaluate_cmapss(&train, &test, &truth, RulConfig::default())?;
    println!(
        "C-MAPSS FD001: RMSE {:.3} PHM08 {:.1}",
        r.overall.rmse, r.overall.score
    );
    Ok(())
}
