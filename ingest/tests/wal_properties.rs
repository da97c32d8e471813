//! Property tests of the WAL through its public API, on real files: several segments (the
//! log starts a new one at every open), a checkpoint, then random truncation, bit flips and
//! overwritten runs in the segment files and the checkpoint. Replay must never panic, never
//! return a record that was not written, and return every record the damage did not touch;
//! the log must go on working afterwards. (`wal.rs` has the byte-level property of the scan
//! itself; this one covers opening, rewriting damaged segments and appending after them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use prognos_ingest::Row;
use prognos_ingest::wal::{self, CheckpointRead, Wal, WalError};
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop_oneof![3 => "dev-[0-3]", 1 => "\\PC{1,12}"],
        prop_oneof![3 => "m[0-3]", 1 => "\\PC{1,12}"],
        any::<i64>(),
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
    )
        .prop_map(|(d, m, ts, v)| Row::new(&d, &m, ts, v))
}

/// Batches, each with whether the log is closed and reopened after it (a new segment).
fn batches() -> impl Strategy<Value = Vec<(Vec<Row>, bool)>> {
    prop::collection::vec(
        (
            prop::collection::vec(row(), 0..5),
            prop::bool::weighted(0.25),
        ),
        1..20,
    )
}

#[derive(Debug, Clone)]
enum Damage {
    Flip {
        file: usize,
        at: usize,
        bit: u8,
    },
    Truncate {
        file: usize,
        at: usize,
    },
    Overwrite {
        file: usize,
        at: usize,
        bytes: Vec<u8>,
    },
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        4 => (any::<usize>(), any::<usize>(), 0u8..8)
            .prop_map(|(file, at, bit)| Damage::Flip { file, at, bit }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(file, at)| Damage::Truncate { file, at }),
        1 => (any::<usize>(), any::<usize>(), prop::collection::vec(any::<u8>(), 1..48))
            .prop_map(|(file, at, bytes)| Damage::Overwrite { file, at, bytes }),
    ];
    prop::collection::vec(one, 0..6)
}

#[derive(Debug, Clone)]
enum CheckpointDamage {
    None,
    Flips(Vec<(usize, u8)>),
    Truncate(usize),
    Replace(Vec<u8>),
}

fn checkpoint_damage() -> impl Strategy<Value = CheckpointDamage> {
    prop_oneof![
        6 => Just(CheckpointDamage::None),
        2 => prop::collection::vec((any::<usize>(), 0u8..8), 1..4).prop_map(CheckpointDamage::Flips),
        1 => any::<usize>().prop_map(CheckpointDamage::Truncate),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(CheckpointDamage::Replace),
    ]
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// (lsn, start, end) of each record of an undamaged segment, from the framing.
fn spans(bytes: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let lsn = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap());
        out.push((lsn, pos, pos + 8 + len));
        pos += 8 + len;
    }
    out
}

