use std::collections::BTreeMap;

use super::*;
use prognos_ingest::Row;
use prognos_ingest::store::Store;

/// 2025-11-24T16:00:00Z, an hour boundary.
const T0: i64 = 1_764_000_000_000_000;
const MIN: i64 = 60_000_000;

fn value_of(d: usize, m: usize, ts: i64) -> f64 {
    let x = (ts - T0) as f64 / MIN as f64;
    (x * 0.37 + d as f64 * 1.3 + m as f64).sin() * 50.0 + d as f64 * 10.0 + (x * 0.01)
}

fn device(d: usize) -> String {
    format!("dev-{d:03}")
}

/// A data set of `devices` × `metrics`, one point every `every_us` over `hours` hours from
/// T0, written by the ingest's store in one flush (one file per hour partition).
fn dataset(
    devices: usize,
    metrics: &[&str],
    hours: i64,
    every_us: i64,
) -> (tempfile::TempDir, PathBuf, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("telemetry");
    let store = Store::open(&root).unwrap();
    let mut rows = Vec::new();
    for d in 0..devices {
        for (m, metric) in metrics.iter().enumerate() {
            let mut ts = T0;
            while ts < T0 + hours * HOUR_US {
                rows.push(Row::new(&device(d), metric, ts, value_of(d, m, ts)));
                ts += every_us;
            }
        }
    }
    store.write_flush(rows.clone(), 1, 1).unwrap();
    (dir, root, rows)
}

fn naive_points(rows: &[Row], d: &str, m: &str, from: i64, to: i64) -> (Vec<i64>, Vec<f64>) {
    let mut pts: Vec<(i64, f64)> = rows
        .iter()
        .filter(|r| &*r.device == d && &*r.metric == m && r.ts_us >= from && r.ts_us < to)
        .map(|r| (r.ts_us, r.value))
        .collect();
    pts.sort_by_key(|p| p.0);
    pts.into_iter().unzip()
}

