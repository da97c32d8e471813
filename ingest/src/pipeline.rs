//! The running ingest: queue, writer thread (group commit) and flusher thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::Row;
use crate::deadletter::{DeadLetter, DeadLetterError, DeadLetterQuota, DeadLetterWriter};
use crate::decode::{self, Limits, Reason, TopicKind};
use crate::store::{CompactionPolicy, Store, StoreError};
use crate::wal::{self, CheckpointRead, Wal, WalError};

/// Where and how the ingest stores data.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `telemetry/`, `wal/` and `deadletter/` are created under it.
    pub data_dir: PathBuf,
    pub limits: Limits,
    /// Seal the in-memory rows into Parquet files at this many rows…
    pub flush_rows: usize,
    /// …or when the oldest of them is this old.
    pub flush_interval: Duration,
    /// Compact a partition once it has this many files.
    pub compact_min_files: usize,
    /// Batches the submit queue holds before `submit` blocks (back-pressure on the reader).
    pub queue_batches: usize,
    /// Bounds on the dead-letter store.
    pub dead_letters: DeadLetterQuota,
}

impl IngestConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            limits: Limits::default(),
            flush_rows: 1_000_000,
            flush_interval: Duration::from_secs(30),
            compact_min_files: 8,
            queue_batches: 256,
            dead_letters: DeadLetterQuota::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("the disk stayed full while shutting down: {0}")]
    DiskFull(#[source] Box<IngestError>),
    #[error("cannot start an ingest thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("an ingest thread panicked")]
    Panicked,
}

/// One MQTT publish as received.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Vec<u8>,
    pub payload: Vec<u8>,
    /// Receive time, µs since the Unix epoch: the timestamp of points that carry none.
    pub received_us: i64,
}

/// Identity of a committed message (for latency measurement and sequence tracking).
#[derive(Debug, Clone)]
pub struct MessageMeta {
    pub device: Arc<str>,
    pub seq: Option<u64>,
}

/// What one group commit made durable.
pub struct CommittedBatch<'a> {
    pub lsn: u64,
    pub rows: &'a [Row],
    pub messages: &'a [MessageMeta],
}

/// Sees every group commit right after its fsync (online detectors, benchmarks). Runs on the
/// writer thread: keep it quick and never block.
pub trait CommitObserver: Send + Sync {
    fn committed(&self, batch: &CommittedBatch<'_>);

    /// Every message submitted with a token up to `token` (see [`Submitter::submit_tracked`])
    /// is durable: in the fsynced WAL, or fsynced as a dead letter. Called once per group
    /// commit, after its fsync, with the largest token it held.
    fn durable(&self, _token: u64) {}
}

/// One submission: messages in arrival order and, if the submitter tracks durability, the
/// token of its last message (tokens grow with arrival order).
struct Submission {
    messages: Vec<Message>,
    token: Option<u64>,
}

/// Counters the process reads (progress lines, summaries, `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    pub messages: AtomicU64,
    pub points: AtomicU64,
    pub bytes: AtomicU64,
    pub status_messages: AtomicU64,
    pub dead_letters: [AtomicU64; Reason::ALL.len()],
    /// Messages the broker dropped because the ingest lagged more than its ring.
    pub lost_by_broker: AtomicU64,
    pub committed_lsn: AtomicU64,
    pub flushed_lsn: AtomicU64,
    /// Points committed to the WAL and not yet in Parquet.
    pub wal_lag_points: AtomicU64,
    pub queue_depth: AtomicU64,
    pub parquet_files: AtomicU64,
    pub parquet_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    /// Closed days merged into day files.
    pub day_compactions: AtomicU64,
    pub duplicates_removed: AtomicU64,
    pub submit_blocked_us: AtomicU64,
    /// The WAL cannot append for lack of space: nothing new is committed (the writer holds
    /// its batch and retries), the queue and then the broker's ring fill up.
    pub wal_disk_full: AtomicBool,
    /// Parquet flushes fail for lack of space: the WAL keeps everything, the flusher retries.
    pub store_disk_full: AtomicBool,
    /// WAL appends that failed and were retried.
    pub wal_append_failures: AtomicU64,
    /// Bytes of WAL segments that held no valid record at the last start.
    pub wal_damaged_bytes: AtomicU64,
    /// Dead letters removed with the oldest files to keep within the quota.
    pub dead_letters_dropped: AtomicU64,
    /// Dead letters that could not be written or fsynced (the message is still counted under
    /// its reason in `dead_letters`).
    pub dead_letter_write_failures: AtomicU64,
    pub dead_letter_bytes: AtomicU64,
    pub last_dead_letter_failure: Mutex<Option<DeadLetterFailure>>,
}

