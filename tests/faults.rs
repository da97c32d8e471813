//! Faults of the disk and the process under the real binary: a damaged checkpoint, a corrupt
//! WAL record, a full file system, kill -9 right after the last PUBACK. Each test damages what a real fault would and checks, through the
//! parquet crate, that nothing durable is lost or doubled.

// Helpers outside `#[test]` functions panic on a broken test setup, like the tests do.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mqtt_raw::{self, Raw, Read_};
use common::*;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("faults.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Publishes one message with `metrics` at `ts_ms`, retrying like a device would.
fn publish(server: &Server, id: &str, secret: &str, payload: &str) {
    let topic = format!("prognos/v1/{id}/telemetry");
    let acked = (0..3).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        server.pub_qos1(id, secret, &topic, payload).success()
    });
    assert!(acked, "publish not acknowledged: {payload}");
}

fn points(series: &Series, id: &str, metric: &str) -> Vec<(i64, f64)> {
    series
        .get(&(id.to_owned(), metric.to_owned()))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn damaged_checkpoint_deletes_no_parquet_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "cp-1");
    let config = write_config(
        dir.path(),
        "[ingest]\nflush_interval_secs = 1\n[models]\nenabled = false\n",
    );
    let t0 = now_ms() - 600_000;
    let payload = |i: i64| format!(r#"{{"ts": {}, "metrics": {{"a": {i}}}}}"#, t0 + i * 1000);

    // Two runs, so the first run's WAL segment is checkpointed away and only the Parquet
    // files hold its rows.
    let server = Server::start(dir.path(), &["--config", &config]);
    for i in 0..10 {
        publish(&server, "cp-1", &secret, &payload(i));
    }
    assert!(server.terminate().0.success());
    let server = Server::start(dir.path(), &["--config", &config]);
    for i in 10..20 {
        publish(&server, "cp-1", &secret, &payload(i));
    }
    assert!(wait_until(Duration::from_secs(10), || points(
        &read_telemetry(dir.path()),
        "cp-1",
        "a"
    )
    .len()
        == 20));
    // Let the writer drop the checkpointed segment of the first run.
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.terminate().0.success());
    assert_eq!(points(&read_telemetry(dir.path()), "cp-1", "a").len(), 20);

    let checkpoint = dir.path().join("wal/checkpoint");
    // Text that reads, but is no checkpoint (before, it parsed as LSN 0 and every Parquet
    // file looked like an unfinished flush).
    std::fs::write(&checkpoint, b"garbage, not a checkpoint\n").unwrap();
    let server = Server::start(dir.path(), &["--config", &config]);
    let health = server.http_get("/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    publish(&server, "cp-1", &secret, &payload(20));
    assert!(server.terminate().0.success());

    let a = points(&read_telemetry(dir.path()), "cp-1", "a");
    let want: Vec<(i64, f64)> = (0..21)
        .map(|i| ((t0 + i * 1000) * 1000, i as f64))
        .collect();
    assert_eq!(a, want, "every point exactly once");
    // The checkpoint verifies again, and the damaged one was kept for inspection.
    let text = std::fs::read_to_string(&checkpoint).unwrap();
    assert!(text.starts_with("PROGNOS-CHECKPOINT 1 "), "{text:?}");
    let kept: Vec<PathBuf> = std::fs::read_dir(dir.path().join("wal/damaged"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        kept.iter().any(|p| std::fs::read(p)
            .unwrap()
            .ends_with(b"garbage, not a checkpoint\n")),
        "{kept:?}"
    );
}

/// One WAL record as the test sees it: (offset, length, rows as (metric, ts_us)).
type WalRecord = (usize, usize, Vec<(String, i64)>);

/// The records of an undamaged WAL segment, parsed here from the documented format.
fn wal_records(bytes: &[u8]) -> Vec<WalRecord> {
    let mut out = Vec::new();
    let mut pos = 0;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    while pos + 8 <= bytes.len() {
        let len = u32_at(bytes, pos) as usize;
        let p = &bytes[pos + 8..pos + 8 + len];
        let mut at = 8;
        let n_strings = u32_at(p, at) as usize;
        at += 4;
        let mut strings = Vec::new();
        for _ in 0..n_strings {
            let n = u16::from_le_bytes(p[at..at + 2].try_into().unwrap()) as usize;
            strings.push(String::from_utf8(p[at + 2..at + 2 + n].to_vec()).unwrap());
            at += 2 + n;
        }
        let n_rows = u32_at(p, at) as usize;
        at += 4;
        let mut rows = Vec::new();
        for _ in 0..n_rows {
            let m = u32_at(p, at + 4) as usize;
            let ts = i64::from_le_bytes(p[at + 8..at + 16].try_into().unwrap());
            rows.push((strings[m].clone(), ts));
            at += 24;
        }
        out.push((pos, 8 + len, rows));
        pos += 8 + len;
    }
    out
}

#[test]
fn corrupt_wal_record_loses_only_itself_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "wal-1");
    // Nothing reaches Parquet before the kill: every row lives only in the WAL.
    let config = write_config(
        dir.path(),
        "[ingest]\nflush_interval_secs = 3600\n[models]\nenabled = false\n",
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let n = 30;
    let t0 = now_ms() - 600_000;
    for i in 0..n {
        let payload = format!(
            r#"{{"ts": {}, "metrics": {{"a": {i}, "b": {}}}}}"#,
            t0 + i * 1000,
            -i
        );
        publish(&server, "wal-1", &secret, &payload);
        // Separate group commits, so the segment holds many records.
        std::thread::sleep(Duration::from_millis(120));
    }
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    assert!(read_telemetry(dir.path()).is_empty());

    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let segment = segments
        .iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let mut bytes = std::fs::read(segment).unwrap();
    let records = wal_records(&bytes);
    assert!(records.len() >= 5, "{} records", records.len());
    // Flip bytes in the middle of a record in the middle of the segment.
    let (offset, len, lost) = records[records.len() / 2].clone();
    for b in &mut bytes[offset + len / 2..offset + len / 2 + 4] {
        *b ^= 0x5A;
    }
    std::fs::write(segment, &bytes).unwrap();
    let lost: BTreeSet<(String, i64)> = lost.into_iter().collect();
    assert!(!lost.is_empty());

    let server = Server::start(dir.path(), &["--config", &config]);
    let damaged: Option<u64> = server
        .http_get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("prognos_ingest_wal_damaged_bytes_total "))
        .map(|v| v.trim().parse().unwrap());
    assert!(server.terminate().0.success());

    let series = read_telemetry(dir.path());
    let mut stored = 0;
    for (metric, sign) in [("a", 1.0), ("b", -1.0)] {
        let got = points(&series, "wal-1", metric);
        let want: Vec<(i64, f64)> = (0..n)
            .map(|i| ((t0 + i * 1000) * 1000, sign * i as f64))
            .filter(|(ts, _)| !lost.contains(&(metric.to_owned(), *ts)))
            .map(|(ts, v)| (ts, if v == 0.0 { 0.0 } else { v }))
            .collect();
        let got: Vec<(i64, f64)> = got.into_iter().map(|(t, v)| (t, v + 0.0)).collect();
        assert_eq!(
            got, want,
            "metric {metric}: all but the damaged record, once"
        );
        stored += got.len();
    }
    assert_eq!(stored + lost.len(), 2 * n as usize);
    assert_eq!(damaged, Some(len as u64), "damaged bytes counted");
    let kept = std::fs::read_dir(dir.path().join("wal/damaged"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == bytes);
    assert!(
        kept.is_some(),
        "the damaged segment is kept aside as it was"
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_filesystem(at: &Path, size: &str) -> Result<Mount, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not running as root: cannot mount a small file system".to_owned());
    }
    std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Mount(at.to_owned()))
}

