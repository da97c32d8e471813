//! The layout of the Parquet telemetry data set, in one place: the writer (`store`) and every
//! reader (the analytics crate) go through this module, so they cannot disagree.
//!
//! - Hive partitions by hour: `date=YYYY-MM-DD/hour=HH/` under the data set root;
//! - one file per flush per partition, named by the WAL LSN range it holds
//!   (`part-{first:020}-{last:020}.parquet`), and merged files of one hour (`compact-…`);
//! - a closed day's files merged into one day file in the date directory itself
//!   (`date=YYYY-MM-DD/day-{first}-{last}.parquet`), which holds every hour of that day;
//!   anything else (`*.tmp`) is not data;
//! - long format: `ts` (timestamp µs, UTC), `device_id` and `metric` (dictionary-encoded
//!   strings), `value` (f64); rows sorted by device, metric, ts inside a file, so one series
//!   of one file is one contiguous run of rows. Merged files carry that run list in their
//!   footer ([`SERIES_INDEX_KEY`]), so a reader finds a series without decoding a row.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Datelike, Timelike};

/// Microseconds in an hour partition.
pub const HOUR_US: i64 = 3_600_000_000;
/// Hour partitions in a day file.
pub const DAY_HOURS: i64 = 24;

/// Footer key of the series index of merged files: a JSON array of
/// `[device_id, metric, rows]`, one per series in file order (the rows of a series are
/// contiguous and the series follow each other, so a series' first row is the sum of the
/// counts before it).
pub const SERIES_INDEX_KEY: &str = "prognos.series_index.v1";

/// Column names, in file order.
pub const TS: &str = "ts";
pub const DEVICE_ID: &str = "device_id";
pub const METRIC: &str = "metric";
pub const VALUE: &str = "value";

/// The hour a row belongs to, as hours since the Unix epoch.
pub type Partition = i64;

/// The partition of a timestamp (µs since the epoch; negative times round down).
pub fn partition_of(ts_us: i64) -> Partition {
    ts_us.div_euclid(HOUR_US)
}

/// `date=YYYY-MM-DD/hour=HH` for a partition.
pub fn partition_dir(partition: Partition) -> String {
    let t = DateTime::from_timestamp_micros(partition.saturating_mul(HOUR_US)).unwrap_or_default();
    format!(
        "date={:04}-{:02}-{:02}/hour={:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour()
    )
}

/// Days since the epoch of a `date=YYYY-MM-DD` directory name.
pub fn parse_date_dir(name: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(name.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    // 1970-01-01 is day 719 163 of the common era.
    Some(i64::from(date.num_days_from_ce()) - 719_163)
}

/// The hour of an `hour=HH` directory name (0..=23; anything else is not a partition).
pub fn parse_hour_dir(name: &str) -> Option<i64> {
    let h: i64 = name.strip_prefix("hour=")?.parse().ok()?;
    (0..24).contains(&h).then_some(h)
}

/// `date=YYYY-MM-DD` for a day (days since the epoch), the directory of its day file.
pub fn date_dir(day: i64) -> String {
    let t = DateTime::from_timestamp_micros(day.saturating_mul(DAY_HOURS * HOUR_US))
        .unwrap_or_default();
    format!("date={:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

/// The day (days since the epoch) an hour partition belongs to.
pub fn day_of(partition: Partition) -> i64 {
    partition.div_euclid(DAY_HOURS)
}

/// The partition of a `date=…` / `hour=…` directory pair.
pub fn parse_partition_dir(date: &str, hour: &str) -> Option<Partition> {
    Some(parse_date_dir(date)? * 24 + parse_hour_dir(hour)?)
}

/// What wrote a data file: a flush of the memtable, a compaction of one hour, or a
/// compaction of a closed day (a day file, in the date directory, spanning its 24 hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Part,
    Compact,
    Day,
}

impl FileKind {
    /// Hour partitions a file of this kind spans.
    pub fn hours(self) -> i64 {
        match self {
            FileKind::Part | FileKind::Compact => 1,
            FileKind::Day => DAY_HOURS,
        }
    }
}

/// A data file's name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFileName {
    pub kind: FileKind,
    pub first_lsn: u64,
    pub last_lsn: u64,
}

impl DataFileName {
    /// `{part|compact|day}-{first_lsn}-{last_lsn}.parquet`; anything else is not data.
    pub fn parse(name: &str) -> Option<DataFileName> {
        let stem = name.strip_suffix(".parquet")?;
        let (kind, rest) = if let Some(rest) = stem.strip_prefix("part-") {
            (FileKind::Part, rest)
        } else if let Some(rest) = stem.strip_prefix("day-") {
            (FileKind::Day, rest)
        } else {
            (FileKind::Compact, stem.strip_prefix("compact-")?)
        };
        let (first, last) = rest.split_once('-')?;
        Some(DataFileName {
            kind,
            first_lsn: first.parse().ok()?,
            last_lsn: last.parse().ok()?,
        })
    }

    /// The file name (zero-padded, so names sort by LSN).
    pub fn render(&self) -> String {
        let prefix = match self.kind {
            FileKind::Part => "part",
            FileKind::Compact => "compact",
            FileKind::Day => "day",
        };
        format!(
            "{prefix}-{:020}-{:020}.parquet",
            self.first_lsn, self.last_lsn
        )
    }
}

/// Suffix of a day file's rollup: count, sum, min and max of every (device, metric, hour)
/// of the day file with the same stem (`day-{first}-{last}.rollup`). A Parquet file, but not
/// named `*.parquet`, so a glob over the data files does not mix the two schemas. Derived
/// data: written after its day file, removed with it, and a day file without one is read
/// raw.
pub const ROLLUP_SUFFIX: &str = ".rollup";

/// Rollup column names, in file order (besides [`DEVICE_ID`] and [`METRIC`]).
pub const HOUR: &str = "hour";
pub const COUNT: &str = "count";
pub const SUM: &str = "sum";
pub const MIN: &str = "min";
pub const MAX: &str = "max";

/// The rollup file name of a day file name (`None` for any other name).
pub fn rollup_name(day_file: &str) -> Option<String> {
    let n = DataFileName::parse(day_file)?;
    (n.kind == FileKind::Day).then(|| {
        let stem = day_file.strip_suffix(".parquet").unwrap_or(day_file);
        format!("{stem}{ROLLUP_SUFFIX}")
    })
}

/// The rollup path of a day file's path (`None` for any other file).
pub fn rollup_path(day_path: &std::path::Path) -> Option<std::path::PathBuf> {
    let name = rollup_name(day_path.file_name()?.to_str()?)?;
    Some(day_path.with_file_name(name))
}

/// The day file name of a rollup file name (`None` for any other name).
pub fn day_file_of_rollup(rollup: &str) -> Option<String> {
    let name = format!("{}.parquet", rollup.strip_suffix(ROLLUP_SUFFIX)?);
    let n = DataFileName::parse(&name)?;
    (n.kind == FileKind::Day).then_some(name)
}

/// The schema of a rollup file: `device_id`, `metric`, `hour` (hours since the epoch),
/// `count`, `sum`, `min`, `max`; sorted by device, metric, hour.
pub fn rollup_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        dict_field(DEVICE_ID),
        dict_field(METRIC),
        Field::new(HOUR, DataType::Int64, false),
        Field::new(COUNT, DataType::UInt64, false),
        Field::new(SUM, DataType::Float64, false),
        Field::new(MIN, DataType::Float64, false),
        Field::new(MAX, DataType::Float64, false),
    ]))
}

