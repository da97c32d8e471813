//! The MQTT side under attack, through the real binary: raw sockets that send what no client
//! library would, resets, floods, hostile strings and limits. Each test names the finding it
//! covers; every loop is bounded in count and time.

// Helpers outside `#[test]` functions panic on a broken test setup, like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mqtt_raw::{self, Raw, Read_};

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

// ---- #14: per-device resource use is bounded ----

#[test]
fn retained_messages_are_delivered_but_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "ret-1");
    let server = start(dir.path(), "", "");
    // Retained publishes on many topics (upstream kept each, payload and all, forever).
    let (mut device, code) = Raw::connect(server.mqtt_port, "ret-1", b"ret-1", secret.as_bytes());
    assert_eq!(code, Some(0));
    for i in 0..20u16 {
        let topic = format!("prognos/v1/ret-1/telemetry/{i}");
        let payload = vec![b'x'; 64 * 1024];
        assert!(device.send(&mqtt_raw::publish(
            topic.as_bytes(),
            &payload,
            1,
            i + 1,
            true
        )));
        match device.read(Duration::from_secs(5)) {
            Read_::Packet(p) => assert_eq!(p.kind(), 4, "PUBACK"),
            other => panic!("no PUBACK: {other:?}"),
        }
    }
    // A later subscriber (the device itself, under its prefix) gets no retained message.
    assert!(device.send(&mqtt_raw::subscribe(100, "prognos/v1/ret-1/#", 1)));
    let mut retained = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match device.read(Duration::from_millis(300)) {
            Read_::Packet(p) if p.kind() == 3 => retained += 1,
            Read_::Packet(p) => assert_eq!(p.kind(), 9, "SUBACK"),
            Read_::Timeout => {}
            Read_::Closed => panic!("the broker closed the subscriber"),
        }
    }
    assert_eq!(retained, 0, "retained messages were kept");
    // The publishes themselves reached the ingest (as unknown topics: dead letters).
    assert!(wait_until(Duration::from_secs(10), || {
        health(&server).1["dead_letters"].as_u64() == Some(20)
    }));
}

#[test]
fn packets_beyond_the_configured_size_disconnect_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "size-1");
    let server = start(
        dir.path(),
        "max_packet_bytes = 65536",
        "max_payload_bytes = 16384",
    );
    let big = format!(
        r#"{{"metrics": {{"m": 1}}, "pad": "{}"}}"#,
        "x".repeat(100_000)
    );
    let (mut device, code) = Raw::connect(server.mqtt_port, "size-1", b"size-1", secret.as_bytes());
    assert_eq!(code, Some(0));
    device.send(&mqtt_raw::publish(
        b"prognos/v1/size-1/telemetry",
        big.as_bytes(),
        1,
        1,
        false,
    ));
    assert!(device.closed_within(Duration::from_secs(5)));
    // Between the ingest's limit and the packet limit: a dead letter, not a disconnect.
    let medium = format!(
        r#"{{"metrics": {{"m": 1}}, "pad": "{}"}}"#,
        "x".repeat(30_000)
    );
    assert!(
        server
            .pub_qos1("size-1", &secret, "prognos/v1/size-1/telemetry", &medium)
            .success()
    );
    assert!(
        server
            .pub_qos1(
                "size-1",
                &secret,
                "prognos/v1/size-1/telemetry",
                &telemetry(1.0)
            )
            .success()
    );
    assert!(wait_until(Duration::from_secs(10), || {
        health(&server).1["dead_letters"].as_u64() == Some(1)
    }));
    assert_eq!(stored(server, dir.path(), "size-1").len(), 1);
    let letters = read_dead_letters(dir.path());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["reason"], "oversized");
}

