//! The write-ahead log: every accepted point is here, fsynced, before anyone relies on it.
//!
//! Layout: `wal/{first_lsn:020}.wal` segments of records, and `wal/checkpoint` holding the
//! last LSN whose rows are durable in Parquet. A record is
//! `[payload len u32 LE][crc32 of payload u32 LE][payload]`, payload =
//! `[lsn u64][string count u32][(len u16, utf-8)…][row count u32][(device u32, metric u32,
//! ts_us i64, value f64)…]`, all little-endian; strings are the record's own table of device
//! and metric names. One record per group commit.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Row;

const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const MAX_RECORD_BYTES: u32 = 1 << 30;

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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What replay found.
pub struct Replay {
    /// Records after the checkpoint, in LSN order.
    pub records: Vec<(u64, Vec<Row>)>,
    pub checkpoint: u64,
    /// Bytes cut off the end of a segment because the record there was torn or corrupt.
    pub truncated_bytes: u64,
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
    /// Opens the log in `dir`, replaying what it holds after the checkpoint.
    pub fn open(dir: &Path) -> Result<(Wal, Replay), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let checkpoint = read_checkpoint(dir)?;
        let mut segments = list_segments(dir)?;
        let mut records = Vec::new();
        let mut truncated_bytes = 0;
        let mut last_lsn = checkpoint;
        for (_, path) in &segments {
            let (recs, valid_len, file_len) = read_segment(path)?;
            if valid_len < file_len {
                truncated_bytes += file_len - valid_len;
                tracing::warn!(
                    path = %path.display(),
                    valid_len,
                    file_len,
                    "WAL segment ends in a torn or corrupt record; truncating"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(valid_len).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
            }
            for (lsn, rows) in recs {
                last_lsn = last_lsn.max(lsn);
                if lsn > checkpoint {
                    records.push((lsn, rows));
                }
            }
        }
        records.sort_by_key(|(lsn, _)| *lsn);
        let next_lsn = last_lsn + 1;
        // Always start a fresh segment: the old ones stay read-only until checkpointed away.
        let active_path = segment_path(dir, next_lsn);
        segments.retain(|(_, p)| *p != active_path);
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io_err(&active_path))?;
        sync_dir(dir)?;
        let wal = Wal {
            dir: dir.to_owned(),
            active,
            active_path,
            active_bytes: 0,
            closed: segments,
            next_lsn,
            buf: Vec::new(),
        };
        Ok((
            wal,
            Replay {
                records,
                checkpoint,
                truncated_bytes,
            },
        ))
    }

    /// Appends one record and makes it durable (fdatasync). Returns its LSN.
    pub fn append(&mut self, rows: &[Row]) -> Result<u64, WalError> {
        let lsn = self.next_lsn;
        encode_record(lsn, rows, &mut self.buf);
        if self.buf.len() > MAX_RECORD_BYTES as usize {
            return Err(WalError::TooLarge(self.buf.len()));
        }
        let path = self.active_path.clone();
        self.active.write_all(&self.buf).map_err(io_err(&path))?;
        self.active.sync_data().map_err(io_err(&path))?;
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

/// Records that everything up to `lsn` is durable elsewhere (atomic replace).
pub fn write_checkpoint(dir: &Path, lsn: u64) -> Result<(), WalError> {
    let tmp = dir.join("checkpoint.tmp");
    let path = dir.join("checkpoint");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(lsn.to_string().as_bytes())
            .map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

pub fn read_checkpoint(dir: &Path) -> Result<u64, WalError> {
    let path = dir.join("checkpoint");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&path)(e)),
    }
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

type SegmentContents = (Vec<(u64, Vec<Row>)>, u64, u64);

/// Reads every intact record; returns them with the length of the intact prefix and the
/// file's length.
fn read_segment(path: &Path) -> Result<SegmentContents, WalError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut records = Vec::new();
    let mut valid = 0u64;
    let mut header = [0u8; 8];
    let mut names: HashMap<Vec<u8>, Arc<str>> = HashMap::new();
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io_err(path)(e)),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES || valid + 8 + u64::from(len) > file_len {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if reader.read_exact(&mut payload).is_err() {
            break;
        }
        if crc32fast::hash(&payload) != crc {
            break;
        }
        let Some(record) = decode_record(&payload, &mut names) else {
            break;
        };
        records.push(record);
        valid += 8 + u64::from(len);
    }
    Ok((records, valid, file_len))
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
        assert!(replay.truncated_bytes > 0);

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
}
