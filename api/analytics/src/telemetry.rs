//! Time-series and fleet queries over the telemetry Parquet data set written by
//! `prognos-ingest`'s store (`{data_dir}/telemetry/date=YYYY-MM-DD/hour=HH/*.parquet`).
//!
//! The engine is arrow-rs `parquet` and nothing else: a DataFrame engine (polars) would bring
//! a second Arrow and Parquet implementation into a build that already has one. Speed comes
//! from the layout instead of from a general planner:
//!
//! * **Partition pruning.** Every file holds one UTC hour and its directory says which, so
//!   files outside `[from, to)` are counted (their directory is listed) but never opened.
//! * **Sort order + page index.** Rows are sorted by (device_id, metric, ts) and the writer
//!   stores the column index (min/max per page) and offset index. A series query picks the
//!   pages of `device_id`/`metric` that can hold a requested value, decodes only those two
//!   columns over those rows to find the exact row runs, then decodes `ts` and `value` for
//!   exactly those runs: untouched pages are neither read nor decompressed.
//! * **No `ts` for hourly/daily fleet buckets.** The partition already tells the hour (and
//!   day), so a fleet aggregate decodes `metric` and `value` only (plus `device_id` when
//!   grouping, and `ts` only for an hour cut by the query range). Aggregation runs over
//!   runs of equal dictionary keys into arrays indexed by small ids, with no per-row hashing.
//! * **Parallel files.** Partitions are a work queue drained by `threads` scoped threads.
//!
//! `bytes_read` in [`ScanStats`] counts the bytes actually read from the files (a counting
//! [`ChunkReader`] with positional reads): footers, page indexes, and the pages selected.
//!
//! Duplicates: a partition may briefly hold the same (device, metric, ts) in two files (a
//! flush replayed before compaction de-duplicates it). Queries do not de-duplicate across
//! files: such a point is returned (or counted) twice until compaction runs. Within a file
//! there are no duplicates.
//!
//! Concurrency with the ingest: files are written to `*.tmp` and renamed, so a listed file
//! is complete. A file removed by compaction between listing and opening is skipped (its
//! rows are in the compacted file, which this scan may or may not have listed).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow_array::builder::{
    Float64Builder, StringBuilder, StringDictionaryBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelectionPolicy,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use prognos_ingest::layout::{
    self, DAY_HOURS, DataFileName, FileKind, HOUR_US, dict_field, parse_date_dir, parse_hour_dir,
    ts_type,
};
use serde::Serialize;

const DAY_US: i64 = 24 * HOUR_US;
/// Most buckets per series whatever `max_points` says: bucket aggregates are dense arrays
/// per series and worker, so this bounds memory (48 MiB per series and worker).
const MAX_BUCKETS: usize = 1 << 20;
/// "Not wanted" in the per-dictionary-key lookup tables.
const NONE: u32 = u32::MAX;
/// Rows per decoded batch. Small enough that the decoder's output buffers (8 bytes a row)
/// stay below the allocator's mmap threshold and are reused from the heap: with 64 Ki rows
/// every batch faulted in and zeroed fresh pages (a fifth of a fleet scan's time).
const BATCH_ROWS: usize = 8192;
/// Rows per batch of dictionary keys (4 bytes a row): a whole candidate page range at once.
const KEY_BATCH_ROWS: usize = 1 << 15;

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// How a series is reduced before it is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downsample {
    /// Every stored point (at most `max_points`, else the query is refused).
    Raw,
    /// Aggregates per `step_us` bucket aligned to multiples of the step since the epoch:
    /// mean in `value`, plus min, max, last and count. Empty buckets are omitted.
    Buckets,
    /// Largest-triangle-three-buckets over the raw points: `points` points that keep the
    /// visual shape, first and last point included.
    Lttb { points: usize },
}

/// Series of the cross product `devices × metrics` over `[from_us, to_us)`.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub devices: Vec<String>,
    pub metrics: Vec<String>,
    pub from_us: i64,
    /// Exclusive.
    pub to_us: i64,
    pub step_us: Option<i64>,
    pub downsample: Downsample,
    /// Most points per series the caller accepts; larger results are refused, not cut.
    pub max_points: usize,
}

/// One (device, metric) series, columnar. For [`Downsample::Buckets`] `ts_us` is the bucket
/// start and `value` the bucket mean, and `min`/`max`/`last`/`count` are present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub device_id: String,
    pub metric: String,
    pub ts_us: Vec<i64>,
    /// Raw value, LTTB-selected value, or bucket mean.
    pub value: Vec<f64>,
    pub min: Option<Vec<f64>>,
    pub max: Option<Vec<f64>>,
    pub last: Option<Vec<f64>>,
    pub count: Option<Vec<u64>>,
}

/// What a query touched. `files_total = files_pruned + files_read`.
#[derive(Debug, Serialize, Default, Clone, PartialEq, Eq)]
pub struct ScanStats {
    /// Data files in the data set (every partition directory is listed).
    pub files_total: u64,
    /// Files skipped without reading a data page: by partition directory name (never
    /// opened) or by footer statistics and page index (footer read, no data page).
    pub files_pruned: u64,
    /// Files of which at least one data page was read.
    pub files_read: u64,
    pub row_groups_read: u64,
    /// Rows materialised by the decoder, summed over the columns' read passes (the
    /// `device_id`/`metric` pass over candidate pages plus the `ts`/`value` pass over the
    /// matching rows; one pass for fleet aggregates).
    pub rows_decoded: u64,
    /// Bytes read from the files (footers, page indexes, data and dictionary pages).
    pub bytes_read: u64,
    /// Day files answered from their rollup (fleet aggregates; counted in `files_read`).
    pub rollups_read: u64,
    pub elapsed_us: u64,
}