fn query(devices: &[&str], metrics: &[&str], from: i64, to: i64) -> SeriesQuery {
    SeriesQuery {
        devices: devices.iter().map(|s| s.to_string()).collect(),
        metrics: metrics.iter().map(|s| s.to_string()).collect(),
        from_us: from,
        to_us: to,
        step_us: None,
        downsample: Downsample::Raw,
        max_points: 100_000,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn raw_values_for_a_range_are_exact() {
    let (_dir, root, rows) = dataset(3, &["temp", "vib"], 3, MIN);
    let (from, to) = (T0 + 30 * MIN + 1, T0 + 130 * MIN);
    let r = query_series(&root, &query(&["dev-001"], &["temp"], from, to)).unwrap();
    assert_eq!(r.series.len(), 1);
    let s = &r.series[0];
    let (ts, value) = naive_points(&rows, "dev-001", "temp", from, to);
    assert_eq!(s.ts_us.len(), 99);
    assert_eq!((&s.ts_us, &s.value), (&ts, &value));
    assert!(s.min.is_none() && s.count.is_none());

    // Several series: devices outer, request order, repeats removed; an unknown device
    // gives an empty series.
    let r = query_series_with_threads(
        &root,
        &query(
            &["dev-002", "dev-000", "nope", "dev-002"],
            &["vib", "temp"],
            from,
            to,
        ),
        3,
    )
    .unwrap();
    let names: Vec<(&str, &str)> = r
        .series
        .iter()
        .map(|s| (s.device_id.as_str(), s.metric.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("dev-002", "vib"),
            ("dev-002", "temp"),
            ("dev-000", "vib"),
            ("dev-000", "temp"),
        ]
    );
    // The unknown device's series have no data: they are left out.
    assert!(r.series.iter().all(|s| s.device_id != "nope"));
    for s in &r.series {
        let (ts, value) = naive_points(&rows, &s.device_id, &s.metric, from, to);
        assert_eq!(
            (&s.ts_us, &s.value),
            (&ts, &value),
            "{}/{}",
            s.device_id,
            s.metric
        );
    }
    assert!(r.series.iter().all(|s| !s.ts_us.is_empty()));
}

#[test]
fn buckets_match_a_naive_computation() {
    let (_dir, root, rows) = dataset(2, &["temp", "vib"], 3, 20_000_000);
    let step = 7 * MIN;
    let (from, to) = (T0 + 13 * MIN + 5, T0 + 170 * MIN);
    let mut q = query(&["dev-001"], &["vib"], from, to);
    q.downsample = Downsample::Buckets;
    q.step_us = Some(step);
    q.max_points = 1000;
    let r = query_series(&root, &q).unwrap();
    let s = &r.series[0];

    let mut naive: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
    let (ts, value) = naive_points(&rows, "dev-001", "vib", from, to);
    for (t, v) in ts.iter().zip(&value) {
        naive
            .entry(t.div_euclid(step) * step)
            .or_default()
            .push((*t, *v));
    }
    assert_eq!(s.ts_us, naive.keys().copied().collect::<Vec<_>>());
    let (min, max, last, count) = (
        s.min.as_ref().unwrap(),
        s.max.as_ref().unwrap(),
        s.last.as_ref().unwrap(),
        s.count.as_ref().unwrap(),
    );
    for (i, pts) in naive.values().enumerate() {
        let vals: Vec<f64> = pts.iter().map(|p| p.1).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        assert!(close(s.value[i], mean), "mean {} vs {mean}", s.value[i]);
        assert_eq!(min[i], vals.iter().copied().fold(f64::INFINITY, f64::min));
        assert_eq!(
            max[i],
            vals.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
        assert_eq!(last[i], pts.iter().max_by_key(|p| p.0).unwrap().1);
        assert_eq!(count[i], vals.len() as u64);
    }
    // The first bucket starts before `from` (aligned), empty buckets are omitted.
    assert!(s.ts_us[0] <= from);
    let r = query_series(
        &root,
        &SeriesQuery {
            to_us: T0 + 10 * HOUR_US,
            ..q.clone()
        },
    )
    .unwrap();
    assert_eq!(r.series[0].ts_us.len(), s.ts_us.len() + 1);
}

#[test]
fn lttb_keeps_first_and_last_and_returns_n_points() {
    let (_dir, root, rows) = dataset(1, &["temp"], 2, 10_000_000);
    let (from, to) = (T0, T0 + 2 * HOUR_US);
    let mut q = query(&["dev-000"], &["temp"], from, to);
    q.downsample = Downsample::Lttb { points: 50 };
    q.max_points = 100;
    let r = query_series(&root, &q).unwrap();
    let s = &r.series[0];
    let (ts, value) = naive_points(&rows, "dev-000", "temp", from, to);
    assert_eq!(ts.len(), 720);
    assert_eq!(s.ts_us.len(), 50);
    assert_eq!(s.value.len(), 50);
    assert_eq!((s.ts_us[0], s.value[0]), (ts[0], value[0]));
    assert_eq!((s.ts_us[49], s.value[49]), (ts[719], value[719]));
    assert!(s.ts_us.windows(2).all(|w| w[0] < w[1]));
    for (t, v) in s.ts_us.iter().zip(&s.value) {
        let i = ts.binary_search(t).unwrap();
        assert_eq!(value[i], *v);
    }
    // Fewer raw points than asked for: all of them.
    q.downsample = Downsample::Lttb { points: 100 };
    q.to_us = T0 + 10 * MIN;
    let r = query_series(&root, &q).unwrap();
    assert_eq!(r.series[0].ts_us.len(), 60);
}

#[test]
fn lttb_keeps_a_spike() {
    let ts: Vec<i64> = (0..100).collect();
    let mut value = vec![0.0; 100];
    value[37] = 10.0;
    let (t, v) = lttb(&ts, &value, 10);
    assert_eq!(t.len(), 10);
    assert!(t.contains(&37) && v.contains(&10.0));
    assert_eq!((t[0], t[9]), (0, 99));
}

#[test]
fn narrow_range_prunes_files() {
    let (_dir, root, rows) = dataset(3, &["temp"], 3, MIN);
    let (from, to) = (T0 + 70 * MIN, T0 + 80 * MIN);
    let r = query_series(&root, &query(&["dev-000"], &["temp"], from, to)).unwrap();
    assert_eq!(r.scan.files_total, 3);
    assert_eq!(r.scan.files_read, 1);
    assert_eq!(r.scan.files_pruned, 2);
    assert_eq!(
        r.series[0].ts_us,
        naive_points(&rows, "dev-000", "temp", from, to).0
    );
    // A device the files do not hold: footer statistics prune every file.
    let r = query_series(&root, &query(&["zzz"], &["temp"], T0, T0 + 3 * HOUR_US)).unwrap();
    assert_eq!((r.scan.files_read, r.scan.files_pruned), (0, 3));
    assert_eq!(r.scan.rows_decoded, 0);
}

#[test]
fn page_index_limits_decoding_to_the_series_pages() {
    // 500 devices × 2 metrics × 60 rows = 60 000 rows: three 20 000-row pages per column.
    let (_dir, root, rows) = dataset(500, &["a", "b"], 1, MIN);
    let files = Store::open(&root).unwrap().files().unwrap();
    assert_eq!(files.len(), 1);
    let (from, to) = (T0, T0 + HOUR_US);
    let r = query_series(&root, &query(&["dev-250"], &["b"], from, to)).unwrap();
    let (ts, value) = naive_points(&rows, "dev-250", "b", from, to);
    assert_eq!((&r.series[0].ts_us, &r.series[0].value), (&ts, &value));
    assert_eq!(r.scan.files_read, 1);
    // device_id/metric decoded for one page at most, ts/value for the 60 matching rows.
    assert!(r.scan.rows_decoded <= 20_480 + 60, "{:?}", r.scan);
    assert!(
        r.scan.bytes_read < files[0].bytes,
        "{:?} of {}",
        r.scan,
        files[0].bytes
    );
}

#[test]
fn files_of_one_partition_are_merged_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let even: Vec<Row> = (0..30)
        .map(|i| Row::new("d", "m", T0 + 2 * i * MIN, i as f64))
        .collect();
    let odd: Vec<Row> = (0..30)
        .map(|i| Row::new("d", "m", T0 + (2 * i + 1) * MIN, 100.0 + i as f64))
        .collect();
    store.write_flush(even, 1, 1).unwrap();
    store.write_flush(odd, 2, 2).unwrap();
    let r = query_series(dir.path(), &query(&["d"], &["m"], T0, T0 + HOUR_US)).unwrap();
    assert_eq!(r.scan.files_read, 2);
    let s = &r.series[0];
    assert_eq!(s.ts_us, (0..60).map(|i| T0 + i * MIN).collect::<Vec<_>>());
    assert_eq!((s.value[0], s.value[1], s.value[2]), (0.0, 100.0, 1.0));
}

/// (bucket, group, metric) → (count, mean, min, max).
type NaiveFleet = BTreeMap<(i64, Option<String>, String), (u64, f64, f64, f64)>;

fn naive_fleet(rows: &[Row], q: &FleetQuery) -> NaiveFleet {
    let mut out: BTreeMap<(i64, Option<String>, String), Vec<f64>> = BTreeMap::new();
    for r in rows {
        if r.ts_us < q.from_us || r.ts_us >= q.to_us {
            continue;
        }
        if !q.metrics.is_empty() && !q.metrics.iter().any(|m| **m == *r.metric) {
            continue;
        }
        let width = match q.bucket {
            Bucket::Hour => HOUR_US,
            Bucket::Day => DAY_US,
        };
        let group = q.group_of.as_ref().map(|g| {
            g.get(&*r.device)
                .cloned()
                .unwrap_or_else(|| "unknown".to_string())
        });
        out.entry((
            r.ts_us.div_euclid(width) * width,
            group,
            r.metric.to_string(),
        ))
        .or_default()
        .push(r.value);
    }
    out.into_iter()
        .map(|(k, v)| {
            let n = v.len() as u64;
            let mean = v.iter().sum::<f64>() / n as f64;
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (k, (n, mean, min, max))
        })
        .collect()
}

#[test]
fn fleet_aggregate_equals_a_naive_computation() {
    // 16:00 + 30 h crosses two midnights' worth of days: 3 days touched.
    let (_dir, root, rows) = dataset(4, &["temp", "vib", "rpm"], 30, 2 * MIN);
    let groups: HashMap<String, String> =
        [("dev-000", "pump"), ("dev-001", "pump"), ("dev-002", "fan")]
            .into_iter()
            .map(|(d, g)| (d.to_string(), g.to_string()))
            .collect();
    let cases = [
        FleetQuery {
            from_us: T0 - HOUR_US,
            to_us: T0 + 40 * HOUR_US,
            bucket: Bucket::Hour,
            metrics: Vec::new(),
            group_of: None,
        },
        FleetQuery {
            from_us: T0 + 30 * MIN,
            to_us: T0 + 25 * HOUR_US + 15 * MIN,
            bucket: Bucket::Day,
            metrics: vec!["vib".into(), "temp".into()],
            group_of: Some(groups.clone()),
        },
        FleetQuery {
            from_us: T0 + 30 * MIN + 7,
            to_us: T0 + 5 * HOUR_US + 15 * MIN,
            bucket: Bucket::Hour,
            metrics: vec!["rpm".into()],
            group_of: Some(groups),
        },
    ];
    for (n, q) in cases.iter().enumerate() {
        for threads in [1, 3] {
            let a = fleet_aggregate(&root, q, threads).unwrap();
            let naive = naive_fleet(&rows, q);
            assert_eq!(a.rows.len(), naive.len(), "case {n}");
            for (row, (key, (count, mean, min, max))) in a.rows.iter().zip(&naive) {
                assert_eq!(
                    (&row.bucket_start_us, &row.group, &row.metric),
                    (&key.0, &key.1, &key.2),
                    "case {n}"
                );
                assert_eq!(row.count, *count, "case {n}");
                assert!(close(row.mean, *mean), "case {n}: {} vs {mean}", row.mean);
                assert_eq!((row.min, row.max), (*min, *max), "case {n}");
            }
        }
    }
    assert!(cases[1].group_of.as_ref().is_some_and(|_| {
        naive_fleet(&rows, &cases[1])
            .keys()
            .any(|k| k.1.as_deref() == Some("unknown"))
    }));
    // Pruning: a 2-hour window reads 2 of the 30 files.
    let a = fleet_aggregate(
        &root,
        &FleetQuery {
            from_us: T0 + HOUR_US,
            to_us: T0 + 3 * HOUR_US,
            bucket: Bucket::Hour,
            metrics: Vec::new(),
            group_of: None,
        },
        2,
    )
    .unwrap();
    assert_eq!((a.scan.files_total, a.scan.files_read), (30, 2));
    assert_eq!(a.rows.len(), 6);
}

fn name_of(e: QueryError) -> &'static str {
    match e {
        QueryError::InvalidParameter { name, .. } => name,
        other => panic!("not an invalid parameter: {other}"),
    }
}

#[test]
fn every_invalid_parameter_is_named() {
    // Validation comes before any read: the data dir does not even exist.
    let root = Path::new("/nonexistent/prognos/telemetry");
    let base = query(&["d"], &["m"], T0, T0 + HOUR_US);
    let cases: Vec<(SeriesQuery, &str)> = vec![
        (
            SeriesQuery {
                from_us: T0 + 1,
                to_us: T0,
                ..base.clone()
            },
            "from",
        ),
        (
            SeriesQuery {
                step_us: Some(0),
                ..base.clone()
            },
            "step",
        ),
        (
            SeriesQuery {
                step_us: Some(-5),
                downsample: Downsample::Buckets,
                ..base.clone()
            },
            "step",
        ),
        (
            SeriesQuery {
                downsample: Downsample::Buckets,
                ..base.clone()
            },
            "step",
        ),
        (
            // 61 aligned buckets of a minute for an hour that starts 1 µs past a minute.
            SeriesQuery {
                from_us: T0 + 1,
                to_us: T0 + HOUR_US + 1,
                step_us: Some(MIN),
                downsample: Downsample::Buckets,
                max_points: 60,
                ..base.clone()
            },
            "step",
        ),
        (
            SeriesQuery {
                downsample: Downsample::Lttb { points: 1001 },
                max_points: 1000,
                ..base.clone()
            },
            "points",
        ),
        (
            SeriesQuery {
                downsample: Downsample::Lttb { points: 2 },
                ..base.clone()
            },
            "points",
        ),
        (
            SeriesQuery {
                devices: Vec::new(),
                ..base.clone()
            },
            "device",
        ),
        (
            SeriesQuery {
                metrics: Vec::new(),
                ..base.clone()
            },
            "metric",
        ),
        (
            SeriesQuery {
                max_points: 0,
                ..base.clone()
            },
            "max_points",
        ),
        (
            // Within `max_points`, but a dense array of 3.6 G buckets is refused all the same.
            SeriesQuery {
                step_us: Some(1),
                downsample: Downsample::Buckets,
                max_points: usize::MAX,
                ..base.clone()
            },
            "step",
        ),
    ];
    for (q, name) in cases {
        assert_eq!(name_of(query_series(root, &q).unwrap_err()), name, "{q:?}");
    }
    // Exactly at the limit is fine.
    let ok = SeriesQuery {
        step_us: Some(MIN),
        downsample: Downsample::Buckets,
        max_points: 60,
        ..base.clone()
    };
    assert!(query_series(root, &ok).is_ok());
    let fleet = FleetQuery {
        from_us: T0 + 1,
        to_us: T0,
        bucket: Bucket::Hour,
        metrics: Vec::new(),
        group_of: None,
    };
    assert_eq!(
        name_of(fleet_aggregate(root, &fleet, 2).unwrap_err()),
        "from"
    );

    // Raw over the limit is refused (not truncated), found while reading.
    let (_dir, root, _) = dataset(1, &["m"], 2, MIN);
    let q = SeriesQuery {
        max_points: 100,
        ..query(&["dev-000"], &["m"], T0, T0 + 2 * HOUR_US)
    };
    assert_eq!(name_of(query_series(&root, &q).unwrap_err()), "step");
    let q = SeriesQuery {
        max_points: 120,
        ..q
    };
    assert_eq!(query_series(&root, &q).unwrap().series[0].ts_us.len(), 120);
}

#[test]
fn empty_or_missing_data_dir_gives_empty_results() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FleetQuery {
        from_us: 0,
        to_us: i64::MAX,
        bucket: Bucket::Day,
        metrics: Vec::new(),
        group_of: None,
    };
    let missing = dir.path().join("telemetry");
    // Junk beside the partitions is ignored.
    let junk = dir.path().join("junk/date=2025-11-24/hour=16");
    fs::create_dir_all(&junk).unwrap();
    fs::write(junk.join("part-1-1.parquet.tmp"), b"partial").unwrap();
    fs::write(junk.join("notes.txt"), b"x").unwrap();
    fs::write(
        dir.path().join("junk/date=2025-11-24/hour=17"),
        b"not a dir",
    )
    .unwrap();
    fs::create_dir_all(dir.path().join("junk/whatever")).unwrap();
    for root in [missing.as_path(), dir.path(), &dir.path().join("junk")] {
        let r = query_series(root, &query(&["d"], &["m"], 0, i64::MAX)).unwrap();
        assert!(r.series.is_empty(), "no data, no series");
        assert_eq!(r.scan.files_total, 0);
        let a = fleet_aggregate(root, &fleet, 2).unwrap();
        assert!(a.rows.is_empty());
    }
}

