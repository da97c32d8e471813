//! The fuzz targets' bodies, as plain functions: the `fuzz_targets/` binaries call them under
//! libFuzzer (nightly, `cargo fuzz run`), and the tests below run them on stable over a
//! small seed corpus so they keep compiling and holding. Each panics when the decoder or the
//! WAL breaks its contract, which is what the fuzzer looks for.

use prognos_ingest::decode::{Decoded, Limits, Rejection, TopicKind, decode_payload};
use prognos_ingest::wal::{CheckpointRead, Wal, WalError, read_checkpoint};

const NOW: i64 = 1_764_000_000_000_000;

/// The decoder's contract on any outcome: rows within the limits, or a rejection with a detail.
fn check(kind: TopicKind, payload: &[u8], now: i64, limits: &Limits, r: &Result<Decoded, Rejection>) {
    match r {
        Ok(d) => {
            assert!(payload.len() <= limits.max_payload_bytes);
            if kind == TopicKind::Status {
                assert!(d.points.is_empty());
                return;
            }
            assert!(!d.points.is_empty());
            for p in &d.points {
                assert!(!p.metric.is_empty() && p.metric.len() <= 128, "{:?}", p.metric);
                assert!(p.value.is_finite());
                assert!(p.ts_us <= now.saturating_add(limits.max_future_us));
                assert!(p.ts_us >= now.saturating_sub(limits.max_past_us));
            }
        }
        Err(e) => assert!(!e.detail.is_empty()),
    }
}

/// `decode_message`: first byte = topic kind, rest = payload.
pub fn decode_message(data: &[u8]) {
    let Some((&k, payload)) = data.split_first() else {
        return;
    };
    let kind = match k % 3 {
        0 => TopicKind::Telemetry,
        1 => TopicKind::Senml,
        _ => TopicKind::Status,
    };
    let limits = Limits::default();
    let r = decode_payload(kind, payload, NOW, &limits);
    check(kind, payload, NOW, &limits, &r);
}

/// `senml`: first 8 bytes = receive time (any i64), rest = SenML payload.
pub fn senml(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (now, payload) = data.split_at(8);
    let now = i64::from_le_bytes(now.try_into().unwrap_or_default());
    let limits = Limits::default();
    let r = decode_payload(TopicKind::Senml, payload, now, &limits);
    check(TopicKind::Senml, payload, now, &limits, &r);
}

/// `wal_replay`: first byte = checkpoint length n, next n bytes = checkpoint file, rest =
/// one segment. Open must not panic; replay yields increasing LSNs above the checkpoint;
/// a second open finds no damage (the first rewrote the segment) and the same records.
pub fn wal_replay(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (checkpoint, segment) = rest.split_at((n as usize).min(rest.len()));
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let wal = dir.path();
    if std::fs::write(wal.join("00000000000000000001.wal"), segment).is_err() {
        return;
    }
    if !checkpoint.is_empty() && std::fs::write(wal.join("checkpoint"), checkpoint).is_err() {
        return;
    }
    let (log, first) = match Wal::open(wal) {
        Ok(opened) => opened,
        Err(WalError::DamagedCheckpoint { .. }) => {
            assert!(matches!(read_checkpoint(wal), Ok(CheckpointRead::Damaged { .. })));
            return;
        }
        Err(e) => panic!("open failed on readable files: {e}"),
    };
    let mut prev = first.checkpoint;
    for (lsn, _) in &first.records {
        assert!(*lsn > prev, "LSN {lsn} after {prev}");
        prev = *lsn;
    }
    assert!(log.next_lsn() > prev);
    drop(log);
    let (_, again) = Wal::open(wal).unwrap_or_else(|e| panic!("second open: {e}"));
    assert_eq!(again.damaged_bytes, 0);
    assert_eq!(again.records, first.records);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_hold() {
        let seeds: &[&[u8]] = &[
            b"",
            b"\x00{\"metrics\":{\"a\":1}}",
            b"\x00[{\"ts\":1764000000000,\"metrics\":{\"a\":1e999}}]",
            b"\x01[{\"bn\":\"m:\",\"bt\":1764000000,\"n\":\"t\",\"v\":1}]",
            b"\x02offline",
            b"\x00[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ];
        for s in seeds {
            decode_message(s);
            senml(s);
            wal_replay(s);
        }
        // A real segment: records written through the WAL, then replayed by the target.
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Wal::open(dir.path()).unwrap();
        log.append(&[prognos_ingest::Row::new("d", "m", 1, 1.0)]).unwrap();
        drop(log);
        let bytes = std::fs::read(dir.path().join("00000000000000000001.wal")).unwrap();
        let mut input = vec![0u8];
        input.extend_from_slice(&bytes);
        wal_replay(&input);
        input[20] ^= 1;
        wal_replay(&input);
    }
}