/// A telemetry message with metric names `name_{from}..name_{to}`.
fn metrics(from: usize, to: usize) -> String {
    let fields: Vec<String> = (from..to).map(|i| format!(r#""name_{i}": {i}"#)).collect();
    format!(
        r#"{{"ts": {}, "metrics": {{{}}}}}"#,
        now_ms() - 1000,
        fields.join(",")
    )
}

#[test]
fn metric_names_per_device_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "card-1");
    let other = add_device(dir.path(), "card-2");
    let server = start(dir.path(), "", "max_metrics_per_device = 50");
    let publish = |id: &str, secret: &str, payload: &str| {
        assert!(
            server
                .pub_qos1(id, secret, &format!("prognos/v1/{id}/telemetry"), payload)
                .success()
        );
    };
    // 5 × 10 new names fit; the 6th message's new names do not.
    for k in 0..6 {
        publish("card-1", &secret, &metrics(k * 10, k * 10 + 10));
    }
    // Names it has are still welcome; one message with thousands of names is refused whole.
    publish("card-1", &secret, &metrics(0, 50));
    publish("card-1", &secret, &metrics(1000, 3000));
    // Another device has its own budget.
    publish("card-2", &other, &metrics(0, 50));
    assert!(wait_until(Duration::from_secs(10), || {
        health(&server).1["messages"].as_u64() == Some(7)
    }));
    let body = http_request(server.http_port, "GET", "/metrics", &[], "").text;
    assert!(
        body.lines()
            .any(|l| l.starts_with("prognos_ingest_dead_letters_total")
                && l.contains(r#"reason="too_many_metrics""#)
                && l.ends_with(" 2")),
        "{body}"
    );
    assert!(server.terminate().0.success());
    let series = read_telemetry(dir.path());
    let names = |id: &str| series.keys().filter(|(d, _)| d == id).count();
    assert_eq!(names("card-1"), 50);
    assert_eq!(names("card-2"), 50);
    let letters = read_dead_letters(dir.path());
    assert_eq!(letters.len(), 2);
    assert!(
        letters.iter().all(|l| l["reason"] == "too_many_metrics"),
        "{letters:?}"
    );
    assert!(
        letters[0]["detail"]
            .as_str()
            .unwrap()
            .contains("max_metrics_per_device"),
        "{letters:?}"
    );
}

// ---- #15: failed logins are throttled, attacker strings bounded in logs ----

#[test]
fn a_huge_username_makes_no_huge_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "", "");
    let (server, stderr) = Server::start_capturing_stderr(dir.path(), &["--config", &config]);
    let username = vec![b'u'; 64 * 1024 - 1];
    let client_id = "c".repeat(20_000);
    let (_, huge) = Raw::connect(server.mqtt_port, &client_id, &username, b"p");
    // Control characters cannot forge log lines either.
    let (_, evil) = Raw::connect(server.mqtt_port, "evil\nFAKE ERROR line", b"x\r\ny", b"p");
    assert!(wait_until(Duration::from_secs(5), || stderr
        .matching("MQTT authentication refused")
        .len()
        == 2));
    assert!(
        stderr.longest_line() < 2_000,
        "{} bytes",
        stderr.longest_line()
    );
    assert_eq!(huge, Some(2), "refused: identifier rejected");
    assert_eq!(evil, Some(4));
    assert!(
        stderr
            .matching("FAKE ERROR")
            .iter()
            .all(|l| l.contains("evil\\nFAKE"))
    );
    let refused = stderr.matching("MQTT authentication refused");
    assert!(refused[0].contains("(65535 bytes)"), "{}", refused[0]);
}