#[test]
fn results_export_as_csv_arrow_ipc_and_parquet() {
    let (_dir, root, _) = dataset(2, &["temp"], 2, 10 * MIN);
    let mut q = query(&["dev-000", "dev-001"], &["temp"], T0, T0 + 2 * HOUR_US);
    q.downsample = Downsample::Buckets;
    q.step_us = Some(HOUR_US);
    let r = query_series(&root, &q).unwrap();
    let mut csv = Vec::new();
    series_to_csv(&r, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "device_id,metric,ts,value,min,max,last,count");
    assert_eq!(lines.len(), 1 + 4);
    assert!(lines[1].starts_with("dev-000,temp,2025-11-24T16:00:00.000000Z,"));
    assert!(lines[1].ends_with(",6"));

    let ipc = series_to_arrow_ipc(&r).unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    assert_eq!(batches[0].num_columns(), 8);

    let pq = series_to_parquet(&r).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(pq))
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 4);

    let a = fleet_aggregate(
        &root,
        &FleetQuery {
            from_us: T0,
            to_us: T0 + 2 * HOUR_US,
            bucket: Bucket::Hour,
            metrics: Vec::new(),
            group_of: None,
        },
        1,
    )
    .unwrap();
    let mut csv = Vec::new();
    fleet_to_csv(&a, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(
        csv.lines().next(),
        Some("bucket_start,group,metric,count,mean,min,max")
    );
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("2025-11-24T16:00:00.000000Z,,temp,12,")
    );
    let ipc = fleet_to_arrow_ipc(&a).unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 2);
    let pq = fleet_to_parquet(&a).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(pq))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 2);
}

