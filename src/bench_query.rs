//! `prognos bench query`: the analytics engine (`prognos_analytics::telemetry`) on a
//! simulator data set, against DuckDB running the equivalent SQL over the same files
//! (`scripts/bench_query_duckdb.py`, which states the SQL). Prints a table, or one JSON
//! object with `--json`; BENCHMARKS.md records the figures. Not a test: timings are for a
//! release build on a quiet machine.
//!
//! Queries:
//! * Q1 — one device-metric over the last `--days` of the data, down-sampled to about
//!   `--points` points: buckets (step = range / points, aligned on the epoch, so up to one
//!   extra partial bucket at each end), and LTTB (DuckDB: the raw-point fetch LTTB starts
//!   from, since it has no LTTB); plus the raw fetch itself.
//! * Q2 — fleet-wide hourly count/mean/min/max per metric over the whole data set.
//! * Q3 — fleet-wide daily count/mean/min/max per metric per device model (groups from the
//!   data dir's `devices.jsonl`, when there is one).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context;
use prognos_analytics::telemetry::{
    self, Bucket, DatasetInfo, Downsample, FleetAggregate, FleetQuery, ScanStats, SeriesQuery,
    SeriesResult,
};
use serde_json::{Value, json};

const DAY_US: i64 = 86_400_000_000;
const DUCKDB_SCRIPT: &str = include_str!("../scripts/bench_query_duckdb.py");
/// Relative tolerance for means and sums computed in a different order.
const REL_TOL: f64 = 1e-9;

#[derive(Debug, Clone, clap::Args)]
pub struct QueryBenchArgs {
    /// A data dir with `telemetry/` (e.g. from `prognos simulate --out DIR`).
    #[arg(long)]
    pub data: PathBuf,
    /// Device of Q1 [default: the first one found].
    #[arg(long)]
    pub device: Option<String>,
    /// Metric of Q1 [default: the first one found].
    #[arg(long)]
    pub metric: Option<String>,
    /// Q1 range: the last this many days of the data.
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// Q1 points after down-sampling.
    #[arg(long, default_value_t = 1000)]
    pub points: usize,
    /// Timed runs per query (after one untimed warm-up run).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Worker threads for Prognos and for DuckDB.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// A Python with the `duckdb` module (`scripts/bench-deps.sh` makes `.venv-bench`): run
    /// the same queries in DuckDB, compare results and report the ratios.
    #[arg(long)]
    pub duckdb: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only these queries (e.g. `q1` or `q2,q3`; for profiling one of them).
    #[arg(long, value_delimiter = ',', default_value = "q1,q2,q3")]
    pub only: Vec<String>,
}

struct Timing {
    times_s: Vec<f64>,
}

impl Timing {
    fn median(&self) -> f64 {
        let mut t = self.times_s.clone();
        t.sort_by(f64::total_cmp);
        match t.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => t[n / 2],
            n => (t[n / 2 - 1] + t[n / 2]) / 2.0,
        }
    }

    fn min(&self) -> f64 {
        self.times_s.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// One untimed warm-up, then `repeat` timed runs; returns the timings and the last result.
fn timed<T>(
    repeat: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(Timing, T)> {
    let mut last = f()?;
    let mut times_s = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        last = f()?;
        times_s.push(started.elapsed().as_secs_f64());
    }
    Ok((Timing { times_s }, last))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= REL_TOL * a.abs().max(b.abs()).max(1e-300)
}

/// One benchmarked query: Prognos figures, DuckDB's if run, and whether results agree.
struct Report {
    name: &'static str,
    what: String,
    prognos: Timing,
    scan: ScanStats,
    result_size: usize,
    duckdb: Option<Timing>,
    duckdb_sql: Option<String>,
    agree: Option<Result<(), String>>,
}

impl Report {
    fn json(&self) -> Value {
        let ratio = self
            .duckdb
            .as_ref()
            .map(|d| d.median() / self.prognos.median());
        json!({
            "query": self.name,
            "what": self.what,
            "prognos": {
                "median_s": self.prognos.median(),
                "min_s": self.prognos.min(),
                "times_s": self.prognos.times_s,
                "scan": self.scan,
                "result_size": self.result_size,
            },
            "duckdb": self.duckdb.as_ref().map(|d| json!({
                "median_s": d.median(),
                "min_s": d.min(),
                "times_s": d.times_s,
                "sql": self.duckdb_sql,
            })),
            "ratio_duckdb_over_prognos": ratio,
            "results_agree": self.agree.as_ref().map(Result::is_ok),
            "disagreement": self.agree.as_ref().and_then(|a| a.as_ref().err()),
        })
    }
}

/// device_id → model from `devices.jsonl` (written by `prognos simulate --out`).
fn models(path: &Path) -> anyhow::Result<Option<HashMap<String, String>>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{} is not JSON lines", path.display()))?;
        if let (Some(id), Some(model)) = (v["id"].as_str(), v["model"].as_str()) {
            out.insert(id.to_owned(), model.to_owned());
        }
    }
    Ok(Some(out))
}

