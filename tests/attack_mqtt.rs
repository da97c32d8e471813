//! The MQTT side under attack, through the real binary: raw sockets that send what no client
//! library would, resets, floods, hostile strings and limits. Each test names the finding it
//! covers; every loop is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mqtt_raw::{self, Raw};

use common::*;

/// A config file for these tests: no models (faster), a quick self-probe, and `mqtt` /
/// `ingest` lines of the test's own.
fn config(dir: &Path, mqtt: &str, ingest: &str) -> String {
    let path = dir.join("attack.toml");
    let mut mqtt = mqtt.to_owned();
    for default in ["probe_interval_ms = 200", "probe_timeout_ms = 1000"] {
        let key = default.split(' ').next().unwrap();
        if !mqtt.contains(key) {
            mqtt = format!("{default}\n{mqtt}");
        }
    }
    std::fs::write(
        &path,
        format!("[models]\nenabled = false\n[mqtt]\n{mqtt}\n[ingest]\n{ingest}\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn start(dir: &Path, mqtt: &str, ingest: &str) -> Server {
    let config = config(dir, mqtt, ingest);
    Server::start(dir, &["--config", &config])
}

fn telemetry(value: f64) -> String {
    format!(
        r#"{{"ts": {}, "metrics": {{"m": {value}}}}}"#,
        now_ms() - 1000
    )
}

/// The `/healthz` status code and body.
fn health(server: &Server) -> (u16, serde_json::Value) {
    let reply = http_request(server.http_port, "GET", "/healthz", &[], "");
    (reply.status, reply.body)
}

/// Waits until the self-probe reports `state` (it runs every 200 ms here).
fn mqtt_state_becomes(server: &Server, state: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        health(server).1["mqtt"] == state
    })
}

/// Stops the server (draining to Parquet) and returns the points of `device`'s metric `m`.
fn stored(server: Server, dir: &Path, device: &str) -> Vec<(i64, f64)> {
    assert!(server.terminate().0.success());
    read_telemetry(dir)
        .remove(&(device.to_owned(), "m".to_owned()))
        .unwrap_or_default()
}

/// Connects `id` and keeps the connection; the self-probe may hold a slot for a moment, so
/// "server unavailable" is tried again (at most 50 times).
fn take_slot(server: &Server, id: &str, secret: &str) -> Raw {
    for _ in 0..50 {
        let (raw, code) = Raw::connect(server.mqtt_port, id, id.as_bytes(), secret.as_bytes());
        match code {
            Some(0) => return raw,
            Some(3) => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("CONNACK {other:?}"),
        }
    }
    panic!("never got a connection slot");
}

// ---- #2: a connection that fails during setup must not break the listener for everyone ----

#[test]
fn connects_reset_before_their_connack_leave_the_listener_working() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "reset-1");
    let other = add_device(dir.path(), "reset-2");
    let server = start(dir.path(), "", "");
    assert!(mqtt_state_becomes(&server, "ok"));

    // A valid CONNECT, then a TCP reset before the CONNACK can be written; the same client
    // id again and again (upstream: a stale will handler, then a panic under the mutex,
    // then every later CONNECT panicked).
    let connect = mqtt_raw::connect("reset-1", b"reset-1", secret.as_bytes(), 30);
    for _ in 0..5 {
        mqtt_raw::send_and_reset(server.mqtt_port, &connect);
        std::thread::sleep(Duration::from_millis(100));
    }

    // A normal device, and the one that was reset, connect and publish.
    assert!(
        server
            .pub_qos1(
                "reset-2",
                &other,
                "prognos/v1/reset-2/telemetry",
                &telemetry(2.0)
            )
            .success()
    );
    assert!(
        server
            .pub_qos1(
                "reset-1",
                &secret,
                "prognos/v1/reset-1/telemetry",
                &telemetry(1.0)
            )
            .success()
    );
    let (code, body) = health(&server);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["mqtt"], "ok", "{body}");
    assert_eq!(stored(server, dir.path(), "reset-1").len(), 1);
    assert_eq!(read_telemetry(dir.path()).len(), 2);
}