// ---------------------------------------------------------------------------------------
// Day files, the series index, the metadata cache, the limits
// ---------------------------------------------------------------------------------------

/// Writes `flushes` (LSN 1, 2, …) to a new data set; `compacted` then merges hours and
/// every (closed) day as the ingest does.
fn layout_of(flushes: &[Vec<Row>], compacted: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("telemetry");
    let store = Store::open(&root).unwrap();
    for (i, rows) in flushes.iter().enumerate() {
        store
            .write_flush(rows.clone(), i as u64 + 1, i as u64 + 1)
            .unwrap();
    }
    if compacted {
        let last = flushes.len() as u64;
        // Rollups for every day file, however few its points (the default leaves sparse
        // days without one), so the layouts compared include them.
        let policy = prognos_ingest::store::CompactionPolicy {
            rollup_min_points: 1,
            ..prognos_ingest::store::CompactionPolicy::closed(2)
        };
        store.compact(last, &policy).unwrap();
        store.compact_days(last, &policy).unwrap();
    }
    (dir, root)
}

fn same_series(a: &SeriesResult, b: &SeriesResult) -> Result<(), String> {
    if a.series.len() != b.series.len() {
        return Err(format!("{} vs {} series", a.series.len(), b.series.len()));
    }
    for (x, y) in a.series.iter().zip(&b.series) {
        let agrees = x.device_id == y.device_id
            && x.metric == y.metric
            && x.ts_us == y.ts_us
            && x.count == y.count
            && x.min == y.min
            && x.max == y.max
            && x.last == y.last
            && x.value.len() == y.value.len()
            && x.value.iter().zip(&y.value).all(|(p, q)| close(*p, *q));
        if !agrees {
            return Err(format!("{x:?}\nvs\n{y:?}"));
        }
    }
    Ok(())
}

