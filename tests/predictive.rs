//! The full life of a predictive ticket through the real binary: a simulated motor overheats
//! over real MQTT → the online models raise an alert → the alert becomes a predictive ticket →
//! batch dispatch assigns a technician and reserves the part from the van → transitions →
//! service report and close → the close code is recorded on the alert.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[test]
fn alert_to_ticket_to_dispatch_to_close_code_on_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let bearer = format!("Bearer {}", create_api_key(&data, "admin"));
    let auth = [("Authorization", bearer.as_str())];

    let server = Server::start(&data, &[]);
    let port = server.http_port;
    let post = |path: &str, body: Value| http_request(port, "POST", path, &auth, &body.to_string());
    let get = |path: &str| http_request(port, "GET", path, &auth, "");

    // The service network around the machine that will fail (seed 11: motor-0004 overheats
    // from day 16.1 and fails on day 22.6).
    east_network(
        &post,
        false,
        json!({"device_id": "motor-0004", "site_id": "s1", "serial": "M-4", "model": "M200", "criticality": 3}),
    );
    assert_eq!(
        post(
            "/api/v1/technicians",
            json!({"technician_id": "t1", "provider_id": "sp", "name": "Tech", "region": "east",
            "home_lat": 31.3, "home_lon": 121.4, "skills": [{"skill": "overheating", "level": 4}]})
        )
        .status,
        201
    );
    assert_eq!(
        post("/api/v1/parts", json!({"sku": "FAN", "name": "Cooling fan kit", "fixes_modes": ["overheating"], "unit_cost": 80.0, "abc_class": "B"})).status,
        201
    );
    assert_eq!(
        http_request(
            port,
            "PUT",
            "/api/v1/stock/van-t1/FAN",
            &auth,
            r#"{"on_hand": 2}"#
        )
        .status,
        200
    );

    // The fleet over MQTT, registered in this server's device registry.
    publish_failing_fleet(server.mqtt_port, &data, None);

    // The alert becomes a predictive ticket with the alert's evidence.
    let mut ticket = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let r = get("/api/v1/tickets?source=predictive");
            ticket = r.body["items"]
                .as_array()
                .and_then(|items| {
                    items
                        .iter()
                        .find(|t| t["device_id"] == "motor-0004")
                        .cloned()
                })
                .unwrap_or(Value::Null);
            !ticket.is_null()
        }),
        "no predictive ticket for motor-0004"
    );
    assert_eq!(ticket["failure_mode"], "overheating", "{ticket}");
    let id = ticket["ticket_id"].as_str().unwrap().to_owned();
    let full = get(&format!("/api/v1/tickets/{id}"));
    assert_eq!(full.status, 200);
    assert!(
        !full.body["evidence"].is_null(),
        "evidence carried: {}",
        full.body
    );
    let tickets_for_motor = get("/api/v1/tickets?source=predictive").body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["device_id"] == "motor-0004")
        .count();
    assert_eq!(
        tickets_for_motor, 1,
        "one open ticket per device and failure mode"
    );

    // Dispatch with the part from the technician's van, then the visit.
    let r = post("/api/v1/dispatch/batch", json!({"ticket_ids": [id]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["assignments"][0]["technician_id"], "t1");
    assert_eq!(
        r.body["assignments"][0]["parts"][0]["source"], "van",
        "{}",
        r.body
    );
    let transitions = format!("/api/v1/tickets/{id}/transitions");
    for to in ["en_route", "on_site", "resolved"] {
        let r = post(&transitions, json!({"to": to, "note": "test"}));
        assert_eq!(r.status, 200, "{to}: {}", r.body);
    }
    let r = post(
        &format!("/api/v1/tickets/{id}/close"),
        json!({"cause": "clogged cooling fan", "fix": "replaced fan", "signed_off_by": "site manager",
               "close_code": "confirmed", "parts_used": [{"sku": "FAN", "quantity": 1}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "closed");
    let stock = get("/api/v1/stock?location_id=van-t1");
    assert_eq!(stock.status, 200);
    let (status, _) = server.terminate();
    assert!(status.success());

    // The technician's verdict reached the alert: model accuracy can be measured.
    let out = prognos(&[
        "alerts",
        "list",
        "--device",
        "motor-0004",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let alerts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["close_code"], "confirmed", "{:#?}", alerts[0]);
}

#[test]
fn a_ticket_past_its_short_sla_is_escalated_up_the_hierarchy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let bearer = format!("Bearer {}", create_api_key(&data, "admin"));
    let auth = [("Authorization", bearer.as_str())];
    let config = data.join("fast-sla.toml");
    std::fs::write(&config, "[service]\nsla_check_interval_ms = 200\n").unwrap();
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let port = server.http_port;
    let post = |path: &str, body: Value| http_request(port, "POST", path, &auth, &body.to_string());

    east_network(
        &post,
        true,
        json!({"device_id": "pump-9", "site_id": "s1", "serial": "P-9", "model": "P100", "criticality": 2}),
    );
    // Normal priority, standard tier: answer within 1 s, on site within 2 s.
    let r = http_request(
        port,
        "PUT",
        "/api/v1/sla/policies",
        &auth,
        &json!({"priority": "normal", "tier": "standard", "response_secs": 1, "onsite_secs": 2})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        "/api/v1/tickets",
        json!({"title": "Leak", "device_id": "pump-9", "failure_mode": "seal_leak", "priority": "normal"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["ticket_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body["provider_id"], "sp",
        "the ticket goes to the deepest provider serving the region"
    );

    let mut ticket = Value::Null;
    assert!(
        wait_until(Duration::from_secs(15), || {
            ticket = http_request(port, "GET", &format!("/api/v1/tickets/{id}"), &auth, "").body;
            ticket["sla"]["response_breached"] == true && ticket["escalated_to"].is_string()
        }),
        "no escalation: {ticket:#}"
    );
    assert_eq!(ticket["sla"]["status"], "breached");
    assert_eq!(
        ticket["escalated_to"], "ag",
        "escalated one level up: {ticket:#}"
    );
    assert_ne!(ticket["priority"], "normal", "priority raised at breach");
    let events = http_request(
        port,
        "GET",
        &format!("/api/v1/tickets/{id}/events"),
        &auth,
        "",
    );
    let text = events.body.to_string();
    assert!(
        text.contains("escalat"),
        "the escalation is in the audit trail: {text}"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// The service network of region `east`: an OEM, optionally an agent under it, a provider at
/// the bottom, one customer with one site, and `device` on that site.
fn east_network(post: &impl Fn(&str, Value) -> Reply, with_agent: bool, device: Value) {
    let parent = if with_agent { "ag" } else { "oem" };
    let mut providers =
        vec![json!({"provider_id": "oem", "name": "OEM", "kind": "oem", "regions": ["east"]})];
    if with_agent {
        providers.push(json!({"provider_id": "ag", "name": "Agent", "kind": "agent", "parent_id": "oem", "regions": ["east"]}));
    }
    providers.push(json!({"provider_id": "sp", "name": "Partner", "kind": "provider", "parent_id": parent, "regions": ["east"]}));
    for body in providers {
        assert_eq!(post("/api/v1/providers", body).status, 201);
    }
    assert_eq!(
        post(
            "/api/v1/customers",
            json!({"customer_id": "c1", "name": "Mill"})
        )
        .status,
        201
    );
    let site = json!({"site_id": "s1", "customer_id": "c1", "name": "Mill", "region": "east", "lat": 31.2, "lon": 121.5});
    assert_eq!(post("/api/v1/sites", site).status, 201);
    assert_eq!(post("/api/v1/devices", device).status, 201);
}
