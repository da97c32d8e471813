//! `prognos query …`: the analytics of the HTTP API from the command line, straight from a
//! data dir (Parquet telemetry and the SQL service history), for notebooks and scripts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use prognos_analytics::kpi;
use prognos_analytics::output::{Encode, OutputFormat};
use prognos_analytics::reliability::{self, SurgeRule};
use prognos_analytics::telemetry::{self, Bucket, Downsample, FleetQuery, ScanStats, SeriesQuery};
use prognos_service::Database;
use prognos_service::history::{GroupBy, History, parse_date_ms};

use crate::config::Settings;
use crate::device::StoreArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Agg {
    /// Every stored point.
    Raw,
    /// min/max/mean/last/count per `--step`.
    Buckets,
    /// Largest-triangle-three-buckets: `--points` points that keep the shape, for charts.
    Lttb,
}

fn group_by(s: &str) -> Result<GroupBy, String> {
    GroupBy::parse(s).ok_or_else(|| format!("expected {}", GroupBy::NAMES))
}

fn output_format(s: &str) -> Result<OutputFormat, String> {
    OutputFormat::parse(s).ok_or_else(|| format!("expected {}", OutputFormat::NAMES))
}

#[derive(Debug, clap::Args)]
pub struct Period {
    /// Start: RFC 3339, YYYY-MM-DD or epoch ms (default: the beginning).
    #[arg(long)]
    pub from: Option<String>,
    /// End, exclusive (default: now).
    #[arg(long)]
    pub to: Option<String>,
}

