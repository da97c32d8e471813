//! The write-ahead log: every accepted point is here, fsynced, before anyone relies on it.
//!
//! Layout: `wal/{first_lsn:020}.wal` segments of records, and `wal/checkpoint` holding the
//! last LSN whose rows are durable in Parquet. A record is
//! `[payload len u32 LE][crc32 of payload u32 LE][payload]`, payload =
//! `[lsn u64][string count u32][(len u16, utf-8)…][row count u32][(device u32, metric u32,
//! ts_us i64, value f64)…]`, all little-endian; strings are the record's own table of device
//! and metric names. One record per group commit; LSNs in a segment increase from the number
//! in its name (contiguous, except where a damaged record was removed).
//!
//! Damage is expected, not exceptional: a torn tail after a power cut, a flipped bit in the
//! middle of a segment. Replay resynchronises on the record framing (the next offset whose
//! header, checksum and LSN all fit) so one bad record costs only itself; the damaged
//! segment is copied to `wal/damaged/` before it is rewritten without the bad bytes.
//!
//! The checkpoint is self-checking (`PROGNOS-CHECKPOINT 1 {lsn} {crc32:08x}`) and replaced
//! atomically; a checkpoint that does not verify is reported as damaged, never read as 0.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Row;

const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const MAX_RECORD_BYTES: u32 = 1 << 30;
const HEADER_BYTES: usize = 8;
/// The smallest payload: lsn, string count and row count.
const MIN_PAYLOAD_BYTES: usize = 16;
/// How far past the previous record's LSN the next one may be: more than a segment can
/// hold records (a rewritten segment has gaps where damaged records were), and small enough
/// that random bytes almost never pass for an LSN, so garbage is rarely checksummed.
const MAX_LSN_STEP: u64 = 1 << 32;
/// Copies of damaged segments kept in `wal/damaged/`, by count and by bytes (the newest is
/// always kept); the oldest go first.
const MAX_DAMAGED_COPIES: usize = 16;
const MAX_DAMAGED_BYTES: u64 = 512 * 1024 * 1024;
const CHECKPOINT_MAGIC: &str = "PROGNOS-CHECKPOINT 1";
/// A checkpoint is one short line; anything longer is not one (and is not read whole).
const MAX_CHECKPOINT_BYTES: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("record too large for the WAL: {0} bytes")]
    TooLarge(usize),
    /// A record stores names with a u16 length; a longer one cannot be written faithfully.
    #[error("device or metric name of {0} bytes is too long for the WAL (at most 65535)")]
    NameTooLong(usize),
    #[error("WAL checkpoint {path} is damaged ({detail})")]
    DamagedCheckpoint { path: PathBuf, detail: String },
}

impl WalError {
    /// The disk (or the quota) is full: worth waiting for, not a reason to stop.
    pub fn is_disk_full(&self) -> bool {
        match self {
            WalError::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }
}

/// ENOSPC or EDQUOT.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28 | 122))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A run of bytes in a segment that held no valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    /// Records lost in it, from the gap in LSNs around it; unknown for a segment's tail
    /// when no later segment tells where the LSNs went on.
    pub lost_records: Option<u64>,
}

/// What replay found.
pub struct Replay {
    /// Records after the checkpoint, in LSN order.
    pub records: Vec<(u64, Vec<Row>)>,
    pub checkpoint: u64,
    /// Bytes of segments that held no valid record (torn tails and corrupt records).
    pub damaged_bytes: u64,
    pub damaged: Vec<DamagedRange>,
    /// Where the damaged segments were copied before being rewritten.
    pub damaged_copies: Vec<PathBuf>,
    /// Records at or below the checkpoint still in the log, in LSN order; only filled by
    /// [`Wal::open_recovering`] (checking a recovered checkpoint against the data files).
    pub at_or_before_checkpoint: Vec<(u64, Vec<Row>)>,
}

/// The checkpoint file as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointRead {
    Valid(u64),
    Missing,
    /// Present but not a checkpoint: garbage, a torn write, a foreign file.
    Damaged {
        path: PathBuf,
        detail: String,
    },
}

