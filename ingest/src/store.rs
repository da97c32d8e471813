//! The Parquet data set: long format, Hive partitions `date=YYYY-MM-DD/hour=HH/`, one file
//! per flush per partition, compacted later: first the small files of a closed hour into one
//! (`compact-…`), then every file of a closed day into one day file in the date directory
//! (`day-…`), so an interactive read opens one file per day and a series is one run of rows.
//!
//! File names carry the WAL LSN range they hold (`part-{first}-{last}.parquet`,
//! `compact-{first}-{last}.parquet`, `day-{first}-{last}.parquet`), which is what makes
//! crash recovery exact: a file whose range lies inside another file's range in the same
//! hour partition, or inside the range of a day file of its day, is a leftover of an
//! interrupted compaction and is removed. A merge therefore always takes *every* file its
//! range covers (an LSN-contiguous run of an hour; all files of a day), never a subset.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringDictionaryBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::Row;

use crate::layout::{
    DAY_HOURS, DataFileName, HOUR_US, SERIES_INDEX_KEY, date_dir, day_file_of_rollup, day_of,
    parse_date_dir, parse_partition_dir, rollup_path, rollup_schema,
};
pub use crate::layout::{FileKind, Partition, partition_dir, partition_of, schema};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Parquet store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("unexpected column layout in {0}")]
    Layout(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pq_err(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> StoreError + '_ {
    move |source| StoreError::Parquet {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct StoreFile {
    /// The hour partition; for a day file, the first hour of its day.
    pub partition: Partition,
    pub kind: FileKind,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

impl StoreFile {
    /// The day the file belongs to (days since the epoch).
    pub fn day(&self) -> i64 {
        day_of(self.partition)
    }

    /// The hour partitions the file's rows may lie in.
    pub fn hours(&self) -> std::ops::Range<Partition> {
        self.partition..self.partition + self.kind.hours()
    }

    fn range(&self) -> (u64, u64) {
        (self.first_lsn, self.last_lsn)
    }
}

/// Rows per data page at most. A series of a day at one-minute readings is 1,440 rows, so
/// one series of a day file is one or two pages of `ts` and of `value`: a one-series read
/// decompresses about what it returns. Larger pages compress a little better
/// (BENCHMARKS.md, "Encodings").
pub const PAGE_ROWS: usize = 4096;
/// Rows per row group at most.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// How a data file is encoded; [`Encodings::chosen`] is what the store writes, the other
/// variants exist to measure against it (`encoding_sizes` test, BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encodings {
    /// `ts`: delta binary packed (else plain).
    pub ts_delta: bool,
    /// `value`: byte-stream-split (else dictionary, falling back to plain).
    pub value_byte_stream_split: bool,
    pub zstd_level: i32,
    pub page_rows: usize,
}

impl Encodings {
    pub fn chosen() -> Self {
        Encodings {
            ts_delta: true,
            value_byte_stream_split: false,
            zstd_level: 3,
            page_rows: PAGE_ROWS,
        }
    }

    pub fn properties(&self) -> WriterProperties {
        let ts = ColumnPath::from("ts");
        let value = ColumnPath::from("value");
        let mut b = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.zstd_level).unwrap_or_default(),
            ))
            .set_dictionary_enabled(true)
            .set_column_dictionary_enabled(ts.clone(), false)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(self.page_rows)
            // The row-count limit is checked after each write batch: batches no larger than
            // a page keep pages at the limit.
            .set_write_batch_size(self.page_rows.min(1024))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // Timestamps are sorted and regular within a series: deltas pack to almost nothing.
        b = b.set_column_encoding(
            ts,
            if self.ts_delta {
                Encoding::DELTA_BINARY_PACKED
            } else {
                Encoding::PLAIN
            },
        );
        if self.value_byte_stream_split {
            b = b
                .set_column_dictionary_enabled(value.clone(), false)
                .set_column_encoding(value, Encoding::BYTE_STREAM_SPLIT);
        }
        b.build()
    }
}

fn writer_properties() -> WriterProperties {
    Encodings::chosen().properties()
}

/// Sorts rows by (device, metric, ts) and drops earlier duplicates of the same key: the row
/// that came last (highest LSN, later in the input) wins.
pub fn sort_dedup(rows: &mut Vec<Row>) {
    // Stable, so equal keys keep arrival order and the last one is the newest.
    rows.sort_by(|a, b| {
        a.device
            .cmp(&b.device)
            .then_with(|| a.metric.cmp(&b.metric))
            .then_with(|| a.ts_us.cmp(&b.ts_us))
    });
    dedup_sorted(rows);
}

