//! `prognos evaluate skab|cmapss` and `prognos score`: read files, call the
//! pure evaluators in `prognos_models`, print tables or JSON. No model logic
//! lives here.

use anyhow::{Context, bail};
use prognos_models::eval::{
    SkabLogoReport, SkabMethod, SkabReport, evaluate_skab, evaluate_skab_logo, skab_grid,
};
use prognos_models::parse::{SkabFile, parse_cmapss, parse_rul, parse_skab_csv, parse_table};
use prognos_models::rul::{RulConfig, evaluate_cmapss};
use prognos_models::score::score_table;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `prognos evaluate skab`.
#[derive(clap::Args, Debug)]
pub struct SkabArgs {
    /// SKAB data directory (the one holding valve1/, valve2/, other/), or its parent.
    #[arg(long)]
    pub data: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `prognos evaluate cmapss`.
#[derive(clap::Args, Debug)]
pub struct CmapssArgs {
    /// C-MAPSS directory holding train_FDxxx.txt, test_FDxxx.txt, RUL_FDxxx.txt, or its parent.
    #[arg(long)]
    pub data: PathBuf,
    /// Sub-dataset: FD001, FD002, FD003 or FD004.
    #[arg(long, default_value = "FD001", value_parser = ["FD001", "FD002", "FD003", "FD004"])]
    pub subset: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `prognos score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// CSV file (`,` or `;` separated, header row).
    #[arg(long)]
    pub input: PathBuf,
    /// Time column (default: a column named time/timestamp/ts/datetime/date, else the row number).
    #[arg(long)]
    pub time_column: Option<String>,
    /// Columns to score (default: every column except the time column).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// The first N rows are a healthy window to fit on.
    #[arg(long)]
    pub train_rows: Option<usize>,
    /// auto (= stream: calibrated per-column streaming scorer), stream, knn, pca, robust_z, ewma or cusum.
    #[arg(long, default_value = "auto")]
    pub detector: String,
}

fn sub_dir(data: &Path, name: &str, marker: &str) -> PathBuf {
    if data.join(marker).exists() {
        data.to_path_buf()
    } else {
        data.join(name)
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Loads the 34 scored SKAB files in a fixed order (folder, then file number).
fn load_skab(dir: &Path) -> anyhow::Result<Vec<(String, SkabFile)>> {
    let mut files = Vec::new();
    for folder in ["valve1", "valve2", "other"] {
        let d = dir.join(folder);
        let mut entries: Vec<(u64, PathBuf)> = std::fs::read_dir(&d)
            .with_context(|| format!("listing {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .map(|p| {
                let n = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                (n, p)
            })
            .collect();
        entries.sort();
        for (_, p) in entries {
            let name = format!(
                "{folder}/{}",
                p.file_name().and_then(|s| s.to_str()).unwrap_or("?")
            );
            let parsed =
                parse_skab_csv(&read(&p)?).with_context(|| format!("parsing {}", p.display()))?;
            files.push((name, parsed));
        }
    }
    if files.is_empty() {
        bail!("no SKAB files under {}", dir.display());
    }
    Ok(files)
}

fn print_skab_table(out: &mut impl Write, r: &SkabReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {:>5} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7}",
        "file", "rows", "tp", "fp", "fn", "tn", "f1", "far%", "mar%"
    )?;
    for f in &r.files {
        let m = &f.metrics;
        writeln!(
            out,
            "{:<16} {:>5} {:>6} {:>6} {:>6} {:>6} {:>7.4} {:>7.2} {:>7.2}",
            f.name, f.rows, m.tp, m.fp, m.fn_, m.tn, m.f1, m.far, m.mar
        )?;
    }
    Ok(())
}

/// `prognos evaluate skab`.
pub fn run_skab(args: &SkabArgs) -> anyhow::Result<()> {
    let dir = sub_dir(&args.data, "skab", "valve1");
    let files = load_skab(&dir)?;
    let main = evaluate_skab(&files, SkabMethod::Knn)?;
    let reference = evaluate_skab(&files, SkabMethod::PcaT2Q)?;
    let logo = evaluate_skab_logo(&files, &skab_grid())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let v = serde_json::json!({
            "benchmark": "skab",
            "method": main.method,
            "files_scored": main.files.len(),
            "overall": main.overall,
            "files": main.files,
            "reference_pca_t2q": { "overall": reference.overall, "files": reference.files },
            "leave_one_group_out": logo,
        });
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    print_skab_table(&mut out, &main)?;
    writeln!(out)?;
    for (label, o) in [
        ("knn (prognos)", &main.overall),
        ("pca t2+q (reference)", &reference.overall),
    ] {
        writeln!(
            out,
            "{label:<22} precision {:.4}  recall {:.4}  F1 {:.4}  FAR {:.2}%  MAR {:.2}%",
            o.precision, o.recall, o.f1, o.far, o.mar
        )?;
    }
    writeln!(
        out,
        "leaderboard: Conv-AE 0.78, MSET 0.78, T-squared+Q 0.76 (F1, test parts of all 34 files)"
    )?;
    writeln!(out)?;
    print_skab_logo(&mut out, &logo)?;
    Ok(())
}

fn print_skab_logo(out: &mut impl Write, r: &SkabLogoReport) -> std::io::Result<()> {
    writeln!(
        out,
        "leave-one-group-out (knn settings chosen on two groups from {} candidates, F1 on the third):",
        r.grid_size
    )?;
    for f in &r.folds {
        let (m, c) = (&f.held_out_metrics, &f.chosen);
        writeln!(
            out,
            "  held out {:<7} chosen k={} q={} x{} median {} on {} sensors (tuning F1 {:.4})  held-out F1 {:.4}  FAR {:.2}%  MAR {:.2}%",
            f.held_out,
            c.knn.k,
            c.knn.quantile,
            c.knn.threshold,
            c.knn.median_window,
            c.columns.len(),
            f.tuning_f1,
            m.f1,
            m.far,
            m.mar
        )?;
    }
    let p = &r.pooled_held_out;
    writeln!(
        out,
        "  pooled held-out        F1 {:.4}  FAR {:.2}%  MAR {:.2}%   (all-files in-sample best: F1 {:.4})",
        p.f1, p.far, p.mar, r.all_files_f1
    )
}

/// `prognos evaluate cmapss --subset FDxxx` (default FD001).
pub fn run_cmapss(args: &CmapssArgs) -> anyhow::Result<()> {
    let fd = args.subset.as_str();
    let (train_f, test_f, rul_f) = (
        format!("train_{fd}.txt"),
        format!("test_{fd}.txt"),
        format!("RUL_{fd}.txt"),
    );
    let dir = sub_dir(&args.data, "cmapss", &train_f);
    let train = parse_cmapss(&read(&dir.join(&train_f))?).context(train_f)?;
    let test = parse_cmapss(&read(&dir.join(&test_f))?).context(test_f)?;
    let truth = parse_rul(&read(&dir.join(&rul_f))?).context(rul_f)?;
    let report = evaluate_cmapss(&train, &test, &truth, RulConfig::default())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let v = serde_json::json!({
            "benchmark": format!("cmapss_{}", fd.to_lowercase()),
            "method": "gradient_boosting_regime_normalised_window_features",
            "overall": report.overall,
            "cv": report.cv,
            "regimes": report.regimes,
            "sensors_kept": report.sensors_kept,
            "units": report.units,
            "config": report.config,
        });
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>4} {:>9} {:>6} {:>7} {:>15}",
        "unit", "predicted", "true", "error", "interval"
    )?;
    for u in &report.units {
        writeln!(
            out,
            "{:>4} {:>9.1} {:>6.0} {:>7.1} {:>7.1}-{:<7.1}",
            u.unit,
            u.predicted,
            u.truth,
            u.predicted - u.truth,
            u.lower,
            u.upper
        )?;
    }
    let o = &report.overall;
    writeln!(
        out,
        "\n{fd} ({} units, {} operating regimes found): RMSE {:.3}  PHM08 score {:.1}",
        o.units, report.regimes, o.rmse, o.score
    )?;
    writeln!(
        out,
        "interval: nominal {:.0}%  covered {:.1}%  mean width {:.1} cycles",
        100.0 * o.interval_nominal,
        100.0 * o.interval_coverage,
        o.interval_mean_width
    )?;
    writeln!(
        out,
        "CV over training units ({} folds, held-out cycles with true RUL <= {}): RMSE {:.3}",
        report.cv.folds, report.config.interval.cv_max_rul, report.cv.rmse
    )?;
    writeln!(
        out,
        "published: FD001 CNN 18.45, LSTM 16.14, DCNN 12.61; FD002 DCNN 22.36, FFVE 12.55 (RMSE)"
    )?;
    Ok(())
}

/// `prognos score`: CSV in, `time,anomaly_score,is_anomaly` CSV out.
pub fn run_score(args: &ScoreArgs) -> anyhow::Result<()> {
    let text = read(&args.input)?;
    let table = parse_table(&text).with_context(|| format!("parsing {}", args.input.display()))?;
    let scored = score_table(
        &table,
        args.time_column.as_deref(),
        &args.columns,
        args.train_rows,
        &args.detector,
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(scored.to_csv().as_bytes())?;
    Ok(())
}