impl ScanStats {
    fn add(&mut self, o: &ScanStats) {
        self.files_total += o.files_total;
        self.files_pruned += o.files_pruned;
        self.files_read += o.files_read;
        self.row_groups_read += o.row_groups_read;
        self.rows_decoded += o.rows_decoded;
        self.bytes_read += o.bytes_read;
        self.rollups_read += o.rollups_read;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesResult {
    /// One per requested (device, metric) that has data in the range, devices outer, in
    /// request order (duplicates in the request removed); a series without data is left out.
    pub series: Vec<Series>,
    pub scan: ScanStats,
}

/// Fleet bucket width. Both follow from the partition, so `ts` is not decoded for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

#[derive(Debug, Clone)]
pub struct FleetQuery {
    pub from_us: i64,
    /// Exclusive.
    pub to_us: i64,
    pub bucket: Bucket,
    /// Empty = all metrics.
    pub metrics: Vec<String>,
    /// device_id → group (model, site, region…); devices not in the map go to group
    /// `"unknown"`. `None` aggregates the whole fleet (`FleetRow::group` is `None`).
    pub group_of: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetRow {
    pub bucket_start_us: i64,
    pub group: Option<String>,
    pub metric: String,
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetAggregate {
    /// Sorted by bucket, group, metric.
    pub rows: Vec<FleetRow>,
    pub scan: ScanStats,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong; `name` is the offending parameter.
    #[error("invalid parameter {name}: {message}")]
    InvalidParameter { name: &'static str, message: String },
    #[error("telemetry I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("unexpected data layout in {path}: {message}")]
    Layout { path: PathBuf, message: String },
    /// Encoding a result as Arrow IPC or Parquet.
    #[error("encoding the result: {0}")]
    Encode(String),
}

impl From<ArrowError> for QueryError {
    fn from(e: ArrowError) -> Self {
        QueryError::Encode(e.to_string())
    }
}

impl From<ParquetError> for QueryError {
    fn from(e: ParquetError) -> Self {
        QueryError::Encode(e.to_string())
    }
}

fn invalid(name: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::InvalidParameter {
        name,
        message: message.into(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueryError + '_ {
    move |source| QueryError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pq_err(path: &Path) -> impl FnOnce(ParquetError) -> QueryError + '_ {
    move |source| QueryError::Parquet {
        path: path.to_owned(),
        source,
    }
}

fn layout(path: &Path, message: impl Into<String>) -> QueryError {
    QueryError::Layout {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Worker threads when the caller does not say: the machine's parallelism, capped (a
/// query is I/O- and decompression-bound; more threads than that only contend).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
}

/// Bounds on one series query, whatever its parameters: the memory it may take and the
/// size of its answer. Over a bound the query is refused (an invalid parameter naming what
/// to change), never cut short silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Most (device, metric) series one query may ask for (`devices × metrics`).
    pub max_series: usize,
    /// Most points in one answer, over all its series (buckets, LTTB or raw points).
    pub max_response_points: usize,
}

impl SeriesLimits {
    pub const DEFAULT_MAX_SERIES: usize = 1_000;
    pub const DEFAULT_MAX_RESPONSE_POINTS: usize = 1_000_000;
    /// Raw points LTTB may hold in memory per point of the answer.
    const LTTB_INPUT_FACTOR: usize = 16;
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            max_series: Self::DEFAULT_MAX_SERIES,
            max_response_points: Self::DEFAULT_MAX_RESPONSE_POINTS,
        }
    }
}

/// [`query_series_with_threads`] with [`default_threads`].
pub fn query_series(root: &Path, q: &SeriesQuery) -> Result<SeriesResult, QueryError> {
    query_series_with_threads(root, q, default_threads())
}

/// [`query_series_limited`] with the default [`SeriesLimits`].
pub fn query_series_with_threads(
    root: &Path,
    q: &SeriesQuery,
    threads: usize,
) -> Result<SeriesResult, QueryError> {
    query_series_limited(root, q, threads, SeriesLimits::default())
}

/// Series for `devices × metrics` over `[from_us, to_us)` from the data set at `root`
/// (`{data_dir}/telemetry`). The parameters are validated, against `limits` too, before
/// anything is read.
pub fn query_series_limited(
    root: &Path,
    q: &SeriesQuery,
    threads: usize,
    limits: SeriesLimits,
) -> Result<SeriesResult, QueryError> {
    let started = Instant::now();
    let plan = SeriesPlan::new(q, limits)?;
    let partitions = list_partitions(root)?;
    let shared = SharedCounts {
        points: (0..plan.n_series()).map(|_| AtomicU64::new(0)).collect(),
        total: AtomicU64::new(0),
    };
    let workers = run_parallel(
        partitions.len(),
        threads,
        || SeriesWorker::new(&plan),
        |w, i| w.partition(&partitions[i], &plan, &shared),
    )?;
    let mut result = plan.assemble(workers);
    result.scan.elapsed_us = started.elapsed().as_micros() as u64;
    tracing::debug!(scan = ?result.scan, series = result.series.len(), "series query");
    Ok(result)
}

/// Count, mean, min and max per (bucket, group, metric) over the fleet in
/// `[from_us, to_us)`, reading files on `threads` threads.
pub fn fleet_aggregate(
    root: &Path,
    q: &FleetQuery,
    threads: usize,
) -> Result<FleetAggregate, QueryError> {
    let started = Instant::now();
    if q.from_us > q.to_us {
        return Err(invalid("from", "`from` is after `to`"));
    }
    let mut metrics: Vec<String> = q
        .metrics
        .iter()
        .filter(|m| !m.is_empty())
        .cloned()
        .collect();
    metrics.sort();
    metrics.dedup();
    let partitions = list_partitions(root)?;
    let workers = run_parallel(partitions.len(), threads, FleetWorker::default, |w, i| {
        w.partition(&partitions[i], q, &metrics)
    })?;
    let mut merged: HashMap<(i64, Option<String>, String), Agg> = HashMap::new();
    let mut scan = ScanStats::default();
    for w in workers {
        scan.add(&w.stats);
        scan.bytes_read += w.bytes.load(Ordering::Relaxed);
        for ((bucket, g, m), agg) in w.acc {
            let group = q
                .group_of
                .as_ref()
                .map(|_| w.group_names.get(g as usize).cloned().unwrap_or_default());
            let metric = w.metric_names.get(m as usize).cloned().unwrap_or_default();
            merged
                .entry((bucket, group, metric))
                .or_default()
                .merge(&agg);
        }
    }
    let mut rows: Vec<FleetRow> = merged
        .into_iter()
        .filter(|(_, a)| a.count > 0)
        .map(|((bucket_start_us, group, metric), a)| FleetRow {
            bucket_start_us,
            group,
            metric,
            count: a.count,
            mean: a.sum / a.count as f64,
            min: a.min,
            max: a.max,
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.bucket_start_us, &a.group, &a.metric).cmp(&(b.bucket_start_us, &b.group, &b.metric))
    });
    scan.elapsed_us = started.elapsed().as_micros() as u64;
    tracing::debug!(scan = ?scan, rows = rows.len(), "fleet aggregate");
    Ok(FleetAggregate { rows, scan })
}

/// What a data set holds, from directory listings and footers only (no data page is read).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatasetInfo {
    pub partitions: u64,
    pub files: u64,
    /// Bytes on disk of the data files.
    pub bytes: u64,
    /// Rows (points) according to the footers.
    pub rows: u64,
    /// Start of the first hour partition.
    pub from_us: Option<i64>,
    /// End (exclusive) of the last hour partition.
    pub to_us: Option<i64>,
}

/// Partitions, files, bytes and rows of the data set at `root` (benchmarks, tools).
pub fn dataset_info(root: &Path) -> Result<DatasetInfo, QueryError> {
    let partitions = list_partitions(root)?;
    let mut info = DatasetInfo {
        partitions: partitions.len() as u64,
        from_us: partitions.first().map(|p| p.hour * HOUR_US),
        to_us: partitions.iter().map(|p| p.end_hour() * HOUR_US).max(),
        ..DatasetInfo::default()
    };
    let bytes = Arc::new(AtomicU64::new(0));
    for p in &partitions {
        for f in list_files(p)? {
            let Some(file) = OpenFile::open(&f.path, &bytes)? else {
                continue;
            };
            info.files += 1;
            info.bytes += file.reader.len;
            info.rows += u64::try_from(file.metadata().file_metadata().num_rows()).unwrap_or(0);
        }
    }
    Ok(info)
}

/// The (device, metric) of the first row of the oldest file, if there is one: a default
/// series for tools that are not told which to look at.
pub fn first_series(root: &Path) -> Result<Option<(String, String)>, QueryError> {
    let bytes = Arc::new(AtomicU64::new(0));
    for p in list_partitions(root)? {
        for f in list_files(&p)? {
            let Some(file) = OpenFile::open(&f.path, &bytes)? else {
                continue;
            };
            for rg in 0..file.metadata().num_row_groups() {
                if file.metadata().row_group(rg).num_rows() == 0 {
                    continue;
                }
                let selection = RowSelection::from_consecutive_ranges(std::iter::once(0..1), 1);
                let reader = file.read(
                    &f.path,
                    rg,
                    &[file.cols.device, file.cols.metric],
                    Some(selection),
                    1,
                )?;
                for batch in reader {
                    let batch = batch.map_err(|e| pq_err(&f.path)(e.into()))?;
                    let devices = string_column(&batch, "device_id", &f.path)?;
                    let metrics = string_column(&batch, "metric", &f.path)?;
                    let first = |k: &StrKeys<'_>| {
                        k.keys
                            .first()
                            .and_then(|&i| k.values.get(i as usize).copied().flatten())
                            .map(str::to_owned)
                    };
                    if let (Some(d), Some(m)) = (first(&devices), first(&metrics)) {
                        return Ok(Some((d, m)));
                    }
                }
            }
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Listing and partition pruning
// ---------------------------------------------------------------------------------------

/// One `date=…/hour=…` directory, or one `date=…` directory with its day files.
struct Partition {
    /// Hours since the epoch of the first hour.
    hour: i64,
    /// Hours the partition's files span: 1, or 24 for the day files of a date directory.
    hours: i64,
    dir: PathBuf,
}

impl Partition {
    fn end_hour(&self) -> i64 {
        self.hour + self.hours
    }

    fn overlaps(&self, from_us: i64, to_us: i64) -> bool {
        from_us < to_us
            && self.hour.saturating_mul(HOUR_US) < to_us
            && self.end_hour().saturating_mul(HOUR_US) > from_us
    }

    fn inside(&self, from_us: i64, to_us: i64) -> bool {
        self.hour.saturating_mul(HOUR_US) >= from_us
            && self.end_hour().saturating_mul(HOUR_US) <= to_us
    }

    fn is_day(&self) -> bool {
        self.hours > 1
    }
}

/// Every partition under `root`, in time order (a date's day files before its hours). A
/// missing `root` is an empty data set.
fn list_partitions(root: &Path) -> Result<Vec<Partition>, QueryError> {
    let dates = match fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(root)(e)),
    };
    let mut out = Vec::new();
    for date in dates {
        let date = date.map_err(io_err(root))?;
        let Some(day) = date.file_name().to_str().and_then(parse_date_dir) else {
            continue;
        };
        let date_path = date.path();
        let entries = match fs::read_dir(&date_path) {
            Ok(h) => h,
            // Not a directory, or removed meanwhile: nothing to read there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(io_err(&date_path)(e)),
        };
        let mut has_day_file = false;
        for entry in entries {
            let entry = entry.map_err(io_err(&date_path))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(h) = parse_hour_dir(name) {
                out.push(Partition {
                    hour: day * 24 + h,
                    hours: 1,
                    dir: entry.path(),
                });
            } else if DataFileName::parse(name).is_some_and(|n| n.kind == FileKind::Day) {
                has_day_file = true;
            }
        }
        if has_day_file {
            out.push(Partition {
                hour: day * 24,
                hours: DAY_HOURS,
                dir: date_path,
            });
        }
    }
    out.sort_by_key(|p| (p.hour, std::cmp::Reverse(p.hours)));
    Ok(out)
}

/// A data file of a partition; `first_lsn` orders files of one partition by age.
struct DataFile {
    first_lsn: u64,
    path: PathBuf,
}

/// The data files of a partition: day files of a date directory, the other kinds in an
/// hour directory (as the store lays them out).
fn list_files(p: &Partition) -> Result<Vec<DataFile>, QueryError> {
    let dir = &p.dir;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let Some(name) = entry.file_name().to_str().and_then(DataFileName::parse) else {
            continue;
        };
        if (name.kind == FileKind::Day) == p.is_day() {
            out.push(DataFile {
                first_lsn: name.first_lsn,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|f| f.first_lsn);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Parallel work queue
// ---------------------------------------------------------------------------------------

/// Runs `work(state, i)` for `i in 0..items` on up to `threads` scoped threads (the caller's
/// thread is one of them), each with its own state; stops at the first error.
fn run_parallel<W, I, F>(
    items: usize,
    threads: usize,
    init: I,
    work: F,
) -> Result<Vec<W>, QueryError>
where
    W: Send,
    I: Fn() -> W + Sync,
    F: Fn(&mut W, usize) -> Result<(), QueryError> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<QueryError>> = Mutex::new(None);
    let threads = threads.clamp(1, items.max(1));
    let worker = || {
        let mut state = init();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items {
                break;
            }
            if let Err(e) = work(&mut state, i) {
                failed.store(true, Ordering::Relaxed);
                error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
                break;
            }
        }
        state
    };
    let states = std::thread::scope(|s| {
        let worker = &worker;
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(worker)).collect();
        let mut states = vec![worker()];
        for h in handles {
            match h.join() {
                Ok(state) => states.push(state),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        states
    });
    match error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(states),
    }
}

// ---------------------------------------------------------------------------------------
// Reading files: a counting positional reader, metadata, column lookup
// ---------------------------------------------------------------------------------------

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// A file for the Parquet reader that reads with `pread` (no `dup`+`seek` per request, as
/// `File`'s own `ChunkReader` does) and counts the bytes it reads into `bytes`.
#[derive(Clone)]
struct CountedFile {
    file: Arc<File>,
    len: u64,
    bytes: Arc<AtomicU64>,
}

impl CountedFile {
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match read_at(&self.file, buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    offset += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Length for CountedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// Sequential reads from an offset (footer tail; page headers of files without an offset
/// index).
struct CountedRead {
    file: CountedFile,
    pos: u64,
}

impl Read for CountedRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_at(&self.file.file, buf, self.pos)?;
        self.pos += n as u64;
        self.file.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl ChunkReader for CountedFile {
    type T = BufReader<CountedRead>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(BufReader::with_capacity(
            4096,
            CountedRead {
                file: self.clone(),
                pos: start,
            },
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buf = vec![0u8; length];
        self.read_exact_at(&mut buf, start)?;
        Ok(Bytes::from(buf))
    }
}

/// Leaf column indices of the store's four columns.
#[derive(Clone, Copy)]
struct Columns {
    ts: usize,
    device: usize,
    metric: usize,
    value: usize,
}

struct OpenFile {
    reader: CountedFile,
    meta: ArrowReaderMetadata,
    cols: Columns,
    /// The footer's series index, if the file has a valid one.
    index: Option<Arc<SeriesIndex>>,
}

impl OpenFile {
    /// Opens `path` and takes its footer, page index and series index from the metadata
    /// cache, or reads them (and caches them). `None` if the file is gone (compaction
    /// removed it after the listing).
    fn open(path: &Path, bytes: &Arc<AtomicU64>) -> Result<Option<OpenFile>, QueryError> {
        Self::open_cached(path, bytes, metadata_cache())
    }

    fn open_cached(
        path: &Path,
        bytes: &Arc<AtomicU64>,
        cache: &MetadataCache,
    ) -> Result<Option<OpenFile>, QueryError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "file removed since listing; skipped");
                return Ok(None);
            }
            Err(e) => return Err(io_err(path)(e)),
        };
        let stat = file.metadata().map_err(io_err(path))?;
        let len = stat.len();
        let reader = CountedFile {
            file: Arc::new(file),
            len,
            bytes: bytes.clone(),
        };
        let key = CacheKey::of(path, &stat);
        let cached = match cache.get(&key) {
            Some(c) => c,
            None => {
                let c = Arc::new(load_metadata(path, &reader)?);
                cache.insert(key, c.clone());
                c
            }
        };
        Ok(Some(OpenFile {
            reader,
            meta: cached.meta.clone(),
            cols: cached.cols,
            index: cached.index.clone(),
        }))
    }

    fn metadata(&self) -> &ParquetMetaData {
        self.meta.metadata()
    }

    /// A batch reader over row group `rg`, columns `leaves`, rows `selection` (all if None).
    fn read(
        &self,
        path: &Path,
        rg: usize,
        leaves: &[usize],
        selection: Option<RowSelection>,
        batch_rows: usize,
    ) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, QueryError> {
        let mask = ProjectionMask::leaves(self.meta.parquet_schema(), leaves.iter().copied());
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.reader.clone(),
            self.meta.clone(),
        )
        .with_row_groups(vec![rg])
        .with_projection(mask)
        .with_batch_size(batch_rows)
        // Long runs of selected rows: skip whole pages rather than decode and mask.
        .with_row_selection_policy(RowSelectionPolicy::Selectors);
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        builder.build().map_err(pq_err(path))
    }
}

/// Reads a file's footer with its page index (column and offset index, where present),
/// finds the store's columns and parses the series index.
fn load_metadata(path: &Path, reader: &CountedFile) -> Result<CachedMeta, QueryError> {
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    // The store's schema as a hint spares decoding the Arrow schema embedded in every
    // footer; a file with another layout is read with its own schema instead.
    let meta = match ArrowReaderMetadata::load(reader, options.clone().with_schema(store_schema()))
    {
        Ok(meta) => meta,
        Err(_) => ArrowReaderMetadata::load(reader, options).map_err(pq_err(path))?,
    };
    let schema = meta.metadata().file_metadata().schema_descr();
    let find = |name: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.path().parts().len() == 1 && c.name() == name)
            .ok_or_else(|| layout(path, format!("no top-level column {name}")))
    };
    let cols = Columns {
        ts: find(layout::TS)?,
        device: find(layout::DEVICE_ID)?,
        metric: find(layout::METRIC)?,
        value: find(layout::VALUE)?,
    };
    let index = SeriesIndex::from_metadata(meta.metadata()).map(Arc::new);
    if index.is_none()
        && meta
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .is_some_and(|kv| kv.iter().any(|k| k.key == layout::SERIES_INDEX_KEY))
    {
        tracing::warn!(path = %path.display(), "series index does not match the file; ignored");
    }
    let bytes = meta.metadata().memory_size()
        + index.as_ref().map_or(0, |i| i.memory_size())
        + path.as_os_str().len()
        + 256;
    Ok(CachedMeta {
        meta,
        cols,
        index,
        bytes,
    })
}