/// The last dead letter that could not be written: what it was and why it was lost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeadLetterFailure {
    pub reason: String,
    pub topic: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub messages: u64,
    pub points: u64,
    pub bytes: u64,
    pub status_messages: u64,
    pub dead_letters: HashMap<&'static str, u64>,
    pub dead_letters_total: u64,
    pub lost_by_broker: u64,
    pub committed_lsn: u64,
    pub flushed_lsn: u64,
    pub wal_lag_points: u64,
    pub queue_depth: u64,
    pub parquet_files: u64,
    pub parquet_bytes: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub day_compactions: u64,
    pub duplicates_removed: u64,
    /// True while the WAL or the Parquet flush cannot write for lack of space. While the WAL
    /// is full nothing new becomes durable: `/healthz` should report it (503) and the broker
    /// should stop acknowledging; both clear by themselves when space returns.
    pub disk_full: bool,
    pub wal_append_failures: u64,
    pub wal_damaged_bytes: u64,
    pub dead_letters_dropped: u64,
    pub dead_letter_write_failures: u64,
    pub dead_letter_bytes: u64,
    pub last_dead_letter_failure: Option<DeadLetterFailure>,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let dead_letters: HashMap<&'static str, u64> = Reason::ALL
            .iter()
            .zip(&self.dead_letters)
            .map(|(r, n)| (r.as_str(), get(n)))
            .collect();
        StatsSnapshot {
            messages: get(&self.messages),
            points: get(&self.points),
            bytes: get(&self.bytes),
            status_messages: get(&self.status_messages),
            dead_letters_total: dead_letters.values().sum(),
            dead_letters,
            lost_by_broker: get(&self.lost_by_broker),
            committed_lsn: get(&self.committed_lsn),
            flushed_lsn: get(&self.flushed_lsn),
            wal_lag_points: get(&self.wal_lag_points),
            queue_depth: get(&self.queue_depth),
            parquet_files: get(&self.parquet_files),
            parquet_bytes: get(&self.parquet_bytes),
            flushes: get(&self.flushes),
            compactions: get(&self.compactions),
            day_compactions: get(&self.day_compactions),
            duplicates_removed: get(&self.duplicates_removed),
            disk_full: self.wal_disk_full.load(Ordering::Relaxed)
                || self.store_disk_full.load(Ordering::Relaxed),
            wal_append_failures: get(&self.wal_append_failures),
            wal_damaged_bytes: get(&self.wal_damaged_bytes),
            dead_letters_dropped: get(&self.dead_letters_dropped),
            dead_letter_write_failures: get(&self.dead_letter_write_failures),
            dead_letter_bytes: get(&self.dead_letter_bytes),
            last_dead_letter_failure: self
                .last_dead_letter_failure
                .lock()
                .map_or(None, |f| f.clone()),
        }
    }

    fn dead_letter(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.dead_letters[i].fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("prognos_ingest_dead_letters_total", "reason" => reason.as_str())
            .increment(1);
    }
}

/// The sending side of the ingest queue.
#[derive(Clone)]
pub struct Submitter {
    tx: SyncSender<Submission>,
    stats: Arc<Stats>,
}

/// The ingest has shut down; nothing more is accepted.
#[derive(Debug, thiserror::Error)]
#[error("the ingest is shut down")]
pub struct Closed;

impl Submitter {
    /// Queues a batch; blocks while the queue is full, which is the ingest telling the reader
    /// to slow down. Long blocks are logged: upstream buffers are filling.
    pub fn submit(&self, batch: Vec<Message>) -> Result<(), Closed> {
        self.send(Submission {
            messages: batch,
            token: None,
        })
    }

    /// As [`Submitter::submit`], and once the batch is durable the observers' `durable` is
    /// called with `token` (or a larger one). Tokens must grow from one call to the next.
    pub fn submit_tracked(&self, batch: Vec<Message>, token: u64) -> Result<(), Closed> {
        self.send(Submission {
            messages: batch,
            token: Some(token),
        })
    }

    fn send(&self, batch: Submission) -> Result<(), Closed> {
        if batch.messages.is_empty() && batch.token.is_none() {
            return Ok(());
        }
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        let batch = match self.tx.try_send(batch) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(Closed),
            Err(TrySendError::Full(batch)) => batch,
        };
        let started = Instant::now();
        let result = self.tx.send(batch).map_err(|_| Closed);
        let blocked = started.elapsed();
        self.stats
            .submit_blocked_us
            .fetch_add(blocked.as_micros() as u64, Ordering::Relaxed);
        metrics::counter!("prognos_ingest_submit_blocked_seconds_total")
            .increment(blocked.as_micros() as u64 / 1_000_000);
        if blocked > Duration::from_secs(1) {
            warn!(
                blocked_ms = blocked.as_millis() as u64,
                "ingest queue full: the WAL cannot keep up and the broker's buffer is filling"
            );
        }
        result
    }

    /// Records messages the broker dropped before the ingest could read them.
    pub fn report_lost(&self, count: u64) {
        self.stats
            .lost_by_broker
            .fetch_add(count, Ordering::Relaxed);
        metrics::counter!("prognos_ingest_lost_by_broker_total").increment(count);
        error!(
            count,
            "the broker dropped messages because the ingest fell behind its buffer"
        );
    }
}

/// What the ingest did over its life, returned on shutdown.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub stats: StatsSnapshot,
    pub replayed_records: usize,
}

/// A running ingest.
pub struct Ingest {
    submitter: Submitter,
    stats: Arc<Stats>,
    /// Set by `shutdown`: retry loops (a full disk) give up after a grace period.
    stopping: Arc<AtomicBool>,
    writer: JoinHandle<Result<(), IngestError>>,
    replayed_records: usize,
}