pub struct Wal {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_bytes: u64,
    /// Closed segments: (first lsn, path), oldest first.
    closed: Vec<(u64, PathBuf)>,
    next_lsn: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens the log in `dir`, replaying what it holds after its checkpoint. A damaged
    /// checkpoint is an error here: the caller decides how to recover it
    /// ([`Wal::open_from`]).
    pub fn open(dir: &Path) -> Result<(Wal, Replay), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let checkpoint = match read_checkpoint(dir)? {
            CheckpointRead::Valid(lsn) => lsn,
            CheckpointRead::Missing => 0,
            CheckpointRead::Damaged { path, detail } => {
                return Err(WalError::DamagedCheckpoint { path, detail });
            }
        };
        Self::open_from(dir, checkpoint)
    }

    /// Opens the log in `dir`, replaying the records after `checkpoint`.
    pub fn open_from(dir: &Path, checkpoint: u64) -> Result<(Wal, Replay), WalError> {
        Self::open_inner(dir, checkpoint, false)
    }

    /// [`Wal::open_from`] that also returns the records at or below `checkpoint` the log still
    /// holds, for a checkpoint that was recovered rather than read.
    pub fn open_recovering(dir: &Path, checkpoint: u64) -> Result<(Wal, Replay), WalError> {
        Self::open_inner(dir, checkpoint, true)
    }

    fn open_inner(
        dir: &Path,
        checkpoint: u64,
        keep_before: bool,
    ) -> Result<(Wal, Replay), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut at_or_before_checkpoint = Vec::new();
        remove_tmp_files(dir)?;
        let mut segments = list_segments(dir)?;
        let mut records = Vec::new();
        let mut damaged = Vec::new();
        let mut damaged_copies = Vec::new();
        let mut damaged_bytes = 0;
        let mut last_lsn = checkpoint;
        let next_firsts: Vec<Option<u64>> = segments
            .iter()
            .skip(1)
            .map(|(f, _)| Some(*f))
            .chain([None])
            .collect();
        for ((first, path), next_first) in segments.iter().zip(next_firsts) {
            let bytes = fs::read(path).map_err(io_err(path))?;
            let scan = scan_segment(&bytes, *first);
            if !scan.damage.is_empty() {
                let lost: u64 = scan.damage.iter().map(|(_, n)| *n as u64).sum();
                damaged_bytes += lost;
                metrics::counter!("prognos_ingest_wal_damaged_bytes_total").increment(lost);
                metrics::counter!("prognos_ingest_wal_damaged_segments_total").increment(1);
                for &(offset, n) in &scan.damage {
                    let lost_records = lost_records(&scan, *first, next_first, offset, n);
                    if let Some(lost) = lost_records {
                        metrics::counter!("prognos_ingest_wal_lost_records_total").increment(lost);
                    }
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        bytes = n,
                        lost_records,
                        "WAL segment holds bytes that are no valid record; skipped them and \
                         resynchronised on the next valid record"
                    );
                    damaged.push(DamagedRange {
                        segment: path.clone(),
                        offset: offset as u64,
                        bytes: n as u64,
                        lost_records,
                    });
                }
                // Keep the evidence before touching the segment; if it cannot be kept, leave
                // the segment as it is (replay reads around the damage again next time).
                match keep_damaged_copy(dir, path, &bytes) {
                    Ok(copy) => {
                        tracing::warn!(
                            segment = %path.display(),
                            copy = %copy.display(),
                            records = scan.records.len(),
                            lost_bytes = lost,
                            "kept a copy of the damaged WAL segment; rewriting it with its valid records"
                        );
                        rewrite_segment(dir, path, &bytes, &scan.spans)?;
                        damaged_copies.push(copy);
                    }
                    Err(e) => tracing::error!(
                        segment = %path.display(),
                        error = %e,
                        "cannot keep a copy of the damaged WAL segment; leaving it untouched"
                    ),
                }
            }
            for (lsn, rows) in scan.records {
                last_lsn = last_lsn.max(lsn);
                if lsn > checkpoint {
                    records.push((lsn, rows));
                } else if keep_before {
                    at_or_before_checkpoint.push((lsn, rows));
                }
            }
        }
        records.sort_by_key(|(lsn, _)| *lsn);
        records.dedup_by_key(|(lsn, _)| *lsn);
        at_or_before_checkpoint.sort_by_key(|(lsn, _)| *lsn);
        at_or_before_checkpoint.dedup_by_key(|(lsn, _)| *lsn);
        let next_lsn = last_lsn + 1;
        // Always start a fresh segment: the old ones stay read-only until checkpointed away.
        let active_path = segment_path(dir, next_lsn);
        segments.retain(|(_, p)| *p != active_path);
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io_err(&active_path))?;
        // A segment of that name can only hold bytes that are no record (any record in it
        // would have raised `next_lsn` past it). They stay: replay reads past them, and a
        // failed append cuts back to this length, not to zero.
        let active_bytes = active.metadata().map_err(io_err(&active_path))?.len();
        sync_dir(dir)?;
        let wal = Wal {
            dir: dir.to_owned(),
            active,
            active_path,
            active_bytes,
            closed: segments,
            next_lsn,
            buf: Vec::new(),
        };
        Ok((
            wal,
            Replay {
                records,
                checkpoint,
                damaged_bytes,
                damaged,
                damaged_copies,
                at_or_before_checkpoint,
            },
        ))
    }

    /// Appends one record and makes it durable (fdatasync). Returns its LSN.
    ///
    /// On failure nothing of the record counts: what reached the file is cut off again, so
    /// a retry (the writer retries while the disk is full) does not follow a torn record.
    pub fn append(&mut self, rows: &[Row]) -> Result<u64, WalError> {
        // Refused, not cut: a cut name would replay as another name, or (cut inside a UTF-8
        // character) make the whole record unreadable and lose its other rows.
        if let Some(len) = rows
            .iter()
            .flat_map(|r| [r.device.len(), r.metric.len()])
            .find(|&len| len > u16::MAX as usize)
        {
            return Err(WalError::NameTooLong(len));
        }
        let lsn = self.next_lsn;
        encode_record(lsn, rows, &mut self.buf);
        if self.buf.len() > MAX_RECORD_BYTES as usize {
            return Err(WalError::TooLarge(self.buf.len()));
        }
        let written = self
            .active
            .write_all(&self.buf)
            .and_then(|()| self.active.sync_data());
        if let Err(e) = written {
            let cut = self
                .active
                .set_len(self.active_bytes)
                .and_then(|()| self.active.sync_data());
            if let Err(cut) = cut {
                // Replay resynchronises past a torn record, so this is survivable.
                tracing::warn!(path = %self.active_path.display(), error = %cut, "cannot cut a failed WAL append off the segment");
            }
            return Err(io_err(&self.active_path)(e));
        }
        self.active_bytes += self.buf.len() as u64;
        self.next_lsn += 1;
        if self.active_bytes >= SEGMENT_BYTES {
            self.roll()?;
        }
        Ok(lsn)
    }

    fn roll(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.next_lsn);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut self.active_path, path);
        let first = segment_first_lsn(&old).unwrap_or(0);
        self.closed.push((first, old));
        self.active = file;
        self.active_bytes = 0;
        Ok(())
    }

    /// Deletes closed segments whose every record is at or below `checkpoint`.
    pub fn remove_checkpointed(&mut self, checkpoint: u64) -> Result<(), WalError> {
        let active_first = segment_first_lsn(&self.active_path).unwrap_or(u64::MAX);
        let mut keep = Vec::new();
        let closed = std::mem::take(&mut self.closed);
        for (i, (first, path)) in closed.iter().enumerate() {
            let next_first = closed.get(i + 1).map_or(active_first, |(f, _)| *f);
            if next_first.saturating_sub(1) <= checkpoint {
                fs::remove_file(path).map_err(io_err(path))?;
            } else {
                keep.push((*first, path.clone()));
            }
        }
        self.closed = keep;
        Ok(())
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }
}