/// The series index of a merged file ([`layout::SERIES_INDEX_KEY`]): every series' rows,
/// sorted by (device, metric) as the rows are.
struct SeriesIndex {
    /// (device, metric, first row in the file, rows).
    series: Vec<(Box<str>, Box<str>, u64, u64)>,
}

impl SeriesIndex {
    /// The index of a file's footer, if it has one that agrees with the file (sorted, and
    /// its counts add up to the file's rows); anything else is ignored, never trusted.
    fn from_metadata(meta: &ParquetMetaData) -> Option<SeriesIndex> {
        let kv = meta.file_metadata().key_value_metadata()?;
        let text = kv
            .iter()
            .find(|k| k.key == layout::SERIES_INDEX_KEY)?
            .value
            .as_deref()?;
        let runs: Vec<(Box<str>, Box<str>, u64)> = serde_json::from_str(text).ok()?;
        let mut series = Vec::with_capacity(runs.len());
        let mut start = 0u64;
        for (d, m, n) in runs {
            if let Some((pd, pm, _, _)) = series.last()
                && (pd, pm) >= (&d, &m)
            {
                return None;
            }
            series.push((d, m, start, n));
            start = start.checked_add(n)?;
        }
        let rows = u64::try_from(meta.file_metadata().num_rows()).ok()?;
        (start == rows).then_some(SeriesIndex { series })
    }

    /// Rows of `device`/`metric` in the file.
    fn rows_of(&self, device: &str, metric: &str) -> Option<Range<u64>> {
        let i = self
            .series
            .binary_search_by(|(d, m, _, _)| (&**d, &**m).cmp(&(device, metric)))
            .ok()?;
        let (_, _, start, n) = &self.series[i];
        Some(*start..start + n)
    }

    fn memory_size(&self) -> usize {
        self.series
            .iter()
            .map(|(d, m, _, _)| d.len() + m.len() + 48)
            .sum::<usize>()
            + 24
    }
}

/// What the metadata cache keeps of a file.
struct CachedMeta {
    meta: ArrowReaderMetadata,
    cols: Columns,
    index: Option<Arc<SeriesIndex>>,
    /// Approximate heap size, counted against the cache's budget.
    bytes: usize,
}

/// A file as the cache knows it: the path and what `stat` says of it, so a file written
/// again under the same name (a retried flush) is not served stale metadata.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct CacheKey {
    path: PathBuf,
    len: u64,
    modified_ns: i128,
    inode: u64,
}

impl CacheKey {
    fn of(path: &Path, stat: &fs::Metadata) -> CacheKey {
        let modified_ns = stat
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(stat);
        #[cfg(not(unix))]
        let inode = 0;
        CacheKey {
            path: path.to_owned(),
            len: stat.len(),
            modified_ns,
            inode,
        }
    }
}

/// Most bytes of footers, page indexes and series indexes the process keeps
/// ([`metadata_cache`]): enough for every file of a year of day files of a large fleet.
pub const METADATA_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A bounded cache of file metadata, least recently used out first. Files are immutable
/// once renamed into place (a merged file gets a new name), so an entry never goes stale;
/// one for a removed file ages out.
pub struct MetadataCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<CacheKey, (Arc<CachedMeta>, u64)>,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// Entries, bytes, hits and misses of a [`MetadataCache`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub budget: usize,
    pub hits: u64,
    pub misses: u64,
}

impl MetadataCache {
    pub fn new(budget: usize) -> MetadataCache {
        MetadataCache {
            budget,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<CachedMeta>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let found = inner.map.get_mut(key).map(|(m, used)| {
            *used = tick;
            m.clone()
        });
        if found.is_some() {
            inner.hits += 1;
        } else {
            inner.misses += 1;
        }
        found
    }

    /// Keeps `meta` unless it alone exceeds the budget; evicts the least recently used
    /// entries until the total fits.
    fn insert(&self, key: CacheKey, meta: Arc<CachedMeta>) {
        if meta.bytes > self.budget {
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let bytes = meta.bytes;
        if let Some((old, _)) = inner.map.insert(key, (meta, tick)) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        if inner.bytes > self.budget {
            // Evict down to 7/8 of the budget at once, so a scan larger than the cache
            // sorts once per eighth of the budget rather than once per file.
            let target = self.budget - self.budget / 8;
            let mut by_age: Vec<(u64, CacheKey, usize)> = inner
                .map
                .iter()
                .map(|(k, (m, used))| (*used, k.clone(), m.bytes))
                .collect();
            by_age.sort_unstable_by_key(|e| e.0);
            for (_, k, b) in by_age {
                if inner.bytes <= target {
                    break;
                }
                inner.map.remove(&k);
                inner.bytes -= b;
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            bytes: inner.bytes,
            budget: self.budget,
            hits: inner.hits,
            misses: inner.misses,
        }
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.bytes = 0;
    }
}

/// The process's metadata cache, shared by every query.
pub fn metadata_cache() -> &'static MetadataCache {
    static CACHE: std::sync::OnceLock<MetadataCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| MetadataCache::new(METADATA_CACHE_BYTES))
}

/// The schema the store writes ([`prognos_ingest::layout::schema`]).
fn store_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(layout::schema).clone()
}

/// Min and max of a byte-array column chunk, if the footer has them.
fn byte_stats(stats: Option<&Statistics>) -> Option<(&[u8], &[u8])> {
    let s = stats?;
    Some((s.min_bytes_opt()?, s.max_bytes_opt()?))
}

fn int64_stats(stats: Option<&Statistics>) -> Option<(i64, i64)> {
    match stats? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

/// Whether a name in `wanted` (sorted by name) can lie in `[lo, hi]` (byte order, which is
/// Parquet's order for UTF-8 and `str`'s order). Truncated page-index bounds stay
/// conservative: a truncated min is a prefix (smaller), a truncated max is rounded up.
fn any_between(wanted: &[(String, u32)], lo: &[u8], hi: &[u8]) -> bool {
    let i = wanted.partition_point(|(w, _)| w.as_bytes() < lo);
    wanted.get(i).is_some_and(|(w, _)| w.as_bytes() <= hi)
}

/// Row ranges of the pages of column `col` in row group `rg`, from the offset index.
fn page_rows(meta: &ParquetMetaData, rg: usize, col: usize) -> Option<Vec<Range<usize>>> {
    let index = meta.page_index_for_row_group(rg);
    let locations = index.page_locations(col)?;
    let rows = usize::try_from(meta.row_group(rg).num_rows()).ok()?;
    let starts: Vec<usize> = locations
        .iter()
        .map(|l| usize::try_from(l.first_row_index).ok())
        .collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(rows);
        if start > end || end > rows {
            return None;
        }
        out.push(start..end);
    }
    Some(out)
}

/// Rows of the pages of a string column whose min/max admit a `wanted` name; `None` when
/// the file has no page index for it (then every row is a candidate).
fn string_page_candidates(
    meta: &ParquetMetaData,
    rg: usize,
    col: usize,
    wanted: &[(String, u32)],
) -> Option<Vec<Range<usize>>> {
    let index = meta.page_index_for_row_group(rg);
    let ColumnIndexMetaData::BYTE_ARRAY(ci) = index.column_index(col)? else {
        return None;
    };
    pages_where(meta, rg, col, ci.num_pages() as usize, |i| {
        match (ci.min_value(i), ci.max_value(i)) {
            (Some(lo), Some(hi)) => any_between(wanted, lo, hi),
            // An all-null page holds no name at all.
            _ => !ci.is_null_page(i),
        }
    })
}