/// Drops all but the last row of each run of equal (device, metric, ts) keys.
fn dedup_sorted(rows: &mut Vec<Row>) {
    let mut out = 0;
    for i in 0..rows.len() {
        let is_last_of_key = rows.get(i + 1).is_none_or(|next| {
            next.ts_us != rows[i].ts_us
                || next.metric != rows[i].metric
                || next.device != rows[i].device
        });
        if is_last_of_key {
            rows.swap(out, i);
            out += 1;
        }
    }
    rows.truncate(out);
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the data set at `root` and removes what an interrupted write or compaction left.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let store = Store {
            root: root.to_owned(),
        };
        store.remove_leftovers()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn remove_leftovers(&self) -> Result<(), StoreError> {
        let mut dirs: Vec<PathBuf> = self.date_dirs()?.into_iter().map(|d| d.1).collect();
        dirs.extend(self.partition_dirs()?.into_iter().map(|d| d.1));
        for dir in dirs {
            for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let path = entry.map_err(io_err(&dir))?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    tracing::warn!(path = %path.display(), "removing unfinished Parquet file");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        let files = self.files()?;
        for f in leftovers(&files) {
            tracing::warn!(path = %f.path.display(), "removing file already merged by compaction");
            remove_data_file(f)?;
        }
        // A rollup whose day file is gone (removed between the two) is derived data of nothing.
        for (_, dir) in self.date_dirs()? {
            for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let path = entry.map_err(io_err(&dir))?.path();
                let day_file = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(day_file_of_rollup);
                if let Some(day_file) = day_file
                    && !dir.join(day_file).exists()
                {
                    tracing::warn!(path = %path.display(), "removing the rollup of a removed day file");
                    remove_if_there(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Every `date=…` directory, by day.
    fn date_dirs(&self) -> Result<Vec<(i64, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for date in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let date = date.map_err(io_err(&self.root))?.path();
            if !date.is_dir() {
                continue;
            }
            if let Some(day) = date
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_date_dir)
            {
                out.push((day, date));
            }
        }
        out.sort();
        Ok(out)
    }

    fn partition_dirs(&self) -> Result<Vec<(Partition, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for date in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let date = date.map_err(io_err(&self.root))?.path();
            if !date.is_dir() {
                continue;
            }
            for hour in fs::read_dir(&date).map_err(io_err(&date))? {
                let hour = hour.map_err(io_err(&date))?.path();
                let names = (
                    date.file_name().and_then(|n| n.to_str()),
                    hour.file_name().and_then(|n| n.to_str()),
                );
                if let (Some(d), Some(h)) = names
                    && let Some(p) = parse_partition_dir(d, h)
                {
                    out.push((p, hour));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every data file, by partition then LSN (a day file sorts with its day's first hour).
    pub fn files(&self) -> Result<Vec<StoreFile>, StoreError> {
        let mut out = Vec::new();
        let mut dirs: Vec<(Partition, PathBuf, bool)> = self
            .date_dirs()?
            .into_iter()
            .map(|(day, dir)| (day * DAY_HOURS, dir, true))
            .collect();
        dirs.extend(
            self.partition_dirs()?
                .into_iter()
                .map(|(p, dir)| (p, dir, false)),
        );
        for (partition, dir, is_date) in dirs {
            for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let path = entry.path();
                let Some(DataFileName {
                    kind,
                    first_lsn,
                    last_lsn,
                }) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(DataFileName::parse)
                else {
                    continue;
                };
                // Day files live in date directories, every other kind in hour directories.
                if (kind == FileKind::Day) != is_date {
                    continue;
                }
                let bytes = entry.metadata().map_err(io_err(&path))?.len();
                out.push(StoreFile {
                    partition,
                    kind,
                    first_lsn,
                    last_lsn,
                    path,
                    bytes,
                });
            }
        }
        out.sort_by_key(|f| (f.partition, f.first_lsn, f.kind != FileKind::Day));
        Ok(out)
    }

    /// Removes files holding WAL records after `checkpoint`: a flush that crashed before its
    /// checkpoint. Only a file whose every record after the checkpoint the WAL still holds
    /// (`replayable(first, last)`) is removed, since replay writes it again; any other file
    /// is kept (a duplicate row is de-duplicated by compaction, a deleted one is gone).
    pub fn remove_after(
        &self,
        checkpoint: u64,
        replayable: impl Fn(u64, u64) -> bool,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for f in self.files()? {
            if f.last_lsn <= checkpoint {
                continue;
            }
            if replayable(f.first_lsn.max(checkpoint + 1), f.last_lsn) {
                tracing::warn!(path = %f.path.display(), "removing file of an unfinished flush; the WAL replays it");
                remove_data_file(&f)?;
                removed += 1;
            } else {
                tracing::error!(
                    path = %f.path.display(),
                    checkpoint,
                    "data file lies beyond the checkpoint but the WAL does not hold all its \
                     records: keeping it"
                );
            }
        }
        Ok(removed)
    }

    /// The highest LSN any data file holds (from the file names), if there is a file.
    pub fn max_last_lsn(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.files()?.iter().map(|f| f.last_lsn).max())
    }

    /// Writes the rows of WAL records `first_lsn..=last_lsn`, one file per partition.
    pub fn write_flush(
        &self,
        mut rows: Vec<Row>,
        first_lsn: u64,
        last_lsn: u64,
    ) -> Result<Vec<PathBuf>, StoreError> {
        self.write_sealed(&mut rows, first_lsn, last_lsn)
    }

    /// [`Store::write_flush`] that leaves the rows to the caller (sorted and de-duplicated),
    /// so a flush that failed (a full disk) can be tried again with the same rows: it writes
    /// the same file names with the same contents.
    pub fn write_sealed(
        &self,
        rows: &mut Vec<Row>,
        first_lsn: u64,
        last_lsn: u64,
    ) -> Result<Vec<PathBuf>, StoreError> {
        // Partition first: equal (device, metric, ts) keys share a partition, so one global
        // stable sort and de-duplication, in place, gives each partition's run; repeating it
        // on its own output changes nothing.
        rows.sort_by(|a, b| {
            partition_of(a.ts_us)
                .cmp(&partition_of(b.ts_us))
                .then_with(|| a.device.cmp(&b.device))
                .then_with(|| a.metric.cmp(&b.metric))
                .then_with(|| a.ts_us.cmp(&b.ts_us))
        });
        dedup_sorted(rows);
        let name = DataFileName {
            kind: FileKind::Part,
            first_lsn,
            last_lsn,
        }
        .render();
        let mut written = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let partition = partition_of(rows[start].ts_us);
            let end = rows[start..]
                .iter()
                .position(|r| partition_of(r.ts_us) != partition)
                .map_or(rows.len(), |n| start + n);
            let dir = self.root.join(partition_dir(partition));
            written.push(self.write_file(&dir, &name, &rows[start..end], false)?);
            start = end;
        }
        Ok(written)
    }

    /// Writes sorted, de-duplicated `rows` to `dir/name` (through `name.tmp`, fsynced and
    /// renamed); `indexed` adds the series index to the footer.
    fn write_file(
        &self,
        dir: &Path,
        name: &str,
        rows: &[Row],
        indexed: bool,
    ) -> Result<PathBuf, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(name);
        publish(&path, |file, tmp| {
            let mut writer = ArrowWriter::try_new(file, schema(), Some(writer_properties()))
                .map_err(pq_err(tmp))?;
            for chunk in rows.chunks(ROW_GROUP_ROWS) {
                writer.write(&to_batch(chunk)?).map_err(pq_err(tmp))?;
            }
            if indexed {
                writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                    SERIES_INDEX_KEY.to_owned(),
                    series_index(rows),
                ));
            }
            writer.into_inner().map_err(pq_err(tmp))
        })?;
        Ok(path)
    }

    /// Merges the small files of each eligible partition into one, de-duplicating
    /// (device, metric, ts). Only files at or below `checkpoint` take part (the WAL still
    /// covers the others), and `policy` bounds the work and memory of one merge.
    pub fn compact(
        &self,
        checkpoint: u64,
        policy: &CompactionPolicy,
    ) -> Result<CompactionStats, StoreError> {
        let mut stats = CompactionStats::default();
        let mut by_partition: BTreeMap<Partition, Vec<StoreFile>> = BTreeMap::new();
        for f in self.files()? {
            let open = policy.open_from.is_some_and(|open| f.partition >= open);
            if f.kind != FileKind::Day && f.last_lsn <= checkpoint && !open {
                by_partition.entry(f.partition).or_default().push(f);
            }
        }
        for (partition, files) in by_partition {
            let Some(files) = contiguous_run(files, policy) else {
                continue;
            };
            let mut rows = Vec::new();
            // Oldest LSN first, so after the stable sort the newest duplicate is last.
            for f in &files {
                rows.extend(read_file(&f.path)?);
            }
            let before = rows.len();
            sort_dedup(&mut rows);
            let first = files.iter().map(|f| f.first_lsn).min().unwrap_or(0);
            let last = files.iter().map(|f| f.last_lsn).max().unwrap_or(0);
            let name = DataFileName {
                kind: FileKind::Compact,
                first_lsn: first,
                last_lsn: last,
            }
            .render();
            let dir = self.root.join(partition_dir(partition));
            self.write_file(&dir, &name, &rows, true)?;
            pause_point("hour");
            for f in &files {
                fs::remove_file(&f.path).map_err(io_err(&f.path))?;
            }
            stats.partitions += 1;
            stats.files_in += files.len();
            stats.duplicates_removed += before - rows.len();
        }
        Ok(stats)
    }

    /// Merges every file of each closed day into one day file in the date directory,
    /// de-duplicating (device, metric, ts), then removes the inputs and the hour directories
    /// left empty. A day is merged only when every one of its files is at or below
    /// `checkpoint`, its last hour is before `policy.open_from`, and its files fit in
    /// `policy.max_input_bytes` (a larger day stays in hour files, which are then large
    /// enough). A day that already has a day file is merged again once late data left at
    /// least `policy.min_files` hour files beside it, so a straggler does not rewrite a day.
    pub fn compact_days(
        &self,
        checkpoint: u64,
        policy: &CompactionPolicy,
    ) -> Result<CompactionStats, StoreError> {
        let mut stats = CompactionStats::default();
        let mut by_day: BTreeMap<i64, Vec<StoreFile>> = BTreeMap::new();
        for f in self.files()? {
            by_day.entry(f.day()).or_default().push(f);
        }
        for (day, mut files) in by_day {
            let end = (day + 1) * DAY_HOURS;
            if policy.open_from.is_some_and(|open| end > open) {
                continue;
            }
            // Every file of the day takes part, or none: the day file's range must cover
            // exactly its inputs (a file left out inside it would be deleted as a leftover).
            if files.iter().any(|f| f.last_lsn > checkpoint) {
                continue;
            }
            let days = files.iter().filter(|f| f.kind == FileKind::Day).count();
            let others = files.len() - days;
            let enough = if days == 0 {
                others >= 2
            } else {
                others >= policy.min_files.max(1)
            };
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            if !enough || bytes > policy.max_input_bytes {
                continue;
            }
            // Oldest LSN first, so after the stable sort the newest duplicate is last; files
            // of different hours never hold the same key.
            files.sort_by_key(|f| (f.first_lsn, f.last_lsn));
            let mut rows = Vec::new();
            for f in &files {
                rows.extend(read_file(&f.path)?);
            }
            let before = rows.len();
            sort_dedup(&mut rows);
            let name = DataFileName {
                kind: FileKind::Day,
                first_lsn: files.iter().map(|f| f.first_lsn).min().unwrap_or(0),
                last_lsn: files.iter().map(|f| f.last_lsn).max().unwrap_or(0),
            }
            .render();
            let date = self.root.join(date_dir(day));
            let written = self.write_file(&date, &name, &rows, true)?;
            if self.write_rollup(&written, &rows, policy.rollup_min_points)? {
                stats.rollups_written += 1;
            }
            pause_point("day");
            for f in files.iter().filter(|f| f.path != written) {
                remove_data_file(f)?;
            }
            for h in day * DAY_HOURS..end {
                // Only an empty directory goes; one that is not there or still holds a file
                // is left as it is.
                let _ = fs::remove_dir(self.root.join(partition_dir(h)));
            }
            stats.partitions += 1;
            stats.files_in += files.len();
            stats.duplicates_removed += before - rows.len();
        }
        Ok(stats)
    }

    /// Writes the rollup of the day file at `day_path` from its `rows` (sorted by device,
    /// metric, ts), through a `.tmp` file, fsynced and renamed, if it summarises at least
    /// `min_points` rows per rollup row on average (`Ok(false)` when it does not pay: sparse
    /// data is cheap to scan and its rollup would cost more bytes than it saves reading).
    fn write_rollup(
        &self,
        day_path: &Path,
        rows: &[Row],
        min_points: usize,
    ) -> Result<bool, StoreError> {
        let Some(path) = rollup_path(day_path) else {
            return Err(StoreError::Layout(day_path.to_owned()));
        };
        let batch = rollup_batch(rows)?;
        if batch.num_rows().saturating_mul(min_points.max(1)) > rows.len() {
            return Ok(false);
        }
        publish(&path, |file, tmp| {
            let mut writer = ArrowWriter::try_new(file, rollup_schema(), Some(rollup_properties()))
                .map_err(pq_err(tmp))?;
            writer.write(&batch).map_err(pq_err(tmp))?;
            writer.into_inner().map_err(pq_err(tmp))
        })?;
        Ok(true)
    }
}

/// Puts a file at `path` durably and atomically: `write` fills `path.tmp`, which is fsynced
/// and renamed into place, and the directory is fsynced; a failed write (a full disk,
/// typically) removes the temporary file instead of keeping the space.
fn publish(
    path: &Path,
    write: impl FnOnce(File, &Path) -> Result<File, StoreError>,
) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = File::create(&tmp)
        .map_err(io_err(&tmp))
        .and_then(|file| write(file, &tmp))
        .and_then(|file| file.sync_all().map_err(io_err(&tmp)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writer settings of rollups. Sums are rarely repeated: byte-stream-split instead of a
/// dictionary; min and max are readings, which a dictionary packs well; hours are sorted
/// runs per series: delta-packed.
fn rollup_properties() -> WriterProperties {
    let sum = ColumnPath::from(crate::layout::SUM);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_column_dictionary_enabled(sum.clone(), false)
        .set_column_encoding(sum, Encoding::BYTE_STREAM_SPLIT)
        .set_column_dictionary_enabled(ColumnPath::from(crate::layout::HOUR), false)
        .set_column_encoding(
            ColumnPath::from(crate::layout::HOUR),
            Encoding::DELTA_BINARY_PACKED,
        )
        .build()
}

/// Removes a data file, and a day file's rollup with it.
fn remove_data_file(f: &StoreFile) -> Result<(), StoreError> {
    fs::remove_file(&f.path).map_err(io_err(&f.path))?;
    if let Some(rollup) = rollup_path(&f.path) {
        remove_if_there(&rollup)?;
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Count, sum, min and max per (device, metric, hour) of rows sorted by device, metric, ts.
fn rollup_batch(rows: &[Row]) -> Result<RecordBatch, StoreError> {
    let mut device = StringDictionaryBuilder::<Int32Type>::new();
    let mut metric = StringDictionaryBuilder::<Int32Type>::new();
    let mut hour = Int64Builder::new();
    let mut count = UInt64Builder::new();
    let mut sum = Float64Builder::new();
    let mut min = Float64Builder::new();
    let mut max = Float64Builder::new();
    let mut i = 0;
    while let Some(first) = rows.get(i) {
        let h = first.ts_us.div_euclid(HOUR_US);
        let mut j = i;
        let (mut n, mut total, mut lo, mut hi) = (0u64, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        while let Some(r) = rows.get(j) {
            if r.device != first.device
                || r.metric != first.metric
                || r.ts_us.div_euclid(HOUR_US) != h
            {
                break;
            }
            n += 1;
            total += r.value;
            lo = lo.min(r.value);
            hi = hi.max(r.value);
            j += 1;
        }
        device.append_value(&*first.device);
        metric.append_value(&*first.metric);
        hour.append_value(h);
        count.append_value(n);
        sum.append_value(total);
        min.append_value(lo);
        max.append_value(hi);
        i = j;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(device.finish()),
        Arc::new(metric.finish()),
        Arc::new(hour.finish()),
        Arc::new(count.finish()),
        Arc::new(sum.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
    ];
    Ok(RecordBatch::try_new(rollup_schema(), columns)?)
}

/// Files a finished merge has made redundant: inside the LSN range of another file of the
/// same hour, or inside (or equal to) the range of a day file of their day. A merge writes
/// its output before it removes its inputs, so after a crash in between these are exactly
/// the inputs still there.
fn leftovers(files: &[StoreFile]) -> Vec<&StoreFile> {
    let inside = |f: &StoreFile, g: &StoreFile| {
        g.first_lsn <= f.first_lsn && f.last_lsn <= g.last_lsn && g.range() != f.range()
    };
    let mut by_day: BTreeMap<i64, Vec<&StoreFile>> = BTreeMap::new();
    for f in files {
        by_day.entry(f.day()).or_default().push(f);
    }
    let mut out = Vec::new();
    for day in by_day.values() {
        for f in day {
            let covered = day.iter().any(|g| {
                if g.path == f.path {
                    return false;
                }
                match (g.kind, f.kind) {
                    (FileKind::Day, FileKind::Day) => inside(f, g),
                    // An hour file with the day file's very range was its only input.
                    (FileKind::Day, _) => g.first_lsn <= f.first_lsn && f.last_lsn <= g.last_lsn,
                    (_, FileKind::Day) => false,
                    _ => g.partition == f.partition && inside(f, g),
                }
            });
            if covered {
                out.push(*f);
            }
        }
    }
    out
}

/// The series index of sorted rows: `[device, metric, rows]` per run of one series.
fn series_index(rows: &[Row]) -> String {
    let mut runs: Vec<(&str, &str, u64)> = Vec::new();
    for r in rows {
        match runs.last_mut() {
            Some((d, m, n)) if *d == &*r.device && *m == &*r.metric => *n += 1,
            _ => runs.push((&r.device, &r.metric, 1)),
        }
    }
    serde_json::to_string(&runs).unwrap_or_default()
}

/// A test hook: with `PROGNOS_TEST_COMPACTION_PAUSE_MS` set, a merge sleeps that long after
/// its output is in place and before it removes its inputs, so a test can kill the process
/// exactly there. Read once; unset in production.
fn pause_point(what: &str) {
    static PAUSE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var("PROGNOS_TEST_COMPACTION_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(ms) = *pause {
        tracing::info!(
            what,
            ms,
            "compaction paused before removing its inputs (test hook)"
        );
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// The first run of LSN-adjacent files within the byte budget, if it is long enough.
///
/// The run must be contiguous in LSN order: the merged file is named by the run's LSN range,
/// and on start any file whose range lies inside another's is deleted as a leftover. A file
/// left out of the middle of a merged range would be deleted with the leftovers.
fn contiguous_run(mut files: Vec<StoreFile>, policy: &CompactionPolicy) -> Option<Vec<StoreFile>> {
    files.sort_by_key(|f| f.first_lsn);
    let min_files = policy.min_files.max(2);
    let mut run: Vec<StoreFile> = Vec::new();
    let mut bytes = 0u64;
    for f in files {
        if bytes + f.bytes > policy.max_input_bytes {
            if run.len() >= min_files {
                return Some(run);
            }
            // Start over after this file (too big to join, or the budget is spent).
            bytes = 0;
            run.clear();
            if f.bytes > policy.max_input_bytes {
                continue;
            }
        }
        bytes += f.bytes;
        run.push(f);
    }
    (run.len() >= min_files).then_some(run)
}

/// Bounds on compaction.
#[derive(Debug, Clone, Copy)]
pub struct CompactionPolicy {
    /// Merge a partition once it has this many small files.
    pub min_files: usize,
    /// Most compressed bytes read into memory by one merge.
    pub max_input_bytes: u64,
    /// Partitions from this hour on are still being written: leave them for later.
    pub open_from: Option<Partition>,
    /// A day file gets a rollup when it holds at least this many rows per rollup row
    /// (series-hour) on average.
    pub rollup_min_points: usize,
}

/// Default of [`CompactionPolicy::rollup_min_points`]: a rollup row takes about as many
/// bytes as 4–6 points of a day file, so from 16 points per series-hour (readings every
/// 3.75 minutes or more often) it adds at most about a third to the day's bytes.
pub const ROLLUP_MIN_POINTS: usize = 16;

impl CompactionPolicy {
    /// Everything closed, at least `min_files` files, 64 MiB of input per merge.
    pub fn closed(min_files: usize) -> Self {
        Self {
            min_files,
            max_input_bytes: 64 * 1024 * 1024,
            open_from: None,
            rollup_min_points: ROLLUP_MIN_POINTS,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub partitions: usize,
    pub files_in: usize,
    pub duplicates_removed: usize,
    /// Rollups of day files written with a merge.
    pub rollups_written: usize,
}

fn to_batch(rows: &[Row]) -> Result<RecordBatch, StoreError> {
    let mut ts = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut device = StringDictionaryBuilder::<Int32Type>::new();
    let mut metric = StringDictionaryBuilder::<Int32Type>::new();
    let mut value = Float64Builder::with_capacity(rows.len());
    for row in rows {
        ts.append_value(row.ts_us);
        device.append_value(&*row.device);
        metric.append_value(&*row.metric);
        value.append_value(row.value);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(device.finish()),
        Arc::new(metric.finish()),
        Arc::new(value.finish()),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// Reads a data file back into rows (compaction, tests, tools).
pub fn read_file(path: &Path) -> Result<Vec<Row>, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(pq_err(path))?
        .with_batch_size(1 << 16)
        .build()
        .map_err(pq_err(path))?;
    let mut rows = Vec::new();
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    for batch in reader {
        let batch = batch?;
        let layout = || StoreError::Layout(path.to_owned());
        let ts = batch
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(layout)?;
        let device = strings(batch.column(1).as_ref()).ok_or_else(layout)?;
        let metric = strings(batch.column(2).as_ref()).ok_or_else(layout)?;
        let value = batch
            .column(3)
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(layout)?;
        let mut intern = |s: &str| -> Arc<str> {
            if let Some(a) = names.get(s) {
                return a.clone();
            }
            let a: Arc<str> = Arc::from(s);
            names.insert(s.to_owned(), a.clone());
            a
        };
        for i in 0..batch.num_rows() {
            rows.push(Row {
                device: intern(&device(i)),
                metric: intern(&metric(i)),
                ts_us: ts.value(i),
                value: value.value(i),
            });
        }
    }
    Ok(rows)
}

/// A string column as plain or dictionary-encoded UTF-8.
fn strings(array: &dyn Array) -> Option<Box<dyn Fn(usize) -> String + '_>> {
    if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
        return Some(Box::new(move |i| a.value(i).to_owned()));
    }
    let dict = array
        .as_any()
        .downcast_ref::<DictionaryArray<Int32Type>>()?;
    let values = dict.values().as_any().downcast_ref::<StringArray>()?;
    let keys = dict.keys();
    Some(Box::new(move |i| {
        values.value(keys.value(i) as usize).to_owned()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(device: &str, metric: &str, ts_us: i64, value: f64) -> Row {
        Row::new(device, metric, ts_us, value)
    }

    #[test]
    fn partitions_are_hive_paths() {
        // 2025-11-24T16:00:00Z
        let p = partition_of(1_764_000_000_000_000);
        assert_eq!(partition_dir(p), "date=2025-11-24/hour=16");
        assert_eq!(parse_partition_dir("date=2025-11-24", "hour=16"), Some(p));
        assert_eq!(partition_of(-1), -1);
    }

    #[test]
    fn dedup_keeps_the_newest_duplicate() {
        let mut rows = vec![
            row("b", "m", 2, 1.0),
            row("a", "m", 1, 1.0),
            row("b", "m", 2, 2.0),
            row("a", "m", 0, 0.5),
        ];
        sort_dedup(&mut rows);
        assert_eq!(
            rows,
            vec![
                row("a", "m", 0, 0.5),
                row("a", "m", 1, 1.0),
                row("b", "m", 2, 2.0)
            ]
        );
    }

    #[test]
    fn write_read_compact_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let h = 1_764_000_000_000_000;
        store
            .write_flush(
                vec![row("d", "m", h, 1.0), row("d", "m", h + HOUR_US, 2.0)],
                1,
                3,
            )
            .unwrap();
        store
            .write_flush(vec![row("d", "m", h, 9.0), row("e", "m", h + 1, 3.0)], 4, 4)
            .unwrap();
        assert_eq!(store.files().unwrap().len(), 3);

        let stats = store.compact(4, &CompactionPolicy::closed(2)).unwrap();
        assert_eq!(
            stats,
            CompactionStats {
                partitions: 1,
                files_in: 2,
                duplicates_removed: 1,
                rollups_written: 0,
            }
        );
        let files = store.files().unwrap();
        assert_eq!(files.len(), 2);
        let compacted = files.iter().find(|f| f.kind == FileKind::Compact).unwrap();
        assert_eq!((compacted.first_lsn, compacted.last_lsn), (1, 4));
        assert_eq!(
            read_file(&compacted.path).unwrap(),
            vec![row("d", "m", h, 9.0), row("e", "m", h + 1, 3.0)]
        );
        assert_eq!(store.remove_after(3, |_, _| false).unwrap(), 0);
        assert_eq!(store.remove_after(3, |_, _| true).unwrap(), 1);
        assert_eq!(store.files().unwrap().len(), 1);
    }

    #[test]
    fn compaction_merges_only_lsn_contiguous_runs_within_budget() {
        let file = |first: u64, bytes: u64| StoreFile {
            partition: 0,
            kind: FileKind::Part,
            first_lsn: first,
            last_lsn: first,
            path: PathBuf::new(),
            bytes,
        };
        let policy = CompactionPolicy {
            min_files: 2,
            max_input_bytes: 100,
            open_from: None,
            rollup_min_points: ROLLUP_MIN_POINTS,
        };
        let lsns = |run: Option<Vec<StoreFile>>| -> Vec<u64> {
            run.unwrap_or_default()
                .iter()
                .map(|f| f.first_lsn)
                .collect()
        };
        // A big file in the middle splits the runs; the merge never spans it.
        let run = contiguous_run(
            vec![file(1, 10), file(2, 500), file(3, 10), file(4, 10)],
            &policy,
        );
        assert_eq!(lsns(run), vec![3, 4]);
        let run = contiguous_run(
            vec![file(3, 30), file(1, 30), file(2, 30), file(4, 30)],
            &policy,
        );
        assert_eq!(lsns(run), vec![1, 2, 3]);
        assert!(contiguous_run(vec![file(1, 10), file(2, 500)], &policy).is_none());
    }

    #[test]
    fn leftovers_of_an_interrupted_compaction_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let h = 1_764_000_000_000_000;
        store
            .write_flush(vec![row("d", "m", h, 1.0)], 1, 1)
            .unwrap();
        store
            .write_flush(vec![row("d", "m", h + 1, 2.0)], 2, 2)
            .unwrap();
        // Compact output written, inputs not yet removed: simulate by copying.
        let files = store.files().unwrap();
        let compact = files[0]
            .path
            .with_file_name(format!("compact-{:020}-{:020}.parquet", 1, 2));
        fs::copy(&files[0].path, &compact).unwrap();
        fs::write(files[0].path.with_extension("parquet.tmp"), b"junk").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let files = store.files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].kind, FileKind::Compact);
    }

    /// Every row of every data file, sorted by key.
    fn all_rows(store: &Store) -> Vec<Row> {
        let mut rows: Vec<Row> = store
            .files()
            .unwrap()
            .iter()
            .flat_map(|f| read_file(&f.path).unwrap())
            .collect();
        rows.sort_by(|a, b| (&a.device, &a.metric, a.ts_us).cmp(&(&b.device, &b.metric, b.ts_us)));
        rows
    }

    /// Every key of the data set with the value of its newest file (LSN order): what a
    /// reader sees once duplicates across files (before a merge) are resolved.
    fn newest_rows(store: &Store) -> Vec<Row> {
        let mut files = store.files().unwrap();
        files.sort_by_key(|f| (f.first_lsn, f.last_lsn));
        let mut rows: Vec<Row> = files
            .iter()
            .flat_map(|f| read_file(&f.path).unwrap())
            .collect();
        sort_dedup(&mut rows);
        rows
    }

    /// What the data set must hold after `flushes` (in LSN order): every key once, the
    /// newest value.
    fn expected(flushes: &[Vec<Row>]) -> Vec<Row> {
        let mut rows: Vec<Row> = flushes.iter().flatten().cloned().collect();
        sort_dedup(&mut rows);
        rows
    }

    const DAY_US: i64 = 24 * HOUR_US;
    /// 2025-11-24T00:00:00Z, a day boundary.
    const D0: i64 = 1_763_942_400_000_000;

    #[test]
    fn day_compaction_keeps_every_point_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Three days, every 20 minutes, two devices × two metrics, in flushes of 7 hours
        // (so flush files straddle days), with rewritten values (duplicates) in the last.
        let mut flushes: Vec<Vec<Row>> = Vec::new();
        let step = 20 * 60 * 1_000_000;
        for f in 0..(72 / 7 + 1) {
            let mut rows = Vec::new();
            let (from, to) = (
                D0 + f * 7 * HOUR_US,
                (D0 + (f + 1) * 7 * HOUR_US).min(D0 + 3 * DAY_US),
            );
            let mut t = from;
            while t < to {
                for d in ["dev-a", "dev-b"] {
                    for m in ["temp", "vib"] {
                        rows.push(row(d, m, t, (t / step) as f64 + f as f64));
                    }
                }
                t += step;
            }
            flushes.push(rows);
        }
        flushes.push(vec![
            row("dev-a", "temp", D0 + 5 * step, -1.0),
            row("dev-b", "vib", D0 + DAY_US, -2.0),
        ]);
        for (i, rows) in flushes.iter().enumerate() {
            let lsn = i as u64 + 1;
            store.write_flush(rows.clone(), lsn, lsn).unwrap();
        }
        let last = flushes.len() as u64;
        let hourly = store.compact(last, &CompactionPolicy::closed(2)).unwrap();
        assert!(hourly.partitions > 0);
        // The third day is still open: only the first two become day files.
        let policy = CompactionPolicy {
            open_from: Some(partition_of(D0 + 2 * DAY_US + HOUR_US)),
            ..CompactionPolicy::closed(2)
        };
        let days = store.compact_days(last, &policy).unwrap();
        assert_eq!(days.partitions, 2, "{days:?}");
        let files = store.files().unwrap();
        let day_files: Vec<&StoreFile> = files.iter().filter(|f| f.kind == FileKind::Day).collect();
        assert_eq!(day_files.len(), 2);
        assert!(
            files
                .iter()
                .filter(|f| f.kind != FileKind::Day)
                .all(|f| f.day() == day_of(partition_of(D0)) + 2)
        );
        // No hour directory of a compacted day is left.
        for h in 0..48 {
            assert!(
                !dir.path()
                    .join(partition_dir(partition_of(D0) + h))
                    .exists()
            );
        }
        assert_eq!(all_rows(&store), expected(&flushes));
        // A day file is sorted by series, indexed, and its pages are small.
        let file = File::open(&day_files[0].path).unwrap();
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&reader);
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        let index = kv.iter().find(|k| k.key == SERIES_INDEX_KEY).unwrap();
        let runs: Vec<(String, String, u64)> =
            serde_json::from_str(index.value.as_deref().unwrap()).unwrap();
        assert_eq!(runs.len(), 4);
        assert!(runs.iter().all(|r| r.2 == 72), "{runs:?}");
        assert_eq!(read_file(&day_files[0].path).unwrap(), {
            let mut r = expected(&flushes);
            r.retain(|r| r.ts_us < D0 + DAY_US);
            r.sort_by(|a, b| (&a.device, &a.metric, a.ts_us).cmp(&(&b.device, &b.metric, b.ts_us)));
            r
        });
        // Once all days are closed, the third goes too; nothing is left to merge after.
        let all = store
            .compact_days(last, &CompactionPolicy::closed(2))
            .unwrap();
        assert_eq!(all.partitions, 1);
        assert_eq!(
            store
                .compact_days(last, &CompactionPolicy::closed(2))
                .unwrap()
                .partitions,
            0
        );
        assert_eq!(all_rows(&store), expected(&flushes));
        assert_eq!(store.files().unwrap().len(), 3);
    }

    #[test]
    fn late_data_for_a_compacted_day_is_merged_again_only_once_it_adds_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut flushes = vec![vec![
            row("d", "m", D0, 1.0),
            row("d", "m", D0 + HOUR_US, 2.0),
        ]];
        store.write_flush(flushes[0].clone(), 1, 1).unwrap();
        // Rollups however few the points, so the test sees one.
        let policy = CompactionPolicy {
            rollup_min_points: 1,
            ..CompactionPolicy::closed(3)
        };
        assert_eq!(store.compact_days(1, &policy).unwrap().partitions, 1);
        // Two late flushes, one rewriting a point: fewer than 3 files beside the day file.
        for (lsn, rows) in [
            (2, vec![row("d", "m", D0, 9.0)]),
            (3, vec![row("d", "m", D0 + 5, 3.0)]),
        ] {
            store.write_flush(rows.clone(), lsn, lsn).unwrap();
            flushes.push(rows);
            assert_eq!(store.compact_days(lsn, &policy).unwrap().partitions, 0);
        }
        // A file beyond the checkpoint blocks the day: the merge must take every file.
        let rows = vec![row("d", "m", D0 + 7, 4.0)];
        store.write_flush(rows.clone(), 4, 4).unwrap();
        flushes.push(rows);
        assert_eq!(store.compact_days(3, &policy).unwrap().partitions, 0);
        let stats = store.compact_days(4, &policy).unwrap();
        assert_eq!(
            (stats.partitions, stats.files_in, stats.duplicates_removed),
            (1, 4, 1)
        );
        let files = store.files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].kind, files[0].first_lsn, files[0].last_lsn),
            (FileKind::Day, 1, 4)
        );
        assert_eq!(all_rows(&store), expected(&flushes));
        // One rollup, the new day file's (the old one went with its day file), and it
        // sums that file's rows per hour.
        let date = files[0].path.parent().unwrap();
        let rollups: Vec<PathBuf> = fs::read_dir(date)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(crate::layout::ROLLUP_SUFFIX))
            .collect();
        assert_eq!(rollups, vec![rollup_path(&files[0].path).unwrap()]);
        let batch = ParquetRecordBatchReaderBuilder::try_new(File::open(&rollups[0]).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let col = |i: usize| batch.column(i).clone();
        let hours = col(2);
        let hours = hours
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        let counts = col(3);
        let counts = counts
            .as_any()
            .downcast_ref::<arrow_array::UInt64Array>()
            .unwrap();
        let sums = col(4);
        let sums = sums.as_any().downcast_ref::<Float64Array>().unwrap();
        let maxes = col(6);
        let maxes = maxes.as_any().downcast_ref::<Float64Array>().unwrap();
        let h0 = D0.div_euclid(HOUR_US);
        assert_eq!(hours.values(), &[h0, h0 + 1]);
        // Hour 0: 9.0 (rewrote 1.0), 3.0, 4.0; hour 1: 2.0.
        assert_eq!(counts.values(), &[3, 1]);
        assert_eq!(sums.values(), &[16.0, 2.0]);
        assert_eq!(maxes.values(), &[9.0, 2.0]);
    }

    #[test]
    fn leftovers_of_an_interrupted_day_compaction_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let flushes = vec![
            vec![row("d", "m", D0, 1.0), row("d", "m", D0 + 3 * HOUR_US, 2.0)],
            vec![
                row("d", "m", D0 + 1, 3.0),
                row("e", "m", D0 + 23 * HOUR_US, 4.0),
            ],
        ];
        let keep = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for (i, rows) in flushes.iter().enumerate() {
                store
                    .write_flush(rows.clone(), i as u64 + 1, i as u64 + 1)
                    .unwrap();
            }
            // Keep the inputs, compact, then put some inputs back: a crash after the day
            // file's rename and before all inputs were removed.
            for f in store.files().unwrap() {
                let to = keep.path().join(f.path.strip_prefix(dir.path()).unwrap());
                fs::create_dir_all(to.parent().unwrap()).unwrap();
                fs::copy(&f.path, to).unwrap();
            }
            assert_eq!(
                store
                    .compact_days(2, &CompactionPolicy::closed(2))
                    .unwrap()
                    .partitions,
                1
            );
        }
        let mut restored = 0;
        for entry in walk(keep.path()) {
            let to = dir.path().join(entry.strip_prefix(keep.path()).unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&entry, to).unwrap();
            restored += 1;
        }
        assert_eq!(restored, 4);
        fs::write(
            dir.path()
                .join(date_dir(day_of(partition_of(D0))))
                .join("day-1-2.parquet.tmp"),
            b"x",
        )
        .unwrap();
        let store = Store::open(dir.path()).unwrap();
        let files = store.files().unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].kind, FileKind::Day);
        assert_eq!(all_rows(&store), expected(&flushes));
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

            /// Random flushes over three days, hour and day compaction at random points, a
            /// restart (Store::open) in between: every key once, with its newest value.
            #[test]
            fn compaction_at_any_point_keeps_every_point_once(
                flushes in proptest::collection::vec(
                    proptest::collection::vec((0u8..3, 0u8..2, 0i64..(3 * 24 * 6), -5i32..5), 1..40),
                    1..8,
                ),
                compact_after in proptest::collection::vec(0u8..4, 8),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut store = Store::open(dir.path()).unwrap();
                let flushes: Vec<Vec<Row>> = flushes.iter().map(|f| f.iter().map(|&(d, m, t, v)| {
                    row(["a", "b", "c"][d as usize], ["x", "y"][m as usize], D0 + t * 10 * 60 * 1_000_000, f64::from(v))
                }).collect()).collect();
                for (i, rows) in flushes.iter().enumerate() {
                    let lsn = i as u64 + 1;
                    store.write_flush(rows.clone(), lsn, lsn).unwrap();
                    let open = Some(partition_of(D0) + (i as i64 * 13) % 80);
                    match compact_after[i] {
                        1 => { store.compact(lsn, &CompactionPolicy { open_from: open, ..CompactionPolicy::closed(2) }).unwrap(); }
                        2 => { store.compact_days(lsn, &CompactionPolicy { open_from: open, ..CompactionPolicy::closed(2) }).unwrap(); }
                        3 => { store = Store::open(dir.path()).unwrap(); }
                        _ => {}
                    }
                    prop_assert_eq!(newest_rows(&store), expected(&flushes[..=i]));
                }
                let last = flushes.len() as u64;
                store.compact(last, &CompactionPolicy::closed(2)).unwrap();
                store.compact_days(last, &CompactionPolicy::closed(2)).unwrap();
                prop_assert_eq!(all_rows(&store), expected(&flushes));
                // With every straggler merged too, each key is stored exactly once.
                store.compact_days(last, &CompactionPolicy::closed(1)).unwrap();
                prop_assert_eq!(all_rows(&store), expected(&flushes));
            }
        }
    }

    /// Measures the encodings on real-looking data: `PROGNOS_ENCODING_SAMPLE` names a data
    /// set (e.g. from `prognos simulate --out`); its first day's rows are written as one day
    /// file per candidate. `cargo test -p prognos-ingest --release -- --ignored encoding_sizes
    /// --nocapture`; the figures are in BENCHMARKS.md.
    #[test]
    #[ignore = "measurement; needs PROGNOS_ENCODING_SAMPLE"]
    fn encoding_sizes() {
        let Ok(sample) = std::env::var("PROGNOS_ENCODING_SAMPLE") else {
            return;
        };
        let store = Store::open(Path::new(&sample)).unwrap();
        let files = store.files().unwrap();
        let day = files[0].day();
        let mut rows: Vec<Row> = files
            .iter()
            .filter(|f| f.day() == day)
            .flat_map(|f| read_file(&f.path).unwrap())
            .collect();
        sort_dedup(&mut rows);
        let out = tempfile::tempdir().unwrap();
        let base = Encodings::chosen();
        let candidates = [
            ("chosen", base),
            (
                "ts plain",
                Encodings {
                    ts_delta: false,
                    ..base
                },
            ),
            (
                "value byte-stream-split",
                Encodings {
                    value_byte_stream_split: true,
                    ..base
                },
            ),
            (
                "pages 1,024 rows",
                Encodings {
                    page_rows: 1024,
                    ..base
                },
            ),
            (
                "pages 16,384 rows",
                Encodings {
                    page_rows: 16_384,
                    ..base
                },
            ),
            (
                "pages 65,536 rows",
                Encodings {
                    page_rows: 65_536,
                    ..base
                },
            ),
            (
                "zstd 1",
                Encodings {
                    zstd_level: 1,
                    ..base
                },
            ),
            (
                "zstd 9",
                Encodings {
                    zstd_level: 9,
                    ..base
                },
            ),
        ];
        println!("{} rows of day {day}", rows.len());
        for (name, enc) in candidates {
            let path = out.path().join(format!("{name}.parquet"));
            let started = std::time::Instant::now();
            let mut w = ArrowWriter::try_new(
                File::create(&path).unwrap(),
                schema(),
                Some(enc.properties()),
            )
            .unwrap();
            for chunk in rows.chunks(ROW_GROUP_ROWS) {
                w.write(&to_batch(chunk).unwrap()).unwrap();
            }
            w.close().unwrap();
            let write_s = started.elapsed().as_secs_f64();
            let started = std::time::Instant::now();
            let back = read_file(&path).unwrap();
            let read_s = started.elapsed().as_secs_f64();
            assert_eq!(back.len(), rows.len());
            let bytes = fs::metadata(&path).unwrap().len();
            // Per column, compressed bytes.
            let reader = parquet::file::serialized_reader::SerializedFileReader::new(
                File::open(&path).unwrap(),
            )
            .unwrap();
            let meta = parquet::file::reader::FileReader::metadata(&reader);
            let mut cols = [0i64; 4];
            for rg in meta.row_groups() {
                for (i, c) in rg.columns().iter().enumerate() {
                    cols[i] += c.compressed_size();
                }
            }
            let per = |b: i64| b as f64 / rows.len() as f64;
            println!(
                "{name:<26} {:.3} B/pt  ts {:.3} device {:.3} metric {:.3} value {:.3}  write {:.2}s read {:.2}s",
                bytes as f64 / rows.len() as f64,
                per(cols[0]),
                per(cols[1]),
                per(cols[2]),
                per(cols[3]),
                write_s,
                read_s
            );
        }
    }
}