impl Period {
    fn resolve(&self) -> anyhow::Result<(i64, i64)> {
        let parse = |name: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
            v.as_deref()
                .map(|t| {
                    t.parse::<i64>()
                        .ok()
                        .or_else(|| parse_date_ms(t))
                        .with_context(|| {
                            format!("--{name} {t:?}: expected RFC 3339, YYYY-MM-DD or epoch ms")
                        })
                })
                .transpose()
        };
        let from = parse("from", &self.from)?.unwrap_or(0);
        let to = parse("to", &self.to)?.unwrap_or_else(|| crate::serve::now_us() / 1000);
        anyhow::ensure!(from <= to, "--from must not be after --to");
        Ok((from, to))
    }
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Time series of devices and metrics, raw or down-sampled.
    Telemetry {
        /// Device id (repeat or comma-separate for several).
        #[arg(long, required = true, value_delimiter = ',')]
        device: Vec<String>,
        /// Metric name (repeat or comma-separate).
        #[arg(long, required = true, value_delimiter = ',')]
        metric: Vec<String>,
        #[command(flatten)]
        period: Period,
        #[arg(long, value_enum, default_value = "buckets")]
        agg: Agg,
        /// Bucket width in seconds (buckets); default: the range over --points.
        #[arg(long)]
        step_secs: Option<i64>,
        /// Points per series (lttb; and the default bucket count).
        #[arg(long, default_value_t = 1000)]
        points: usize,
        /// Refuse results with more points per series than this.
        #[arg(long, default_value_t = 1_000_000)]
        max_points: usize,
        #[arg(long, value_parser = output_format, default_value = "json")]
        format: OutputFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Fleet-wide hourly or daily mean/min/max per metric, optionally per group.
    Fleet {
        #[command(flatten)]
        period: Period,
        #[arg(long, value_parser = ["hour", "day"], default_value = "hour")]
        bucket: String,
        /// Only these metrics (default: all).
        #[arg(long, value_delimiter = ',')]
        metric: Vec<String>,
        /// Group devices by model, site or region (from the registry).
        #[arg(long, value_parser = group_by)]
        group_by: Option<GroupBy>,
        #[arg(long, value_parser = output_format, default_value = "json")]
        format: OutputFormat,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// MTBF, MTTR and availability per group.
    Mtbf {
        #[arg(long, value_parser = group_by, default_value = "model")]
        group_by: GroupBy,
        #[command(flatten)]
        period: Period,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Weibull fits with right-censoring per group, B10 life, probability-plot data.
    Weibull {
        #[arg(long, value_parser = group_by, default_value = "fleet")]
        group_by: GroupBy,
        #[arg(long)]
        failure_mode: Option<String>,
        /// Compare this group against the rest.
        #[arg(long)]
        compare: Option<String>,
        #[arg(long, default_value_t = 0.9)]
        confidence: f64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Defective-batch test and the recall list.
    Batches {
        #[arg(long, default_value_t = 0.01)]
        alpha: f64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Failures by region × failure mode.
    Heatmap {
        #[command(flatten)]
        period: Period,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Weekly failures per mode and surge alerts.
    Surges {
        #[arg(long, default_value_t = 12)]
        weeks: usize,
        #[arg(long, default_value_t = 8)]
        baseline_weeks: usize,
        #[arg(long, default_value_t = 0.01)]
        alpha: f64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Provider KPIs rolled up the hierarchy.
    Providers {
        #[command(flatten)]
        period: Period,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Model accuracy from the close codes of predictive tickets.
    Accuracy {
        #[command(flatten)]
        period: Period,
        #[arg(long, default_value_t = 60.0)]
        window_days: f64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn data_dir(store: &StoreArgs) -> anyhow::Result<PathBuf> {
    Ok(Settings::resolve(store.config.as_deref(), store.data_dir.clone(), None, None)?.data_dir)
}

async fn open_db(store: &StoreArgs) -> anyhow::Result<Database> {
    let path = data_dir(store)?.join("prognos.db");
    anyhow::ensure!(path.exists(), "no service database at {}", path.display());
    Ok(Database::open_file(&path).await?)
}

async fn history(store: &StoreArgs) -> anyhow::Result<History> {
    let db = open_db(store).await?;
    Ok(History::load(&db, crate::serve::now_us() / 1000).await?)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

fn emit(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<ExitCode> {
    match out {
        Some(path) => std::fs::write(path, bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().lock().write_all(bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn report_scan(scan: &ScanStats) {
    eprintln!(
        "prognos query: {} of {} files read, {} rows decoded, {} bytes read, {:.1} ms",
        scan.files_read,
        scan.files_total,
        scan.rows_decoded,
        scan.bytes_read,
        scan.elapsed_us as f64 / 1000.0
    );
}

pub async fn run(command: QueryCommand) -> anyhow::Result<ExitCode> {
    match command {
        QueryCommand::Telemetry {
            device,
            metric,
            period,
            agg,
            step_secs,
            points,
            max_points,
            format,
            out,
            store,
        } => {
            let (from, to) = period.resolve()?;
            let root = data_dir(&store)?.join("telemetry");
            let (from_us, to_us) = (from.saturating_mul(1000), to.saturating_mul(1000));
            let step_us = match agg {
                Agg::Buckets => Some(match step_secs {
                    Some(s) => s.saturating_mul(1_000_000),
                    None => ((to_us - from_us) / points.max(1) as i64).max(1),
                }),
                _ => step_secs.map(|s| s.saturating_mul(1_000_000)),
            };
            let q = SeriesQuery {
                devices: device,
                metrics: metric,
                from_us,
                to_us,
                step_us,
                downsample: match agg {
                    Agg::Raw => Downsample::Raw,
                    Agg::Buckets => Downsample::Buckets,
                    Agg::Lttb => Downsample::Lttb { points },
                },
                max_points,
            };
            let result =
                tokio::task::spawn_blocking(move || telemetry::query_series(&root, &q)).await??;
            report_scan(&result.scan);
            emit(out.as_deref(), &result.encode(format)?)
        }
        QueryCommand::Fleet {
            period,
            bucket,
            metric,
            group_by,
            format,
            out,
            store,
        } => {
            let (from, to) = period.resolve()?;
            let root = data_dir(&store)?.join("telemetry");
            let group_of = match group_by {
                None => None,
                Some(g) => {
                    let h = history(&store).await?;
                    Some(
                        h.devices
                            .iter()
                            .map(|d| (d.device_id.clone(), g.key(d)))
                            .collect(),
                    )
                }
            };
            let q = FleetQuery {
                from_us: from.saturating_mul(1000),
                to_us: to.saturating_mul(1000),
                bucket: if bucket == "day" {
                    Bucket::Day
                } else {
                    Bucket::Hour
                },
                metrics: metric,
                group_of,
            };
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let result =
                tokio::task::spawn_blocking(move || telemetry::fleet_aggregate(&root, &q, threads))
                    .await??;
            report_scan(&result.scan);
            emit(out.as_deref(), &result.encode(format)?)
        }
        QueryCommand::Mtbf {
            group_by,
            period,
            store,
        } => {
            let (from, to) = period.resolve()?;
            print_json(&reliability::mtbf(
                &history(&store).await?,
                group_by,
                from,
                to,
            ))
        }
        QueryCommand::Weibull {
            group_by,
            failure_mode,
            compare,
            confidence,
            store,
        } => print_json(&reliability::weibull(
            &history(&store).await?,
            group_by,
            failure_mode.as_deref(),
            compare.as_deref(),
            confidence,
        )?),
        QueryCommand::Batches { alpha, store } => print_json(&reliability::defective_batches(
            &history(&store).await?,
            alpha,
        )?),
        QueryCommand::Heatmap { period, store } => {
            let (from, to) = period.resolve()?;
            print_json(&reliability::heatmap(&history(&store).await?, from, to))
        }
        QueryCommand::Surges {
            weeks,
            baseline_weeks,
            alpha,
            store,
        } => print_json(&reliability::surges(
            &history(&store).await?,
            SurgeRule {
                weeks,
                baseline_weeks,
                alpha,
                ..SurgeRule::default()
            },
        )?),
        QueryCommand::Providers { period, store } => {
            let (from, to) = period.resolve()?;
            print_json(&kpi::provider_kpis(&open_db(&store).await?, None, from, to).await?)
        }
        QueryCommand::Accuracy {
            period,
            window_days,
            store,
        } => {
            let (from, to) = period.resolve()?;
            print_json(&kpi::model_accuracy(&open_db(&store).await?, from, to, window_days).await?)
        }
    }
}
