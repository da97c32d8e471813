//! The telemetry path end to end: the real binary, `mosquitto_pub`, Parquet read back.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn published_values_land_in_parquet_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "pump-1");
    let server = Server::start(dir.path(), &[]);
    let t0 = now_ms() - 60_000;
    let values = [1.25, -0.0, 1e-300, 123456.789, 40.5];
    for (i, v) in values.iter().enumerate() {
        let payload = format!(
            r#"{{"ts": {}, "seq": {i}, "metrics": {{"vibration_rms": {v:?}, "temp": {}}}}}"#,
            t0 + i as i64 * 1000,
            i as f64 + 0.5
        );
        assert!(
            server
                .pub_qos1("pump-1", &secret, "prognos/v1/pump-1/telemetry", &payload)
                .success()
        );
    }
    // The array form and RFC 3339 timestamps too.
    let array = r#"[{"ts": "2026-01-01T00:00:00.000123Z", "metrics": {"temp": 7}}, {"ts": "2026-01-01T00:00:01Z", "metrics": {"temp": 8}}]"#;
    let (status, took) = {
        assert!(
            server
                .pub_qos1("pump-1", &secret, "prognos/v1/pump-1/telemetry", array)
                .success()
        );
        server.terminate()
    };
    assert!(status.success(), "serve exited with {status}");
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM drain took {took:?}"
    );

    let series = read_telemetry(dir.path());
    let vib = &series[&("pump-1".to_owned(), "vibration_rms".to_owned())];
    let expected: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| ((t0 + i as i64 * 1000) * 1000, *v))
        .collect();
    assert_eq!(vib.len(), expected.len());
    for (got, want) in vib.iter().zip(&expected) {
        assert_eq!(got.0, want.0);
        assert_eq!(
            got.1.to_bits(),
            want.1.to_bits(),
            "value changed in storage"
        );
    }
    let temp = &series[&("pump-1".to_owned(), "temp".to_owned())];
    assert_eq!(temp.len(), values.len() + 2);
    assert!(temp.contains(&(1_767_225_600_000_123, 7.0)));
}