#[test]
fn failed_logins_are_throttled_per_client_id_and_a_good_device_still_connects() {
    let dir = tempfile::tempdir().unwrap();
    let victim = add_device(dir.path(), "thr-1");
    let good = add_device(dir.path(), "thr-2");
    let server = start(dir.path(), "auth_failures_per_client_id = 3", "");
    // Bad passwords, three times.
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(Raw::connect(server.mqtt_port, "thr-1", b"thr-1", b"guess").1);
    }
    // Then the id is refused — even with its right secret — without asking the registry.
    for secret in ["guess", victim.as_str()] {
        let (_, code) = Raw::connect(server.mqtt_port, "thr-1", b"thr-1", secret.as_bytes());
        assert_eq!(code, Some(3), "throttled: server unavailable");
    }
    // Each failure was answered "bad user name or password".
    assert_eq!(codes, [Some(4); 3]);
    // Another device from the same address is not affected.
    assert!(
        server
            .pub_qos1(
                "thr-2",
                &good,
                "prognos/v1/thr-2/telemetry",
                &telemetry(5.0)
            )
            .success()
    );
    let body = http_request(server.http_port, "GET", "/metrics", &[], "").text;
    assert!(
        body.lines()
            .any(|l| l.contains(r#"reason="throttled""#) && l.ends_with(" 2")),
        "{body}"
    );
    assert_eq!(stored(server, dir.path(), "thr-2").len(), 1);
}

#[test]
fn failed_logins_are_throttled_per_address_for_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let good = add_device(dir.path(), "addr-1");
    let server = start(
        dir.path(),
        "auth_failures_per_address = 4\nauth_failure_window_secs = 2",
        "",
    );
    // Four different (unknown) client ids from one address.
    for i in 0..4 {
        let id = format!("scan-{i}");
        let (_, code) = Raw::connect(server.mqtt_port, &id, id.as_bytes(), b"x");
        assert_ne!(code, Some(0));
    }
    // The address is refused, good credentials or not, until the window ends.
    let (_, code) = Raw::connect(server.mqtt_port, "addr-1", b"addr-1", good.as_bytes());
    assert_eq!(code, Some(3));
    let started = Instant::now();
    assert!(wait_until(Duration::from_secs(10), || {
        Raw::connect(server.mqtt_port, "addr-1", b"addr-1", good.as_bytes()).1 == Some(0)
    }));
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---- Attacks on the protocol ----

/// Connects `id` with its secret; the CONNACK must accept.
fn connected(server: &Server, id: &str, secret: &str) -> Raw {
    let (raw, code) = Raw::connect(server.mqtt_port, id, id.as_bytes(), secret.as_bytes());
    assert_eq!(code, Some(0), "{id} not connected");
    raw
}

/// After an attack: the broker still serves, nothing reached the ingest, and a normal
/// publish is stored.
fn still_serving(server: Server, dir: &Path, id: &str, secret: &str) {
    assert!(mqtt_state_becomes(&server, "ok"));
    let (code, body) = health(&server);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["dead_letters"], 0, "{body}");
    assert!(
        server
            .pub_qos1(
                id,
                secret,
                &format!("prognos/v1/{id}/telemetry"),
                &telemetry(9.0)
            )
            .success()
    );
    assert_eq!(stored(server, dir, id).len(), 1);
}

#[test]
fn bad_publish_topics_disconnect_before_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "topic-1");
    let server = start(dir.path(), "", "");
    let long = format!("prognos/v1/topic-1/{}", "x".repeat(60_000));
    let bad: [&[u8]; 6] = [
        // Wildcards are for filters; MQTT forbids them in a topic name (upstream took
        // them, and "#" then matched every filter).
        b"prognos/v1/topic-1/+",
        b"prognos/v1/topic-1/#",
        // Not UTF-8, and a NUL.
        b"prognos/v1/topic-1/\xff\xfe",
        b"prognos/v1/topic-1/a\0b",
        // Longer than mqtt.max_topic_bytes (upstream cached every distinct topic forever).
        long.as_bytes(),
        // Another device's topic (the ACL).
        b"prognos/v1/topic-2/telemetry",
    ];
    for topic in bad {
        let mut device = connected(&server, "topic-1", &secret);
        device.send(&mqtt_raw::publish(
            topic,
            b"{\"metrics\":{\"m\":1}}",
            1,
            1,
            false,
        ));
        let mut acked = false;
        let deadline = Instant::now() + Duration::from_secs(5);
        let closed = loop {
            match device.read(deadline.saturating_duration_since(Instant::now())) {
                Read_::Packet(p) if p.kind() == 4 => acked = true,
                Read_::Packet(_) => {}
                Read_::Closed => break true,
                Read_::Timeout => break false,
            }
        };
        let shown = String::from_utf8_lossy(&topic[..topic.len().min(40)]).into_owned();
        assert!(
            closed && !acked,
            "topic {shown:?}: closed {closed}, acked {acked}"
        );
    }
    still_serving(server, dir.path(), "topic-1", &secret);
}