/// Records that everything up to `lsn` is durable elsewhere: written to a temporary file,
/// fsynced, renamed over the old one, directory fsynced, so a crash leaves the old or the new
/// checkpoint and never a mix.
pub fn write_checkpoint(dir: &Path, lsn: u64) -> Result<(), WalError> {
    let tmp = dir.join("checkpoint.tmp");
    let path = dir.join("checkpoint");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(render_checkpoint(lsn).as_bytes())
            .map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn checkpoint_body(lsn: u64) -> String {
    format!("{CHECKPOINT_MAGIC} {lsn}")
}

fn render_checkpoint(lsn: u64) -> String {
    let body = checkpoint_body(lsn);
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body} {crc:08x}\n")
}

/// Parses a checkpoint file's text: `Ok(lsn)` or why it is not a checkpoint.
fn parse_checkpoint(text: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_owned())?;
    let line = text.trim_end_matches('\n');
    if let Some(rest) = line.strip_prefix(CHECKPOINT_MAGIC) {
        let mut fields = rest.split(' ').skip(1);
        let (Some(lsn), Some(crc), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err("wrong number of fields".to_owned());
        };
        let lsn: u64 = lsn.parse().map_err(|_| "LSN is not a number".to_owned())?;
        let crc = u32::from_str_radix(crc, 16).map_err(|_| "checksum is not hex".to_owned())?;
        if crc32fast::hash(checkpoint_body(lsn).as_bytes()) != crc
            || line != render_checkpoint(lsn).trim_end()
        {
            return Err("checksum mismatch".to_owned());
        }
        return Ok(lsn);
    }
    // Before the checksummed format: the bare decimal LSN. Accepted only when it is exactly
    // that (digits, one optional newline), so a truncated or overwritten file is not.
    if !line.is_empty() && line.len() <= 20 && line.bytes().all(|b| b.is_ascii_digit()) {
        return line.parse().map_err(|_| "LSN out of range".to_owned());
    }
    Err("no checkpoint header".to_owned())
}

