//! The dead-letter store: `deadletter/YYYY-MM-DD.NNNNNN.jsonl`, one JSON object per rejected
//! message with the receive time, topic, reason, detail and the raw payload in base64.
//! Written and fsynced in the same group commit as the WAL, so a rejected message is as
//! durable as an accepted one.
//!
//! Bounded, because the input is whatever a device sends: each letter keeps at most
//! `max_payload_bytes` of its payload (and says how long it was), files rotate at
//! `max_file_bytes`, and when the files together would exceed `max_total_bytes` the oldest
//! files are removed and their letters counted as dropped. One device's junk can fill this
//! quota, never the disk that the WAL needs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::decode::Rejection;

/// Longest topic and detail kept in a letter (a topic is at most 64 KiB in MQTT).
const MAX_TEXT_BYTES: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Receive time, RFC 3339.
    pub time: String,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    pub payload_base64: String,
    /// Length of the payload as received (`payload_base64` may hold only its beginning).
    #[serde(default)]
    pub payload_bytes: usize,
    /// True when `payload_base64` holds only the first `max_payload_bytes` bytes.
    #[serde(default)]
    pub payload_truncated: bool,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl DeadLetter {
    /// The whole payload; see [`DeadLetter::capped`].
    pub fn new(received_us: i64, topic: &[u8], payload: &[u8], rejection: &Rejection) -> Self {
        Self::capped(received_us, topic, payload, rejection, usize::MAX)
    }

    /// A letter keeping at most `max_payload_bytes` of the payload.
    pub fn capped(
        received_us: i64,
        topic: &[u8],
        payload: &[u8],
        rejection: &Rejection,
        max_payload_bytes: usize,
    ) -> Self {
        let time = chrono::DateTime::from_timestamp_micros(received_us)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let kept = &payload[..payload.len().min(max_payload_bytes)];
        DeadLetter {
            time,
            topic: truncate_text(&String::from_utf8_lossy(topic), MAX_TEXT_BYTES),
            reason: rejection.reason.as_str().to_owned(),
            detail: truncate_text(&rejection.detail, MAX_TEXT_BYTES),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(kept),
            payload_bytes: payload.len(),
            payload_truncated: kept.len() < payload.len(),
        }
    }

    pub fn payload(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload_base64)
            .ok()
    }
}

/// Bounds on the dead-letter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterQuota {
    /// All dead-letter files together; the oldest files go first past it.
    pub max_total_bytes: u64,
    /// A file is closed and a new one started at this size.
    pub max_file_bytes: u64,
    /// Payload bytes kept per letter.
    pub max_payload_bytes: usize,
}