#[test]
fn malformed_packets_close_only_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "mal-1");
    let server = start(dir.path(), "", "");
    let connect = mqtt_raw::connect("mal-1", b"mal-1", secret.as_bytes(), 30);
    let after_connect: [&[u8]; 6] = [
        // A remaining length of five bytes (MQTT allows four).
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
        // A remaining length beyond the packet limit, then nothing.
        &[0x30, 0xff, 0xff, 0xff, 0x7f],
        // Packet type 15 (reserved).
        &[0xf0, 0x00],
        // A second CONNECT.
        &connect,
        // A server-to-client packet (CONNACK) from the client.
        &[0x20, 0x02, 0x00, 0x00],
        // QoS 3.
        &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
    ];
    for bytes in after_connect {
        let mut device = connected(&server, "mal-1", &secret);
        device.send(bytes);
        assert!(device.closed_within(Duration::from_secs(5)), "{bytes:02x?}");
    }
    // Garbage instead of a CONNECT, and a CONNECT whose strings run past the packet.
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x10, 0x08, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xc2],
        &[
            0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x1e, 0xff, 0xff,
        ],
    ] {
        let mut raw = Raw::open(server.mqtt_port);
        raw.send(bytes);
        assert!(raw.closed_within(Duration::from_secs(15)), "{bytes:02x?}");
    }
    still_serving(server, dir.path(), "mal-1", &secret);
}

#[test]
fn an_empty_client_id_is_refused_with_a_connack() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "empty-1");
    let server = start(dir.path(), "", "");
    for username in [&b""[..], b"empty-1"] {
        let (_, code) = Raw::connect(server.mqtt_port, "", username, secret.as_bytes());
        assert_eq!(code, Some(4));
    }
    still_serving(server, dir.path(), "empty-1", &secret);
}

#[test]
fn qos2_without_pubrel_is_bounded_and_packet_ids_are_not_delivered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "q2-1");
    let server = start(dir.path(), "", "");
    let topic = b"prognos/v1/q2-1/telemetry";

    // Exactly once: a resent PUBLISH with the same id, then PUBREL twice (the second as
    // after a lost PUBCOMP) make one message and two PUBCOMPs.
    let mut device = connected(&server, "q2-1", &secret);
    let payload = telemetry(2.0);
    for _ in 0..2 {
        device.send(&mqtt_raw::publish(topic, payload.as_bytes(), 2, 7, false));
    }
    device.send(&mqtt_raw::pubrel(7));
    device.send(&mqtt_raw::pubrel(7));
    let (mut pubrec, mut pubcomp) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pubcomp < 2 && Instant::now() < deadline {
        match device.read(Duration::from_millis(500)) {
            Read_::Packet(p) if p.kind() == 5 => pubrec += 1,
            Read_::Packet(p) if p.kind() == 7 => pubcomp += 1,
            Read_::Closed => panic!("closed"),
            _ => {}
        }
    }
    assert_eq!((pubrec, pubcomp), (2, 2));
    device.send(&mqtt_raw::DISCONNECT);

    // A flood of QoS 2 publishes never released (upstream kept every one, payload and all,
    // until the process ran out of memory): disconnected after 1024.
    let mut flood = connected(&server, "q2-1", &secret);
    let payload = vec![b'x'; 1024];
    for pkid in 1..=1100u16 {
        if !flood.send(&mqtt_raw::publish(
            b"prognos/v1/q2-1/flood",
            &payload,
            2,
            pkid,
            false,
        )) {
            break;
        }
    }
    assert!(flood.closed_within(Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(10), || {
        let body = health(&server).1;
        body["messages"] == 1 && body["dead_letters"] == 1024
    }));
    assert_eq!(stored(server, dir.path(), "q2-1").len(), 1);
}