/// Row ranges of the pages `keep` admits; `None` when the page index does not describe
/// `pages` pages (then every row is a candidate).
fn pages_where(
    meta: &ParquetMetaData,
    rg: usize,
    col: usize,
    pages: usize,
    keep: impl Fn(usize) -> bool,
) -> Option<Vec<Range<usize>>> {
    let rows = page_rows(meta, rg, col)?;
    if pages != rows.len() {
        return None;
    }
    Some(
        rows.into_iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, r)| r)
            .collect(),
    )
}

/// Rows of the pages of the `ts` column that can hold a time in `[from, to)`.
fn time_page_candidates(
    meta: &ParquetMetaData,
    rg: usize,
    col: usize,
    from: i64,
    to: i64,
) -> Option<Vec<Range<usize>>> {
    let index = meta.page_index_for_row_group(rg);
    let ColumnIndexMetaData::INT64(ci) = index.column_index(col)? else {
        return None;
    };
    pages_where(meta, rg, col, ci.num_pages() as usize, |i| {
        match (ci.min_value(i), ci.max_value(i)) {
            (Some(lo), Some(hi)) => *lo < to && *hi >= from,
            _ => !ci.is_null_page(i),
        }
    })
}

/// Intersection of two sorted lists of disjoint ranges.
fn intersect(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j) = (0, 0);
    let mut out: Vec<Range<usize>> = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].start.max(b[j].start);
        let end = a[i].end.min(b[j].end);
        if start < end {
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// A string column as dictionary keys plus the distinct values (plain columns are keyed
/// here; null rows get a key whose value is `None`).
struct StrKeys<'a> {
    keys: Cow<'a, [i32]>,
    values: Vec<Option<&'a str>>,
}

fn str_keys(array: &dyn Array) -> Option<StrKeys<'_>> {
    if let Some(dict) = array.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
        let strings = dict.values().as_any().downcast_ref::<StringArray>()?;
        let mut values: Vec<Option<&str>> = (0..strings.len())
            .map(|i| strings.is_valid(i).then(|| strings.value(i)))
            .collect();
        let keys = dict.keys();
        let n_values = i32::try_from(values.len()).ok()?;
        let raw: &[i32] = keys.values();
        if keys.null_count() == 0 {
            // Keys must index the values; checked once here so lookups can index directly
            // (a min/max fold, which vectorises, rather than a short-circuiting scan).
            let (lo, hi) = raw
                .iter()
                .fold((0, -1), |(lo, hi): (i32, i32), &k| (lo.min(k), hi.max(k)));
            if lo < 0 || hi >= n_values {
                return None;
            }
            return Some(StrKeys {
                keys: Cow::Borrowed(raw),
                values,
            });
        }
        values.push(None);
        let keys = (0..keys.len())
            .map(|i| if keys.is_valid(i) { raw[i] } else { n_values })
            .collect::<Vec<_>>();
        if keys.iter().any(|&k| k < 0 || k > n_values) {
            return None;
        }
        return Some(StrKeys {
            keys: Cow::Owned(keys),
            values,
        });
    }
    let strings = array.as_any().downcast_ref::<StringArray>()?;
    let mut ids: HashMap<Option<&str>, i32> = HashMap::new();
    let mut values = Vec::new();
    let mut keys = Vec::with_capacity(strings.len());
    for i in 0..strings.len() {
        let s = strings.is_valid(i).then(|| strings.value(i));
        let id = *ids.entry(s).or_insert_with(|| {
            values.push(s);
            (values.len() - 1) as i32
        });
        keys.push(id);
    }
    Some(StrKeys {
        keys: Cow::Owned(keys),
        values,
    })
}

fn find(wanted: &[(String, u32)], s: &str) -> u32 {
    wanted
        .binary_search_by(|(w, _)| w.as_str().cmp(s))
        .map_or(NONE, |i| wanted[i].1)
}

fn column<'b, T: 'static>(
    batch: &'b RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'b T, QueryError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| layout(path, format!("column {name} has an unexpected type")))
}

fn string_column<'b>(
    batch: &'b RecordBatch,
    name: &str,
    path: &Path,
) -> Result<StrKeys<'b>, QueryError> {
    batch
        .column_by_name(name)
        .and_then(|c| str_keys(c.as_ref()))
        .ok_or_else(|| {
            layout(
                path,
                format!("column {name} is not a UTF-8 (dictionary) column"),
            )
        })
}

// ---------------------------------------------------------------------------------------
// Aggregates
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Agg {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last_ts: i64,
    last: f64,
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last_ts: i64::MIN,
            last: f64::NAN,
        }
    }
}

impl Agg {
    fn add(&mut self, ts: i64, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if ts >= self.last_ts {
            self.last_ts = ts;
            self.last = v;
        }
    }

    /// Count, sum, min and max of a run of values (no `last`: fleet aggregates).
    ///
    /// Four independent accumulators: one running sum would make every row wait for the
    /// previous addition (a 4-cycle dependency chain), which was the cost of a fleet scan.
    fn add_values(&mut self, values: &[f64]) {
        let mut sum = [0.0f64; 4];
        let mut min = [f64::INFINITY; 4];
        let mut max = [f64::NEG_INFINITY; 4];
        let chunks = values.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..4 {
                sum[k] += c[k];
                min[k] = min[k].min(c[k]);
                max[k] = max[k].max(c[k]);
            }
        }
        for (k, &v) in rest.iter().enumerate() {
            sum[k] += v;
            min[k] = min[k].min(v);
            max[k] = max[k].max(v);
        }
        self.count += values.len() as u64;
        self.sum += (sum[0] + sum[1]) + (sum[2] + sum[3]);
        self.min = self.min.min(min[0].min(min[1]).min(min[2].min(min[3])));
        self.max = self.max.max(max[0].max(max[1]).max(max[2].max(max[3])));
    }

    fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.count > 0 && o.last_ts >= self.last_ts {
            self.last_ts = o.last_ts;
            self.last = o.last;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Series queries
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Mode {
    Raw,
    Lttb(usize),
    Buckets { step: i64, first: i64, n: usize },
}

/// A validated series query.
struct SeriesPlan {
    devices: Vec<String>,
    metrics: Vec<String>,
    /// (name, index in `devices`), sorted by name: binary search and page-index pruning.
    devices_sorted: Vec<(String, u32)>,
    metrics_sorted: Vec<(String, u32)>,
    from: i64,
    to: i64,
    mode: Mode,
    max_points: usize,
    /// Most raw points collected over all series (raw answer, or LTTB's input).
    max_raw_total: usize,
}

/// Request order without repeats, and the same sorted by name.
fn distinct(names: &[String]) -> (Vec<String>, Vec<(String, u32)>) {
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut ordered: Vec<String> = Vec::new();
    for n in names {
        if seen.insert(n) {
            ordered.push(n.clone());
        }
    }
    let mut sorted: Vec<(String, u32)> = ordered
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32))
        .collect();
    sorted.sort();
    (ordered, sorted)
}

impl SeriesPlan {
    fn new(q: &SeriesQuery, limits: SeriesLimits) -> Result<SeriesPlan, QueryError> {
        if q.from_us > q.to_us {
            return Err(invalid("from", "`from` is after `to`"));
        }
        if q.devices.is_empty() {
            return Err(invalid("device", "give at least one device"));
        }
        if q.metrics.is_empty() {
            return Err(invalid("metric", "give at least one metric"));
        }
        if q.max_points == 0 {
            return Err(invalid("max_points", "must be at least 1"));
        }
        if let Some(step) = q.step_us
            && step <= 0
        {
            return Err(invalid("step", "must be a positive duration"));
        }
        let (devices, devices_sorted) = distinct(&q.devices);
        let (metrics, metrics_sorted) = distinct(&q.metrics);
        let n_series = devices.len().saturating_mul(metrics.len());
        if n_series > limits.max_series.min(u32::MAX as usize / 2) {
            return Err(invalid(
                "device",
                format!(
                    "{} devices × {} metrics = {n_series} series exceed the limit of {} per \
                     query",
                    devices.len(),
                    metrics.len(),
                    limits.max_series
                ),
            ));
        }
        let over_response =
            |per_series: usize| n_series.saturating_mul(per_series) > limits.max_response_points;
        let response_limit = |n: usize| {
            format!(
                "{n_series} series × {n} points exceed the limit of {} points per response; \
                 ask for fewer series or points",
                limits.max_response_points
            )
        };
        let mode = match q.downsample {
            Downsample::Raw => Mode::Raw,
            Downsample::Lttb { points } => {
                if points < 3 {
                    return Err(invalid("points", "LTTB needs at least 3 points"));
                }
                if points > q.max_points {
                    return Err(invalid(
                        "points",
                        format!("{points} points exceed the limit of {}", q.max_points),
                    ));
                }
                if over_response(points) {
                    return Err(invalid("points", response_limit(points)));
                }
                Mode::Lttb(points)
            }
            Downsample::Buckets => {
                let step = q
                    .step_us
                    .ok_or_else(|| invalid("step", "bucketed down-sampling needs a step"))?;
                let first = q.from_us.div_euclid(step);
                // Aligned buckets the range touches (one more than (to-from)/step when the
                // range does not start on a multiple of the step).
                let n = if q.to_us > q.from_us {
                    i128::from((q.to_us - 1).div_euclid(step)) - i128::from(first) + 1
                } else {
                    0
                };
                if n > MAX_BUCKETS as i128 {
                    return Err(invalid(
                        "step",
                        format!("{n} buckets exceed the engine's limit of {MAX_BUCKETS}"),
                    ));
                }
                if n > q.max_points as i128 {
                    return Err(invalid(
                        "step",
                        format!(
                            "{n} buckets exceed the limit of {} points; use a larger step",
                            q.max_points
                        ),
                    ));
                }
                if over_response(n as usize) {
                    return Err(invalid("step", response_limit(n as usize)));
                }
                Mode::Buckets {
                    step,
                    first,
                    n: n as usize,
                }
            }
        };
        Ok(SeriesPlan {
            devices,
            metrics,
            devices_sorted,
            metrics_sorted,
            from: q.from_us,
            to: q.to_us,
            mode,
            max_points: q.max_points,
            max_raw_total: match mode {
                Mode::Lttb(_) => limits
                    .max_response_points
                    .saturating_mul(SeriesLimits::LTTB_INPUT_FACTOR),
                _ => limits.max_response_points,
            },
        })
    }

