//! The Parquet data set: long format, Hive partitions `date=YYYY-MM-DD/hour=HH/`, one file
//! per flush per partition, compacted later.
//!
//! File names carry the WAL LSN range they hold (`part-{first}-{last}.parquet`,
//! `compact-{first}-{last}.parquet`), which is what makes crash recovery exact: a replayed
//! WAL record whose rows for a partition are already in a file of that partition covering
//! its LSN is skipped, and a file whose range lies inside another file's range in the same
//! partition is a leftover of an interrupted compaction and is removed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringDictionaryBuilder, TimestampMicrosecondBuilder};
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

#[cfg(test)]
use crate::layout::HOUR_US;
use crate::layout::{DataFileName, parse_partition_dir};
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
    pub partition: Partition,
    pub kind: FileKind,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        // Timestamps are sorted and regular within a series: deltas pack to almost nothing.
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
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
        for dir in self.partition_dirs()? {
            for entry in fs::read_dir(&dir.1).map_err(io_err(&dir.1))? {
                let path = entry.map_err(io_err(&dir.1))?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    tracing::warn!(path = %path.display(), "removing unfinished Parquet file");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        let mut by_partition: BTreeMap<Partition, Vec<StoreFile>> = BTreeMap::new();
        for file in self.files()? {
            by_partition.entry(file.partition).or_default().push(file);
        }
        for files in by_partition.values() {
            for f in files {
                let covered = files.iter().any(|g| {
                    g.path != f.path
                        && g.first_lsn <= f.first_lsn
                        && f.last_lsn <= g.last_lsn
                        && (g.first_lsn, g.last_lsn) != (f.first_lsn, f.last_lsn)
                });
                if covered {
                    tracing::warn!(path = %f.path.display(), "removing file already merged by compaction");
                    fs::remove_file(&f.path).map_err(io_err(&f.path))?;
                }
            }
        }
        Ok(())
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

    /// Every data file, by partition then LSN.
    pub fn files(&self) -> Result<Vec<StoreFile>, StoreError> {
        let mut out = Vec::new();
        for (partition, dir) in self.partition_dirs()? {
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
        out.sort_by_key(|f| (f.partition, f.first_lsn));
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
                fs::remove_file(&f.path).map_err(io_err(&f.path))?;
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
            written.push(self.write_file(partition, &name, &rows[start..end])?);
            start = end;
        }
        Ok(written)
    }

    fn write_file(
        &self,
        partition: Partition,
        name: &str,
        rows: &[Row],
    ) -> Result<PathBuf, StoreError> {
        let dir = self.root.join(partition_dir(partition));
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        let written = (|| {
            let file = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut writer = ArrowWriter::try_new(file, schema(), Some(writer_properties()))
                .map_err(pq_err(&tmp))?;
            for chunk in rows.chunks(1 << 20) {
                writer.write(&to_batch(chunk)?).map_err(pq_err(&tmp))?;
            }
            let file = writer.into_inner().map_err(pq_err(&tmp))?;
            file.sync_all().map_err(io_err(&tmp))
        })();
        if let Err(e) = written {
            // A failed write (a full disk, typically) must not keep holding the space.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))?;
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
            if f.last_lsn <= checkpoint && !open {
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
            self.write_file(partition, &name, &rows)?;
            for f in &files {
                fs::remove_file(&f.path).map_err(io_err(&f.path))?;
            }
            stats.partitions += 1;
            stats.files_in += files.len();
            stats.duplicates_removed += before - rows.len();
        }
        Ok(stats)
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
}

impl CompactionPolicy {
    /// Everything closed, at least `min_files` files, 64 MiB of input per merge.
    pub fn closed(min_files: usize) -> Self {
        Self {
            min_files,
            max_input_bytes: 64 * 1024 * 1024,
            open_from: None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub partitions: usize,
    pub files_in: usize,
    pub duplicates_removed: usize,
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
                duplicates_removed: 1
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
}
