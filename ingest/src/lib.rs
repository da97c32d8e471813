//! Telemetry ingest: decode → write-ahead log (group commit) → Parquet, with dead letters.
//!
//! Threads, not tasks: everything here blocks on disk.
//!
//! ```text
//!  Submitter::submit ──bounded queue──▶ writer thread ──sealed memtable──▶ flusher thread
//!  (link reader)                        decode, WAL append+fsync,          Parquet files,
//!                                       dead letters, observers            checkpoint, compaction
//! ```
//!
//! A message is durable when the writer's `fsync` of its WAL record returns; the Parquet
//! files are written later from memory and the WAL is truncated only after they are.

pub mod deadletter;
pub mod decode;
pub mod layout;
mod pipeline;
pub mod store;
pub mod wal;

use std::sync::Arc;

pub use decode::{Limits, Reason};
pub use pipeline::{
    CommitObserver, CommittedBatch, DeadLetterFailure, Ingest, IngestConfig, IngestError,
    IngestSummary, Message, MessageMeta, Stats, StatsSnapshot, Submitter,
};

/// One stored sample: the long-format row of the Parquet data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub device: Arc<str>,
    pub metric: Arc<str>,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_us: i64,
    pub value: f64,
}

impl Row {
    /// A row with freshly allocated names (tests, tools); the pipeline interns names instead.
    pub fn new(device: &str, metric: &str, ts_us: i64, value: f64) -> Row {
        Row {
            device: Arc::from(device),
            metric: Arc::from(metric),
            ts_us,
            value,
        }
    }
}