impl Default for DeadLetterQuota {
    /// 256 MiB in 16 MiB files, 4 KiB of payload per letter: enough to see what a device
    /// sends wrong, small next to the WAL and the data set.
    fn default() -> Self {
        Self {
            max_total_bytes: 256 * 1024 * 1024,
            max_file_bytes: 16 * 1024 * 1024,
            max_payload_bytes: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DeadLetterError {
    pub fn io(&self) -> &io::Error {
        match self {
            DeadLetterError::Io { source, .. } => source,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DeadLetterError + '_ {
    move |source| DeadLetterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A dead-letter file's place in the order: (day, sequence). The name before rotation,
/// `YYYY-MM-DD.jsonl`, is sequence 0 of its day.
fn file_key(path: &Path) -> Option<(String, u64)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".jsonl")?;
    let (day, seq) = match name.split_once('.') {
        Some((day, seq)) => (day, seq.parse().ok()?),
        None => (name, 0),
    };
    Some((day.to_owned(), seq))
}

struct OpenFile {
    day: String,
    seq: u64,
    path: PathBuf,
    file: File,
    bytes: u64,
}

pub struct DeadLetterWriter {
    dir: PathBuf,
    quota: DeadLetterQuota,
    open: Option<OpenFile>,
    dirty: bool,
    /// Closed files, oldest first, with their sizes.
    closed: Vec<(PathBuf, u64)>,
    total_bytes: u64,
    next_seq: u64,
    /// Letters removed with old files to stay within the quota.
    dropped: u64,
}

impl DeadLetterWriter {
    pub fn new(dir: &Path) -> Result<Self, DeadLetterError> {
        Self::with_quota(dir, DeadLetterQuota::default())
    }

    pub fn with_quota(dir: &Path, quota: DeadLetterQuota) -> Result<Self, DeadLetterError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut closed = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            if let Some(key) = file_key(&path) {
                let bytes = entry.metadata().map_err(io_err(&path))?.len();
                closed.push((key, path, bytes));
            }
        }
        closed.sort();
        let next_seq = closed
            .iter()
            .map(|((_, seq), _, _)| seq + 1)
            .max()
            .unwrap_or(1);
        let total_bytes = closed.iter().map(|(_, _, b)| b).sum();
        Ok(Self {
            dir: dir.to_owned(),
            quota,
            open: None,
            dirty: false,
            closed: closed.into_iter().map(|(_, p, b)| (p, b)).collect(),
            total_bytes,
            next_seq,
            dropped: 0,
        })
    }

    /// Bytes of all dead-letter files.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Letters removed with old files to stay within the quota, since this writer started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn quota(&self) -> DeadLetterQuota {
        self.quota
    }

    /// Appends a letter (durable after [`DeadLetterWriter::sync`]). Returns how many old
    /// letters were removed to make room.
    pub fn append(&mut self, letter: &DeadLetter) -> Result<u64, DeadLetterError> {
        let mut line =
            serde_json::to_vec(letter).map_err(|e| io_err(&self.dir)(io::Error::other(e)))?;
        line.push(b'\n');
        let len = line.len() as u64;
        let day = letter.time.get(..10).unwrap_or("unknown").to_owned();
        let rotate = self.open.as_ref().is_none_or(|f| {
            f.day != day || (f.bytes > 0 && f.bytes + len > self.quota.max_file_bytes)
        });
        if rotate {
            self.close()?;
        }
        let dropped_before = self.dropped;
        // Make room by removing whole closed files, oldest first; the open file is never
        // removed under the writer (a quota smaller than one file only delays this).
        while self.total_bytes + len > self.quota.max_total_bytes && !self.closed.is_empty() {
            let (path, bytes) = self.closed.remove(0);
            let letters = count_lines(&path);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.closed.insert(0, (path.clone(), bytes));
                    return Err(io_err(&path)(e));
                }
            }
            self.total_bytes -= bytes.min(self.total_bytes);
            self.dropped += letters;
            tracing::warn!(
                path = %path.display(),
                letters,
                quota_bytes = self.quota.max_total_bytes,
                "dead-letter quota reached: removed the oldest dead-letter file"
            );
        }
        if self.open.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.dir.join(format!("{day}.{seq:06}.jsonl"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.open = Some(OpenFile {
                day,
                seq,
                path,
                file,
                bytes: 0,
            });
        }
        if let Some(f) = &mut self.open {
            if let Err(e) = f.file.write_all(&line) {
                // Cut the partial line so the file stays one letter per line.
                let _ = f.file.set_len(f.bytes);
                return Err(io_err(&f.path)(e));
            }
            f.bytes += len;
            self.total_bytes += len;
        }
        self.dirty = true;
        Ok(self.dropped - dropped_before)
    }

    fn close(&mut self) -> Result<(), DeadLetterError> {
        self.sync()?;
        if let Some(f) = self.open.take() {
            debug_assert!(f.seq < self.next_seq);
            self.closed.push((f.path, f.bytes));
        }
        Ok(())
    }

    /// Makes appended letters durable; cheap when nothing was appended.
    pub fn sync(&mut self) -> Result<(), DeadLetterError> {
        if self.dirty
            && let Some(f) = &self.open
        {
            f.file.sync_data().map_err(io_err(&f.path))?;
        }
        self.dirty = false;
        Ok(())
    }
}

