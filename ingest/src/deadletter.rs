//! The dead-letter store: `deadletter/YYYY-MM-DD.jsonl`, one JSON object per rejected
//! message with the receive time, topic, reason, detail and the raw payload in base64.
//! Written and fsynced in the same group commit as the WAL, so a rejected message is as
//! durable as an accepted one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::decode::Rejection;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Receive time, RFC 3339.
    pub time: String,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    pub payload_base64: String,
}

impl DeadLetter {
    pub fn new(received_us: i64, topic: &[u8], payload: &[u8], rejection: &Rejection) -> Self {
        let time = chrono::DateTime::from_timestamp_micros(received_us)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        DeadLetter {
            time,
            topic: String::from_utf8_lossy(topic).into_owned(),
            reason: rejection.reason.as_str().to_owned(),
            detail: rejection.detail.clone(),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(payload),
        }
    }

    pub fn payload(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload_base64)
            .ok()
    }
}

pub struct DeadLetterWriter {
    dir: PathBuf,
    open: Option<(String, File)>,
    dirty: bool,
}

impl DeadLetterWriter {
    pub fn new(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            open: None,
            dirty: false,
        })
    }

    pub fn append(&mut self, letter: &DeadLetter) -> io::Result<()> {
        let day = letter.time.get(..10).unwrap_or("unknown").to_owned();
        if self.open.as_ref().is_none_or(|(d, _)| *d != day) {
            self.sync()?;
            let path = self.dir.join(format!("{day}.jsonl"));
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            self.open = Some((day, file));
        }
        let mut line = serde_json::to_vec(letter).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Some((_, file)) = &mut self.open {
            file.write_all(&line)?;
        }
        self.dirty = true;
        Ok(())
    }

    /// Makes appended letters durable; cheap when nothing was appended.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty
            && let Some((_, file)) = &self.open
        {
            file.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }
}

/// Reads every dead letter under `dir` (tools and tests).
pub fn read_all(dir: &Path) -> io::Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    paths.sort();
    for path in paths {
        for line in fs::read_to_string(&path)?.lines() {
            if let Ok(letter) = serde_json::from_str(line) {
                out.push(letter);
            }
        }
    }
    Ok(out)
}
