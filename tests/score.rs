//! `prognos score`: replay any CSV through a detector, and clear errors for bad files.

mod common;

use common::*;

#[allow(clippy::unwrap_used)]
fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_single_value_column_with_a_level_shift_is_flagged_after_the_shift() {
    let dir = tempfile::tempdir().unwrap();
    // Deterministic noise (no RNG dependency): a small pseudo-random wobble around 10,
    // then a jump of +5 at row 200.
    let mut csv = String::from("timestamp,value\n");
    let mut x: u64 = 12345;
    for i in 0..300 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = ((x >> 33) % 1000) as f64 / 1000.0 * 0.6 - 0.3;
        let v = 10.0 + noise + if i >= 200 { 5.0 } else { 0.0 };
        csv.push_str(&format!(
            "2026-01-01T00:{:02}:{:02}Z,{v:.3}\n",
            i / 60,
            i % 60
        ));
    }
    let input = write(dir.path(), "series.csv", &csv);
    let out = prognos(&["score", "--input", &input]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,anomaly_score,is_anomaly"));
    let rows: Vec<(String, f64, u8)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 300);
    assert_eq!(
        rows[0].0, "2026-01-01T00:00:00Z",
        "the time column is passed through"
    );
    assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r.1)));
    let before: usize = rows[..200].iter().map(|r| r.2 as usize).sum();
    let soon_after: usize = rows[200..220].iter().map(|r| r.2 as usize).sum();
    assert!(before <= 3, "{before} false alarms before the shift");
    assert!(soon_after > 0, "the shift was not flagged within 20 rows");
}

#[test]
fn bad_files_get_clear_errors_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "g.csv", "t,a,b\n1,1,2\n2,1,2\n");
    let cases = [
        (vec!["--input", &good, "--columns", "a,nope"], "nope"),
        (vec!["--input", &good, "--time-column", "when"], "when"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["score"];
        full.extend(args.iter().copied());
        let out = prognos(&full);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }
    let empty = write(dir.path(), "e.csv", "");
    let out = prognos(&["score", "--input", &empty]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let bad = write(dir.path(), "n.csv", "t,v\n1,1.0\n2,abc\n");
    let out = prognos(&["score", "--input", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("abc"), "{err}");
    let missing = dir.path().join("absent.csv");
    let out = prognos(&["score", "--input", missing.to_str().unwrap()]);
    assert!(!out.status.success());
}