/// Fills the file system holding `path` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 512] {
        let block = vec![0xEEu8; chunk];
        while f.write_all(&block).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

fn metric_value(server: &Server, name: &str) -> Option<f64> {
    let metrics = server.http_get("/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn full_disk_pauses_the_ingest_and_it_resumes_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = match small_filesystem(&tmp.path().join("small"), "24m") {
        Ok(m) => m,
        Err(reason) => {
            println!("skipped full_disk_pauses_the_ingest_and_it_resumes_by_itself: {reason}");
            return;
        }
    };
    let data = mount.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let secret = add_device(&data, "full-1");
    let config = write_config(
        tmp.path(),
        "[ingest]\nflush_interval_secs = 1\n[models]\nenabled = false\n",
    );
    let server = Server::start(&data, &["--config", &config]);
    let t0 = now_ms() - 600_000;
    publish(
        &server,
        "full-1",
        &secret,
        &format!(r#"{{"ts": {t0}, "metrics": {{"x": 0}}}}"#),
    );
    assert!(wait_until(Duration::from_secs(10), || !points(
        &read_telemetry(&data),
        "full-1",
        "x"
    )
    .is_empty()));

    let filler = fill(&mount.0);
    // A junk message (its dead letter cannot be written) and a record bigger than a page
    // (the WAL append cannot fit in the last page's slack).
    let topic = "prognos/v1/full-1/telemetry";
    assert!(server.pub_qos1("full-1", &secret, topic, "{junk").success());
    let wide: Vec<String> = (0..400).map(|m| format!(r#""w{m}": {m}"#)).collect();
    let big = format!(
        r#"{{"ts": {}, "metrics": {{{}}}}}"#,
        t0 + 1000,
        wide.join(", ")
    );
    // Its PUBACK means durable, so it is withheld while the disk is full: the publisher
    // waits (and keeps its message) until space returns.
    let mut held = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt_port.to_string()])
        .args([
            "-i", "full-1", "-u", "full-1", "-P", &secret, "-q", "1", "-t", topic,
        ])
        .args(["-m", &big])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || metric_value(
            &server,
            "prognos_ingest_disk_full"
        ) == Some(1.0)),
        "disk_full never reported"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        held.try_wait().unwrap().is_none(),
        "a PUBACK came while the message could not be made durable"
    );
    assert!(
        metric_value(&server, "prognos_ingest_wal_append_failures_total").unwrap_or(0.0) >= 1.0
    );
    // The junk's dead letter could not be written: counted, and the process went on.
    assert_eq!(
        metric_value(&server, "prognos_ingest_dead_letter_write_failures_total"),
        Some(1.0)
    );
    // The process keeps serving and says it cannot take data now.
    let health = server.http_get("/healthz");
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("\"disk_full\":true"),
        "a full disk shows in /healthz: {health}"
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || metric_value(
            &server,
            "prognos_ingest_disk_full"
        ) == Some(0.0)),
        "ingest did not resume when space returned"
    );
    assert!(server.http_get("/healthz").starts_with("HTTP/1.1 200"));
    // Now durable: the held PUBACK arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = held.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = held.kill();
            panic!("the held PUBACK never came after the disk had space again");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "mosquitto_pub exited with {status}");
    publish(
        &server,
        "full-1",
        &secret,
        &format!(r#"{{"ts": {}, "metrics": {{"x": 2}}}}"#, t0 + 2000),
    );
    let (status, _) = server.terminate();
    assert!(status.success(), "serve exited with {status}");

    let series = read_telemetry(&data);
    assert_eq!(
        points(&series, "full-1", "x"),
        vec![(t0 * 1000, 0.0), ((t0 + 2000) * 1000, 2.0)]
    );
    for m in 0..400 {
        assert_eq!(
            points(&series, "full-1", &format!("w{m}")),
            vec![((t0 + 1000) * 1000, m as f64)],
            "metric w{m} of the message held while the disk was full"
        );
    }
    drop(mount);
}