    fn n_series(&self) -> usize {
        self.devices.len() * self.metrics.len()
    }

    fn assemble(&self, workers: Vec<SeriesWorker>) -> SeriesResult {
        let mut scan = ScanStats::default();
        let n = self.n_series();
        let mut chunks: Vec<PointChunk> = Vec::new();
        let mut buckets: Vec<Option<Vec<Agg>>> = vec![None; n];
        for w in workers {
            scan.add(&w.stats);
            scan.bytes_read += w.bytes.load(Ordering::Relaxed);
            chunks.extend(w.chunks);
            for (s, b) in w.buckets.into_iter().enumerate() {
                let Some(b) = b else { continue };
                match &mut buckets[s] {
                    Some(acc) => acc.iter_mut().zip(&b).for_each(|(a, o)| a.merge(o)),
                    slot @ None => *slot = Some(b),
                }
            }
        }
        // Time order: partitions are disjoint hours; files of one partition by LSN.
        chunks.sort_by_key(|c| (c.series, c.hour, c.first_lsn, c.row_group));
        let mut points: Vec<(Vec<i64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); n];
        for c in chunks {
            let (ts, v) = &mut points[c.series as usize];
            ts.extend_from_slice(&c.ts);
            v.extend_from_slice(&c.value);
        }
        let mut series = Vec::new();
        for (s, (ts, value)) in points.into_iter().enumerate() {
            let empty = match self.mode {
                Mode::Buckets { .. } => buckets[s].iter().flatten().all(|a| a.count == 0),
                _ => ts.is_empty(),
            };
            if empty {
                // Only series with data are answered: asking for many that have none must
                // not cost an allocation each.
                continue;
            }
            let device_id = self.devices[s / self.metrics.len()].clone();
            let metric = self.metrics[s % self.metrics.len()].clone();
            let mut out = Series {
                device_id,
                metric,
                ts_us: Vec::new(),
                value: Vec::new(),
                min: None,
                max: None,
                last: None,
                count: None,
            };
            match self.mode {
                Mode::Raw | Mode::Lttb(_) => {
                    let (ts, value) = sort_by_time(ts, value);
                    let (ts, value) = match self.mode {
                        Mode::Lttb(points) => lttb(&ts, &value, points),
                        _ => (ts, value),
                    };
                    out.ts_us = ts;
                    out.value = value;
                }
                Mode::Buckets { step, first, .. } => {
                    let (mut min, mut max, mut last, mut count) =
                        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    for (i, a) in buckets[s].iter().flatten().enumerate() {
                        if a.count == 0 {
                            continue;
                        }
                        out.ts_us.push((first + i as i64) * step);
                        out.value.push(a.sum / a.count as f64);
                        min.push(a.min);
                        max.push(a.max);
                        last.push(a.last);
                        count.push(a.count);
                    }
                    out.min = Some(min);
                    out.max = Some(max);
                    out.last = Some(last);
                    out.count = Some(count);
                }
            }
            series.push(out);
        }
        SeriesResult { series, scan }
    }
}

/// Points concatenated file by file are in time order unless two files of one partition
/// interleave (before compaction); then sort, keeping file order for equal times.
fn sort_by_time(ts: Vec<i64>, value: Vec<f64>) -> (Vec<i64>, Vec<f64>) {
    if ts.is_sorted() {
        return (ts, value);
    }
    let mut order: Vec<usize> = (0..ts.len()).collect();
    order.sort_by_key(|&i| ts[i]);
    (
        order.iter().map(|&i| ts[i]).collect(),
        order.iter().map(|&i| value[i]).collect(),
    )
}

/// Largest-triangle-three-buckets (Steinarsson, 2013): keeps the first and last point and,
/// from each of `n - 2` equal-count buckets in between, the point forming the largest
/// triangle with the previously kept point and the mean of the next bucket. Exactly `n`
/// points when there are more than `n`; all of them otherwise.
pub fn lttb(ts: &[i64], value: &[f64], n: usize) -> (Vec<i64>, Vec<f64>) {
    let len = ts.len().min(value.len());
    if n >= len || n < 3 {
        return (ts[..len].to_vec(), value[..len].to_vec());
    }
    // Relative times keep f64 precision for µs epochs.
    let x = |i: usize| (ts[i] - ts[0]) as f64;
    let inner = len - 2;
    let buckets = n - 2;
    // Bucket b covers points [1 + b*inner/buckets, 1 + (b+1)*inner/buckets).
    let bound = |b: usize| 1 + (b as u128 * inner as u128 / buckets as u128) as usize;
    let mut out_ts = Vec::with_capacity(n);
    let mut out_v = Vec::with_capacity(n);
    out_ts.push(ts[0]);
    out_v.push(value[0]);
    let mut a = 0;
    for b in 0..buckets {
        let (start, end) = (bound(b), bound(b + 1));
        let (next_start, next_end) = if b + 1 < buckets {
            (bound(b + 1), bound(b + 2))
        } else {
            (len - 1, len)
        };
        let cnt = (next_end - next_start) as f64;
        let (mut avg_x, mut avg_y) = (0.0, 0.0);
        for (j, v) in value.iter().enumerate().take(next_end).skip(next_start) {
            avg_x += x(j);
            avg_y += v;
        }
        avg_x /= cnt;
        avg_y /= cnt;
        let (ax, ay) = (x(a), value[a]);
        let mut best = start;
        let mut best_area = f64::NEG_INFINITY;
        for (j, v) in value.iter().enumerate().take(end).skip(start) {
            let area = ((ax - avg_x) * (v - ay) - (ax - x(j)) * (avg_y - ay)).abs();
            if area > best_area {
                best_area = area;
                best = j;
            }
        }
        out_ts.push(ts[best]);
        out_v.push(value[best]);
        a = best;
    }
    out_ts.push(ts[len - 1]);
    out_v.push(value[len - 1]);
    (out_ts, out_v)
}

/// Per-series point counts shared by the workers, so a raw query over the limit stops early.
struct SharedCounts {
    points: Vec<AtomicU64>,
    /// Raw points collected over all series (raw answers and LTTB input).
    total: AtomicU64,
}

/// Points of one series from one row group of one file.
struct PointChunk {
    series: u32,
    hour: i64,
    first_lsn: u64,
    row_group: usize,
    ts: Vec<i64>,
    value: Vec<f64>,
}

/// Rows `start..start+len` of a row group belong to `series`.
struct Run {
    series: u32,
    start: usize,
    len: usize,
}

struct SeriesWorker {
    stats: ScanStats,
    bytes: Arc<AtomicU64>,
    chunks: Vec<PointChunk>,
    /// Bucket aggregates per series (allocated on the series' first point).
    buckets: Vec<Option<Vec<Agg>>>,
}

impl SeriesWorker {
    fn new(plan: &SeriesPlan) -> SeriesWorker {
        let n = match plan.mode {
            Mode::Buckets { .. } => plan.n_series(),
            _ => 0,
        };
        SeriesWorker {
            stats: ScanStats::default(),
            bytes: Arc::new(AtomicU64::new(0)),
            chunks: Vec::new(),
            buckets: vec![None; n],
        }
    }

    fn partition(
        &mut self,
        p: &Partition,
        plan: &SeriesPlan,
        shared: &SharedCounts,
    ) -> Result<(), QueryError> {
        let files = list_files(p)?;
        self.stats.files_total += files.len() as u64;
        if !p.overlaps(plan.from, plan.to) {
            self.stats.files_pruned += files.len() as u64;
            return Ok(());
        }
        let inside = p.inside(plan.from, plan.to);
        for f in &files {
            let read = self.file(p.hour, f, inside, plan, shared)?;
            if read {
                self.stats.files_read += 1;
            } else {
                self.stats.files_pruned += 1;
            }
        }
        Ok(())
    }

    /// Returns whether any data page of the file was read.
    fn file(
        &mut self,
        hour: i64,
        f: &DataFile,
        inside: bool,
        plan: &SeriesPlan,
        shared: &SharedCounts,
    ) -> Result<bool, QueryError> {
        let path = &f.path;
        let Some(file) = OpenFile::open(path, &self.bytes)? else {
            return Ok(false);
        };
        if let Some(index) = file.index.clone() {
            return self.indexed_file(&file, &index, hour, f, inside, plan, shared);
        }
        let meta = file.metadata();
        let cols = file.cols;
        let mut read_any = false;
        for rg in 0..meta.num_row_groups() {
            let rg_meta = meta.row_group(rg);
            let rows = usize::try_from(rg_meta.num_rows()).unwrap_or(0);
            if rows == 0 {
                continue;
            }
            // Footer statistics: the row group's name and time bounds.
            let stats_admit = |col: usize, wanted: &[(String, u32)]| {
                byte_stats(rg_meta.column(col).statistics())
                    .is_none_or(|(lo, hi)| any_between(wanted, lo, hi))
            };
            if !stats_admit(cols.device, &plan.devices_sorted)
                || !stats_admit(cols.metric, &plan.metrics_sorted)
            {
                continue;
            }
            if !inside
                && int64_stats(rg_meta.column(cols.ts).statistics())
                    .is_some_and(|(lo, hi)| lo >= plan.to || hi < plan.from)
            {
                continue;
            }
            // Page index: pages of device_id and metric (and ts at a cut hour) that can
            // hold the request.
            let mut candidates: Vec<Range<usize>> = std::iter::once(0..rows).collect();
            if let Some(r) = string_page_candidates(meta, rg, cols.device, &plan.devices_sorted) {
                candidates = intersect(&candidates, &r);
            }
            if let Some(r) = string_page_candidates(meta, rg, cols.metric, &plan.metrics_sorted) {
                candidates = intersect(&candidates, &r);
            }
            if !inside && let Some(r) = time_page_candidates(meta, rg, cols.ts, plan.from, plan.to)
            {
                candidates = intersect(&candidates, &r);
            }
            if candidates.is_empty() {
                continue;
            }
            read_any = true;
            self.stats.row_groups_read += 1;
            let runs = self.find_runs(&file, path, rg, rows, &candidates, plan)?;
            if runs.is_empty() {
                continue;
            }
            self.read_runs(
                &file,
                path,
                hour,
                f.first_lsn,
                rg,
                rows,
                &runs,
                plan,
                shared,
            )?;
        }
        Ok(read_any)
    }