fn same_fleet(a: &FleetAggregate, b: &FleetAggregate) -> Result<(), String> {
    let agrees = a.rows.len() == b.rows.len()
        && a.rows.iter().zip(&b.rows).all(|(x, y)| {
            (
                x.bucket_start_us,
                &x.group,
                &x.metric,
                x.count,
                x.min,
                x.max,
            ) == (
                y.bucket_start_us,
                &y.group,
                &y.metric,
                y.count,
                y.min,
                y.max,
            ) && close(x.mean, y.mean)
        });
    agrees
        .then_some(())
        .ok_or_else(|| format!("{:?}\nvs\n{:?}", a.rows, b.rows))
}

mod layouts {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// The same points read from hour files and from day files (merged, indexed)
        /// answer every query alike: raw, buckets, LTTB, fleet by hour and by day.
        #[test]
        fn hourly_and_compacted_layouts_answer_alike(
            points in proptest::collection::btree_map(
                (0usize..4, 0usize..3, 0i64..(3 * 24 * 12)), -100i32..100, 1..400),
            flushes in 1usize..5,
            from in 0i64..(3 * 24 * 12),
            len in 1i64..(3 * 24 * 12),
            step_min in 1i64..600,
            lttb in 3usize..40,
        ) {
            // Unique keys (a map), spread over `flushes` flushes: no duplicates, so both
            // layouts hold exactly the same points.
            let mut by_flush: Vec<Vec<Row>> = vec![Vec::new(); flushes];
            for (i, ((d, m, t), v)) in points.iter().enumerate() {
                let ts = T0 - 16 * HOUR_US + t * 5 * MIN;
                by_flush[i % flushes].push(Row::new(&device(*d), ["a", "b", "c"][*m], ts, f64::from(*v) / 4.0));
            }
            let (_a, hourly) = layout_of(&by_flush, false);
            let (_b, daily) = layout_of(&by_flush, true);
            // A closed day with at least two hour files (the policy's minimum) is merged.
            let hour_files = Store::open(&hourly).unwrap().files().unwrap();
            let mut per_day = std::collections::BTreeMap::<i64, usize>::new();
            for f in &hour_files {
                *per_day.entry(f.day()).or_default() += 1;
            }
            let files = Store::open(&daily).unwrap().files().unwrap();
            if per_day.values().any(|n| *n >= 2) {
                prop_assert!(files.iter().any(|f| f.kind == FileKind::Day));
            }
            let from_us = T0 - 16 * HOUR_US + from * 5 * MIN + 7;
            let to_us = from_us + len * 5 * MIN;
            let mut q = query(&["dev-000", "dev-001", "dev-003", "none"], &["a", "c", "b"], from_us, to_us);
            for (downsample, step) in [
                (Downsample::Raw, None),
                (Downsample::Buckets, Some(step_min * MIN)),
                (Downsample::Lttb { points: lttb }, None),
            ] {
                q.downsample = downsample;
                q.step_us = step;
                let a = query_series(&hourly, &q).unwrap();
                let b = query_series(&daily, &q).unwrap();
                prop_assert!(same_series(&a, &b).is_ok(), "{:?}: {:?}", downsample, same_series(&a, &b));
            }
            let groups: HashMap<String, String> = [("dev-000", "x"), ("dev-002", "y")]
                .into_iter().map(|(d, g)| (d.to_string(), g.to_string())).collect();
            for bucket in [Bucket::Hour, Bucket::Day] {
                for group_of in [None, Some(groups.clone())] {
                    // Unaligned (rows), everything and hour-aligned (rollups where day files
                    // have them).
                    let aligned = (from_us.div_euclid(HOUR_US) * HOUR_US, (to_us.div_euclid(HOUR_US) + 1) * HOUR_US);
                    for (from_us, to_us) in [(from_us, to_us), (i64::MIN / 4, i64::MAX / 4), aligned] {
                        let metrics = if to_us == aligned.1 { vec!["c".to_string(), "a".to_string()] } else { Vec::new() };
                        let fq = FleetQuery { from_us, to_us, bucket, metrics, group_of: group_of.clone() };
                        let a = fleet_aggregate(&hourly, &fq, 2).unwrap();
                        let b = fleet_aggregate(&daily, &fq, 2).unwrap();
                        prop_assert!(same_fleet(&a, &b).is_ok(), "{:?}", same_fleet(&a, &b));
                    }
                }
            }
        }
    }
}

