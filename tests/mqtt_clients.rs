//! Named MQTT clients with their own topic rules (`prognos client add`), through the real
//! binary: a read-only integration receives every device's telemetry and can do nothing
//! else, no named client can take over a device's session, and devices keep their
//! own-prefix rule. Every wait is bounded; loopback only.

// Helpers outside `#[test]` functions panic on a broken test setup, like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mqtt_raw::{self, Raw, Read_};
use common::*;

fn start(dir: &Path) -> Server {
    let path = dir.join("clients.toml");
    std::fs::write(&path, "[models]\nenabled = false\n").unwrap();
    Server::start(dir, &["--config", path.to_str().unwrap()])
}

fn add_client(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["client", "add"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", dir.to_str().unwrap()]);
    prognos(&all)
}

fn telemetry(value: f64) -> String {
    format!(
        r#"{{"ts": {}, "metrics": {{"m": {value}}}}}"#,
        now_ms() - 1000
    )
}

/// Every stored value of every series.
fn values(dir: &Path) -> Vec<f64> {
    read_telemetry(dir)
        .into_values()
        .flatten()
        .map(|(_, v)| v)
        .collect()
}

/// The SUBACK return codes for one SUBSCRIBE of `filter` at QoS 1.
fn suback(raw: &mut Raw, pkid: u16, filter: &str) -> Vec<u8> {
    assert!(raw.send(&mqtt_raw::subscribe(pkid, filter, 1)));
    match raw.read(Duration::from_secs(10)) {
        Read_::Packet(p) if p.kind() == 9 => p.body[2..].to_vec(),
        other => panic!("SUBACK expected for {filter}: {other:?}"),
    }
}

#[test]
fn a_read_only_integration_receives_telemetry_and_can_do_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let pump = add_device(dir.path(), "pump-1");
    let out = add_client(
        dir.path(),
        &["historian", "--subscribe", "prognos/v1/+/telemetry"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = issued["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    let server = start(dir.path());

    // It subscribes to every device's telemetry and receives a device's publish.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt_port.to_string()])
        .args(["-i", "historian", "-u", "historian", "-P", &secret])
        .args([
            "-t",
            "prognos/v1/+/telemetry",
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "20",
            "-v",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub is installed (scripts/test.sh installs mosquitto-clients)");
    // Published until the subscription is in place (bounded: 40 tries).
    let sub_output = {
        let mut published = 0;
        while published < 40 && sub.try_wait().unwrap().is_none() {
            assert!(
                server
                    .pub_qos1(
                        "pump-1",
                        &pump,
                        "prognos/v1/pump-1/telemetry",
                        &telemetry(1.0)
                    )
                    .success()
            );
            published += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
        sub.wait_with_output().unwrap()
    };
    let line = String::from_utf8_lossy(&sub_output.stdout);
    assert!(
        line.starts_with("prognos/v1/pump-1/telemetry "),
        "the integration got {line:?}"
    );

    // A subscription outside its rules gets the failure code; the connection stays.
    let (mut raw, code) = Raw::connect(
        server.mqtt_port,
        "historian",
        b"historian",
        secret.as_bytes(),
    );
    assert_eq!(code, Some(0));
    assert_eq!(suback(&mut raw, 1, "prognos/v1/#"), vec![0x80]);
    assert_eq!(
        suback(&mut raw, 2, "prognos/v1/pump-1/commands"),
        vec![0x80]
    );
    assert_eq!(suback(&mut raw, 3, "prognos/v1/pump-1/telemetry"), vec![1]);
    // It may not publish (not even telemetry): the broker disconnects it, nothing is stored.
    assert!(raw.send(&mqtt_raw::publish(
        b"prognos/v1/pump-1/telemetry",
        telemetry(99.0).as_bytes(),
        1,
        7,
        false
    )));
    let mut closed = false;
    for _ in 0..20 {
        match raw.read(Duration::from_secs(1)) {
            Read_::Closed => {
                closed = true;
                break;
            }
            Read_::Packet(p) => assert_ne!(p.kind(), 4, "PUBACK for a refused publish"),
            Read_::Timeout => {}
        }
    }
    assert!(closed, "a publish outside the rules did not disconnect");

    // The device's own-prefix rule is unchanged: it may not read others' telemetry.
    let (mut device, code) = Raw::connect(server.mqtt_port, "pump-1", b"pump-1", pump.as_bytes());
    assert_eq!(code, Some(0));
    assert!(device.send(&mqtt_raw::subscribe(1, "prognos/v1/+/telemetry", 1)));
    assert!(matches!(
        device.read(Duration::from_secs(10)),
        Read_::Closed
    ));

    let _ = server.terminate();
    let values = values(dir.path());
    assert!(values.contains(&1.0));
    assert!(!values.contains(&99.0), "a refused publish was stored");
}

#[test]
fn no_named_client_can_use_a_device_id_or_log_in_without_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pump = add_device(dir.path(), "pump-1");
    let out = add_client(
        dir.path(),
        &[
            "gateway",
            "--client-id",
            "*",
            "--publish",
            "prognos/v1/+/telemetry",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = issued["secret"].as_str().unwrap().to_owned();
    let server = start(dir.path());

    // The device is connected; the gateway tries to take over its session with its id.
    let (mut device, code) = Raw::connect(server.mqtt_port, "pump-1", b"pump-1", pump.as_bytes());
    assert_eq!(code, Some(0));
    let (_, code) = Raw::connect(server.mqtt_port, "pump-1", b"gateway", secret.as_bytes());
    assert_eq!(code, Some(4), "a named client used a device's client id");
    for reserved in ["prognos-ingest", "prognos:probe"] {
        let (_, code) = Raw::connect(server.mqtt_port, reserved, b"gateway", secret.as_bytes());
        assert_ne!(code, Some(0), "{reserved} accepted");
    }
    // The device was not kicked off.
    assert!(device.send(&[0xC0, 0]));
    assert!(matches!(device.read(Duration::from_secs(5)), Read_::Packet(p) if p.kind() == 13));

    // Wrong secret, no login (no anonymous client is configured), another name.
    assert_eq!(
        Raw::connect(server.mqtt_port, "gw-1", b"gateway", b"wrong").1,
        Some(4)
    );
    assert_ne!(Raw::connect(server.mqtt_port, "gw-1", b"", b"").1, Some(0));
    assert_eq!(
        Raw::connect(server.mqtt_port, "gw-1", b"nobody", secret.as_bytes()).1,
        Some(4)
    );
    // Its own id works, and its publish on a device's behalf is stored.
    let (mut gw, code) = Raw::connect(server.mqtt_port, "gw-1", b"gateway", secret.as_bytes());
    assert_eq!(code, Some(0));
    assert!(gw.send(&mqtt_raw::publish(
        b"prognos/v1/pump-1/telemetry",
        telemetry(42.0).as_bytes(),
        1,
        1,
        false
    )));
    assert!(matches!(gw.read(Duration::from_secs(10)), Read_::Packet(p) if p.kind() == 4));

    // Removed: it can no longer log in.
    let removed = prognos(&[
        "client",
        "remove",
        "gateway",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(removed.status.success());
    assert_eq!(
        Raw::connect(server.mqtt_port, "gw-2", b"gateway", secret.as_bytes()).1,
        Some(4)
    );
    let _ = server.terminate();
    assert!(values(dir.path()).contains(&42.0));
}

#[test]
fn bad_client_rules_are_refused_naming_the_field_and_secrets_are_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let out = add_client(dir.path(), &["x", "--subscribe", "a/#/b"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subscribe"), "{err}");
    let out = add_client(dir.path(), &["x", "--client-id", "a*b*"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("client_ids"));
    let ok = add_client(dir.path(), &["x", "--subscribe", "a/+"]);
    assert!(ok.status.success());
    let secret = serde_json::from_slice::<serde_json::Value>(&ok.stdout).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let dup = add_client(dir.path(), &["x"]);
    assert!(!dup.status.success());
    let list = prognos(&["client", "list", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("\"x\"") && !text.contains(&secret), "{text}");
}
