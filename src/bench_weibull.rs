//! `prognos bench weibull`: the fleet-wide Weibull fit (right-censored MLE) on a large
//! simulated service history, against the same maximum-likelihood iteration written as DuckDB
//! SQL over the same Parquet file of lives.
//!
//! The lives come from the simulator's service history before its start (event-driven, the
//! same hazard model as the telemetry): installation → first failure, repair → next failure,
//! last repair → start as a suspension. Both sides start from `lives.parquet` (columns
//! `days` f64, `failed` bool) on a warm page cache and end with β and η; Prognos also
//! computes the Fisher-matrix intervals and B10, DuckDB does not.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow_array::{Array, BooleanArray, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prognos_simulators::{Fleet, FleetConfig};
use prognos_stats::reliability::{LifeObs, WeibullFit, fit_weibull};
use serde_json::json;

#[derive(Debug, Clone, clap::Args)]
pub struct WeibullBenchArgs {
    /// Devices in the simulated fleet (their history before the start is the data set).
    #[arg(long, default_value_t = 50_000)]
    pub devices: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Timed runs per side (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub repeat: usize,
    /// Python with duckdb (see scripts/bench-deps.sh) to run the DuckDB side.
    #[arg(long)]
    pub duckdb: Option<PathBuf>,
    /// Where to write lives.parquet (default: a temporary directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Lives in days from the fleet's history (renewal at each repair).
fn lives(fleet: &Fleet) -> Vec<LifeObs> {
    let history = fleet.history_before_start();
    let start = fleet.config().start_ms;
    let mut by_device: Vec<Vec<(i64, i64)>> = vec![Vec::new(); fleet.devices().len()];
    for f in &history.failures {
        if let Some(list) = by_device.get_mut(f.device) {
            list.push((f.failure_ms, f.repaired_ms));
        }
    }
    let day = 86_400_000.0;
    let mut out = Vec::new();
    for (spec, failures) in fleet.devices().iter().zip(by_device.iter_mut()) {
        failures.sort_unstable();
        let mut from = spec.install_ms;
        for &(failed, repaired) in failures.iter() {
            out.push(LifeObs {
                time: (failed - from) as f64 / day,
                failed: true,
            });
            from = repaired;
        }
        if start > from {
            out.push(LifeObs {
                time: (start - from) as f64 / day,
                failed: false,
            });
        }
    }
    out
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("days", DataType::Float64, false),
        Field::new("failed", DataType::Boolean, false),
    ]))
}

fn write_lives(path: &Path, obs: &[LifeObs]) -> anyhow::Result<u64> {
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Float64Array::from_iter_values(obs.iter().map(|o| o.time))),
            Arc::new(BooleanArray::from_iter(obs.iter().map(|o| Some(o.failed)))),
        ],
    )?;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(std::fs::metadata(path)?.len())
}

fn read_lives(path: &Path) -> anyhow::Result<Vec<LifeObs>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let days = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .context("days is not f64")?;
        let failed = batch
            .column(1)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .context("failed is not bool")?;
        out.extend((0..days.len()).map(|i| LifeObs {
            time: days.value(i),
            failed: failed.value(i),
        }));
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(args: WeibullBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.repeat >= 1, "--repeat must be at least 1");
    let fleet = Fleet::new(FleetConfig {
        devices: args.devices,
        seed: args.seed,
        ..FleetConfig::default()
    })?;
    let started = Instant::now();
    let obs = lives(&fleet);
    let history_ms = started.elapsed().as_secs_f64() * 1000.0;
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => tempfile::Builder::new()
            .prefix("prognos-bench-weibull-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("lives.parquet");
    let bytes = write_lives(&path, &obs)?;
    let failures = obs.iter().filter(|o| o.failed).count();

    // Prognos: read the file, fit (MLE, intervals, B10). One warm-up run.
    let mut fit: Option<WeibullFit> = None;
    let mut total_ms = Vec::new();
    let mut fit_ms = Vec::new();
    for i in 0..=args.repeat {
        let t0 = Instant::now();
        let lives = read_lives(&path)?;
        let t1 = Instant::now();
        let f = fit_weibull(&lives, 0.9)?;
        let (fit_t, total_t) = (t1.elapsed(), t0.elapsed());
        if i > 0 {
            fit_ms.push(fit_t.as_secs_f64() * 1000.0);
            total_ms.push(total_t.as_secs_f64() * 1000.0);
        }
        fit = Some(f);
    }
    let fit = fit.context("no fit")?;
    let ours_ms = median(total_ms);
    let fit_only_ms = median(fit_ms);

    let duck = match &args.duckdb {
        None => None,
        Some(python) => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_weibull_duckdb.py");
            let out = Command::new(python)
                .arg(&script)
                .arg(&path)
                .arg(args.repeat.to_string())
                .output()
                .with_context(|| format!("cannot run {}", python.display()))?;
            anyhow::ensure!(
                out.status.success(),
                "DuckDB side failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(serde_json::from_slice::<serde_json::Value>(&out.stdout)?)
        }
    };
    let duck_ms = duck.as_ref().and_then(|d| d["median_ms"].as_f64());
    let agree = duck.as_ref().map(|d| {
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        rel(d["beta"].as_f64().unwrap_or(f64::NAN), fit.beta) < 1e-6
            && rel(d["eta"].as_f64().unwrap_or(f64::NAN), fit.eta) < 1e-6
    });
    let report = json!({
        "devices": args.devices,
        "lives": obs.len(),
        "failures": failures,
        "history_ms": history_ms,
        "lives_parquet_bytes": bytes,
        "prognos": {
            "median_ms": ours_ms,
            "fit_only_median_ms": fit_only_ms,
            "beta": fit.beta, "eta": fit.eta, "beta_ci": fit.beta_ci, "eta_ci": fit.eta_ci,
            "b10": fit.b10, "iterations": fit.iterations,
        },
        "duckdb": duck,
        "ratio_duckdb_over_prognos": duck_ms.map(|d| d / ours_ms),
        "results_agree": agree,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "weibull fit over the fleet: {} devices, {} lives ({} failures), lives.parquet {} bytes",
            args.devices,
            obs.len(),
            failures,
            bytes
        );
        println!(
            "  prognos   {:8.2} ms (read + fit with intervals; fit alone {:.2} ms)  beta {:.4} [{:.4}, {:.4}]  eta {:.1} days  B10 {:.1} days",
            ours_ms, fit_only_ms, fit.beta, fit.beta_ci.0, fit.beta_ci.1, fit.eta, fit.b10
        );
        if let (Some(d), Some(ms)) = (&duck, duck_ms) {
            println!(
                "  duckdb    {:8.2} ms (load + {} Newton steps in SQL)  beta {:.4}  eta {:.1} days",
                ms,
                d["iterations"],
                d["beta"].as_f64().unwrap_or(f64::NAN),
                d["eta"].as_f64().unwrap_or(f64::NAN)
            );
            println!(
                "  ratio     duckdb / prognos = {:.2}x; results agree: {}",
                ms / ours_ms,
                agree.unwrap_or(false)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