/// Publishes every line of `lines` as one message, over one connection (`mosquitto_pub -l`).
fn publish_lines(server: &Server, id: &str, secret: &str, lines: &[String]) {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt_port.to_string()])
        .args(["-i", id, "-u", id, "-P", secret, "-q", "1", "-l"])
        .args(["-t", &format!("prognos/v1/{id}/telemetry")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn one_devices_junk_stays_within_the_dead_letter_quota() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "junk-1");
    let config = write_config(
        dir.path(),
        "[ingest]\nmax_payload_bytes = 65536\ndead_letter_max_mib = 1\ndead_letter_file_mib = 1\n\
         dead_letter_payload_bytes = 2000\n[models]\nenabled = false\n",
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let n = 600;
    let junk: Vec<String> = (0..n)
        .map(|i| format!("{{{i:05}{}", "x".repeat(8000)))
        .collect();
    publish_lines(&server, "junk-1", &secret, &junk);
    let rejected = "prognos_ingest_dead_letters_total{reason=\"malformed_json\"}";
    assert!(
        wait_until(Duration::from_secs(20), || metric_value(&server, rejected)
            == Some(n as f64)),
        "not every junk message was rejected"
    );
    let dropped = metric_value(&server, "prognos_ingest_dead_letters_dropped_total").unwrap_or(0.0);
    // The service goes on storing good data.
    let t = now_ms();
    publish(
        &server,
        "junk-1",
        &secret,
        &format!(r#"{{"ts": {t}, "metrics": {{"ok": 1}}}}"#),
    );
    assert!(server.terminate().0.success());

    let on_disk: u64 = std::fs::read_dir(dir.path().join("deadletter"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 1024 * 1024, "{on_disk} bytes of dead letters");
    let letters = read_dead_letters(dir.path());
    assert!(dropped > 0.0);
    assert_eq!(
        letters.len() + dropped as usize,
        n,
        "every letter kept or counted"
    );
    for l in &letters {
        assert_eq!(l["payload_bytes"], 8006);
        assert_eq!(l["payload_truncated"], true);
    }
    // The newest are kept: the last junk message is among them.
    use base64::Engine;
    let last = base64::engine::general_purpose::STANDARD
        .decode(
            letters
                .iter()
                .map(|l| l["payload_base64"].as_str().unwrap())
                .max_by_key(|p| {
                    base64::engine::general_purpose::STANDARD.decode(p).unwrap()[1..6].to_vec()
                })
                .unwrap(),
        )
        .unwrap();
    assert_eq!(&last[..6], format!("{{{:05}", n - 1).as_bytes());
    assert_eq!(points(&read_telemetry(dir.path()), "junk-1", "ok").len(), 1);
}

/// The day files of the data set (in `date=…` directories) and the hour files.
fn data_files(data_dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut days, mut hours) = (Vec::new(), Vec::new());
    let root = data_dir.join("telemetry");
    for date in std::fs::read_dir(&root).into_iter().flatten() {
        let date = date.unwrap().path();
        for entry in std::fs::read_dir(&date).into_iter().flatten() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                for f in std::fs::read_dir(&p).unwrap() {
                    let f = f.unwrap().path();
                    if f.extension().is_some_and(|e| e == "parquet") {
                        hours.push(f);
                    }
                }
            } else if p.extension().is_some_and(|e| e == "parquet") {
                days.push(p);
            }
        }
    }
    (days, hours)
}