#[test]
fn subscriptions_are_confined_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "sub-1");
    let server = start(dir.path(), "max_subscriptions_per_connection = 3", "");
    // Everything, the broker's own topics, another device, an invalid filter, a shared
    // subscription: each disconnects the device.
    for filter in [
        "#",
        "$SYS/#",
        "prognos/v1/+/telemetry",
        "prognos/v1/sub-1/#/x",
        "$share/g/prognos/v1/sub-1/#",
    ] {
        let mut device = connected(&server, "sub-1", &secret);
        device.send(&mqtt_raw::subscribe(1, filter, 1));
        let mut granted = false;
        let closed = loop {
            match device.read(Duration::from_secs(5)) {
                Read_::Packet(p) if p.kind() == 9 => granted |= p.body[2] < 0x80,
                Read_::Packet(_) => {}
                Read_::Closed => break true,
                Read_::Timeout => break false,
            }
        };
        assert!(
            closed && !granted,
            "{filter}: closed {closed}, granted {granted}"
        );
    }
    // Within its prefix, at most three subscriptions; the fourth is refused (0x80).
    let mut device = connected(&server, "sub-1", &secret);
    let mut codes = Vec::new();
    for (i, filter) in ["a", "b", "c", "d"].iter().enumerate() {
        device.send(&mqtt_raw::subscribe(
            i as u16 + 1,
            &format!("prognos/v1/sub-1/cmd/{filter}"),
            1,
        ));
        match device.read(Duration::from_secs(5)) {
            Read_::Packet(p) if p.kind() == 9 => codes.push(p.body[2]),
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    assert_eq!(codes, [1, 1, 1, 0x80]);
    still_serving(server, dir.path(), "sub-1", &secret);
}

#[test]
fn keep_alive_zero_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_device(dir.path(), "ka-1");
    let server = start(dir.path(), "", "");
    let mut device = Raw::open(server.mqtt_port);
    device.send(&mqtt_raw::connect("ka-1", b"ka-1", secret.as_bytes(), 0));
    match device.read(Duration::from_secs(5)) {
        Read_::Packet(p) => assert_eq!((p.kind(), p.body[1]), (2, 0), "CONNACK accepted"),
        other => panic!("keep-alive 0 refused: {other:?}"),
    }
    let payload = telemetry(4.0);
    device.send(&mqtt_raw::publish(
        b"prognos/v1/ka-1/telemetry",
        payload.as_bytes(),
        1,
        1,
        false,
    ));
    match device.read(Duration::from_secs(5)) {
        Read_::Packet(p) => assert_eq!(p.kind(), 4, "PUBACK"),
        other => panic!("no PUBACK: {other:?}"),
    }
    device.send(&mqtt_raw::DISCONNECT);
    assert_eq!(stored(server, dir.path(), "ka-1").len(), 1);
}

