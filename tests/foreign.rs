//! Machines the simulator does not have — lathes and chillers, with their own metric names,
//! physics, shift and daily cycles — published over real MQTT to the real binary with no
//! configuration: the degrading ones alert during their degradation, the healthy ones do not.
//! A profile file for the lathe's model changes what its alerts are called.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use prognos_simulators::foreign::{ForeignConfig, ForeignFleet, ForeignTruth};

/// Samples per MQTT message (a JSON array): 20 hours at 5-minute readings.
const PER_MESSAGE: usize = 240;

/// A fixed calendar (Monday 2025-01-06, winter): the lathe's shifts and the chillers'
/// seasons are the same whatever day the test runs; the config lets the ingest accept it.
const START_MS: i64 = 1_736_121_600_000;
const CONFIG: &str = "[ingest]\nmax_past_days = 36500\n";

fn fleet() -> ForeignFleet {
    let start = START_MS;
    ForeignFleet::new(ForeignConfig {
        devices: 4,
        days: 30.0,
        seed: 3,
        start_ms: start,
        sample_interval_ms: 300_000,
        ..ForeignConfig::default()
    })
}

/// Registers every device of the fleet with its model and publishes all its readings, in
/// time order per device, as JSON arrays over MQTT (QoS 1).
fn publish(server: &Server, data: &Path, fleet: ForeignFleet) {
    let mut by_device: BTreeMap<String, (&'static str, Vec<String>)> = BTreeMap::new();
    for (device, model, ts, metrics) in fleet {
        let fields: Vec<String> = metrics
            .iter()
            .map(|(name, value)| format!("\"{name}\":{value}"))
            .collect();
        by_device
            .entry(device)
            .or_insert_with(|| (model, Vec::new()))
            .1
            .push(format!(
                "{{\"ts\":{ts},\"metrics\":{{{}}}}}",
                fields.join(",")
            ));
    }
    for (device, (model, readings)) in &by_device {
        let v = prognos_json(&[
            "device",
            "add",
            device,
            "--model",
            model,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        let secret = v["secret"].as_str().unwrap().to_owned();
        for chunk in readings.chunks(PER_MESSAGE) {
            let payload = format!("[{}]", chunk.join(","));
            let topic = format!("prognos/v1/{device}/telemetry");
            assert!(server.pub_qos1(device, &secret, &topic, &payload).success());
        }
    }
}

fn alerts_of(data: &Path, device: &str) -> Vec<serde_json::Value> {
    let out = prognos(&[
        "alerts",
        "list",
        "--device",
        device,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Serves, publishes the fleet, drains, and returns the ground truth and every device's alerts.
fn run(
    config_extra: &str,
    dir: &Path,
) -> (Vec<ForeignTruth>, BTreeMap<String, Vec<serde_json::Value>>) {
    let data = dir.join("data");
    let config = dir.join("prognos.toml");
    std::fs::write(&config, format!("{CONFIG}{config_extra}")).unwrap();
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let fleet = fleet();
    let truth = fleet.truth();
    let devices: Vec<String> = fleet.devices().iter().map(|d| d.id.clone()).collect();
    publish(&server, &data, fleet);
    let (status, _) = server.terminate();
    assert!(status.success());
    assert!(
        read_dead_letters(&data).is_empty(),
        "every reading was accepted"
    );
    let alerts = devices
        .iter()
        .map(|d| (d.clone(), alerts_of(&data, d)))
        .collect();
    (truth, alerts)
}

#[test]
fn foreign_machines_alert_while_they_degrade_and_healthy_ones_stay_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (truth, alerts) = run("", dir.path());
    assert!(
        truth.iter().any(|t| t.model.starts_with("lt"))
            && truth.iter().any(|t| t.model.starts_with("ch")),
        "the fleet has a degrading lathe and a degrading chiller: {truth:?}"
    );
    for (device, list) in &alerts {
        match truth.iter().find(|t| &t.device_id == device) {
            Some(t) => {
                let first = list
                    .iter()
                    .map(|a| a["opened_at_ms"].as_i64().unwrap())
                    .min()
                    .unwrap_or_else(|| {
                        panic!("{device} degrades from {} and raised no alert", t.onset_ms)
                    });
                assert!(
                    first > t.onset_ms && first < t.failure_ms,
                    "{device}: alert at {first}, degradation {}..{}",
                    t.onset_ms,
                    t.failure_ms
                );
                let alert = &list[0];
                assert_eq!(alert["failure_mode"], "anomaly", "{alert}");
                // The evidence names the metrics that deviate.
                let evidence = alert["evidence"].to_string();
                assert!(
                    t.metrics.iter().any(|m| evidence.contains(m)),
                    "{device}: evidence does not name {:?}: {evidence}",
                    t.metrics
                );
            }
            None => assert!(list.is_empty(), "healthy {device} alerted: {list:#?}"),
        }
    }
}

#[test]
fn a_profile_file_names_the_failure_mode_of_a_device_model() {
    let dir = tempfile::tempdir().unwrap();
    let lathe = fleet()
        .truth()
        .into_iter()
        .find(|t| t.model.starts_with("lt"))
        .expect("a degrading lathe");
    let profile = dir.path().join("lathe.toml");
    let metrics: Vec<String> = lathe.metrics.iter().map(|m| format!("\"{m}\"")).collect();
    std::fs::write(
        &profile,
        format!(
            "name = \"lathe\"\nmodels = [\"{}\"]\nengine = \"learned\"\n\n\
             [[failure_modes]]\nname = \"spindle_bearing_wear\"\n\
             indicator = {{ kind = \"residual\", metrics = [{}] }}\n",
            lathe.model,
            metrics.join(", ")
        ),
    )
    .unwrap();
    let (_, alerts) = run("[models]\nprofiles = [\"lathe.toml\"]\n", dir.path());
    let config = dir.path().join("prognos.toml");
    let list = &alerts[&lathe.device_id];
    assert!(!list.is_empty(), "the degrading lathe alerted");
    assert_eq!(
        list[0]["failure_mode"], "spindle_bearing_wear",
        "{:#}",
        list[0]
    );
    // A bad profile file is refused at start with its name.
    std::fs::write(&profile, "name = 3").unwrap();
    let out = prognos(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lathe.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