/// Reads `dir/checkpoint`. I/O errors other than absence are errors (the caller must not
/// guess); content that does not verify is `Damaged`, never a number.
pub fn read_checkpoint(dir: &Path) -> Result<CheckpointRead, WalError> {
    let path = dir.join("checkpoint");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CheckpointRead::Missing),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut text = Vec::new();
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(io_err(&path))?;
    if text.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Ok(CheckpointRead::Damaged {
            path,
            detail: "too long".to_owned(),
        });
    }
    Ok(match parse_checkpoint(&text) {
        Ok(lsn) => CheckpointRead::Valid(lsn),
        Err(detail) => CheckpointRead::Damaged { path, detail },
    })
}

/// Copies a damaged checkpoint to `wal/damaged/` (for whoever investigates) before it is
/// replaced by a recovered one.
pub fn keep_damaged_checkpoint(dir: &Path) -> Result<PathBuf, WalError> {
    let path = dir.join("checkpoint");
    let bytes = {
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        // A checkpoint is tiny; a huge file there is kept only in part.
        file.take(1 << 20)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        bytes
    };
    keep_damaged_copy(dir, &path, &bytes)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

fn segment_first_lsn(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if let Some(first) = segment_first_lsn(&path) {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Every valid record of a segment, with where it lies, and the byte ranges that held none.
pub(crate) struct SegmentScan {
    pub records: Vec<(u64, Vec<Row>)>,
    /// Byte range of each record in `records`.
    pub spans: Vec<(usize, usize)>,
    /// (offset, length) of each damaged run.
    pub damage: Vec<(usize, usize)>,
}

/// The LSN stored in a candidate record at `pos`, if its header frames a payload that fits.
fn framed_lsn(bytes: &[u8], pos: usize) -> Option<(usize, u32, u64)> {
    let header = bytes.get(pos..pos.checked_add(HEADER_BYTES + 8)?)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let n = len as usize;
    if len > MAX_RECORD_BYTES || n < MIN_PAYLOAD_BYTES {
        return None;
    }
    let end = pos.checked_add(HEADER_BYTES)?.checked_add(n)?;
    if end > bytes.len() {
        return None;
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&header[8..16]);
    Some((end, crc, u64::from_le_bytes(lsn)))
}

/// Reads a segment's bytes. Records are valid when their framing fits, their checksum holds,
/// they decode completely and their LSN follows the previous one. At a bad record the scan
/// moves on byte by byte until a record is valid again, and records the skipped run.
///
/// Scanning is cheap on garbage: the checksum is computed only where the length fits the
/// file and the LSN lies in the window after the previous record's (`MAX_LSN_STEP`), so a
/// random position almost never gets that far.
pub(crate) fn scan_segment(bytes: &[u8], first_lsn: u64) -> SegmentScan {
    let mut out = SegmentScan {
        records: Vec::new(),
        spans: Vec::new(),
        damage: Vec::new(),
    };
    let mut names: HashMap<Vec<u8>, Arc<str>> = HashMap::new();
    let mut prev = first_lsn.saturating_sub(1);
    let mut damage_start: Option<usize> = None;
    let mut pos = 0usize;
    while pos < bytes.len() {
        let max_lsn = prev.saturating_add(MAX_LSN_STEP);
        let record = framed_lsn(bytes, pos)
            .filter(|&(_, _, lsn)| lsn > prev && lsn <= max_lsn)
            .and_then(|(end, crc, _)| {
                let payload = &bytes[pos + HEADER_BYTES..end];
                if crc32fast::hash(payload) != crc {
                    return None;
                }
                decode_record(payload, &mut names).map(|r| (end, r))
            });
        match record {
            Some((end, (lsn, rows))) => {
                if let Some(start) = damage_start.take() {
                    out.damage.push((start, pos - start));
                }
                out.records.push((lsn, rows));
                out.spans.push((pos, end));
                prev = lsn;
                pos = end;
            }
            None => {
                damage_start.get_or_insert(pos);
                pos += 1;
            }
        }
    }
    if let Some(start) = damage_start {
        out.damage.push((start, bytes.len() - start));
    }
    out
}

/// Records lost in the damaged run at `offset..offset + len`: the LSN gap between the valid
/// records around it (LSNs are contiguous when written). A run at the end of a segment is
/// bounded by the next segment's first LSN, if there is one.
fn lost_records(
    scan: &SegmentScan,
    first_lsn: u64,
    next_first: Option<u64>,
    offset: usize,
    len: usize,
) -> Option<u64> {
    let before = scan
        .spans
        .iter()
        .zip(&scan.records)
        .rev()
        .find(|((_, end), _)| *end <= offset)
        .map_or(first_lsn.saturating_sub(1), |(_, (lsn, _))| *lsn);
    let after = scan
        .spans
        .iter()
        .zip(&scan.records)
        .find(|((start, _), _)| *start >= offset + len)
        .map(|(_, (lsn, _))| *lsn)
        .or(next_first)?;
    Some(after.saturating_sub(before).saturating_sub(1))
}

/// Writes `bytes` (a damaged segment, or a damaged checkpoint) to
/// `wal/damaged/{unix_secs}-{name}.damaged`, fsynced, and keeps at most
/// `MAX_DAMAGED_COPIES` copies there.
fn keep_damaged_copy(dir: &Path, original: &Path, bytes: &[u8]) -> Result<PathBuf, WalError> {
    let damaged = dir.join("damaged");
    fs::create_dir_all(&damaged).map_err(io_err(&damaged))?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = original
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("unknown");
    let mut copy = damaged.join(format!("{secs:012}-{name}.damaged"));
    let mut n = 1;
    while copy.exists() {
        copy = damaged.join(format!("{secs:012}-{name}.{n}.damaged"));
        n += 1;
    }
    {
        let mut f = File::create(&copy).map_err(io_err(&copy))?;
        f.write_all(bytes).map_err(io_err(&copy))?;
        f.sync_all().map_err(io_err(&copy))?;
    }
    sync_dir(&damaged)?;
    // Bounded: a disk that keeps corrupting must not fill up with copies.
    let mut copies: Vec<PathBuf> = fs::read_dir(&damaged)
        .map_err(io_err(&damaged))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "damaged"))
        .collect();
    copies.sort();
    let size = |p: &PathBuf| fs::metadata(p).map_or(0, |m| m.len());
    let mut total: u64 = copies.iter().map(size).sum();
    while copies.len() > MAX_DAMAGED_COPIES || (total > MAX_DAMAGED_BYTES && copies.len() > 1) {
        let oldest = copies.remove(0);
        total = total.saturating_sub(size(&oldest));
        tracing::warn!(path = %oldest.display(), "removing the oldest copy of a damaged WAL file");
        fs::remove_file(&oldest).map_err(io_err(&oldest))?;
    }
    Ok(copy)
}

/// Replaces a segment by its valid records only (temporary file, fsync, rename), so the
/// damage is reported once and the segment reads cleanly from then on.
fn rewrite_segment(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    spans: &[(usize, usize)],
) -> Result<(), WalError> {
    let tmp = path.with_extension("wal.rewrite.tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        for &(start, end) in spans {
            f.write_all(&bytes[start..end]).map_err(io_err(&tmp))?;
        }
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(dir)
}

/// Removes what an interrupted checkpoint write or segment rewrite left.
fn remove_tmp_files(dir: &Path) -> Result<(), WalError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn encode_record(lsn: u64, rows: &[Row], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[0u8; 8]);
    buf.extend_from_slice(&lsn.to_le_bytes());
    let mut table: HashMap<&str, u32> = HashMap::new();
    let mut strings: Vec<&str> = Vec::new();
    let mut ids: Vec<(u32, u32)> = Vec::with_capacity(rows.len());
    for row in rows {
        let mut pair = [0u32; 2];
        for (slot, name) in pair.iter_mut().zip([&*row.device, &*row.metric]) {
            *slot = *table.entry(name).or_insert_with(|| {
                strings.push(name);
                (strings.len() - 1) as u32
            });
        }
        ids.push((pair[0], pair[1]));
    }
    buf.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    for s in &strings {
        // `append` refuses longer names; the cut is only a guard for other callers.
        let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        buf.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        buf.extend_from_slice(bytes);
    }
    buf.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for (row, (d, m)) in rows.iter().zip(ids) {
        buf.extend_from_slice(&d.to_le_bytes());
        buf.extend_from_slice(&m.to_le_bytes());
        buf.extend_from_slice(&row.ts_us.to_le_bytes());
        buf.extend_from_slice(&row.value.to_le_bytes());
    }
    let payload_len = (buf.len() - 8) as u32;
    let crc = crc32fast::hash(&buf[8..]);
    buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn decode_record(
    payload: &[u8],
    names: &mut HashMap<Vec<u8>, Arc<str>>,
) -> Option<(u64, Vec<Row>)> {
    let mut cur = Cursor {
        buf: payload,
        pos: 0,
    };
    let lsn = u64::from_le_bytes(cur.take()?);
    let n_strings = u32::from_le_bytes(cur.take()?) as usize;
    let mut strings = Vec::with_capacity(n_strings.min(1 << 16));
    for _ in 0..n_strings {
        let len = u16::from_le_bytes(cur.take()?) as usize;
        let bytes = cur.slice(len)?;
        let name = match names.get(bytes) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(std::str::from_utf8(bytes).ok()?);
                names.insert(bytes.to_vec(), name.clone());
                name
            }
        };
        strings.push(name);
    }
    let n_rows = u32::from_le_bytes(cur.take()?) as usize;
    let mut rows = Vec::with_capacity(n_rows.min(1 << 20));
    for _ in 0..n_rows {
        let d = u32::from_le_bytes(cur.take()?) as usize;
        let m = u32::from_le_bytes(cur.take()?) as usize;
        let ts_us = i64::from_le_bytes(cur.take()?);
        let value = f64::from_le_bytes(cur.take()?);
        rows.push(Row {
            device: strings.get(d)?.clone(),
            metric: strings.get(m)?.clone(),
            ts_us,
            value,
        });
    }
    (cur.pos == payload.len()).then_some((lsn, rows))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn slice(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.slice(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(device: &str, metric: &str, ts_us: i64, value: f64) -> Row {
        Row::new(device, metric, ts_us, value)
    }

    #[test]
    fn records_survive_reopen_and_checkpoint_hides_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, replay) = Wal::open(dir.path()).unwrap();
        assert!(replay.records.is_empty());
        let a = wal
            .append(&[row("d1", "m", 1, 1.5), row("d2", "m", 2, -0.0)])
            .unwrap();
        let b = wal.append(&[row("d1", "x", 3, f64::MAX)]).unwrap();
        assert_eq!((a, b), (1, 2));
        drop(wal);

        let (wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 2);
        assert_eq!(replay.records[0].1[1], row("d2", "m", 2, -0.0));
        assert_eq!(replay.records[1].1[0].value, f64::MAX);
        assert_eq!(wal.next_lsn(), 3);
        drop(wal);

        write_checkpoint(dir.path(), 1).unwrap();
        let (_, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 1);
        assert_eq!(replay.records[0].0, 2);
    }

    #[test]
    fn torn_tail_is_truncated_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[row("d", "m", 1, 1.0)]).unwrap();
        wal.append(&[row("d", "m", 2, 2.0)]).unwrap();
        let path = wal.active_path.clone();
        drop(wal);
        // Chop the last record in half, as a crash mid-write would.
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let (_, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 1);
        assert!(replay.damaged_bytes > 0);
        // Record 2 was cut off the end and no later segment says how many followed it.
        assert_eq!(replay.damaged[0].lost_records, None);

        // A flipped bit fails the checksum the same way.
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[row("d", "m", 3, 3.0)]).unwrap();
        let path = wal.active_path.clone();
        drop(wal);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let (_, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 1);
    }

    #[test]
    fn a_corrupt_record_costs_only_itself_and_the_segment_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        for i in 0..10 {
            wal.append(&[row("d", "m", i, i as f64), row("e", "n", i, 0.5)])
                .unwrap();
        }
        let path = wal.active_path.clone();
        drop(wal);
        let original = fs::read(&path).unwrap();
        let scan = scan_segment(&original, 1);
        assert!(scan.damage.is_empty());
        // Flip bytes in the middle of the fifth record's payload.
        let (start, end) = scan.spans[4];
        let mut bytes = original.clone();
        for b in &mut bytes[start + 12..(start + 20).min(end)] {
            *b ^= 0xA5;
        }
        fs::write(&path, &bytes).unwrap();

        let (wal, replay) = Wal::open(dir.path()).unwrap();
        let lsns: Vec<u64> = replay.records.iter().map(|r| r.0).collect();
        assert_eq!(lsns, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
        assert_eq!(replay.damaged_bytes, (end - start) as u64);
        assert_eq!(replay.damaged.len(), 1);
        assert_eq!(replay.damaged[0].offset, start as u64);
        assert_eq!(replay.damaged[0].lost_records, Some(1));
        assert_eq!(wal.next_lsn(), 11);
        // The damaged original is kept byte for byte; the segment now reads cleanly.
        assert_eq!(replay.damaged_copies.len(), 1);
        assert_eq!(fs::read(&replay.damaged_copies[0]).unwrap(), bytes);
        drop(wal);
        let (_, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 9);
        assert_eq!(replay.damaged_bytes, 0);
    }

    #[test]
    fn failed_append_leaves_no_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[row("d", "m", 1, 1.0)]).unwrap();
        // Simulate a partial write that failed: bytes beyond `active_bytes`.
        wal.active.write_all(b"partial").unwrap();
        wal.active.set_len(wal.active_bytes).unwrap();
        wal.append(&[row("d", "m", 2, 2.0)]).unwrap();
        drop(wal);
        let (_, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records.len(), 2);
        assert_eq!(replay.damaged_bytes, 0);
    }

    /// Found while writing the WAL properties: a name longer than the u16 length field was
    /// cut silently, so the row replayed under another name, or (cut inside a UTF-8
    /// character) the whole record failed to decode and its other rows were lost.
    #[test]
    fn a_name_too_long_for_the_record_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        // 65534 ASCII bytes then 'é' (2 bytes): the cut at 65535 falls inside the character.
        let long = format!("{}é", "m".repeat(65_534));
        let err = wal
            .append(&[row("d", "ok", 1, 1.0), row("d", &long, 2, 2.0)])
            .unwrap_err();
        assert!(matches!(err, WalError::NameTooLong(65_536)), "{err}");
        let exact = "n".repeat(65_535);
        assert_eq!(wal.append(&[row("d", &exact, 3, 3.0)]).unwrap(), 1);
        drop(wal);
        let (_, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.damaged_bytes, 0);
        assert_eq!(replay.records.len(), 1);
        assert_eq!(&*replay.records[0].1[0].metric, exact);
    }

    #[test]
    fn checkpoint_verifies_itself() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_checkpoint(dir.path()).unwrap(),
            CheckpointRead::Missing
        );
        write_checkpoint(dir.path(), 42).unwrap();
        assert_eq!(
            read_checkpoint(dir.path()).unwrap(),
            CheckpointRead::Valid(42)
        );
        let path = dir.path().join("checkpoint");
        let good = fs::read_to_string(&path).unwrap();
        // The format before checksums still reads.
        fs::write(&path, "17").unwrap();
        assert_eq!(
            read_checkpoint(dir.path()).unwrap(),
            CheckpointRead::Valid(17)
        );
        let damaged = [
            "garbage".to_owned(),
            String::new(),
            good[..good.len() - 3].to_owned(),
            good.replace("42", "43"),
            "x".repeat(1000),
            "12 34".to_owned(),
        ];
        for text in damaged {
            fs::write(&path, &text).unwrap();
            assert!(
                matches!(
                    read_checkpoint(dir.path()).unwrap(),
                    CheckpointRead::Damaged { .. }
                ),
                "{text:?}"
            );
            assert!(matches!(
                Wal::open(dir.path()),
                Err(WalError::DamagedCheckpoint { .. })
            ));
        }
        let copy = keep_damaged_checkpoint(dir.path()).unwrap();
        assert!(copy.starts_with(dir.path().join("damaged")));
    }

    /// How long replay takes on a healthy segment, on one with a damaged stretch, and on
    /// pure garbage (the resync's worst case). Prints; asserts only that it finishes.
    #[test]
    #[ignore = "measurement: cargo test -p prognos-ingest -- --ignored scan_speed --nocapture"]
    fn scan_speed() {
        let mut bytes = Vec::new();
        let mut buf = Vec::new();
        let rows: Vec<Row> = (0..100).map(|i| row("dev", "m", i, i as f64)).collect();
        let mut lsn = 1;
        while bytes.len() < 64 << 20 {
            encode_record(lsn, &rows, &mut buf);
            bytes.extend_from_slice(&buf);
            lsn += 1;
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut garbage = |b: &mut [u8]| {
            for byte in b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
        };
        let time = |label: &str, bytes: &[u8]| {
            let t = std::time::Instant::now();
            let scan = scan_segment(bytes, 1);
            println!(
                "{label}: {} MiB, {} records, {} damaged bytes in {:?}",
                bytes.len() >> 20,
                scan.records.len(),
                scan.damage.iter().map(|d| d.1).sum::<usize>(),
                t.elapsed()
            );
        };
        time("healthy", &bytes);
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        garbage(&mut damaged[mid..mid + (1 << 20)]);
        time("1 MiB of garbage in the middle", &damaged);
        let mut junk = vec![0u8; 64 << 20];
        garbage(&mut junk);
        time("all garbage", &junk);
    }

    mod damage {
        use super::*;
        use proptest::prelude::*;

        fn records() -> impl Strategy<Value = Vec<Vec<Row>>> {
            let row = (0u8..3, 0u8..3, any::<i64>(), any::<i32>()).prop_map(|(d, m, ts, v)| {
                row(&format!("dev-{d}"), &format!("m{m}"), ts, f64::from(v))
            });
            prop::collection::vec(prop::collection::vec(row, 0..6), 1..24)
        }

        #[derive(Debug, Clone)]
        enum Damage {
            Flip { at: usize, bit: u8 },
            Truncate { at: usize },
            Garbage { at: usize, bytes: Vec<u8> },
        }

        fn damage() -> impl Strategy<Value = Vec<Damage>> {
            let one = prop_oneof![
                4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
                1 => any::<usize>().prop_map(|at| Damage::Truncate { at }),
                1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
                    .prop_map(|(at, bytes)| Damage::Garbage { at, bytes }),
            ];
            prop::collection::vec(one, 0..5)
        }

        proptest! {
            // `PROPTEST_CASES` overrides the count (a longer search on demand).
            #![proptest_config(ProptestConfig {
                cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
                ..ProptestConfig::default()
            })]

            /// Replay never panics, never yields a record that was not written, and yields
            /// every record whose bytes the damage did not touch.
            #[test]
            fn replay_survives_truncation_and_bit_flips(batches in records(), damage in damage(), first in 1u64..1_000_000) {
                let mut bytes = Vec::new();
                let mut spans = Vec::new();
                let mut buf = Vec::new();
                for (i, rows) in batches.iter().enumerate() {
                    encode_record(first + i as u64, rows, &mut buf);
                    spans.push((bytes.len(), bytes.len() + buf.len()));
                    bytes.extend_from_slice(&buf);
                }
                // Which original bytes survive untouched, in their original place.
                let mut touched = vec![false; bytes.len()];
                let mut cut = bytes.len();
                for d in &damage {
                    match d {
                        Damage::Flip { at, bit } if !bytes.is_empty() => {
                            let at = at % bytes.len();
                            bytes[at] ^= 1 << bit;
                            touched[at] = true;
                        }
                        Damage::Truncate { at } => cut = cut.min(at % (bytes.len() + 1)),
                        Damage::Garbage { at, bytes: junk } if !bytes.is_empty() => {
                            // Overwrite in place (a bad sector), not insert.
                            let at = at % bytes.len();
                            let end = (at + junk.len()).min(bytes.len());
                            bytes[at..end].copy_from_slice(&junk[..end - at]);
                            touched[at..end].iter_mut().for_each(|t| *t = true);
                        }
                        _ => {}
                    }
                }
                bytes.truncate(cut);
                let scan = scan_segment(&bytes, first);

                let mut seen = std::collections::HashSet::new();
                for ((lsn, rows), &(start, end)) in scan.records.iter().zip(&scan.spans) {
                    let i = lsn.checked_sub(first).expect("LSN before the segment") as usize;
                    prop_assert!(seen.insert(*lsn), "LSN {} twice", lsn);
                    prop_assert!(i < batches.len(), "LSN {} was never written", lsn);
                    // Checksum of what was yielded holds on the bytes it came from.
                    let len = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap());
                    let crc = u32::from_le_bytes(bytes[start + 4..start + 8].try_into().unwrap());
                    prop_assert_eq!(end - start, 8 + len as usize);
                    prop_assert_eq!(crc32fast::hash(&bytes[start + 8..end]), crc);
                    prop_assert_eq!(rows, &batches[i]);
                }
                for (i, &(start, end)) in spans.iter().enumerate() {
                    let intact = end <= cut && !touched[start..end].iter().any(|t| *t);
                    if intact {
                        prop_assert!(seen.contains(&(first + i as u64)), "intact record {} lost", i);
                    }
                }
                // Accounting: every byte is a record or damage.
                let accounted: usize = scan.spans.iter().map(|(s, e)| e - s).sum::<usize>()
                    + scan.damage.iter().map(|(_, n)| n).sum::<usize>();
                prop_assert_eq!(accounted, bytes.len());
            }
        }
    }
}