#[test]
fn authentication_and_topic_authorisation() {
    let dir = tempfile::tempdir().unwrap();
    let secret_a = add_device(dir.path(), "dev-a");
    let secret_b = add_device(dir.path(), "dev-b");
    let server = Server::start(dir.path(), &[]);
    let ok = r#"{"metrics": {"m": 1}}"#;

    assert!(
        !server
            .pub_qos1("dev-a", "not-the-secret", "prognos/v1/dev-a/telemetry", ok)
            .success()
    );
    assert!(
        !server
            .pub_qos1("ghost", &secret_a, "prognos/v1/ghost/telemetry", ok)
            .success()
    );
    assert!(
        !server
            .pub_qos1("dev-a", &secret_b, "prognos/v1/dev-a/telemetry", ok)
            .success()
    );
    // Authenticated, but publishing as somebody else: refused by the broker.
    assert!(
        !server
            .pub_qos1(
                "dev-a",
                &secret_a,
                "prognos/v1/dev-b/telemetry",
                r#"{"metrics": {"spoofed": 1}}"#
            )
            .success()
    );
    assert!(
        !server
            .pub_qos1(
                "dev-a",
                &secret_a,
                "other/topic",
                r#"{"metrics": {"spoofed": 2}}"#
            )
            .success()
    );
    assert!(
        server
            .pub_qos1("dev-b", &secret_b, "prognos/v1/dev-b/telemetry", ok)
            .success()
    );

    let metrics = server.http_get("/metrics");
    assert!(
        metrics.contains("prognos_broker_auth_failures_total{reason=\"bad_credentials\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("prognos_broker_topic_denied_total 2"),
        "{metrics}"
    );
    let health = server.http_get("/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let (status, _) = server.terminate();
    assert!(status.success());
    let series = read_telemetry(dir.path());
    assert_eq!(
        series.len(),
        1,
        "only dev-b's own publish is stored: {series:?}"
    );
    assert!(series.contains_key(&("dev-b".to_owned(), "m".to_owned())));
    assert!(
        read_dead_letters(dir.path()).is_empty(),
        "refused publishes never reach the ingest"
    );
}

#[test]
fn bad_input_goes_to_dead_letters_and_valid_neighbours_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "m-1");
    let server = Server::start(
        dir.path(),
        &[
            "--config",
            &write_config(dir.path(), "[ingest]\nmax_payload_bytes = 1024\n"),
        ],
    );
    let topic = "prognos/v1/m-1/telemetry";
    let now = now_ms();
    let cases = [
        ("{not json", "malformed_json"),
        (r#"{"metrics": {"a": NaN}}"#, "non_finite"),
        (r#"{"metrics": {"a": 1e999}}"#, "non_finite"),
        (
            r#"{"ts": 4102444800000, "metrics": {"a": 1}}"#,
            "timestamp_future",
        ),
        (r#"{"ts": 1000, "metrics": {"a": 1}}"#, "timestamp_past"),
        (r#"{"ts": "soon", "metrics": {"a": 1}}"#, "bad_timestamp"),
        (r#"{"metrics": {"a": "high"}}"#, "bad_value"),
        (r#"{"values": [1, 2]}"#, "bad_shape"),
    ];
    let mut good = 0;
    for (i, (payload, _)) in cases.iter().enumerate() {
        let valid = format!(
            r#"{{"ts": {}, "metrics": {{"ok": {i}}}}}"#,
            now - 10_000 + i as i64
        );
        assert!(server.pub_qos1("m-1", &secret, topic, &valid).success());
        good += 1;
        assert!(server.pub_qos1("m-1", &secret, topic, payload).success());
    }
    let oversized = format!(
        r#"{{"metrics": {{"a": 1}}, "pad": "{}"}}"#,
        "x".repeat(2000)
    );
    assert!(server.pub_qos1("m-1", &secret, topic, &oversized).success());
    assert!(
        server
            .pub_qos1("m-1", &secret, "prognos/v1/m-1/unknown", "{}")
            .success()
    );
    let last = format!(r#"{{"ts": {}, "metrics": {{"ok": 99}}}}"#, now);
    assert!(server.pub_qos1("m-1", &secret, topic, &last).success());
    good += 1;

    assert!(wait_until(Duration::from_secs(10), || read_dead_letters(
        dir.path()
    )
    .len()
        >= cases.len() + 2));
    let metrics = server.http_get("/metrics");
    assert!(
        metrics.contains("prognos_ingest_dead_letters_total{reason=\"non_finite\"} 2"),
        "{metrics}"
    );
    let (status, _) = server.terminate();
    assert!(status.success());

    let letters = read_dead_letters(dir.path());
    let mut reasons: Vec<String> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap().to_owned())
        .collect();
    reasons.sort();
    let mut expected: Vec<String> = cases.iter().map(|c| c.1.to_owned()).collect();
    expected.extend(["oversized".to_owned(), "unknown_topic".to_owned()]);
    expected.sort();
    assert_eq!(reasons, expected);
    // The raw payload is kept, byte for byte.
    let nan = letters
        .iter()
        .find(|l| l["detail"].as_str().unwrap().contains("expected value"))
        .unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(nan["payload_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, cases[1].0.as_bytes());
    assert!(
        letters
            .iter()
            .all(|l| l["time"].as_str().is_some() && l["topic"].as_str().is_some())
    );

    let series = read_telemetry(dir.path());
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[&("m-1".to_owned(), "ok".to_owned())].len(), good);
}

#[test]
fn kill_9_loses_nothing_acknowledged_and_restart_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "crash-1");
    // Small flushes so some rows are already in Parquet when the process dies.
    let config = write_config(
        dir.path(),
        "[ingest]\nflush_rows = 37\nflush_interval_secs = 1\n",
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let n = 120;
    let t0 = now_ms() - 3_600_000;
    for seq in 0..n {
        let payload = format!(
            r#"{{"ts": {}, "seq": {seq}, "metrics": {{"a": {seq}, "b": {}}}}}"#,
            t0 + seq * 1000,
            -seq
        );
        // At least once, like a device: a publish whose PUBACK did not arrive is sent again
        // (a reconnect with the same client id can race the old connection's teardown in
        // rumqttd); the store de-duplicates (device, metric, ts), which this test checks.
        let acked = (0..3).any(|attempt| {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            server
                .pub_qos1("crash-1", &secret, "prognos/v1/crash-1/telemetry", &payload)
                .success()
        });
        assert!(acked, "publish {seq} not acknowledged after 3 attempts");
    }
    // PUBACKs received; give the group commit its interval, then pull the plug.
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    assert!(
        !read_telemetry(dir.path()).is_empty() || std::fs::read_dir(dir.path().join("wal")).is_ok()
    );

    let server = Server::start(dir.path(), &["--config", &config]);
    let (status, _) = server.terminate();
    assert!(status.success());
    let series = read_telemetry(dir.path());
    for metric in ["a", "b"] {
        let points = &series[&("crash-1".to_owned(), metric.to_owned())];
        assert_eq!(
            points.len(),
            n as usize,
            "metric {metric}: {} rows",
            points.len()
        );
        let mut ts: Vec<i64> = points.iter().map(|p| p.0).collect();
        ts.dedup();
        assert_eq!(ts.len(), n as usize, "duplicates after restart");
    }
    let a = &series[&("crash-1".to_owned(), "a".to_owned())];
    assert!(a.iter().enumerate().all(|(i, p)| p.1 == i as f64));
}

#[test]
fn port_in_use_and_bad_config_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = prognos(&[
        "serve",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--mqtt-addr",
        &format!("127.0.0.1:{port}"),
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen for MQTT") && err.contains(&port),
        "{err}"
    );

    let config = write_config(dir.path(), "[ingest]\nflush_rowz = 3\n");
    let out = prognos(&["serve", "--config", &config]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid config file") && err.contains("flush_rowz"),
        "{err}"
    );

    let out = prognos(&[
        "device",
        "add",
        "bad/id",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid"));
}

#[test]
fn device_list_shows_registered_devices() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = prognos(&[
        "device",
        "add",
        "pump-7",
        "--model",
        "P100",
        "--serial",
        "S1",
        "--batch",
        "B2024-01",
        "--site",
        "site-a",
        "--data-dir",
        d,
    ]);
    assert!(out.status.success());
    let out = prognos(&["device", "list", "--data-dir", d]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["device_id"], "pump-7");
    assert_eq!(list[0]["batch"], "B2024-01");
    assert!(list[0].get("secret").is_none(), "secrets are never listed");
}

#[allow(clippy::unwrap_used)]
fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join(format!("prognos-{}.toml", text.len()));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn tls_listener_accepts_a_verified_client() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let secret = add_device(dir.path(), "tls-1");
    let config = write_config(
        dir.path(),
        &format!(
            "[mqtt]\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let publish = |extra: &[&str]| {
        std::process::Command::new("mosquitto_pub")
            // `localhost`, not an IP: clients send the host as TLS SNI and an IP literal is not
            // a valid server name (rustls refuses it).
            .args([
                "-h",
                "localhost",
                "-p",
                &server.mqtt_port.to_string(),
                "-i",
                "tls-1",
                "-u",
                "tls-1",
                "-P",
                &secret,
                "-q",
                "1",
            ])
            .args([
                "-t",
                "prognos/v1/tls-1/telemetry",
                "-m",
                r#"{"metrics": {"t": 1}}"#,
            ])
            .args(extra)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    };
    assert!(
        publish(&["--cafile", cert.to_str().unwrap()]).success(),
        "TLS publish failed"
    );
    assert!(
        !publish(&[]).success(),
        "plain TCP must not be accepted on a TLS listener"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
    assert_eq!(read_telemetry(dir.path()).len(), 1);
}

#[test]
fn mqtt5_listener_serves_v5_clients() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "v5-1");
    let config = write_config(dir.path(), "[mqtt]\nmqtt5_addr = \"127.0.0.1:0\"\n");
    let server = Server::start(dir.path(), &["--config", &config]);
    assert_eq!(server.mqtt_ports.len(), 2, "both listeners announced");
    let status = std::process::Command::new("mosquitto_pub")
        .args([
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &server.mqtt_ports[1].to_string(),
        ])
        .args(["-i", "v5-1", "-u", "v5-1", "-P", &secret, "-q", "1"])
        .args([
            "-t",
            "prognos/v1/v5-1/telemetry",
            "-m",
            r#"{"metrics": {"v": 5}}"#,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let (status, _) = server.terminate();
    assert!(status.success());
    let points = &read_telemetry(dir.path())[&("v5-1".to_owned(), "v".to_owned())];
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].1, 5.0);
}

#[test]
fn telemetry_queries_are_bounded_in_series_and_points() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "cap-1");
    let config = write_config(
        dir.path(),
        "[ingest]\nflush_interval_secs = 1\n[models]\nenabled = false\n\
         [http]\ntelemetry_max_series = 50\ntelemetry_max_points = 100\n\
         max_uri_bytes = 65536\n",
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let t0 = now_ms() - 3_600_000;
    let items: Vec<String> = (0..150)
        .map(|i| format!(r#"{{"ts": {}, "metrics": {{"a": {i}}}}}"#, t0 + i * 1000))
        .collect();
    let topic = "prognos/v1/cap-1/telemetry";
    assert!(
        server
            .pub_qos1("cap-1", &secret, topic, &format!("[{}]", items.join(",")))
            .success()
    );
    assert!(wait_until(Duration::from_secs(10), || {
        read_telemetry(dir.path())
            .get(&("cap-1".to_owned(), "a".to_owned()))
            .is_some_and(|p| p.len() == 150)
    }));
    let auth = format!("Bearer {}", create_api_key(dir.path(), "engineer"));
    let get = |path: &str| {
        http_request(
            server.http_port,
            "GET",
            path,
            &[("Authorization", &auth)],
            "",
        )
    };
    let range = format!("&from={}&to={}", t0 - 1000, t0 + 200_000);
    let devices = |n: usize| {
        let mut d: Vec<String> = (0..n - 1).map(|i| format!("nobody-{i:05}")).collect();
        d.push("cap-1".into());
        d.join(",")
    };
    let refused = |r: &Reply, field: &str| {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.content_type, "application/problem+json");
        assert_eq!(r.body["field"], field, "{}", r.text);
    };
    // 51 series asked for: refused before anything is read, naming the parameter.
    refused(
        &get(&format!(
            "/api/v1/telemetry?device={}&metric=a{range}",
            devices(51)
        )),
        "device",
    );
    // A 26 KiB URL of device ids × metrics (once 9 GiB of empty series): refused the same way
    // (the URI limit is raised above so that the series cap is what refuses it).
    let long = format!(
        "/api/v1/telemetry?device={}&metric=a,b,c{range}",
        devices(2100)
    );
    assert!(long.len() > 26 * 1024, "{}", long.len());
    refused(&get(&long), "device");
    // 25 series × at most 4 buckets fit (3 points asked for is the smallest bucketing); only
    // the series with data is answered.
    let r = get(&format!(
        "/api/v1/telemetry?device={}&metric=a&points=3{range}",
        devices(25)
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    let series = r.body["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{}", r.text);
    assert_eq!(series[0]["device_id"], "cap-1");
    assert_eq!(
        series[0]["count"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum::<u64>(),
        150
    );
    // 50 series × 1000 buckets (the default) would exceed 100 points: refused.
    refused(
        &get(&format!(
            "/api/v1/telemetry?device={}&metric=a{range}",
            devices(50)
        )),
        "step",
    );
    // Raw: 150 points of one series exceed 100 points per response.
    refused(
        &get(&format!(
            "/api/v1/telemetry?device=cap-1&metric=a&agg=raw{range}"
        )),
        "step",
    );
    let r = get(&format!(
        "/api/v1/telemetry?device=cap-1&metric=a&agg=raw&from={}&to={}",
        t0,
        t0 + 50_000
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["series"][0]["ts_us"].as_array().unwrap().len(), 50);
    assert!(server.terminate().0.success());
}