struct Sealed {
    rows: Vec<Row>,
    first_lsn: u64,
    last_lsn: u64,
}

impl Ingest {
    /// Opens the WAL and the data set, replays what the WAL holds past its checkpoint, and
    /// starts the writer and flusher threads.
    pub fn start(
        config: IngestConfig,
        observers: Vec<Arc<dyn CommitObserver>>,
    ) -> Result<Ingest, IngestError> {
        let wal_dir = config.data_dir.join("wal");
        let store = Store::open(&config.data_dir.join("telemetry"))?;
        let dead_letters =
            DeadLetterWriter::with_quota(&config.data_dir.join("deadletter"), config.dead_letters)?;
        std::fs::create_dir_all(&wal_dir).map_err(|source| WalError::Io {
            path: wal_dir.clone(),
            source,
        })?;
        let (checkpoint, recovered) = recover_checkpoint(&wal_dir, &store)?;
        let (wal, mut replay) = if recovered {
            Wal::open_recovering(&wal_dir, checkpoint)?
        } else {
            Wal::open_from(&wal_dir, checkpoint)?
        };
        if recovered {
            complete_interrupted_flush(
                &store,
                &std::mem::take(&mut replay.at_or_before_checkpoint),
            )?;
            // Written only now, after the WAL opened: a crash before this repeats the same
            // recovery, from the same files.
            if let Err(e) = wal::write_checkpoint(&wal_dir, checkpoint) {
                warn!(error = %e, "cannot write the recovered WAL checkpoint; recovering again next start");
            }
        }
        // Only files the replay writes again may go; see `Store::remove_after`.
        let replayed: Vec<u64> = replay.records.iter().map(|(lsn, _)| *lsn).collect();
        store.remove_after(replay.checkpoint, |first, last| {
            let from = replayed.partition_point(|l| *l < first);
            let to = replayed.partition_point(|l| *l <= last);
            (to - from) as u64 == last - first + 1
        })?;
        let stats = Arc::new(Stats::default());
        stats
            .wal_damaged_bytes
            .store(replay.damaged_bytes, Ordering::Relaxed);
        stats
            .dead_letter_bytes
            .store(dead_letters.total_bytes(), Ordering::Relaxed);
        metrics::gauge!("prognos_ingest_disk_full").set(0.0);
        let stopping = Arc::new(AtomicBool::new(false));
        stats
            .committed_lsn
            .store(wal.next_lsn() - 1, Ordering::Relaxed);
        stats
            .flushed_lsn
            .store(replay.checkpoint, Ordering::Relaxed);
        let mut memtable = Memtable::default();
        let replayed_records = replay.records.len();
        for (lsn, rows) in replay.records {
            memtable.push(lsn, rows);
        }
        if replayed_records > 0 {
            info!(
                records = replayed_records,
                points = memtable.rows.len(),
                "replayed the WAL past its checkpoint"
            );
        }
        stats
            .wal_lag_points
            .store(memtable.rows.len() as u64, Ordering::Relaxed);

        let (tx, rx) = mpsc::sync_channel(config.queue_batches.max(1));
        let (seal_tx, seal_rx) = mpsc::sync_channel::<Sealed>(1);
        let flusher = {
            let stats = stats.clone();
            let wal_dir = wal_dir.clone();
            let min_files = config.compact_min_files;
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name("ingest-flusher".into())
                .spawn(move || flusher_loop(seal_rx, store, wal_dir, stats, min_files, &stopping))
                .map_err(IngestError::Thread)?
        };
        let writer = {
            let stats = stats.clone();
            let mut writer = Writer {
                config,
                wal,
                dead_letters,
                stats,
                observers,
                memtable,
                seal_tx: Some(seal_tx),
                names: HashMap::new(),
                metric_names: decode::MetricNames::new(),
                removed_upto: 0,
                stopping: stopping.clone(),
                last_dead_letter_log: None,
            };
            std::thread::Builder::new()
                .name("ingest-writer".into())
                .spawn(move || {
                    let result = writer.run(rx);
                    // Dropping the writer closes the seal channel: the flusher finishes what
                    // it has and stops.
                    drop(writer);
                    let flushed = flusher.join().map_err(|_| IngestError::Panicked)?;
                    result.and(flushed)
                })
                .map_err(IngestError::Thread)?
        };
        Ok(Ingest {
            submitter: Submitter {
                tx,
                stats: stats.clone(),
            },
            stats,
            stopping,
            writer,
            replayed_records,
        })
    }

    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops accepting, commits what is queued, writes everything to Parquet and returns.
    /// Every other `Submitter` clone must be dropped first, or this waits for them.
    pub fn shutdown(self) -> Result<IngestSummary, IngestError> {
        drop(self.submitter);
        self.stopping.store(true, Ordering::Relaxed);
        self.writer.join().map_err(|_| IngestError::Panicked)??;
        Ok(IngestSummary {
            stats: self.stats.snapshot(),
            replayed_records: self.replayed_records,
        })
    }
}

#[derive(Default)]
struct Memtable {
    rows: Vec<Row>,
    first_lsn: Option<u64>,
    last_lsn: u64,
    started: Option<Instant>,
}