#[test]
fn kill_9_during_day_compaction_then_restart_keeps_every_point_once() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "dc-1");
    let config = write_config(
        dir.path(),
        "[ingest]\nflush_interval_secs = 1\n[models]\nenabled = false\n",
    );
    // Every hour of the day before yesterday (UTC): a closed day.
    let day_ms = 86_400_000;
    let day0 = (now_ms() / day_ms - 2) * day_ms;
    let message = |second: i64| {
        let items: Vec<String> = (0..24)
            .map(|h| {
                format!(
                    r#"{{"ts": {}, "metrics": {{"a": {}}}}}"#,
                    day0 + h * 3_600_000 + second * 1000,
                    h * 100 + second
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    };
    let want = |seconds: i64| -> Vec<(i64, f64)> {
        let mut v: Vec<(i64, f64)> = (0..24)
            .flat_map(|h| {
                (0..seconds).map(move |s| {
                    (
                        (day0 + h * 3_600_000 + s * 1000) * 1000,
                        (h * 100 + s) as f64,
                    )
                })
            })
            .collect();
        v.sort_by_key(|p| p.0);
        v
    };
    // The merge pauses after its day file is in place and before it removes its inputs:
    // the kill lands exactly there.
    let server = Server::start_with_env(
        dir.path(),
        &["--config", &config],
        &[("PROGNOS_TEST_COMPACTION_PAUSE_MS", "20000")],
    );
    // One flush writes the 24 hour files of that day; the day is closed, so the merge
    // follows at once, and pauses with its day file written and every input still there.
    publish(&server, "dc-1", &secret, &message(0));
    assert!(
        wait_until(Duration::from_secs(15), || !data_files(dir.path())
            .0
            .is_empty()),
        "no day file was written"
    );
    let (days, hours) = data_files(dir.path());
    assert_eq!(
        (days.len(), hours.len()),
        (1, 24),
        "paused with every input still there"
    );
    let first_day_file = days[0].clone();
    // Read now, the data set holds every point twice (inputs and output).
    assert_eq!(points(&read_telemetry(dir.path()), "dc-1", "a").len(), 48);
    server.kill9();

    let server = Server::start(dir.path(), &["--config", &config]);
    let health = server.http_get("/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // The restart removed the merged inputs: the day file alone holds the day, once.
    let (days, hours) = data_files(dir.path());
    assert_eq!((days.len(), hours.len()), (1, 0), "{days:?} {hours:?}");
    assert_eq!(points(&read_telemetry(dir.path()), "dc-1", "a"), want(1));
    // Late data for the merged day: 24 more hour files (at least compact_min_files), so the
    // day is merged again, into one day file covering both.
    publish(&server, "dc-1", &secret, &message(1));
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (days, hours) = data_files(dir.path());
            days.len() == 1 && hours.is_empty() && days[0] != first_day_file
        }),
        "the day was not merged again: {:?}",
        data_files(dir.path())
    );
    assert!(server.terminate().0.success());
    assert_eq!(points(&read_telemetry(dir.path()), "dc-1", "a"), want(2));
    // And the API answers the same points, from the day file.
    let server = Server::start(dir.path(), &["--config", &config]);
    let key = create_api_key(dir.path(), "engineer");
    let auth = format!("Bearer {key}");
    let reply = http_request(
        server.http_port,
        "GET",
        &format!(
            "/api/v1/telemetry?device=dc-1&metric=a&agg=raw&from={}&to={}",
            day0,
            day0 + day_ms
        ),
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let ts: Vec<i64> = reply.body["series"][0]["ts_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ts, want(2).iter().map(|p| p.0).collect::<Vec<_>>());
    assert!(server.terminate().0.success());
}

/// Publishes `count` QoS 1 messages as `id`, up to `window` ahead of their PUBACKs, and
/// returns when the last PUBACK is in. Panics if the PUBACKs come out of order or stop.
fn publish_pipelined(port: u16, id: &str, secret: &str, count: u32, window: u32, ts0_ms: i64) {
    let (mut device, code) = Raw::connect(port, id, id.as_bytes(), secret.as_bytes());
    assert_eq!(code, Some(0), "CONNACK of {id}");
    let topic = format!("prognos/v1/{id}/telemetry");
    let pkid = |i: u32| (i % 65_535) as u16 + 1;
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < count {
        while sent < count && sent - acked < window {
            let payload = format!(
                r#"{{"ts": {}, "metrics": {{"v": {sent}}}}}"#,
                ts0_ms + i64::from(sent)
            );
            assert!(device.send(&mqtt_raw::publish(
                topic.as_bytes(),
                payload.as_bytes(),
                1,
                pkid(sent),
                false
            )));
            sent += 1;
        }
        match device.read(Duration::from_secs(20)) {
            Read_::Packet(p) if p.kind() == 4 => {
                let got = u16::from_be_bytes([p.body[0], p.body[1]]);
                assert_eq!(got, pkid(acked), "{id}: PUBACKs in publish order");
                acked += 1;
            }
            Read_::Packet(_) => {}
            other => panic!("{id}: no PUBACK for message {acked}: {other:?}"),
        }
    }
}

#[test]
fn kill_9_right_after_the_last_puback_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<(String, String)> = (0..4)
        .map(|i| {
            let id = format!("ack-{i}");
            let secret = add_device(dir.path(), &id);
            (id, secret)
        })
        .collect();
    let config = write_config(dir.path(), "[models]\nenabled = false\n");
    let server = Server::start(dir.path(), &["--config", &config]);
    let (count, ts0) = (5_000u32, now_ms() - 3_600_000);
    let port = server.mqtt_port;
    let publishers: Vec<_> = devices
        .iter()
        .cloned()
        .map(|(id, secret)| {
            std::thread::spawn(move || publish_pipelined(port, &id, &secret, count, 500, ts0))
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    // The last PUBACK is in: kill at once. Before PUBACKs waited for the fsync, the messages
    // of the last group commit were acknowledged while still only in memory.
    server.kill9();

    // The restart replays the WAL; a graceful stop writes everything to Parquet.
    let server = Server::start(dir.path(), &["--config", &config]);
    assert!(server.terminate().0.success());
    let series = read_telemetry(dir.path());
    let want: Vec<(i64, f64)> = (0..count)
        .map(|i| ((ts0 + i64::from(i)) * 1000, f64::from(i)))
        .collect();
    for (id, _) in &devices {
        let mut got = points(&series, id, "v");
        got.sort_by_key(|p| p.0);
        let lost = want.iter().filter(|p| !got.contains(p)).count();
        assert!(
            got == want,
            "{id}: {} points stored for {count} acknowledged ({lost} lost)",
            got.len()
        );
    }
}