pub fn run(args: QueryBenchArgs) -> anyhow::Result<ExitCode> {
    let root = args.data.join("telemetry");
    let info: DatasetInfo = telemetry::dataset_info(&root)?;
    let (Some(data_from), Some(data_to)) = (info.from_us, info.to_us) else {
        anyhow::bail!("no telemetry under {}", root.display());
    };
    let (device, metric) = match (args.device.clone(), args.metric.clone()) {
        (Some(d), Some(m)) => (d, m),
        (d, m) => {
            let (fd, fm) = telemetry::first_series(&root)?
                .context("the data set has no rows to pick a device and metric from")?;
            (d.unwrap_or(fd), m.unwrap_or(fm))
        }
    };
    let points = args.points.max(3);
    let to = data_to;
    let from = (to - args.days * DAY_US).max(data_from);
    let step = ((to - from + points as i64 - 1) / points as i64).max(1);
    let threads = args.threads.max(1);
    let groups = models(&args.data.join("devices.jsonl"))?;
    eprintln!(
        "bench query: {} points in {} files ({} bytes) under {}; Q1 = {device}/{metric}",
        info.rows,
        info.files,
        info.bytes,
        root.display()
    );

    let series_query = |downsample, max_points| SeriesQuery {
        devices: vec![device.clone()],
        metrics: vec![metric.clone()],
        from_us: from,
        to_us: to,
        step_us: Some(step),
        downsample,
        max_points,
    };
    let run_series = |q: &SeriesQuery| -> anyhow::Result<SeriesResult> {
        Ok(telemetry::query_series_with_threads(&root, q, threads)?)
    };
    // Aligned buckets: up to one partial bucket more than range/step.
    let wants = |q: &str| args.only.iter().any(|o| o.eq_ignore_ascii_case(q));
    let q1b = series_query(Downsample::Buckets, points + 1);
    let q1l = series_query(Downsample::Lttb { points }, points);
    let q1r = series_query(Downsample::Raw, usize::MAX);
    let mut r1 = None;
    // The first Q1 after start, with no metadata cached: every footer and page index of
    // the range is read once (later runs, like repeated console requests, take them from
    // the cache).
    let mut q1_cold = None;
    if wants("q1") {
        telemetry::metadata_cache().clear();
        let started = Instant::now();
        let r = run_series(&q1b)?;
        q1_cold = Some(json!({
            "elapsed_s": started.elapsed().as_secs_f64(),
            "bytes_read": r.scan.bytes_read,
        }));
    }
    if wants("q1") {
        r1 = Some((
            timed(args.repeat, || run_series(&q1b))?,
            timed(args.repeat, || run_series(&q1l))?,
            timed(args.repeat, || run_series(&q1r))?,
        ));
    }

    let fleet = |bucket, group_of: Option<HashMap<String, String>>| FleetQuery {
        from_us: data_from,
        to_us: data_to,
        bucket,
        metrics: Vec::new(),
        group_of,
    };
    let run_fleet = |q: &FleetQuery| -> anyhow::Result<FleetAggregate> {
        Ok(telemetry::fleet_aggregate(&root, q, threads)?)
    };
    let q2 = fleet(Bucket::Hour, None);
    let r2 = match wants("q2") {
        true => Some(timed(args.repeat, || run_fleet(&q2))?),
        false => None,
    };
    let q3 = groups
        .clone()
        .filter(|_| wants("q3"))
        .map(|g| fleet(Bucket::Day, Some(g)));
    let r3 = match &q3 {
        Some(q) => Some(timed(args.repeat, || run_fleet(q))?),
        None => None,
    };

    let duck = match &args.duckdb {
        Some(python) => Some(run_duckdb(
            python,
            &root,
            &device,
            &metric,
            (from, to, step),
            &args,
            q3.is_some().then(|| args.data.join("devices.jsonl")),
        )?),
        None => None,
    };
    let dq = |name: &str| duck.as_ref().map(|d| &d["queries"][name]);
    let timing = |v: Option<&Value>| {
        v.and_then(|v| v["times_s"].as_array()).map(|t| Timing {
            times_s: t.iter().filter_map(Value::as_f64).collect(),
        })
    };
    let sql = |v: Option<&Value>| v.and_then(|v| v["sql"].as_str()).map(str::to_owned);

    let mut reports = Vec::new();
    if let Some(((t1b, r1b), (t1l, r1l), (t1r, r1r))) = r1 {
        let s1b = &r1b.series[0];
        let s1r = &r1r.series[0];
        reports.push(Report {
            name: "Q1 buckets",
            what: format!(
                "{device}/{metric}, {} days, step {} s, mean/min/max/last/count",
                args.days,
                step / 1_000_000
            ),
            scan: r1b.scan.clone(),
            result_size: s1b.ts_us.len(),
            prognos: t1b,
            duckdb: timing(dq("q1_buckets")),
            duckdb_sql: sql(dq("q1_buckets")),
            agree: dq("q1_buckets").map(|d| compare_buckets(&r1b, d)),
        });
        reports.push(Report {
            name: "Q1 LTTB",
            what: format!(
                "{device}/{metric}, {} days → {points} points (DuckDB: raw fetch only)",
                args.days
            ),
            scan: r1l.scan.clone(),
            result_size: r1l.series[0].ts_us.len(),
            prognos: t1l,
            duckdb: timing(dq("q1_raw")),
            duckdb_sql: sql(dq("q1_raw")),
            agree: dq("q1_raw").map(|_| {
                let n = r1l.series[0].ts_us.len();
                let expected = points.min(s1r.ts_us.len());
                if n == expected {
                    Ok(())
                } else {
                    Err(format!("LTTB returned {n} points, expected {expected}"))
                }
            }),
        });
        reports.push(Report {
            name: "Q1 raw",
            what: format!("{device}/{metric}, {} days, every point", args.days),
            scan: r1r.scan.clone(),
            result_size: s1r.ts_us.len(),
            prognos: t1r,
            duckdb: timing(dq("q1_raw")),
            duckdb_sql: sql(dq("q1_raw")),
            agree: dq("q1_raw").map(|d| compare_raw(&r1r, d)),
        });
    }
    if let Some((t2, r2)) = r2 {
        reports.push(Report {
            name: "Q2 hourly",
            what: "fleet, hourly count/mean/min/max per metric, whole data set".into(),
            scan: r2.scan.clone(),
            result_size: r2.rows.len(),
            prognos: t2,
            duckdb: timing(dq("q2_hourly")),
            duckdb_sql: sql(dq("q2_hourly")),
            agree: dq("q2_hourly").map(|d| compare_fleet(&r2, d)),
        });
    }
    if let Some((t3, r3)) = r3 {
        reports.push(Report {
            name: "Q3 daily by model",
            what: "fleet, daily count/mean/min/max per metric per device model".into(),
            scan: r3.scan.clone(),
            result_size: r3.rows.len(),
            prognos: t3,
            duckdb: timing(dq("q3_daily_by_model")),
            duckdb_sql: sql(dq("q3_daily_by_model")),
            agree: dq("q3_daily_by_model").map(|d| compare_fleet(&r3, d)),
        });
    }

    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned));
    if args.json {
        let out = json!({
            "data_set": info,
            "q1": { "device": device, "metric": metric, "from_us": from, "to_us": to, "step_us": step },
            "threads": threads,
            "repeat": args.repeat,
            "duckdb_version": duck.as_ref().map(|d| d["duckdb_version"].clone()),
            "load_average_1m": load,
            "queries": reports.iter().map(Report::json).collect::<Vec<_>>(),
            "q1_buckets_cold_metadata_cache": q1_cold,
            "metadata_cache": telemetry::metadata_cache().stats(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(
            &info,
            &reports,
            threads,
            args.repeat,
            load.as_deref(),
            duck.as_ref(),
        );
    }
    let all_agree = reports
        .iter()
        .all(|r| r.agree.as_ref().is_none_or(Result::is_ok));
    Ok(if all_agree {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_duckdb(
    python: &Path,
    root: &Path,
    device: &str,
    metric: &str,
    (from, to, step): (i64, i64, i64),
    args: &QueryBenchArgs,
    devices_jsonl: Option<PathBuf>,
) -> anyhow::Result<Value> {
    let script = tempfile::Builder::new()
        .prefix("bench_query_duckdb")
        .suffix(".py")
        .tempfile()?;
    std::fs::write(script.path(), DUCKDB_SCRIPT)?;
    let mut cmd = Command::new(python);
    cmd.arg(script.path())
        .arg("--root")
        .arg(root)
        .args(["--device", device, "--metric", metric])
        .args(["--from-us", &from.to_string(), "--to-us", &to.to_string()])
        .args(["--step-us", &step.to_string()])
        .args(["--repeat", &args.repeat.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .arg("--only")
        .arg(args.only.join(","));
    if let Some(path) = devices_jsonl {
        cmd.arg("--devices-jsonl").arg(path);
    }
    eprintln!(
        "bench query: running the same queries in DuckDB ({})…",
        python.display()
    );
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "the DuckDB script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("the DuckDB script printed no JSON")
}

fn compare_buckets(r: &SeriesResult, d: &Value) -> Result<(), String> {
    let s = &r.series[0];
    let rows = d["rows"].as_array().ok_or("no DuckDB rows")?;
    if rows.len() != s.ts_us.len() {
        return Err(format!(
            "{} buckets vs DuckDB {}",
            s.ts_us.len(),
            rows.len()
        ));
    }
    let (Some(min), Some(max), Some(last), Some(count)) = (&s.min, &s.max, &s.last, &s.count)
    else {
        return Err("bucket statistics missing".into());
    };
    for (i, row) in rows.iter().enumerate() {
        let f = |k: usize| row[k].as_f64().unwrap_or(f64::NAN);
        let ok = row[0].as_i64() == Some(s.ts_us[i])
            && row[1].as_u64() == Some(count[i])
            && close(f(2), s.value[i])
            && close(f(3), min[i])
            && close(f(4), max[i])
            && close(f(5), last[i]);
        if !ok {
            return Err(format!(
                "bucket {i}: Prognos ({}, {}, {}, {}, {}, {}) vs DuckDB {row}",
                s.ts_us[i], count[i], s.value[i], min[i], max[i], last[i]
            ));
        }
    }
    Ok(())
}

fn compare_raw(r: &SeriesResult, d: &Value) -> Result<(), String> {
    let s = &r.series[0];
    let n = d["count"].as_u64().unwrap_or(0) as usize;
    let sum: f64 = s.value.iter().sum();
    let dsum = d["sum"].as_f64().unwrap_or(f64::NAN);
    if n != s.ts_us.len()
        || !close(sum, dsum)
        || d["first_ts_us"].as_i64() != s.ts_us.first().copied()
        || d["last_ts_us"].as_i64() != s.ts_us.last().copied()
    {
        return Err(format!(
            "{} points (sum {sum}) vs DuckDB {n} (sum {dsum})",
            s.ts_us.len()
        ));
    }
    Ok(())
}

fn compare_fleet(a: &FleetAggregate, d: &Value) -> Result<(), String> {
    let rows = d["rows"].as_array().ok_or("no DuckDB rows")?;
    // DuckDB rows: [bucket, metric, count, mean, min, max] or with a group after bucket.
    let grouped = a.rows.first().is_some_and(|r| r.group.is_some());
    let mut theirs: HashMap<(i64, Option<String>, String), &Value> = HashMap::new();
    for row in rows {
        let (group, metric) = if grouped {
            (row[1].as_str().map(str::to_owned), row[2].as_str())
        } else {
            (None, row[1].as_str())
        };
        let key = (
            row[0].as_i64().unwrap_or(i64::MIN),
            group,
            metric.unwrap_or_default().to_owned(),
        );
        theirs.insert(key, row);
    }
    if theirs.len() != a.rows.len() {
        return Err(format!("{} rows vs DuckDB {}", a.rows.len(), theirs.len()));
    }
    let off = usize::from(grouped);
    for r in &a.rows {
        let key = (r.bucket_start_us, r.group.clone(), r.metric.clone());
        let Some(row) = theirs.get(&key) else {
            return Err(format!("DuckDB has no row for {key:?}"));
        };
        let f = |k: usize| row[k + off].as_f64().unwrap_or(f64::NAN);
        let ok = row[2 + off].as_u64() == Some(r.count)
            && close(f(3), r.mean)
            && close(f(4), r.min)
            && close(f(5), r.max);
        if !ok {
            return Err(format!("{key:?}: Prognos {r:?} vs DuckDB {row}"));
        }
    }
    Ok(())
}

fn print_table(
    info: &DatasetInfo,
    reports: &[Report],
    threads: usize,
    repeat: usize,
    load: Option<&str>,
    duck: Option<&Value>,
) {
    println!(
        "data set: {} points, {} files, {:.1} MB on disk, {} partitions (hours, and days with a day file)",
        info.rows,
        info.files,
        info.bytes as f64 / 1e6,
        info.partitions
    );
    println!(
        "threads {threads}, {repeat} timed runs after one warm-up (warm page cache), load average {}{}",
        load.unwrap_or("?"),
        duck.map_or(String::new(), |d| format!(
            ", DuckDB {}",
            d["duckdb_version"]
        ))
    );
    println!(
        "{:<18} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8} {:>11} {:>9} {:>7}",
        "query",
        "median ms",
        "min ms",
        "bytes read",
        "rows decoded",
        "files read",
        "result",
        "DuckDB ms",
        "DuckDB/P",
        "agree"
    );
    for r in reports {
        let (dm, ratio) = match &r.duckdb {
            Some(d) => (
                format!("{:.1}", d.median() * 1e3),
                format!("{:.2}×", d.median() / r.prognos.median()),
            ),
            None => ("—".into(), "—".into()),
        };
        let agree = match &r.agree {
            Some(Ok(())) => "yes".to_owned(),
            Some(Err(_)) => "NO".to_owned(),
            None => "—".to_owned(),
        };
        println!(
            "{:<18} {:>10.1} {:>10.1} {:>12} {:>12} {:>10} {:>8} {:>11} {:>9} {:>7}",
            r.name,
            r.prognos.median() * 1e3,
            r.prognos.min() * 1e3,
            r.scan.bytes_read,
            r.scan.rows_decoded,
            format!("{}/{}", r.scan.files_read, r.scan.files_total),
            r.result_size,
            dm,
            ratio,
            agree
        );
    }
    for r in reports {
        println!("  {}: {}", r.name, r.what);
        if let Some(Err(e)) = &r.agree {
            println!("    results differ: {e}");
        }
    }
}