impl Memtable {
    fn push(&mut self, lsn: u64, rows: Vec<Row>) {
        self.first_lsn.get_or_insert(lsn);
        self.started.get_or_insert_with(Instant::now);
        self.last_lsn = lsn;
        if self.rows.is_empty() {
            self.rows = rows;
        } else {
            self.rows.extend(rows);
        }
    }

    fn take(&mut self) -> Option<Sealed> {
        let first_lsn = self.first_lsn.take()?;
        self.started = None;
        Some(Sealed {
            rows: std::mem::take(&mut self.rows),
            first_lsn,
            last_lsn: self.last_lsn,
        })
    }
}

struct Writer {
    config: IngestConfig,
    wal: Wal,
    dead_letters: DeadLetterWriter,
    stats: Arc<Stats>,
    observers: Vec<Arc<dyn CommitObserver>>,
    memtable: Memtable,
    seal_tx: Option<SyncSender<Sealed>>,
    /// Interned device and metric names: rows share one allocation per name.
    names: HashMap<String, Arc<str>>,
    /// Metric names per device, bounded (`Limits::max_metrics_per_device`).
    metric_names: decode::MetricNames,
    removed_upto: u64,
    stopping: Arc<AtomicBool>,
    /// When a dead-letter failure was last logged (they are logged at most once a second).
    last_dead_letter_log: Option<Instant>,
}

/// Most messages one group commit takes, so a commit's latency stays bounded under load.
const MAX_COMMIT_MESSAGES: usize = 50_000;
/// Rows per WAL record: 24 bytes each plus names, far below the WAL's 1 GiB record limit
/// even with one message's worth of rows on top.
const MAX_RECORD_ROWS: usize = 4_000_000;