/// Fleet aggregates over whole days and hour-aligned ranges come from the day files'
/// rollups, and agree with the rows; a rollup that is gone or damaged is not used.
#[test]
fn fleet_aggregates_come_from_rollups_and_agree_with_the_rows() {
    // 6 devices × 3 metrics at 5 minutes over three days, in hourly flushes.
    let mut flushes: Vec<Vec<Row>> = Vec::new();
    for h in 0..72i64 {
        let mut rows = Vec::new();
        for d in 0..6 {
            for m in 0..3 {
                for k in 0..12 {
                    let ts = T0 - 24 * HOUR_US + h * HOUR_US + k * 5 * MIN;
                    rows.push(Row::new(
                        &device(d),
                        ["a", "b", "c"][m],
                        ts,
                        value_of(d, m, ts),
                    ));
                }
            }
        }
        flushes.push(rows);
    }
    let (_a, hourly) = layout_of(&flushes, false);
    let (_b, daily) = layout_of(&flushes, true);
    let store = Store::open(&daily).unwrap();
    let days: Vec<PathBuf> = store
        .files()
        .unwrap()
        .into_iter()
        .filter(|f| f.kind == FileKind::Day)
        .map(|f| f.path)
        .collect();
    assert!(days.len() >= 3, "{days:?}");
    let rollups: Vec<PathBuf> = days
        .iter()
        .map(|d| layout::rollup_path(d).unwrap())
        .collect();
    assert!(rollups.iter().all(|r| r.exists()));
    let groups: HashMap<String, String> = [("dev-000", "x"), ("dev-004", "y")]
        .into_iter()
        .map(|(d, g)| (d.to_string(), g.to_string()))
        .collect();
    let queries = |metrics: Vec<String>| {
        let mut out = Vec::new();
        for bucket in [Bucket::Hour, Bucket::Day] {
            for group_of in [None, Some(groups.clone())] {
                for (from_us, to_us) in [
                    (i64::MIN / 4, i64::MAX / 4),
                    (T0 - 5 * HOUR_US, T0 + 30 * HOUR_US),
                ] {
                    out.push(FleetQuery {
                        from_us,
                        to_us,
                        bucket,
                        metrics: metrics.clone(),
                        group_of: group_of.clone(),
                    });
                }
            }
        }
        out
    };
    let all = queries(Vec::new())
        .into_iter()
        .chain(queries(vec!["b".into()]));
    let answers: Vec<FleetAggregate> = all
        .clone()
        .map(|q| fleet_aggregate(&hourly, &q, 2).unwrap())
        .collect();
    for (q, want) in all.clone().zip(&answers) {
        let got = fleet_aggregate(&daily, &q, 2).unwrap();
        assert!(
            same_fleet(&got, want).is_ok(),
            "{q:?}: {:?}",
            same_fleet(&got, want)
        );
        assert!(got.scan.rollups_read >= 2, "{q:?}: {:?}", got.scan);
        assert!(!got.rows.is_empty());
        // Rollup rows, not data rows: 6 × 3 series × 24 hours a day at most.
        assert!(got.scan.rows_decoded <= 3 * 6 * 3 * 24, "{:?}", got.scan);
    }
    // A cut inside an hour reads rows.
    let cut = FleetQuery {
        from_us: T0 - 5 * HOUR_US + 7,
        to_us: T0 + 30 * HOUR_US,
        bucket: Bucket::Hour,
        metrics: Vec::new(),
        group_of: None,
    };
    let got = fleet_aggregate(&daily, &cut, 2).unwrap();
    assert!(same_fleet(&got, &fleet_aggregate(&hourly, &cut, 2).unwrap()).is_ok());
    assert!(got.scan.rollups_read < days.len() as u64, "{:?}", got.scan);
    // Damaged and missing rollups: the day files answer, alike.
    fs::write(&rollups[0], b"not parquet").unwrap();
    fs::remove_file(&rollups[1]).unwrap();
    for (q, want) in all.zip(&answers) {
        let got = fleet_aggregate(&daily, &q, 2).unwrap();
        assert!(
            same_fleet(&got, want).is_ok(),
            "{q:?}: {:?}",
            same_fleet(&got, want)
        );
    }
    // Opening removes the rollup of a day file that is gone.
    fs::remove_file(&days[0]).unwrap();
    Store::open(&daily).unwrap();
    assert!(!rollups[0].exists() && rollups[2].exists());
    // Sparse days get none at the default policy: 12 points per series-hour here.
    let (_c, sparse) = {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("telemetry");
        let store = Store::open(&root).unwrap();
        for (i, rows) in flushes.iter().enumerate() {
            store
                .write_flush(rows.clone(), i as u64 + 1, i as u64 + 1)
                .unwrap();
        }
        let policy = prognos_ingest::store::CompactionPolicy::closed(2);
        let stats = store.compact_days(flushes.len() as u64, &policy).unwrap();
        assert!(
            stats.partitions >= 2 && stats.rollups_written == 0,
            "{stats:?}"
        );
        (dir, root)
    };
    let q = &queries(Vec::new())[0];
    let got = fleet_aggregate(&sparse, q, 2).unwrap();
    assert_eq!(got.scan.rollups_read, 0);
    assert!(same_fleet(&got, &answers[0]).is_ok());
}