#[test]
fn a_full_broker_refuses_with_a_connack_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let a = add_device(dir.path(), "full-a");
    let b = add_device(dir.path(), "full-b");
    // One slot for devices; the self-probe needs one too and may hold it for a moment.
    let server = start(
        dir.path(),
        "max_connections = 1\nprobe_interval_ms = 60000",
        "",
    );
    // The probe's first round is done (and its slot free) before the test takes the slot.
    assert!(mqtt_state_becomes(&server, "ok"));

    let mut holder = take_slot(&server, "full-a", &a);
    // No slot: "server unavailable" (upstream: the socket closed without a CONNACK, and a
    // stale will handler stayed behind). The same client id twice, which then panicked.
    for _ in 0..3 {
        let (_, code) = Raw::connect(server.mqtt_port, "full-b", b"full-b", b.as_bytes());
        assert_eq!(code, Some(3));
    }
    // The slot frees; the refused device gets in and its data is stored.
    holder.send(&mqtt_raw::DISCONNECT);
    assert!(holder.closed_within(Duration::from_secs(5)));
    assert!(wait_until(Duration::from_secs(10), || {
        server
            .pub_qos1("full-b", &b, "prognos/v1/full-b/telemetry", &telemetry(7.0))
            .success()
    }));
    assert_eq!(stored(server, dir.path(), "full-b").len(), 1);
}

#[test]
fn healthz_reports_a_full_broker_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let a = add_device(dir.path(), "probe-a");
    let server = start(dir.path(), "max_connections = 1", "");
    assert!(mqtt_state_becomes(&server, "ok"));
    // Hold the only slot: the probe then gets "server unavailable" — a capacity limit.
    let _holder = take_slot(&server, "probe-a", &a);
    assert!(mqtt_state_becomes(&server, "full"));
    assert_eq!(health(&server).0, 200);
}

// ---- #4: TLS: an idle socket must not block new connections ----

/// `mosquitto_pub` over TLS, killed if it has not finished within `limit`. By name, not by
/// address: mosquitto sends an IP address as SNI, which rustls 0.22 refuses.
fn mosquitto_pub_tls(port: u16, ca: &Path, id: &str, secret: &str, limit: Duration) -> bool {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
        .arg(ca)
        .args(["-i", id, "-u", id, "-P", secret, "-q", "1"])
        .args([
            "-t",
            &format!("prognos/v1/{id}/telemetry"),
            "-m",
            &telemetry(3.0),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_socket_on_the_tls_port_blocks_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "tls-1");
    let (cert, key) = self_signed_cert(dir.path());
    let server = start(
        dir.path(),
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\ntls_handshake_timeout_ms = 1500",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
        "",
    );
    // A TCP connection that never starts its handshake (upstream awaited it in the accept
    // loop, without a timeout: nobody else got in while it stayed open).
    let mut idle = Raw::open(server.mqtt_port);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert!(mosquitto_pub_tls(
        server.mqtt_port,
        &cert,
        "tls-1",
        &secret,
        Duration::from_secs(8)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // The idle socket is closed once its handshake time is up.
    assert!(idle.closed_within(Duration::from_secs(5)));
    // The self-probe speaks TLS too.
    assert!(mqtt_state_becomes(&server, "ok"));
    assert_eq!(stored(server, dir.path(), "tls-1").len(), 1);
}

#[test]
fn sighup_reloads_the_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "tls-2");
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let (cert1, key1) = self_signed_cert(&first);
    let (cert2, key2) = self_signed_cert(&second);
    // The server reads these paths; the test swaps what they hold.
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let server = start(
        dir.path(),
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
        "",
    );
    let limit = Duration::from_secs(8);
    assert!(mosquitto_pub_tls(
        server.mqtt_port,
        &cert1,
        "tls-2",
        &secret,
        limit
    ));
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    // Loaded once at start: the new files are not used until SIGHUP.
    assert!(!mosquitto_pub_tls(
        server.mqtt_port,
        &cert2,
        "tls-2",
        &secret,
        limit
    ));
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(wait_until(Duration::from_secs(10), || mosquitto_pub_tls(
        server.mqtt_port,
        &cert2,
        "tls-2",
        &secret,
        limit
    )));
    assert!(!mosquitto_pub_tls(
        server.mqtt_port,
        &cert1,
        "tls-2",
        &secret,
        limit
    ));
}