#[test]
fn idle_sockets_are_bounded_per_address_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["sock-1", "sock-2", "sock-3"];
    let secrets: Vec<String> = ids.iter().map(|id| add_device(dir.path(), id)).collect();
    let server = start(
        dir.path(),
        "max_connecting_per_address = 3\nmax_open_sockets = 6",
        "",
    );
    assert!(mqtt_state_becomes(&server, "ok"));
    // Sockets that never send a CONNECT: the fourth from this address is closed at once
    // (upstream kept every one for the connection timeout, 10 s, and took more).
    let mut idle: Vec<Raw> = (0..3).map(|_| Raw::open(server.mqtt_port)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = Raw::open(server.mqtt_port);
    assert!(fourth.closed_within(Duration::from_secs(2)));
    // Connected devices no longer count as connecting, but they count as open sockets: the
    // last of the three fills the budget of six.
    let connecting_again = idle.pop().unwrap();
    drop(connecting_again);
    std::thread::sleep(Duration::from_millis(200));
    let devices: Vec<Raw> = ids
        .iter()
        .zip(&secrets)
        .map(|(id, secret)| connected(&server, id, secret))
        .collect();
    let _third_idle = Raw::open(server.mqtt_port);
    std::thread::sleep(Duration::from_millis(200));
    let mut seventh = Raw::open(server.mqtt_port);
    assert!(seventh.closed_within(Duration::from_secs(2)));
    // The self-probe sees it: no new connection gets in (503), though HTTP is served.
    assert!(mqtt_state_becomes(&server, "not_accepting"));
    assert_eq!(health(&server).0, 503);
    drop(devices);
    drop(idle);
    drop(_third_idle);
    still_serving(server, dir.path(), "sock-1", &secrets[0]);
}

#[test]
fn a_device_that_never_reads_slows_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let slow = add_device(dir.path(), "slow-1");
    let other = add_device(dir.path(), "slow-2");
    let server = start(dir.path(), "", "");
    // Subscribes to its own topics at QoS 1, publishes a stream, never reads a byte.
    let mut device = connected(&server, "slow-1", &slow);
    device.send(&mqtt_raw::subscribe(1, "prognos/v1/slow-1/#", 1));
    let payload = format!(
        r#"{{"metrics": {{"m": 1}}, "pad": "{}"}}"#,
        "x".repeat(1000)
    );
    let started = Instant::now();
    let mut sent = 0;
    device
        .stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while sent < 5000 && started.elapsed() < Duration::from_secs(20) {
        if !device.send(&mqtt_raw::publish(
            b"prognos/v1/slow-1/telemetry",
            payload.as_bytes(),
            0,
            0,
            false,
        )) {
            break;
        }
        sent += 1;
    }
    // Meanwhile another device publishes and is stored, and the probe gets in.
    assert!(
        server
            .pub_qos1(
                "slow-2",
                &other,
                "prognos/v1/slow-2/telemetry",
                &telemetry(1.0)
            )
            .success()
    );
    assert!(mqtt_state_becomes(&server, "ok"));
    drop(device);
    assert_eq!(stored(server, dir.path(), "slow-2").len(), 1);
}

#[test]
fn a_client_that_disconnects_never_takes_the_next_connection_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("reuse-{i}")).collect();
    let secrets: Vec<String> = ids.iter().map(|id| add_device(dir.path(), id)).collect();
    let server = start(dir.path(), "probe_interval_ms = 60000", "");
    let port = server.mqtt_port;
    // Clients that send DISCONNECT and close at once (as mosquitto_pub does), while others
    // connect: a new connection often gets the id just freed. Upstream, the closing client's
    // task then told the router to disconnect that id — by then someone else's connection.
    let workers: Vec<_> = ids
        .into_iter()
        .zip(secrets)
        .map(|(id, secret)| {
            std::thread::spawn(move || {
                let mut dropped = 0;
                for _ in 0..60 {
                    let (mut raw, code) = Raw::connect(port, &id, id.as_bytes(), secret.as_bytes());
                    // Still there: a PINGREQ is answered.
                    raw.send(&[0xc0, 0x00]);
                    let alive = matches!(
                        raw.read(Duration::from_secs(3)),
                        Read_::Packet(p) if p.kind() == 13
                    );
                    if code != Some(0) || !alive {
                        dropped += 1;
                    }
                    raw.send(&mqtt_raw::DISCONNECT);
                }
                dropped
            })
        })
        .collect();
    let dropped: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(dropped, 0, "connections of other clients dropped");
    assert!(server.terminate().0.success());
}