impl Writer {
    fn run(&mut self, rx: Receiver<Submission>) -> Result<(), IngestError> {
        let mut open = true;
        while open {
            let mut batches = Vec::new();
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(batch) => batches.push(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            let mut count: usize = batches.iter().map(|b: &Submission| b.messages.len()).sum();
            while count < MAX_COMMIT_MESSAGES {
                match rx.try_recv() {
                    Ok(batch) => {
                        count += batch.messages.len();
                        batches.push(batch);
                    }
                    Err(_) => break,
                }
            }
            self.stats
                .queue_depth
                .fetch_sub(batches.len() as u64, Ordering::Relaxed);
            let durable_token = batches.iter().filter_map(|b| b.token).max();
            self.commit(batches.into_iter().map(|b| b.messages).collect())?;
            // Only now, after the fsync: what a durability token acknowledges must survive
            // a kill -9 (the broker sends PUBACKs on it).
            if let Some(token) = durable_token {
                for observer in &self.observers {
                    observer.durable(token);
                }
            }
            self.maybe_seal(!open)?;
            let flushed = self.stats.flushed_lsn.load(Ordering::Relaxed);
            if flushed > self.removed_upto {
                self.wal.remove_checkpointed(flushed)?;
                self.removed_upto = flushed;
            }
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.names.get(name) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(name);
        // Unbounded cardinality would be a memory leak; devices × metrics is bounded in
        // practice, and past this size the table is simply rebuilt.
        if self.names.len() > 1_000_000 {
            self.names.clear();
        }
        self.names.insert(name.to_owned(), a.clone());
        a
    }

    fn commit(&mut self, batches: Vec<Vec<Message>>) -> Result<(), IngestError> {
        if batches.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        let mut metas = Vec::new();
        let (mut messages, mut bytes, mut status, mut points) = (0u64, 0u64, 0u64, 0u64);
        for message in batches.into_iter().flatten() {
            // A record never outgrows the WAL's limit, whatever the commit holds: past this
            // many rows the commit goes on in a new record (a `TooLarge` would stop the
            // ingest).
            if rows.len() >= MAX_RECORD_ROWS {
                points += rows.len() as u64;
                self.store_record(std::mem::take(&mut rows), std::mem::take(&mut metas))?;
            }
            bytes += message.payload.len() as u64;
            let decoded = decode::parse_topic(&message.topic).and_then(|(device, kind)| {
                let d = decode::decode_payload(
                    kind,
                    &message.payload,
                    message.received_us,
                    &self.config.limits,
                )?;
                // Bounded series per device (and devices tracked): past it, a dead letter.
                self.metric_names
                    .admit(device, &d.points, &self.config.limits)?;
                Ok((device.to_owned(), kind, d))
            });
            match decoded {
                Ok((_, TopicKind::Status, _)) => status += 1,
                Ok((device, _, decoded)) => {
                    messages += 1;
                    let device = self.intern(&device);
                    for point in decoded.points {
                        let metric = self.intern(&point.metric);
                        rows.push(Row {
                            device: device.clone(),
                            metric,
                            ts_us: point.ts_us,
                            value: point.value,
                        });
                    }
                    if !self.observers.is_empty() {
                        metas.push(MessageMeta {
                            device,
                            seq: decoded.seq,
                        });
                    }
                }
                Err(rejection) => {
                    self.stats.dead_letter(rejection.reason);
                    let letter = DeadLetter::capped(
                        message.received_us,
                        &message.topic,
                        &message.payload,
                        &rejection,
                        self.config.dead_letters.max_payload_bytes,
                    );
                    match self.dead_letters.append(&letter) {
                        Ok(0) => {}
                        Ok(dropped) => {
                            self.stats
                                .dead_letters_dropped
                                .fetch_add(dropped, Ordering::Relaxed);
                            metrics::counter!("prognos_ingest_dead_letters_dropped_total")
                                .increment(dropped);
                        }
                        Err(e) => self.dead_letter_failed(&letter.reason, &letter.topic, &e),
                    }
                }
            }
        }
        self.stats
            .dead_letter_bytes
            .store(self.dead_letters.total_bytes(), Ordering::Relaxed);
        points += rows.len() as u64;
        self.store_record(rows, metas)?;
        let s = &self.stats;
        s.messages.fetch_add(messages, Ordering::Relaxed);
        s.points.fetch_add(points, Ordering::Relaxed);
        s.wal_lag_points.fetch_add(points, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        s.status_messages.fetch_add(status, Ordering::Relaxed);
        metrics::counter!("prognos_ingest_messages_total").increment(messages);
        metrics::counter!("prognos_ingest_points_total").increment(points);
        metrics::counter!("prognos_ingest_bytes_total").increment(bytes);
        Ok(())
    }

    /// Makes one WAL record of `rows` durable (with the dead letters so far), then hands it
    /// to the observers and the memtable.
    fn store_record(&mut self, rows: Vec<Row>, metas: Vec<MessageMeta>) -> Result<(), IngestError> {
        if let Err(e) = self.dead_letters.sync() {
            self.dead_letter_failed("", "", &e);
        }
        if rows.is_empty() && metas.is_empty() {
            return Ok(());
        }
        let lsn = self.append_until_stored(&rows)?;
        self.stats.committed_lsn.store(lsn, Ordering::Relaxed);
        for observer in &self.observers {
            observer.committed(&CommittedBatch {
                lsn,
                rows: &rows,
                messages: &metas,
            });
        }
        self.memtable.push(lsn, rows);
        Ok(())
    }

    /// A dead letter is evidence, not data: losing one must not stop the telemetry. It is
    /// counted (its reason is already counted in `dead_letters`), remembered and logged.
    fn dead_letter_failed(&mut self, reason: &str, topic: &str, e: &DeadLetterError) {
        let n = self
            .stats
            .dead_letter_write_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        metrics::counter!("prognos_ingest_dead_letter_write_failures_total").increment(1);
        if let Ok(mut last) = self.stats.last_dead_letter_failure.lock() {
            *last = Some(DeadLetterFailure {
                reason: reason.to_owned(),
                topic: topic.to_owned(),
                error: e.to_string(),
            });
        }
        if self
            .last_dead_letter_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.last_dead_letter_log = Some(Instant::now());
            warn!(reason, topic, error = %e, failures = n, "cannot write a dead letter; dropping it and going on");
        }
    }

    /// Appends to the WAL; while the disk is full, holds the batch and retries with backoff
    /// (nothing of it was acknowledged as durable, and nothing later is taken from the queue
    /// meanwhile, so order and the "acknowledged = in the WAL" contract hold). Other errors
    /// stop the ingest as before.
    fn append_until_stored(&mut self, rows: &[Row]) -> Result<u64, IngestError> {
        let mut backoff = Backoff::new();
        loop {
            match self.wal.append(rows) {
                Ok(lsn) => {
                    if backoff.attempts > 0 {
                        self.stats.wal_disk_full.store(false, Ordering::Relaxed);
                        publish_disk_full(&self.stats);
                        info!(
                            attempts = backoff.attempts,
                            waited_ms = backoff.began.elapsed().as_millis() as u64,
                            "disk space is back: WAL appends resumed"
                        );
                    }
                    return Ok(lsn);
                }
                Err(e) if e.is_disk_full() => {
                    self.stats
                        .wal_append_failures
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("prognos_ingest_wal_append_failures_total").increment(1);
                    if backoff.attempts == 0 {
                        self.stats.wal_disk_full.store(true, Ordering::Relaxed);
                        publish_disk_full(&self.stats);
                        error!(error = %e, "disk full: the WAL cannot append; holding the batch and retrying until space returns");
                    }
                    if !backoff.wait(&self.stopping) {
                        return Err(IngestError::DiskFull(Box::new(e.into())));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn maybe_seal(&mut self, closing: bool) -> Result<(), IngestError> {
        let due = closing
            || self.memtable.rows.len() >= self.config.flush_rows
            || self
                .memtable
                .started
                .is_some_and(|t| t.elapsed() >= self.config.flush_interval);
        if !due {
            return Ok(());
        }
        let Some(sealed) = self.memtable.take() else {
            return Ok(());
        };
        let Some(seal_tx) = &self.seal_tx else {
            return Ok(());
        };
        let hard_limit = self.config.flush_rows.saturating_mul(4);
        match seal_tx.try_send(sealed) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(sealed)) if !closing && sealed.rows.len() < hard_limit => {
                // The flusher is busy: keep accumulating rather than stall commits.
                self.memtable = Memtable {
                    first_lsn: Some(sealed.first_lsn),
                    last_lsn: sealed.last_lsn,
                    rows: sealed.rows,
                    started: Some(Instant::now()),
                };
                Ok(())
            }
            Err(TrySendError::Full(sealed)) => {
                warn!(
                    rows = sealed.rows.len(),
                    "Parquet flusher is behind; commits wait for it"
                );
                seal_tx.send(sealed).map_err(|_| IngestError::Panicked)
            }
            Err(TrySendError::Disconnected(_)) => Err(IngestError::Panicked),
        }
    }
}

fn flusher_loop(
    rx: Receiver<Sealed>,
    store: Store,
    wal_dir: PathBuf,
    stats: Arc<Stats>,
    compact_min_files: usize,
    stopping: &AtomicBool,
) -> Result<(), IngestError> {
    while let Ok(mut sealed) = rx.recv() {
        let points = sealed.rows.len() as u64;
        // A full disk is waited out: the WAL holds every row of `sealed`, and writing the
        // same rows again gives the same file names and contents.
        let mut backoff = Backoff::new();
        let files = loop {
            let attempt = store
                .write_sealed(&mut sealed.rows, sealed.first_lsn, sealed.last_lsn)
                .map_err(IngestError::from)
                .and_then(|files| {
                    wal::write_checkpoint(&wal_dir, sealed.last_lsn)?;
                    Ok(files)
                });
            match attempt {
                Ok(files) => break files,
                Err(e) if e.is_disk_full() => {
                    if backoff.attempts == 0 {
                        stats.store_disk_full.store(true, Ordering::Relaxed);
                        publish_disk_full(&stats);
                        error!(error = %e, "disk full: cannot write Parquet; the WAL keeps the rows, retrying");
                    }
                    if !backoff.wait(stopping) {
                        // Safe to give up: the WAL replays these rows at the next start.
                        return Err(IngestError::DiskFull(Box::new(e)));
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if backoff.attempts > 0 {
            stats.store_disk_full.store(false, Ordering::Relaxed);
            publish_disk_full(&stats);
            info!("disk space is back: Parquet flushes resumed");
        }
        let bytes: u64 = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        stats.flushed_lsn.store(sealed.last_lsn, Ordering::Relaxed);
        stats.wal_lag_points.fetch_sub(
            points.min(stats.wal_lag_points.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        stats
            .parquet_files
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        stats.parquet_bytes.fetch_add(bytes, Ordering::Relaxed);
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("prognos_ingest_parquet_files_total").increment(files.len() as u64);
        metrics::counter!("prognos_ingest_parquet_bytes_total").increment(bytes);

        // The hour being written now keeps receiving files; merge it once it has closed.
        let policy = CompactionPolicy {
            min_files: compact_min_files,
            max_input_bytes: 32 * 1024 * 1024,
            open_from: Some(crate::store::partition_of(now_us())),
            rollup_min_points: crate::store::ROLLUP_MIN_POINTS,
        };
        match store.compact(sealed.last_lsn, &policy) {
            Ok(c) if c.partitions > 0 => {
                stats
                    .compactions
                    .fetch_add(c.partitions as u64, Ordering::Relaxed);
                stats
                    .duplicates_removed
                    .fetch_add(c.duplicates_removed as u64, Ordering::Relaxed);
                info!(
                    partitions = c.partitions,
                    files = c.files_in,
                    duplicates = c.duplicates_removed,
                    "compacted"
                );
            }
            Ok(_) => {}
            // Compaction is an optimisation: a failure leaves the small files readable.
            Err(e) => error!(error = %e, "compaction failed"),
        }
        // Then closed days into day files (every hour of the day before the open one).
        let policy = CompactionPolicy {
            max_input_bytes: DAY_COMPACTION_BYTES,
            ..policy
        };
        match store.compact_days(sealed.last_lsn, &policy) {
            Ok(c) if c.partitions > 0 => {
                stats
                    .day_compactions
                    .fetch_add(c.partitions as u64, Ordering::Relaxed);
                stats
                    .duplicates_removed
                    .fetch_add(c.duplicates_removed as u64, Ordering::Relaxed);
                info!(
                    days = c.partitions,
                    files = c.files_in,
                    duplicates = c.duplicates_removed,
                    "compacted closed days into day files"
                );
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "day compaction failed"),
        }
    }
    Ok(())
}

/// Most compressed input of one day merge. The merge holds the day's rows in memory (about
/// 48 bytes a row at ~2–3 compressed bytes a row, so ~0.5 GiB at this budget); a larger day
/// stays in hour files, which are then large enough to read well.
const DAY_COMPACTION_BYTES: u64 = 24 * 1024 * 1024;

impl IngestError {
    fn is_disk_full(&self) -> bool {
        match self {
            IngestError::Wal(e) => e.is_disk_full(),
            IngestError::Store(StoreError::Io { source, .. }) => wal::is_disk_full(source),
            IngestError::Store(StoreError::Parquet {
                source: parquet::errors::ParquetError::External(e),
                ..
            }) => e
                .downcast_ref::<std::io::Error>()
                .is_some_and(wal::is_disk_full),
            _ => false,
        }
    }
}

fn publish_disk_full(stats: &Stats) {
    let full = stats.wal_disk_full.load(Ordering::Relaxed)
        || stats.store_disk_full.load(Ordering::Relaxed);
    metrics::gauge!("prognos_ingest_disk_full").set(if full { 1.0 } else { 0.0 });
}

/// Retry pacing for a full disk: 50 ms doubling to 5 s. Once shutdown has begun, gives up
/// after `SHUTDOWN_GRACE` so a disk that stays full cannot hang the process.
struct Backoff {
    attempts: u32,
    began: Instant,
    stopping_since: Option<Instant>,
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Backoff {
    fn new() -> Self {
        Self {
            attempts: 0,
            began: Instant::now(),
            stopping_since: None,
        }
    }

    /// Sleeps before the next attempt; false when it is time to give up.
    fn wait(&mut self, stopping: &AtomicBool) -> bool {
        if stopping.load(Ordering::Relaxed) {
            let since = *self.stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SHUTDOWN_GRACE {
                return false;
            }
        }
        let delay =
            Duration::from_millis(50u64 << self.attempts.min(7)).min(Duration::from_secs(5));
        self.attempts += 1;
        std::thread::sleep(delay);
        true
    }
}

/// With a recovered checkpoint (the highest LSN in any file name), a flush that was cut off
/// after some of its partitions' files were renamed would lose the rest: their WAL records
/// are at or below that LSN and are not replayed. So every row of the WAL records at or
/// below the checkpoint is checked against the files of its partition, and a row no file
/// holds is written to the file its flush would have written: the partition's
/// `part-{first}-{last}` of the LSN range a file of another partition shows for that record.
/// Only a range no file of that partition overlaps is written, so the LSN-range rules hold.
fn complete_interrupted_flush(
    store: &Store,
    records: &[(u64, Vec<Row>)],
) -> Result<(), IngestError> {
    use crate::layout::{FileKind, Partition, partition_of};
    use std::collections::BTreeMap;
    if records.is_empty() {
        return Ok(());
    }
    let files = store.files()?;
    let mut by_partition: BTreeMap<Partition, Vec<(u64, u64)>> = BTreeMap::new();
    let mut flushes: Vec<(u64, u64)> = Vec::new();
    for f in &files {
        // A day file holds rows of every hour of its day.
        for p in f.hours() {
            by_partition
                .entry(p)
                .or_default()
                .push((f.first_lsn, f.last_lsn));
        }
        if f.kind == FileKind::Part {
            flushes.push((f.first_lsn, f.last_lsn));
        }
    }
    flushes.sort_unstable();
    flushes.dedup();
    // Ranges are disjoint within a partition (and among flushes) once leftovers are gone:
    // the candidate is the last range starting at or before the LSN.
    let holding = |ranges: &[(u64, u64)], lsn: u64| -> Option<(u64, u64)> {
        let i = ranges.partition_point(|(first, _)| *first <= lsn);
        ranges[..i].last().copied().filter(|(_, last)| lsn <= *last)
    };
    for ranges in by_partition.values_mut() {
        ranges.sort_unstable();
    }
    let mut missing: BTreeMap<(Partition, u64, u64), Vec<Row>> = BTreeMap::new();
    let mut unplaced = 0u64;
    for (lsn, rows) in records {
        for row in rows {
            let p = partition_of(row.ts_us);
            let own = by_partition.get(&p).map_or(&[][..], |r| r.as_slice());
            if holding(own, *lsn).is_some() {
                continue;
            }
            let overlaps =
                |(first, last): (u64, u64)| own.iter().any(|(f, l)| *f <= last && first <= *l);
            match holding(&flushes, *lsn) {
                Some(range) if !overlaps(range) => missing
                    .entry((p, range.0, range.1))
                    .or_default()
                    .push(row.clone()),
                _ => unplaced += 1,
            }
        }
    }
    for ((partition, first, last), mut rows) in missing {
        warn!(
            partition,
            first_lsn = first,
            last_lsn = last,
            rows = rows.len(),
            "completing a flush that was cut off: writing the partition file it had not written"
        );
        store.write_sealed(&mut rows, first, last)?;
    }
    if unplaced > 0 {
        // Not written: no LSN range fits them without breaking the file-name rules. They are
        // in the WAL (and in a damaged copy, if the segment was damaged) until truncation.
        error!(
            rows = unplaced,
            "WAL rows at or below the recovered checkpoint are in no data file and cannot be placed"
        );
    }
    Ok(())
}

/// The checkpoint to replay from, and whether it was recovered rather than read.
///
/// A checkpoint that cannot be read is never taken as 0: that would make every data file
/// look like an unfinished flush. Missing (with data files present) or damaged, it is
/// recovered from the data files' names, the highest LSN they hold, since a file exists only
/// once its rows are durable. Only an I/O error reading it, or failing to keep a copy of the
/// damaged one, stops the start, with the file named in the error.
fn recover_checkpoint(
    wal_dir: &std::path::Path,
    store: &Store,
) -> Result<(u64, bool), IngestError> {
    let in_files = store.max_last_lsn()?;
    match wal::read_checkpoint(wal_dir)? {
        CheckpointRead::Valid(lsn) => Ok((lsn, false)),
        CheckpointRead::Missing => match in_files {
            None => Ok((0, false)),
            Some(lsn) => {
                warn!(
                    dir = %wal_dir.display(),
                    recovered = lsn,
                    "no WAL checkpoint but data files exist: recovered it from the data files' names"
                );
                Ok((lsn, true))
            }
        },
        CheckpointRead::Damaged { path, detail } => {
            let copy = wal::keep_damaged_checkpoint(wal_dir)?;
            let lsn = in_files.unwrap_or(0);
            warn!(
                path = %path.display(),
                detail,
                copy = %copy.display(),
                recovered = lsn,
                "WAL checkpoint is damaged: recovered it from the data files' names"
            );
            Ok((lsn, true))
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn config(dir: &std::path::Path) -> IngestConfig {
        let mut c = IngestConfig::new(dir.to_owned());
        c.flush_interval = Duration::from_secs(3600);
        c
    }

    /// Two flushes' worth of files, LSNs 1..=9, and a WAL that no longer holds them.
    fn flushed_data_set(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("telemetry")).unwrap();
        let h = 1_764_000_000_000_000;
        store
            .write_flush(vec![Row::new("d", "m", h, 1.0)], 1, 5)
            .unwrap();
        store
            .write_flush(vec![Row::new("d", "m", h + 1, 2.0)], 6, 9)
            .unwrap();
        fs::create_dir_all(dir.join("wal")).unwrap();
        store
    }

    #[test]
    fn a_checkpoint_that_cannot_be_read_never_costs_a_data_file() {
        let cases: [Option<&[u8]>; 4] = [
            Some(b"garbage"),
            Some(b""),
            Some(b"PROGNOS-CHECKPOINT 1 9 deadbeef\n"),
            None,
        ];
        for damage in cases {
            let dir = tempfile::tempdir().unwrap();
            let store = flushed_data_set(dir.path());
            let checkpoint = dir.path().join("wal/checkpoint");
            if let Some(bytes) = damage {
                fs::write(&checkpoint, bytes).unwrap();
            }
            let ingest = Ingest::start(config(dir.path()), Vec::new()).unwrap();
            let summary = ingest.shutdown().unwrap();
            assert_eq!(store.files().unwrap().len(), 2, "{damage:?}");
            // Recovered from the file names and written back, verifiable.
            assert_eq!(
                wal::read_checkpoint(&dir.path().join("wal")).unwrap(),
                CheckpointRead::Valid(9)
            );
            // New records continue after the recovered LSN, so names never collide.
            assert_eq!(summary.stats.committed_lsn, 9);
            if damage.is_some() {
                assert!(dir.path().join("wal/damaged").read_dir().unwrap().count() == 1);
            }
        }
    }

    #[test]
    fn a_flush_cut_off_under_a_damaged_checkpoint_is_completed_from_the_wal() {
        use crate::layout::{HOUR_US, partition_of};
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let h = 1_764_000_000_000_000;
        let a = [
            Row::new("d", "m", h, 1.0),
            Row::new("d", "m", h + HOUR_US, 2.0),
        ];
        let b = [
            Row::new("d", "m", h + 1, 3.0),
            Row::new("d", "m", h + HOUR_US + 1, 4.0),
        ];
        let (mut wal, _) = Wal::open(&wal_dir).unwrap();
        wal.append(&a).unwrap();
        wal.append(&b).unwrap();
        drop(wal);
        let store = Store::open(&dir.path().join("telemetry")).unwrap();
        // The flush of LSNs 1..=2 renamed the first hour's file, then the process died; and
        // the checkpoint is damaged, so it is recovered as 2 from that file's name.
        store
            .write_flush(vec![a[0].clone(), b[0].clone()], 1, 2)
            .unwrap();
        fs::write(wal_dir.join("checkpoint"), "garbage").unwrap();
        for _ in 0..2 {
            let ingest = Ingest::start(config(dir.path()), Vec::new()).unwrap();
            ingest.shutdown().unwrap();
            let files = store.files().unwrap();
            assert_eq!(files.len(), 2);
            let second = files
                .iter()
                .find(|f| f.partition == partition_of(h + HOUR_US))
                .unwrap();
            assert_eq!((second.first_lsn, second.last_lsn), (1, 2));
            assert_eq!(
                crate::store::read_file(&second.path).unwrap(),
                vec![a[1].clone(), b[1].clone()]
            );
            let first = files
                .iter()
                .find(|f| f.partition == partition_of(h))
                .unwrap();
            assert_eq!(crate::store::read_file(&first.path).unwrap().len(), 2);
        }
    }

    #[test]
    fn an_unreadable_checkpoint_stops_the_start_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = flushed_data_set(dir.path());
        // Not a file: reading it fails with an I/O error, not with content to judge.
        fs::create_dir_all(dir.path().join("wal/checkpoint")).unwrap();
        let err = Ingest::start(config(dir.path()), Vec::new())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("wal/checkpoint"), "{err}");
        assert_eq!(store.files().unwrap().len(), 2);
    }

    #[test]
    fn files_beyond_a_valid_checkpoint_go_only_if_the_wal_replays_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = flushed_data_set(dir.path());
        // Checkpoint 5: the file of LSNs 6..=9 looks like an unfinished flush, but the WAL
        // does not hold those records (lost, restored from a backup…): it stays.
        wal::write_checkpoint(&dir.path().join("wal"), 5).unwrap();
        let ingest = Ingest::start(config(dir.path()), Vec::new()).unwrap();
        ingest.shutdown().unwrap();
        assert_eq!(store.files().unwrap().len(), 2);
    }
}