#[test]
fn one_series_of_a_day_file_decodes_only_its_rows() {
    // 50 devices × 4 metrics at one minute over two days: day files of 576,000 rows.
    let mut rows = Vec::new();
    for d in 0..50 {
        for (m, metric) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut ts = T0 - 16 * HOUR_US;
            while ts < T0 + 32 * HOUR_US {
                rows.push(Row::new(&device(d), metric, ts, value_of(d, m, ts)));
                ts += MIN;
            }
        }
    }
    let (_dir, root) = layout_of(&[rows.clone()], true);
    let files = Store::open(&root).unwrap().files().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.kind == FileKind::Day));
    let (from, to) = (T0 - 16 * HOUR_US, T0 + 32 * HOUR_US);
    let r = query_series(&root, &query(&["dev-025"], &["c"], from, to)).unwrap();
    let (ts, value) = naive_points(&rows, "dev-025", "c", from, to);
    assert_eq!((&r.series[0].ts_us, &r.series[0].value), (&ts, &value));
    // The series index gives the rows: only `ts` and `value` of the 2 × 1,440 rows returned
    // are decoded (no `device_id`/`metric` pass).
    assert_eq!(r.scan.rows_decoded, 2 * 1440, "{:?}", r.scan);
    assert_eq!(r.scan.files_read, 2);
    // Part of a day: the ts pages cut the run further; the answer is still exact.
    let (from, to) = (T0 + 3 * HOUR_US, T0 + 5 * HOUR_US);
    let r = query_series(&root, &query(&["dev-025"], &["c"], from, to)).unwrap();
    assert_eq!(
        r.series[0].ts_us,
        naive_points(&rows, "dev-025", "c", from, to).0
    );
    // Fleet by hour over a day file reads each row's hour from `ts`.
    let fq = FleetQuery {
        from_us: i64::MIN / 4,
        to_us: i64::MAX / 4,
        bucket: Bucket::Hour,
        metrics: vec!["b".into()],
        group_of: None,
    };
    let a = fleet_aggregate(&root, &fq, 2).unwrap();
    let want = naive_fleet(&rows, &fq);
    assert_eq!(a.rows.len(), want.len());
    assert_eq!(a.rows.len(), 48);
    for row in &a.rows {
        let (n, mean, min, max) = want[&(row.bucket_start_us, None, row.metric.clone())];
        assert_eq!((row.count, row.min, row.max), (n, min, max));
        assert!(close(row.mean, mean));
    }
}