/// The type of `ts`.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A dictionary-encoded string column.
pub fn dict_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    )
}

/// The schema of every data file.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(TS, ts_type(), false),
        dict_field(DEVICE_ID),
        dict_field(METRIC),
        Field::new(VALUE, DataType::Float64, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_round_trip_through_their_directory_names() {
        for p in [0, 1, 23, 24, 491_000, -1] {
            let dir = partition_dir(p);
            let (date, hour) = dir.split_once('/').unwrap_or_default();
            assert_eq!(parse_partition_dir(date, hour), Some(p), "{dir}");
        }
        assert_eq!(parse_partition_dir("date=2025-11-24", "hour=24"), None);
        assert_eq!(parse_partition_dir("date=2025-13-01", "hour=01"), None);
        assert_eq!(parse_partition_dir("2025-11-24", "hour=01"), None);
    }

    #[test]
    fn day_directories_are_the_date_of_their_hours() {
        for p in [0, 23, 24, 491_000, -1] {
            let hour = partition_dir(p);
            assert!(hour.starts_with(&date_dir(day_of(p))), "{hour}");
            assert_eq!(parse_date_dir(&date_dir(day_of(p))), Some(day_of(p)));
        }
        let day = DataFileName {
            kind: FileKind::Day,
            first_lsn: 3,
            last_lsn: 9,
        };
        assert_eq!(DataFileName::parse(&day.render()), Some(day));
        assert_eq!(FileKind::Day.hours(), 24);
    }

    #[test]
    fn rollups_are_named_after_their_day_file_only() {
        let day = DataFileName {
            kind: FileKind::Day,
            first_lsn: 3,
            last_lsn: 9,
        }
        .render();
        let rollup = rollup_name(&day).unwrap_or_default();
        assert!(rollup.ends_with(ROLLUP_SUFFIX) && !rollup.ends_with(".parquet"));
        assert_eq!(day_file_of_rollup(&rollup), Some(day));
        assert_eq!(DataFileName::parse(&rollup), None);
        assert_eq!(rollup_name("compact-1-2.parquet"), None);
        assert_eq!(rollup_name("day-1-2.parquet.tmp"), None);
        assert_eq!(day_file_of_rollup("compact-1-2.rollup"), None);
        assert_eq!(day_file_of_rollup("day-1-2.rollup.tmp"), None);
    }

    #[test]
    fn file_names_round_trip_and_reject_other_files() {
        let n = DataFileName {
            kind: FileKind::Compact,
            first_lsn: 7,
            last_lsn: 42,
        };
        assert_eq!(DataFileName::parse(&n.render()), Some(n));
        assert!(n.render() < DataFileName { first_lsn: 8, ..n }.render());
        for other in [
            "part-1-2.parquet.tmp",
            "part-1.parquet",
            "x-1-2.parquet",
            "part-a-2.parquet",
        ] {
            assert_eq!(DataFileName::parse(other), None, "{other}");
        }
    }
}
