//! Failure analytics end to end: `prognos demo` builds a data dir (years of imported service
//! history, days of telemetry over MQTT), then `prognos serve` on that dir answers the
//! analytics and telemetry queries over HTTP, and `prognos query` from the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{BIN, Server, http_request, prognos, read_telemetry};
use serde_json::Value;

/// Runs the demo (50 machines, 2 days of telemetry) into `dir`; returns its admin API key.
fn demo(dir: &Path) -> String {
    let out = std::process::Command::new(BIN)
        .args([
            "demo",
            "--data-dir",
            dir.to_str().unwrap(),
            "--days",
            "2",
            "--seed",
            "7",
            "--exit",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("admin API key")
                .map(|k| k.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no admin key in {stdout}"))
}

fn defective_batch(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("devices.jsonl")).unwrap();
    let batches: BTreeSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|d| d["defective_batch"] == true)
        .map(|d| d["batch"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(batches.len(), 1);
    batches.into_iter().next().unwrap()
}

#[test]
fn analytics_over_http_and_cli_on_demo_data() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo(dir.path());
    let bad_batch = defective_batch(dir.path());
    let server = Server::start(dir.path(), &[]);
    let auth = format!("Bearer {key}");
    let get = |path: &str| {
        http_request(
            server.http_port,
            "GET",
            path,
            &[("Authorization", &auth)],
            "",
        )
    };

    // Defective batch: the simulator's bad batch is flagged, no healthy one; its devices are
    // the recall list.
    let r = get("/api/v1/analytics/batches");
    assert_eq!(r.status, 200, "{}", r.text);
    let flagged: Vec<&str> = r.body["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["flagged"] == true)
        .map(|b| b["batch"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, vec![bad_batch.as_str()], "{}", r.body);
    let recall = r.body["recall"].as_array().unwrap();
    assert!(!recall.is_empty());
    assert!(recall.iter().all(|d| d["batch"] == bad_batch.as_str()));

    // MTBF per batch: the bad batch fails more often than the fleet.
    let r = get("/api/v1/analytics/mtbf?group_by=batch");
    assert_eq!(r.status, 200);
    let rows = r.body.as_array().unwrap();
    let rate = |b: &Value| b["failures_per_device_year"].as_f64().unwrap();
    let bad = rows
        .iter()
        .find(|b| b["group"] == bad_batch.as_str())
        .unwrap();
    let failures: u64 = rows.iter().map(|b| b["failures"].as_u64().unwrap()).sum();
    let years: f64 = rows
        .iter()
        .map(|b| b["operating_days"].as_f64().unwrap())
        .sum::<f64>()
        / 365.25;
    assert!(rate(bad) > 2.0 * failures as f64 / years, "{bad}");

    // Weibull: a fleet fit with intervals, and the bad batch against the rest.
    let r = get(&format!(
        "/api/v1/analytics/weibull?group_by=batch&failure_mode=bearing_wear&compare={bad_batch}"
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["comparison"]["rate"]["p_value"].as_f64().unwrap() < 0.01);
    let r = get("/api/v1/analytics/weibull");
    let fit = &r.body["groups"][0]["fit"];
    let beta = fit["beta"].as_f64().unwrap();
    assert!(
        fit["beta_ci"][0].as_f64().unwrap() < beta && beta < fit["beta_ci"][1].as_f64().unwrap()
    );
    assert!(fit["b10"].as_f64().unwrap() < fit["eta"].as_f64().unwrap());
    assert!(
        !r.body["groups"][0]["probability_plot"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Heatmap, surges, provider KPIs and model accuracy answer with their shapes.
    let r = get("/api/v1/analytics/heatmap");
    let counts: u64 = r.body["counts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()))
        .sum();
    assert_eq!(counts, failures);
    assert_eq!(get("/api/v1/analytics/surges").status, 200);
    let r = get("/api/v1/analytics/providers");
    let oem = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "oem")
        .unwrap();
    assert!(oem["subtree"]["resolved"].as_u64().unwrap() as f64 >= failures as f64 * 0.9);
    assert!(oem["subtree"]["first_time_fix_rate"].as_f64().is_some());
    let r = get("/api/v1/analytics/model-accuracy");
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["failure_mode"] == "all")
    );

    // Bad parameters: 400 naming them; no key: 401; an engineer may, a technician may not.
    for (path, field) in [
        ("/api/v1/analytics/mtbf?group_by=colour", "group_by"),
        (
            "/api/v1/analytics/heatmap?from=2026-02-01&to=2026-01-01",
            "from",
        ),
        ("/api/v1/analytics/batches?alpha=2", "alpha"),
        ("/api/v1/analytics/surges?weeks=0", "weeks"),
    ] {
        let r = get(path);
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (400, Some(field)),
            "{path}: {}",
            r.text
        );
        assert!(r.content_type.starts_with("application/problem+json"));
    }
    // A well-formed group name that names no group: not found, naming the parameter.
    let path = "/api/v1/analytics/weibull?group_by=batch&compare=B1999-01";
    let r = get(path);
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (404, Some("compare")),
        "{path}: {}",
        r.text
    );
    assert!(r.content_type.starts_with("application/problem+json"));
    assert_eq!(
        http_request(server.http_port, "GET", "/api/v1/analytics/mtbf", &[], "").status,
        401
    );
    let engineer = format!("Bearer {}", common::create_api_key(dir.path(), "engineer"));
    // A technician key belongs to a technician of the demo network.
    let some_technician = get("/api/v1/technicians?limit=1").body["items"][0]["technician_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let technician = format!(
        "Bearer {}",
        common::create_technician_key(dir.path(), &some_technician)
    );
    let as_role = |k: &str| {
        http_request(
            server.http_port,
            "GET",
            "/api/v1/analytics/heatmap",
            &[("Authorization", k)],
            "",
        )
        .status
    };
    assert_eq!((as_role(&engineer), as_role(&technician)), (200, 403));

    // Telemetry: a down-sampled series agrees with the raw Parquet data.
    let stored = read_telemetry(dir.path());
    let ((device, metric), points) = stored.iter().next().unwrap();
    let (first_ms, last_ms) = (points[0].0 / 1000, points.last().unwrap().0 / 1000);
    let path = format!(
        "/api/v1/telemetry?device={device}&metric={metric}&from={first_ms}&to={}&step=1h",
        last_ms + 1
    );
    let r = get(&path);
    assert_eq!(r.status, 200, "{}", r.text);
    let series = &r.body["series"][0];
    let count: u64 = series["count"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(count, points.len() as u64);
    let hour_us = 3_600_000_000;
    let first_bucket = points[0].0.div_euclid(hour_us);
    let in_first: Vec<f64> = points
        .iter()
        .filter(|p| p.0.div_euclid(hour_us) == first_bucket)
        .map(|p| p.1)
        .collect();
    let mean = in_first.iter().sum::<f64>() / in_first.len() as f64;
    assert!((series["value"][0].as_f64().unwrap() - mean).abs() < 1e-9);
    let r = get(&format!("{path}&agg=raw&format=csv"));
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/csv"));
    assert_eq!(
        r.text.lines().count(),
        points.len() + 1,
        "header + one line per point"
    );
    let r = get(&format!("{path}&agg=lttb&points=50"));
    assert_eq!(r.body["series"][0]["ts_us"].as_array().unwrap().len(), 50);
    // Unknown device: 200 with the series, empty.
    let r = get(&format!(
        "/api/v1/telemetry?device=nobody&metric={metric}&from={first_ms}&to={last_ms}"
    ));
    assert_eq!(r.status, 200);
    assert!(
        r.body["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ts_us"].as_array().unwrap().is_empty()),
        "{}",
        r.body
    );
    // Bad ranges and steps: 400 naming the parameter.
    for (query, field) in [
        (
            format!("device={device}&metric={metric}&from={last_ms}&to={first_ms}"),
            "from",
        ),
        (
            format!("device={device}&metric={metric}&from={first_ms}&to={last_ms}&step=0"),
            "step",
        ),
        (
            format!("device={device}&metric={metric}&from=0&to={last_ms}&step=1s"),
            "step",
        ),
        (format!("metric={metric}"), "device"),
        (
            format!("device={device}&metric={metric}&format=xml"),
            "format",
        ),
    ] {
        let r = get(&format!("/api/v1/telemetry?{query}"));
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (400, Some(field)),
            "{query}: {}",
            r.text
        );
    }
    let r = get("/api/v1/telemetry/fleet?bucket=day&group_by=region");
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = r.body["rows"].as_array().unwrap();
    let fleet_points: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let all_points: usize = stored.values().map(Vec::len).sum();
    assert_eq!(fleet_points, all_points as u64);

    // The OpenAPI document lists the analytics routes.
    let doc = http_request(server.http_port, "GET", "/openapi.json", &[], "").body;
    for route in [
        "/api/v1/analytics/weibull",
        "/api/v1/analytics/batches",
        "/api/v1/telemetry",
    ] {
        assert!(doc["paths"].get(route).is_some(), "{route} missing");
    }
    server.terminate();

    // The same from the command line.
    let data_dir = dir.path().to_str().unwrap();
    let out = prognos(&["query", "batches", "--data-dir", data_dir]);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["batches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["flagged"] == true)
    );
    let out = prognos(&[
        "query",
        "telemetry",
        "--data-dir",
        data_dir,
        "--device",
        device,
        "--metric",
        metric,
        "--from",
        &first_ms.to_string(),
        "--to",
        &(last_ms + 1).to_string(),
        "--agg",
        "raw",
        "--format",
        "csv",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        points.len() + 1
    );
    let out = prognos(&[
        "query",
        "heatmap",
        "--data-dir",
        data_dir,
        "--from",
        "last week",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
}