/// Letters in a file about to be removed (bounded by the file size limit).
fn count_lines(path: &Path) -> u64 {
    fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

/// Reads every dead letter under `dir` (tools and tests), oldest file first.
pub fn read_all(dir: &Path) -> io::Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    let mut paths: Vec<((String, u64), PathBuf)> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| file_key(&p).map(|k| (k, p)))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    paths.sort();
    for (_, path) in paths {
        for line in fs::read_to_string(&path)?.lines() {
            if let Ok(letter) = serde_json::from_str(line) {
                out.push(letter);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Reason;

    fn rejection() -> Rejection {
        Rejection {
            reason: Reason::MalformedJson,
            detail: "bad".to_owned(),
        }
    }

    fn letter(i: usize, payload: &[u8], cap: usize) -> DeadLetter {
        let t = 1_764_000_000_000_000 + i as i64;
        DeadLetter::capped(t, b"prognos/v1/d/telemetry", payload, &rejection(), cap)
    }

    #[test]
    fn payload_is_capped_and_its_length_kept() {
        let l = letter(0, &[b'x'; 10_000], 100);
        assert_eq!(l.payload().unwrap().len(), 100);
        assert_eq!(l.payload_bytes, 10_000);
        assert!(l.payload_truncated);
        let l = letter(0, b"short", 100);
        assert_eq!(l.payload().unwrap(), b"short");
        assert!(!l.payload_truncated);
        // Letters written before these fields existed still read.
        let old: DeadLetter = serde_json::from_str(
            r#"{"time":"t","topic":"a","reason":"r","detail":"d","payload_base64":""}"#,
        )
        .unwrap();
        assert_eq!(old.payload_bytes, 0);
    }

    #[test]
    fn quota_rotates_files_and_drops_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let quota = DeadLetterQuota {
            max_total_bytes: 20_000,
            max_file_bytes: 4_000,
            max_payload_bytes: 512,
        };
        let mut w = DeadLetterWriter::with_quota(dir.path(), quota).unwrap();
        let n = 400;
        let mut dropped = 0;
        for i in 0..n {
            // One device's junk: big payloads, capped to 512 bytes each.
            dropped += w.append(&letter(i, &[b'j'; 100_000], 512)).unwrap();
            w.sync().unwrap();
            assert!(
                w.total_bytes() <= quota.max_total_bytes,
                "{}",
                w.total_bytes()
            );
        }
        assert_eq!(dropped, w.dropped());
        assert!(dropped > 0);
        let on_disk: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, w.total_bytes());
        assert!(on_disk <= quota.max_total_bytes);
        for e in fs::read_dir(dir.path()).unwrap() {
            assert!(e.unwrap().metadata().unwrap().len() <= quota.max_file_bytes);
        }
        // What is left is the newest letters, in order, and every letter is accounted for.
        let left = read_all(dir.path()).unwrap();
        assert_eq!(left.len() as u64 + dropped, n as u64);
        let last = letter(n - 1, &[b'j'; 100_000], 512);
        assert_eq!(left.last(), Some(&last));
        let first_kept = letter(n - left.len(), &[b'j'; 100_000], 512);
        assert_eq!(left.first(), Some(&first_kept));

        // A restart sees the files it left and keeps to the same quota.
        drop(w);
        let mut w = DeadLetterWriter::with_quota(dir.path(), quota).unwrap();
        assert_eq!(w.total_bytes(), on_disk);
        w.append(&letter(n, b"after restart", 512)).unwrap();
        w.sync().unwrap();
        assert!(w.total_bytes() <= quota.max_total_bytes);
        assert_eq!(
            read_all(dir.path())
                .unwrap()
                .last()
                .unwrap()
                .payload()
                .unwrap(),
            b"after restart"
        );
    }
}
