//! A simulated failing machine, published over real MQTT to the real binary, raises exactly
//! one predictive alert for its failure, before the failure.

mod common;

use common::*;

#[test]
fn a_failing_device_raises_exactly_one_alert_before_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    // Seed 11 with 6 devices: motor-0004 overheats from day 16.1 and fails on day 22.6
    // (ground truth from the labels file). 24 days at 10-minute readings, as fast as possible.
    let labels_path = dir.path().join("labels.jsonl");
    let report = publish_failing_fleet(server.mqtt_port, &data, Some(&labels_path));
    assert_eq!(report["dropped"], 0, "{report}");
    let (status, _) = server.terminate();
    assert!(status.success());

    let labels: Vec<serde_json::Value> = std::fs::read_to_string(&labels_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failure = labels
        .iter()
        .find(|l| l["device_id"] == "motor-0004")
        .expect("the seed's ground truth has motor-0004 failing");
    let onset = failure["onset_ms"].as_i64().unwrap();
    let failed = failure["failure_ms"].as_i64().unwrap();

    let out = prognos(&[
        "alerts",
        "list",
        "--device",
        "motor-0004",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let alerts: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        alerts.len(),
        1,
        "exactly one alert, no flapping: {alerts:#?}"
    );
    let alert = &alerts[0];
    let opened = alert["opened_at_ms"].as_i64().unwrap();
    assert!(opened < failed, "alert opened after the failure");
    assert!(
        opened > onset - 86_400_000,
        "alert opened long before the degradation began"
    );
    assert_eq!(alert["failure_mode"], "overheating");
    assert!(
        alert["evidence"]["metrics"].is_object(),
        "evidence attached: {alert}"
    );

    // People handle it over the API: a scheduler acknowledges, an engineer may only read.
    let scheduler = format!("Bearer {}", create_api_key(&data, "scheduler"));
    let engineer = format!("Bearer {}", create_api_key(&data, "engineer"));
    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let call = |method: &str, path: &str, key: &str| {
        http_request(port, method, path, &[("Authorization", key)], "")
    };
    let id = alert["alert_id"].as_str().unwrap();
    let listed = call("GET", "/api/v1/alerts?device_id=motor-0004", &engineer);
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body.as_array().unwrap().len(), 1, "{}", listed.text);
    assert_eq!(listed.body[0]["alert_id"], id);
    let refused = call(
        "POST",
        &format!("/api/v1/alerts/{id}/acknowledge"),
        &engineer,
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    let missing = call(
        "POST",
        "/api/v1/alerts/no-such-alert/acknowledge",
        &scheduler,
    );
    assert_eq!(missing.status, 404, "{}", missing.text);
    let bad = call("GET", "/api/v1/alerts?state=closed", &engineer);
    assert_eq!(bad.status, 400, "{}", bad.text);
    // The models resolved it once the repaired machine ran healthy again: it can no longer
    // be acknowledged (the console test acknowledges an open one).
    assert_eq!(alert["state"], "resolved", "{alert}");
    let acked = call(
        "POST",
        &format!("/api/v1/alerts/{id}/acknowledge"),
        &scheduler,
    );
    assert_eq!(acked.status, 409, "{}", acked.text);
    assert_eq!(acked.body["status"], 409, "problem+json: {}", acked.text);
    // Resolving a resolved alert changes nothing.
    let resolved = call("POST", &format!("/api/v1/alerts/{id}/resolve"), &scheduler);
    assert_eq!(resolved.status, 200, "{}", resolved.text);
    assert_eq!(resolved.body["resolved_at_ms"], alert["resolved_at_ms"]);
    let open = call(
        "GET",
        "/api/v1/alerts?state=open&device_id=motor-0004",
        &engineer,
    );
    assert_eq!(open.body, serde_json::json!([]), "{}", open.text);
    let (status, _) = server.terminate();
    assert!(status.success());
}