    /// [`SeriesWorker::file`] for a file with a series index: the requested series' rows
    /// come from the index, so no `device_id`/`metric` page is read; `ts` and `value` are
    /// decoded for exactly those rows (cut to the `ts` pages of the range at a cut day).
    #[allow(clippy::too_many_arguments)]
    fn indexed_file(
        &mut self,
        file: &OpenFile,
        index: &SeriesIndex,
        hour: i64,
        f: &DataFile,
        inside: bool,
        plan: &SeriesPlan,
        shared: &SharedCounts,
    ) -> Result<bool, QueryError> {
        let n_metrics = plan.metrics.len() as u32;
        let mut wanted: Vec<(u64, u64, u32)> = Vec::new();
        for (d, ds) in &plan.devices_sorted {
            for (m, ms) in &plan.metrics_sorted {
                if let Some(r) = index.rows_of(d, m)
                    && !r.is_empty()
                {
                    wanted.push((r.start, r.end, ds * n_metrics + ms));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(false);
        }
        wanted.sort_unstable();
        let meta = file.metadata();
        let mut read_any = false;
        let mut rg_start = 0u64;
        for rg in 0..meta.num_row_groups() {
            let rows = u64::try_from(meta.row_group(rg).num_rows()).unwrap_or(0);
            let rg_end = rg_start + rows;
            let mut runs: Vec<Run> = wanted
                .iter()
                .filter(|(s, e, _)| *s < rg_end && *e > rg_start)
                .map(|&(s, e, series)| Run {
                    series,
                    start: (s.max(rg_start) - rg_start) as usize,
                    len: (e.min(rg_end) - s.max(rg_start)) as usize,
                })
                .collect();
            if !inside
                && let Some(pages) =
                    time_page_candidates(meta, rg, file.cols.ts, plan.from, plan.to)
            {
                runs = runs
                    .iter()
                    .flat_map(|r| {
                        intersect(std::slice::from_ref(&(r.start..r.start + r.len)), &pages)
                            .into_iter()
                            .map(|x| Run {
                                series: r.series,
                                start: x.start,
                                len: x.len(),
                            })
                    })
                    .collect();
            }
            rg_start = rg_end;
            if runs.is_empty() {
                continue;
            }
            read_any = true;
            self.stats.row_groups_read += 1;
            self.read_runs(
                file,
                &f.path,
                hour,
                f.first_lsn,
                rg,
                rows as usize,
                &runs,
                plan,
                shared,
            )?;
        }
        Ok(read_any)
    }

    /// Decodes `device_id` and `metric` over the candidate rows and returns the runs of
    /// rows of requested series, in row order.
    fn find_runs(
        &mut self,
        file: &OpenFile,
        path: &Path,
        rg: usize,
        rows: usize,
        candidates: &[Range<usize>],
        plan: &SeriesPlan,
    ) -> Result<Vec<Run>, QueryError> {
        let selection = RowSelection::from_consecutive_ranges(candidates.iter().cloned(), rows);
        let reader = file.read(
            path,
            rg,
            &[file.cols.device, file.cols.metric],
            Some(selection),
            KEY_BATCH_ROWS,
        )?;
        let n_metrics = plan.metrics.len() as u32;
        // Ordinal (position among the selected rows) → row: prefix sums of the candidates.
        let mut starts = Vec::with_capacity(candidates.len());
        let mut total = 0;
        for r in candidates {
            starts.push(total);
            total += r.len();
        }
        let mut runs: Vec<Run> = Vec::new();
        let mut emit = |series: u32, ordinals: Range<usize>| {
            let mut c = starts
                .partition_point(|&s| s <= ordinals.start)
                .saturating_sub(1);
            let mut o = ordinals.start;
            while o < ordinals.end && c < candidates.len() {
                let row = candidates[c].start + (o - starts[c]);
                let len = (candidates[c].end - row).min(ordinals.end - o);
                match runs.last_mut() {
                    Some(r) if r.series == series && r.start + r.len == row => r.len += len,
                    _ => runs.push(Run {
                        series,
                        start: row,
                        len,
                    }),
                }
                o += len;
                c += 1;
            }
        };
        let mut base = 0;
        for batch in reader {
            let batch = batch.map_err(|e| pq_err(path)(e.into()))?;
            let devices = string_column(&batch, "device_id", path)?;
            let metrics = string_column(&batch, "metric", path)?;
            let dlut: Vec<u32> = devices
                .values
                .iter()
                .map(|v| v.map_or(NONE, |s| find(&plan.devices_sorted, s)))
                .collect();
            let mlut: Vec<u32> = metrics
                .values
                .iter()
                .map(|v| v.map_or(NONE, |s| find(&plan.metrics_sorted, s)))
                .collect();
            let (dk, mk): (&[i32], &[i32]) = (&devices.keys, &metrics.keys);
            let n = dk.len().min(mk.len());
            // Sorted by (device, metric): skip runs of unwanted devices (compared eight keys
            // at a time), and split wanted devices' runs by metric.
            let (dk, mk) = (&dk[..n], &mk[..n]);
            let mut i = 0;
            while i < n {
                let d = dk[i];
                let j = run_end(dk, i, d);
                let ds = dlut[d as usize];
                if ds != NONE {
                    let mut a = i;
                    while a < j {
                        let m = mk[a];
                        let b = run_end(mk, a, m).min(j);
                        let ms = mlut[m as usize];
                        if ms != NONE {
                            emit(ds * n_metrics + ms, base + a..base + b);
                        }
                        a = b;
                    }
                }
                i = j;
            }
            base += batch.num_rows();
        }
        self.stats.rows_decoded += base as u64;
        if base != total {
            return Err(layout(path, "decoded rows differ from the selected rows"));
        }
        Ok(runs)
    }

    /// Decodes `ts` and `value` for exactly the rows of `runs` and hands them to the sink.
    #[allow(clippy::too_many_arguments)]
    fn read_runs(
        &mut self,
        file: &OpenFile,
        path: &Path,
        hour: i64,
        first_lsn: u64,
        rg: usize,
        rows: usize,
        runs: &[Run],
        plan: &SeriesPlan,
        shared: &SharedCounts,
    ) -> Result<(), QueryError> {
        let selection = RowSelection::from_consecutive_ranges(
            runs.iter().map(|r| r.start..r.start + r.len),
            rows,
        );
        let reader = file.read(
            path,
            rg,
            &[file.cols.ts, file.cols.value],
            Some(selection),
            BATCH_ROWS,
        )?;
        let mut file_chunks: HashMap<u32, PointChunk> = HashMap::new();
        let (mut run_i, mut run_off) = (0usize, 0usize);
        for batch in reader {
            let batch = batch.map_err(|e| pq_err(path)(e.into()))?;
            let ts = column::<TimestampMicrosecondArray>(&batch, "ts", path)?;
            let value = column::<Float64Array>(&batch, "value", path)?;
            let has_nulls = ts.null_count() > 0 || value.null_count() > 0;
            let n = batch.num_rows();
            self.stats.rows_decoded += n as u64;
            let mut pos = 0;
            while pos < n {
                let run = runs
                    .get(run_i)
                    .ok_or_else(|| layout(path, "more rows decoded than selected"))?;
                let take = (run.len - run_off).min(n - pos);
                let range = pos..pos + take;
                let tv = &ts.values()[range.clone()];
                let vv = &value.values()[range.clone()];
                let valid =
                    |k: usize| !has_nulls || (ts.is_valid(pos + k) && value.is_valid(pos + k));
                let points = (0..take)
                    .filter(|&k| valid(k))
                    .map(|k| (tv[k], vv[k]))
                    .filter(|(t, _)| *t >= plan.from && *t < plan.to);
                match plan.mode {
                    Mode::Buckets { step, first, n } => {
                        let aggs = self.buckets[run.series as usize]
                            .get_or_insert_with(|| vec![Agg::default(); n]);
                        for (t, v) in points {
                            let b = (t.div_euclid(step) - first) as usize;
                            if let Some(a) = aggs.get_mut(b) {
                                a.add(t, v);
                            }
                        }
                    }
                    Mode::Raw | Mode::Lttb(_) => {
                        let chunk = file_chunks.entry(run.series).or_insert_with(|| PointChunk {
                            series: run.series,
                            hour,
                            first_lsn,
                            row_group: rg,
                            ts: Vec::new(),
                            value: Vec::new(),
                        });
                        let before = chunk.ts.len();
                        for (t, v) in points {
                            chunk.ts.push(t);
                            chunk.value.push(v);
                        }
                        let added = (chunk.ts.len() - before) as u64;
                        if added > 0
                            && shared.total.fetch_add(added, Ordering::Relaxed) + added
                                > plan.max_raw_total as u64
                        {
                            return Err(match plan.mode {
                                Mode::Lttb(_) => invalid(
                                    "from",
                                    format!(
                                        "more than {} raw points to down-sample; narrow the \
                                         range or the series, or use buckets",
                                        plan.max_raw_total
                                    ),
                                ),
                                _ => invalid(
                                    "step",
                                    format!(
                                        "more than {} raw points in the response; down-sample \
                                         (buckets with a step, or LTTB) or ask for fewer series",
                                        plan.max_raw_total
                                    ),
                                ),
                            });
                        }
                        if matches!(plan.mode, Mode::Raw) && added > 0 {
                            let total = shared.points[run.series as usize]
                                .fetch_add(added, Ordering::Relaxed)
                                + added;
                            if total > plan.max_points as u64 {
                                return Err(invalid(
                                    "step",
                                    format!(
                                        "more than {} raw points in a series; down-sample \
                                         (buckets with a step, or LTTB)",
                                        plan.max_points
                                    ),
                                ));
                            }
                        }
                    }
                }
                pos += take;
                run_off += take;
                if run_off == run.len {
                    run_i += 1;
                    run_off = 0;
                }
            }
        }
        self.chunks.extend(file_chunks.into_values());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Fleet aggregates
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct FleetWorker {
    stats: ScanStats,
    bytes: Arc<AtomicU64>,
    /// Worker-local ids of metric and group names.
    metric_ids: HashMap<String, u32>,
    metric_names: Vec<String>,
    group_ids: HashMap<String, u32>,
    group_names: Vec<String>,
    /// (bucket start, group id, metric id) → aggregate.
    acc: HashMap<(i64, u32, u32), Agg>,
}

fn intern(ids: &mut HashMap<String, u32>, names: &mut Vec<String>, name: &str) -> u32 {
    if let Some(&id) = ids.get(name) {
        return id;
    }
    let id = names.len() as u32;
    names.push(name.to_owned());
    ids.insert(name.to_owned(), id);
    id
}

impl FleetWorker {
    /// Worker-local metric id per dictionary value of a `metric` column; `NONE` for a
    /// metric the query does not ask for (`metrics` sorted; empty asks for all).
    fn metric_lut(&mut self, metric: &StrKeys<'_>, metrics: &[String]) -> Vec<u32> {
        metric
            .values
            .iter()
            .map(|v| match v {
                Some(name)
                    if metrics.is_empty()
                        || metrics.binary_search_by(|m| m.as_str().cmp(name)).is_ok() =>
                {
                    intern(&mut self.metric_ids, &mut self.metric_names, name)
                }
                _ => NONE,
            })
            .collect()
    }

    fn partition(
        &mut self,
        p: &Partition,
        q: &FleetQuery,
        metrics: &[String],
    ) -> Result<(), QueryError> {
        let files = list_files(p)?;
        self.stats.files_total += files.len() as u64;
        if !p.overlaps(q.from_us, q.to_us) {
            self.stats.files_pruned += files.len() as u64;
            return Ok(());
        }
        // The bucket follows from the partition, except for hour buckets of a day file:
        // then each row's hour is read from `ts`.
        let slots = match q.bucket {
            Bucket::Hour if p.is_day() => Slots {
                base: p.hour * HOUR_US,
                width: HOUR_US,
                n: p.hours as usize,
            },
            Bucket::Hour => Slots::one(p.hour * HOUR_US),
            Bucket::Day => Slots::one(p.hour.div_euclid(24) * DAY_US),
        };
        let cut = !p.inside(q.from_us, q.to_us);
        let rollup_hours = rollup_hours(p, q.from_us, q.to_us);
        for f in &files {
            if let Some(hours) = rollup_hours
                && self.rollup(&f.path, hours, p.hour.div_euclid(24) * DAY_US, q, metrics)?
            {
                self.stats.files_read += 1;
                self.stats.rollups_read += 1;
                continue;
            }
            if self.file(&f.path, slots, cut, q, metrics)? {
                self.stats.files_read += 1;
            } else {
                self.stats.files_pruned += 1;
            }
        }
        Ok(())
    }

    /// Aggregates the rollup of the day file at `day_path` over `hours` (hours since the
    /// epoch, `[lo, hi)`); `Ok(false)` when the day file has no usable rollup, so the caller
    /// reads the rows themselves. Day buckets go to `day_bucket_us`, the day of the file's
    /// partition, as in a raw scan.
    fn rollup(
        &mut self,
        day_path: &Path,
        hours: (i64, i64),
        day_bucket_us: i64,
        q: &FleetQuery,
        metrics: &[String],
    ) -> Result<bool, QueryError> {
        let Some(path) = layout::rollup_path(day_path) else {
            return Ok(false);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let bytes = file.metadata().map_err(io_err(&path))?.len();
        let builder = match ParquetRecordBatchReaderBuilder::try_new(file) {
            Ok(b) if b.schema().fields() == layout::rollup_schema().fields() => b,
            // Derived data in doubt is not used: the day file itself answers.
            Ok(_) | Err(_) => {
                tracing::warn!(path = %path.display(), "unreadable rollup; reading its day file");
                return Ok(false);
            }
        };
        let grouped = q.group_of.is_some();
        let leaves: Vec<usize> = if grouped {
            (0..7).collect()
        } else {
            (1..7).collect()
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), leaves);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(pq_err(&path))?;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        for batch in reader {
            let batch = batch.map_err(|e| pq_err(&path)(e.into()))?;
            self.stats.rows_decoded += batch.num_rows() as u64;
            let metric = string_column(&batch, layout::METRIC, &path)?;
            let hour = column::<Int64Array>(&batch, layout::HOUR, &path)?;
            let count = column::<UInt64Array>(&batch, layout::COUNT, &path)?;
            let sum = column::<Float64Array>(&batch, layout::SUM, &path)?;
            let min = column::<Float64Array>(&batch, layout::MIN, &path)?;
            let max = column::<Float64Array>(&batch, layout::MAX, &path)?;
            let mlut = self.metric_lut(&metric, metrics);
            let groups = match &q.group_of {
                Some(group_of) => {
                    let device = string_column(&batch, layout::DEVICE_ID, &path)?;
                    let glut: Vec<u32> = device
                        .values
                        .iter()
                        .map(|d| {
                            let group = d
                                .and_then(|d| group_of.get(d))
                                .map_or("unknown", String::as_str);
                            intern(&mut self.group_ids, &mut self.group_names, group)
                        })
                        .collect();
                    Some((device.keys, glut))
                }
                None => None,
            };
            for r in 0..batch.num_rows() {
                let Some(&m) = metric.keys.get(r).and_then(|&k| mlut.get(k as usize)) else {
                    continue;
                };
                let h = hour.value(r);
                if m == NONE || h < hours.0 || h >= hours.1 {
                    continue;
                }
                let g = match &groups {
                    Some((keys, glut)) => keys
                        .get(r)
                        .and_then(|&k| glut.get(k as usize))
                        .copied()
                        .unwrap_or(0),
                    None => 0,
                };
                let bucket = match q.bucket {
                    Bucket::Hour => h.saturating_mul(HOUR_US),
                    Bucket::Day => day_bucket_us,
                };
                self.acc.entry((bucket, g, m)).or_default().merge(&Agg {
                    count: count.value(r),
                    sum: sum.value(r),
                    min: min.value(r),
                    max: max.value(r),
                    ..Agg::default()
                });
            }
        }
        Ok(true)
    }

    fn file(
        &mut self,
        path: &Path,
        slots: Slots,
        cut: bool,
        q: &FleetQuery,
        metrics: &[String],
    ) -> Result<bool, QueryError> {
        let Some(file) = OpenFile::open(path, &self.bytes)? else {
            return Ok(false);
        };
        let meta = file.metadata();
        let cols = file.cols;
        let grouped = q.group_of.is_some();
        let mut leaves = vec![cols.metric, cols.value];
        if grouped {
            leaves.push(cols.device);
        }
        if cut || slots.n > 1 {
            leaves.push(cols.ts);
        }
        // group id × (metric id × slot) of this file.
        let mut file_acc: Vec<Vec<Agg>> = Vec::new();
        let mut read_any = false;
        for rg in 0..meta.num_row_groups() {
            let rg_meta = meta.row_group(rg);
            if rg_meta.num_rows() == 0 {
                continue;
            }
            if !metrics.is_empty()
                && byte_stats(rg_meta.column(cols.metric).statistics()).is_some_and(|(lo, hi)| {
                    let i = metrics.partition_point(|m| m.as_bytes() < lo);
                    metrics.get(i).is_none_or(|m| m.as_bytes() > hi)
                })
            {
                continue;
            }
            if cut
                && int64_stats(rg_meta.column(cols.ts).statistics())
                    .is_some_and(|(lo, hi)| lo >= q.to_us || hi < q.from_us)
            {
                continue;
            }
            read_any = true;
            self.stats.row_groups_read += 1;
            let reader = file.read(path, rg, &leaves, None, BATCH_ROWS)?;
            for batch in reader {
                let batch = batch.map_err(|e| pq_err(path)(e.into()))?;
                self.stats.rows_decoded += batch.num_rows() as u64;
                self.batch(&batch, path, q, metrics, cut, slots, &mut file_acc)?;
            }
        }
        for (g, per_metric) in file_acc.into_iter().enumerate() {
            for (i, a) in per_metric.into_iter().enumerate() {
                if a.count > 0 {
                    let (m, slot) = (i / slots.n, i % slots.n);
                    self.acc
                        .entry((slots.start(slot), g as u32, m as u32))
                        .or_default()
                        .merge(&a);
                }
            }
        }
        Ok(read_any)
    }

    #[allow(clippy::too_many_arguments)]
    fn batch(
        &mut self,
        batch: &RecordBatch,
        path: &Path,
        q: &FleetQuery,
        metrics: &[String],
        cut: bool,
        slots: Slots,
        file_acc: &mut Vec<Vec<Agg>>,
    ) -> Result<(), QueryError> {
        let metric = string_column(batch, "metric", path)?;
        let value = column::<Float64Array>(batch, "value", path)?;
        let mlut = self.metric_lut(&metric, metrics);
        let device = match &q.group_of {
            Some(group_of) => {
                let device = string_column(batch, "device_id", path)?;
                let glut: Vec<u32> = device
                    .values
                    .iter()
                    .map(|d| {
                        let group = d
                            .and_then(|d| group_of.get(d))
                            .map_or("unknown", String::as_str);
                        intern(&mut self.group_ids, &mut self.group_names, group)
                    })
                    .collect();
                Some((device.keys, glut))
            }
            None => None,
        };
        let ts = if cut || slots.n > 1 {
            Some(column::<TimestampMicrosecondArray>(batch, "ts", path)?)
        } else {
            None
        };
        let mkeys: &[i32] = &metric.keys;
        let values: &[f64] = value.values();
        let n = batch.num_rows();
        let dkeys_len = device.as_ref().map_or(n, |(k, _)| k.len());
        if mkeys.len() != n || values.len() != n || dkeys_len != n {
            return Err(layout(path, "columns of a batch differ in length"));
        }
        let slow = cut || value.null_count() > 0 || ts.is_some_and(|t| t.null_count() > 0);
        let mut i = 0;
        let mut device_end = 0;
        // Rows come sorted by (device, metric): walk runs of equal keys and aggregate each
        // run in one tight loop.
        while i < n {
            let mk = mkeys[i];
            let dk = device.as_ref().map(|(k, _)| k[i]);
            let mut j = run_end(mkeys, i, mk);
            if let Some((dkeys, _)) = &device {
                if i >= device_end {
                    device_end = run_end(dkeys, i, dkeys[i]);
                }
                j = j.min(device_end);
            }
            let m = mlut[mk as usize];
            if m != NONE {
                let g = match (&device, dk) {
                    (Some((_, glut)), Some(dk)) => glut[dk as usize],
                    _ => 0,
                } as usize;
                if file_acc.len() <= g {
                    file_acc.resize_with(g + 1, Vec::new);
                }
                let per_metric = &mut file_acc[g];
                let first = m as usize * slots.n;
                if per_metric.len() < first + slots.n {
                    per_metric.resize(first + slots.n, Agg::default());
                }
                let aggs = &mut per_metric[first..first + slots.n];
                if slow {
                    for r in i..j {
                        let in_range = ts.is_none_or(|ts| {
                            ts.is_valid(r) && ts.value(r) >= q.from_us && ts.value(r) < q.to_us
                        });
                        if in_range && value.is_valid(r) {
                            let slot = ts.map_or(Some(0), |ts| slots.slot(ts.value(r)));
                            match slot {
                                Some(k) => aggs[k].add_values(&values[r..r + 1]),
                                None => self.stray(ts, r, values[r], g, m),
                            }
                        }
                    }
                } else if let (Some(ts), true) = (ts, slots.n > 1) {
                    // Rows of a series are in time order: cut the run where the hour
                    // changes and aggregate each piece in one loop.
                    let tv = ts.values();
                    let mut a = i;
                    while a < j {
                        let (lo, hi) = slots.bounds(tv[a]);
                        let b = a
                            + 1
                            + tv[a + 1..j]
                                .iter()
                                .take_while(|&&t| t >= lo && t < hi)
                                .count();
                        match slots.slot(tv[a]) {
                            Some(k) => aggs[k].add_values(&values[a..b]),
                            None => (a..b).for_each(|r| self.stray(Some(ts), r, values[r], g, m)),
                        }
                        a = b;
                    }
                } else {
                    aggs[0].add_values(&values[i..j]);
                }
            }
            i = j;
        }
        Ok(())
    }
}

/// The buckets one file's rows fall into: `n` buckets of `width` from `base` (µs). One for
/// an hour file, or a day file bucketed by day; 24 for a day file bucketed by hour.
#[derive(Clone, Copy)]
struct Slots {
    base: i64,
    width: i64,
    n: usize,
}

impl Slots {
    fn one(base: i64) -> Slots {
        Slots {
            base,
            width: i64::MAX,
            n: 1,
        }
    }

    fn start(&self, slot: usize) -> i64 {
        if self.n == 1 {
            self.base
        } else {
            self.base + slot as i64 * self.width
        }
    }

    /// The slot of a time, if it lies in this file's span.
    fn slot(&self, ts: i64) -> Option<usize> {
        if self.n == 1 {
            return Some(0);
        }
        let k = ts.checked_sub(self.base)?.div_euclid(self.width);
        usize::try_from(k).ok().filter(|&k| k < self.n)
    }

    /// The bounds `[lo, hi)` of the bucket holding `ts`.
    fn bounds(&self, ts: i64) -> (i64, i64) {
        let lo = ts.div_euclid(self.width).saturating_mul(self.width);
        (lo, lo.saturating_add(self.width))
    }
}

impl FleetWorker {
    /// A row outside its file's span (a file laid out by other rules): aggregated into
    /// the bucket of its own time, so no row is dropped.
    fn stray(
        &mut self,
        ts: Option<&TimestampMicrosecondArray>,
        r: usize,
        v: f64,
        g: usize,
        m: u32,
    ) {
        let t = ts.map_or(0, |ts| ts.value(r));
        self.acc
            .entry((t.div_euclid(HOUR_US) * HOUR_US, g as u32, m))
            .or_default()
            .add_values(&[v]);
    }
}

/// The hours (since the epoch, `[lo, hi)`) of a day partition a fleet aggregate over
/// `[from_us, to_us)` can take from rollups: all of them when the range covers the day,
/// the hours inside the range when it cuts the day on hour boundaries; `None` for an hour
/// partition (no rollup) or a cut inside an hour (the rows must be read).
fn rollup_hours(p: &Partition, from_us: i64, to_us: i64) -> Option<(i64, i64)> {
    if !p.is_day() {
        return None;
    }
    let (start, end) = (p.hour, p.end_hour());
    let lo = if from_us <= start.saturating_mul(HOUR_US) {
        start
    } else if from_us.rem_euclid(HOUR_US) == 0 {
        from_us.div_euclid(HOUR_US)
    } else {
        return None;
    };
    let hi = if to_us >= end.saturating_mul(HOUR_US) {
        end
    } else if to_us.rem_euclid(HOUR_US) == 0 {
        to_us.div_euclid(HOUR_US)
    } else {
        return None;
    };
    Some((lo, hi))
}

/// End of the run of `key` that starts at `start`, comparing eight keys at a time (a
/// branch per row at the end of every short run was a fleet scan's hottest line).
fn run_end(keys: &[i32], start: usize, key: i32) -> usize {
    let mut j = start + 1;
    while let Some(chunk) = keys.get(j..j + 8) {
        if !chunk.iter().fold(true, |all, &k| all & (k == key)) {
            break;
        }
        j += 8;
    }
    while j < keys.len() && keys[j] == key {
        j += 1;
    }
    j
}

// ---------------------------------------------------------------------------------------
// Output: CSV, Arrow IPC stream, Parquet (long format)
// ---------------------------------------------------------------------------------------

fn csv_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    if s.contains([',', '"', '\n', '\r']) {
        write!(out, "\"{}\"", s.replace('"', "\"\""))
    } else {
        out.write_all(s.as_bytes())
    }
}

fn rfc3339(ts_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(ts_us).map_or_else(
        || ts_us.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

fn has_stats(r: &SeriesResult) -> bool {
    r.series.iter().any(|s| s.count.is_some())
}

/// Long format: `device_id,metric,ts,value[,min,max,last,count]`, `ts` in RFC 3339 UTC with
/// microseconds (what spreadsheets and `pandas.read_csv(parse_dates=…)` read).
pub fn series_to_csv(r: &SeriesResult, out: &mut impl Write) -> io::Result<()> {
    let stats = has_stats(r);
    out.write_all(b"device_id,metric,ts,value")?;
    if stats {
        out.write_all(b",min,max,last,count")?;
    }
    out.write_all(b"\n")?;
    for s in &r.series {
        for i in 0..s.ts_us.len().min(s.value.len()) {
            csv_str(out, &s.device_id)?;
            out.write_all(b",")?;
            csv_str(out, &s.metric)?;
            write!(out, ",{},{}", rfc3339(s.ts_us[i]), s.value[i])?;
            if stats {
                let f = |v: &Option<Vec<f64>>| {
                    v.as_ref()
                        .and_then(|v| v.get(i))
                        .map_or(String::new(), f64::to_string)
                };
                let count = s
                    .count
                    .as_ref()
                    .and_then(|c| c.get(i))
                    .map_or(String::new(), u64::to_string);
                write!(out, ",{},{},{},{count}", f(&s.min), f(&s.max), f(&s.last))?;
            }
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// The long-format record batch of a series result (columns as in [`series_to_csv`]).
pub fn series_to_record_batch(r: &SeriesResult) -> Result<RecordBatch, QueryError> {
    let stats = has_stats(r);
    let mut fields = vec![
        dict_field("device_id"),
        dict_field("metric"),
        Field::new("ts", ts_type(), false),
        Field::new("value", DataType::Float64, false),
    ];
    if stats {
        fields.extend([
            Field::new("min", DataType::Float64, true),
            Field::new("max", DataType::Float64, true),
            Field::new("last", DataType::Float64, true),
            Field::new("count", DataType::UInt64, true),
        ]);
    }
    let rows: usize = r.series.iter().map(|s| s.ts_us.len()).sum();
    let mut device = StringDictionaryBuilder::<Int32Type>::new();
    let mut metric = StringDictionaryBuilder::<Int32Type>::new();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut value = Float64Builder::with_capacity(rows);
    let mut min = Float64Builder::with_capacity(rows);
    let mut max = Float64Builder::with_capacity(rows);
    let mut last = Float64Builder::with_capacity(rows);
    let mut count = UInt64Builder::with_capacity(rows);
    for s in &r.series {
        for i in 0..s.ts_us.len().min(s.value.len()) {
            device.append_value(&s.device_id);
            metric.append_value(&s.metric);
            ts.append_value(s.ts_us[i]);
            value.append_value(s.value[i]);
            if stats {
                let get = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| v.get(i).copied());
                min.append_option(get(&s.min));
                max.append_option(get(&s.max));
                last.append_option(get(&s.last));
                count.append_option(s.count.as_ref().and_then(|c| c.get(i).copied()));
            }
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(device.finish()),
        Arc::new(metric.finish()),
        Arc::new(ts.finish()),
        Arc::new(value.finish()),
    ];
    if stats {
        columns.extend([
            Arc::new(min.finish()) as ArrayRef,
            Arc::new(max.finish()),
            Arc::new(last.finish()),
            Arc::new(count.finish()),
        ]);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

fn to_parquet(batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
    let level = ZstdLevel::try_new(3)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .build();
    let schema: SchemaRef = batch.schema();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props))?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

/// Arrow IPC stream (one batch) of [`series_to_record_batch`].
pub fn series_to_arrow_ipc(r: &SeriesResult) -> Result<Vec<u8>, QueryError> {
    to_ipc(&series_to_record_batch(r)?)
}

/// A Parquet file (zstd) of [`series_to_record_batch`].
pub fn series_to_parquet(r: &SeriesResult) -> Result<Vec<u8>, QueryError> {
    to_parquet(&series_to_record_batch(r)?)
}

/// `bucket_start,group,metric,count,mean,min,max`; `bucket_start` in RFC 3339 UTC, `group`
/// empty when the aggregate is not grouped.
pub fn fleet_to_csv(a: &FleetAggregate, out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"bucket_start,group,metric,count,mean,min,max\n")?;
    for r in &a.rows {
        write!(out, "{},", rfc3339(r.bucket_start_us))?;
        if let Some(g) = &r.group {
            csv_str(out, g)?;
        }
        out.write_all(b",")?;
        csv_str(out, &r.metric)?;
        writeln!(out, ",{},{},{},{}", r.count, r.mean, r.min, r.max)?;
    }
    Ok(())
}

/// The record batch of a fleet aggregate (columns as in [`fleet_to_csv`], `group` null when
/// not grouped).
pub fn fleet_to_record_batch(a: &FleetAggregate) -> Result<RecordBatch, QueryError> {
    let n = a.rows.len();
    let schema = Schema::new(vec![
        Field::new("bucket_start", ts_type(), false),
        Field::new("group", DataType::Utf8, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("mean", DataType::Float64, false),
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
    ]);
    let mut bucket = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut group = StringBuilder::new();
    let mut metric = StringBuilder::new();
    let mut count = UInt64Builder::with_capacity(n);
    let (mut mean, mut min, mut max) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    for r in &a.rows {
        bucket.append_value(r.bucket_start_us);
        group.append_option(r.group.as_deref());
        metric.append_value(&r.metric);
        count.append_value(r.count);
        mean.append_value(r.mean);
        min.append_value(r.min);
        max.append_value(r.max);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(bucket.finish()),
        Arc::new(group.finish()),
        Arc::new(metric.finish()),
        Arc::new(count.finish()),
        Arc::new(mean.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

pub fn fleet_to_arrow_ipc(a: &FleetAggregate) -> Result<Vec<u8>, QueryError> {
    to_ipc(&fleet_to_record_batch(a)?)
}

pub fn fleet_to_parquet(a: &FleetAggregate) -> Result<Vec<u8>, QueryError> {
    to_parquet(&fleet_to_record_batch(a)?)
}

#[cfg(test)]
mod tests;