/// What a damaged checkpoint may read as: the LSN written, or damage; never another LSN.
fn check_checkpoint(read: &CheckpointRead, written: u64) -> Result<(), TestCaseError> {
    match read {
        CheckpointRead::Valid(lsn) => prop_assert_eq!(*lsn, written),
        CheckpointRead::Damaged { detail, .. } => prop_assert!(!detail.is_empty()),
        CheckpointRead::Missing => prop_assert!(false, "checkpoint file vanished"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn replay_after_damage_to_segments_and_checkpoint(
        batches in batches(),
        checkpoint_at in any::<prop::sample::Index>(),
        damage in damage(),
        ckpt_damage in checkpoint_damage(),
        after in prop::collection::vec(row(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let mut written: BTreeMap<u64, Vec<Row>> = BTreeMap::new();
        {
            let (mut log, replay) = Wal::open(&wal_dir).unwrap();
            prop_assert!(replay.records.is_empty());
            for (rows, reopen) in &batches {
                let lsn = log.append(rows).unwrap();
                prop_assert!(written.insert(lsn, rows.clone()).is_none());
                if *reopen {
                    drop(log);
                    let (l, replay) = Wal::open(&wal_dir).unwrap();
                    prop_assert_eq!(replay.records.len(), written.len());
                    log = l;
                }
            }
        }
        // A checkpoint somewhere in 0..=last (0: none written).
        let checkpoint = checkpoint_at.index(written.len() + 1) as u64;
        if checkpoint > 0 {
            wal::write_checkpoint(&wal_dir, checkpoint).unwrap();
        }

        // Where each record lies, then the damage, tracking which bytes it touched.
        let files = segments(&wal_dir);
        let mut contents: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
        let layout: Vec<Vec<(u64, usize, usize)>> = contents.iter().map(|b| spans(b)).collect();
        let mut touched: Vec<Vec<bool>> = contents.iter().map(|b| vec![false; b.len()]).collect();
        let mut cut: Vec<usize> = contents.iter().map(Vec::len).collect();
        for d in &damage {
            let (Damage::Flip { file, .. } | Damage::Truncate { file, .. } | Damage::Overwrite { file, .. }) = d;
            let f = file % files.len();
            let bytes = &mut contents[f];
            match d {
                Damage::Flip { at, bit, .. } if !bytes.is_empty() => {
                    let at = at % bytes.len();
                    bytes[at] ^= 1 << bit;
                    touched[f][at] = true;
                }
                Damage::Truncate { at, .. } => cut[f] = cut[f].min(at % (bytes.len() + 1)),
                Damage::Overwrite { at, bytes: junk, .. } if !bytes.is_empty() => {
                    let at = at % bytes.len();
                    let end = (at + junk.len()).min(bytes.len());
                    bytes[at..end].copy_from_slice(&junk[..end - at]);
                    touched[f][at..end].iter_mut().for_each(|t| *t = true);
                }
                _ => {}
            }
        }
        for (f, path) in files.iter().enumerate() {
            contents[f].truncate(cut[f]);
            fs::write(path, &contents[f]).unwrap();
        }
        let ckpt_path = wal_dir.join("checkpoint");
        let mut ckpt_damaged = false;
        if checkpoint > 0 {
            let mut text = fs::read(&ckpt_path).unwrap();
            match &ckpt_damage {
                CheckpointDamage::None => {}
                CheckpointDamage::Flips(flips) => {
                    for (at, bit) in flips {
                        let at = at % text.len();
                        text[at] ^= 1 << bit;
                    }
                }
                CheckpointDamage::Truncate(at) => text.truncate(at % (text.len() + 1)),
                CheckpointDamage::Replace(bytes) => text = bytes.clone(),
            }
            ckpt_damaged = text != fs::read(&ckpt_path).unwrap();
            fs::write(&ckpt_path, &text).unwrap();
            let read = wal::read_checkpoint(&wal_dir).unwrap();
            if let CheckpointDamage::Replace(_) = ckpt_damage {
                // Random bytes may spell an old-format decimal LSN; anything else is damage.
                if let CheckpointRead::Valid(lsn) = read {
                    let line = String::from_utf8_lossy(&text);
                    prop_assert_eq!(line.trim_end_matches('\n').parse::<u64>().ok(), Some(lsn));
                }
            } else {
                check_checkpoint(&read, checkpoint)?;
            }
        }

        // Open as the pipeline does: a damaged checkpoint is an error, never a guess.
        let (log, replay) = match Wal::open(&wal_dir) {
            Ok((log, replay)) => {
                if checkpoint > 0 && !matches!(ckpt_damage, CheckpointDamage::Replace(_)) {
                    prop_assert_eq!(replay.checkpoint, checkpoint);
                }
                if replay.checkpoint == checkpoint {
                    (log, replay)
                } else {
                    // A random replacement that reads as an old-format checkpoint.
                    drop(log);
                    Wal::open_from(&wal_dir, checkpoint).unwrap()
                }
            }
            Err(WalError::DamagedCheckpoint { .. }) => {
                prop_assert!(ckpt_damaged, "undamaged checkpoint reported as damaged");
                Wal::open_from(&wal_dir, checkpoint).unwrap()
            }
            Err(e) => return Err(TestCaseError::fail(format!("open failed: {e}"))),
        };

        let mut prev = checkpoint;
        for (lsn, rows) in &replay.records {
            prop_assert!(*lsn > prev, "LSN {} after {}: not increasing or at/below the checkpoint", lsn, prev);
            prev = *lsn;
            let Some(original) = written.get(lsn) else {
                return Err(TestCaseError::fail(format!("LSN {lsn} was never written")));
            };
            prop_assert_eq!(rows, original, "LSN {} replayed other rows", lsn);
        }
        let replayed: std::collections::BTreeSet<u64> = replay.records.iter().map(|r| r.0).collect();
        let mut highest_intact = checkpoint;
        for (f, records) in layout.iter().enumerate() {
            for &(lsn, start, end) in records {
                let intact = end <= cut[f] && !touched[f][start..end].iter().any(|t| *t);
                if intact {
                    highest_intact = highest_intact.max(lsn);
                    if lsn > checkpoint {
                        prop_assert!(replayed.contains(&lsn), "intact record {} lost", lsn);
                    }
                }
            }
        }
        prop_assert!(log.next_lsn() > highest_intact, "next LSN {} would reuse {}", log.next_lsn(), highest_intact);
        let damaged_any = cut.iter().zip(&layout).any(|(c, l)| *c < l.last().map_or(0, |r| r.2))
            || touched.iter().zip(&cut).any(|(t, c)| t[..*c].iter().any(|x| *x));
        if !damaged_any {
            prop_assert_eq!(replay.damaged_bytes, 0);
        }

        // The log goes on: a new record after the damage, and a clean reopen with all of it.
        let mut log = log;
        let lsn = log.append(&after).unwrap();
        drop(log);
        let (_log, again) = Wal::open_from(&wal_dir, checkpoint).unwrap();
        prop_assert_eq!(again.damaged_bytes, 0, "damage reported twice");
        let mut expected = replay.records.clone();
        expected.push((lsn, after.clone()));
        prop_assert_eq!(again.records, expected);
    }
}