#[test]
fn the_metadata_cache_stays_within_its_budget_and_serves_repeats() {
    let (_dir, root, _rows) = dataset(20, &["a", "b"], 30, 5 * MIN);
    let files = Store::open(&root).unwrap().files().unwrap();
    assert_eq!(files.len(), 30);
    let bytes = Arc::new(AtomicU64::new(0));
    // Size one entry, then allow about five.
    let probe = MetadataCache::new(usize::MAX);
    OpenFile::open_cached(&files[0].path, &bytes, &probe)
        .unwrap()
        .unwrap();
    let one = probe.stats().bytes;
    assert!(one > 0);
    let cache = MetadataCache::new(5 * one + one / 2);
    for _ in 0..3 {
        for f in &files {
            OpenFile::open_cached(&f.path, &bytes, &cache)
                .unwrap()
                .unwrap();
            let s = cache.stats();
            assert!(s.bytes <= s.budget, "{s:?}");
            assert!(s.entries <= 5, "{s:?}");
        }
    }
    // The last file was just read: a repeat is a hit and reads no metadata.
    let before = cache.stats();
    let read_before = bytes.load(Ordering::Relaxed);
    OpenFile::open_cached(&files[29].path, &bytes, &cache)
        .unwrap()
        .unwrap();
    assert_eq!(cache.stats().hits, before.hits + 1);
    assert_eq!(bytes.load(Ordering::Relaxed), read_before);
    // Through the query API, on the process's cache: the second run reads fewer bytes
    // (no footer, no page index), and answers the same.
    let q = query(&["dev-007"], &["b"], T0, T0 + 30 * HOUR_US);
    let first = query_series(&root, &q).unwrap();
    let second = query_series(&root, &q).unwrap();
    assert!(
        second.scan.bytes_read < first.scan.bytes_read,
        "{:?} vs {:?}",
        first.scan,
        second.scan
    );
    assert_eq!(first.series, second.series);
}

#[test]
fn series_and_points_per_query_are_bounded() {
    let (_dir, root, _rows) = dataset(3, &["a"], 2, MIN);
    let limits = SeriesLimits {
        max_series: 10,
        max_response_points: 100,
    };
    let name_of = |e: QueryError| match e {
        QueryError::InvalidParameter { name, .. } => name,
        other => panic!("{other}"),
    };
    let devices: Vec<String> = (0..11).map(device).collect();
    let many = SeriesQuery {
        devices: devices.clone(),
        ..query(&[], &["a"], T0, T0 + 2 * HOUR_US)
    };
    assert_eq!(
        name_of(query_series_limited(&root, &many, 1, limits).unwrap_err()),
        "device"
    );
    // Ten series fit, and only the three with data are answered.
    let ten = SeriesQuery {
        devices: devices[..10].to_vec(),
        downsample: Downsample::Buckets,
        step_us: Some(HOUR_US),
        ..many.clone()
    };
    let r = query_series_limited(&root, &ten, 1, limits).unwrap();
    assert_eq!(r.series.len(), 3);
    // 10 series × 20 buckets > 100 points.
    let fine = SeriesQuery {
        step_us: Some(6 * MIN),
        ..ten.clone()
    };
    assert_eq!(
        name_of(query_series_limited(&root, &fine, 1, limits).unwrap_err()),
        "step"
    );
    // Raw: 3 × 120 points with data > 100, though each series is under max_points.
    let raw = SeriesQuery {
        downsample: Downsample::Raw,
        step_us: None,
        ..ten.clone()
    };
    assert_eq!(
        name_of(query_series_limited(&root, &raw, 1, limits).unwrap_err()),
        "step"
    );
    let lttb = SeriesQuery {
        downsample: Downsample::Lttb { points: 20 },
        ..raw.clone()
    };
    assert_eq!(
        name_of(query_series_limited(&root, &lttb, 1, limits).unwrap_err()),
        "points"
    );
}
