//! Service operations through the real binary: an API key from the CLI, the registry, a ticket
//! through its state machine, dispatch with parts, the public tracking page and the OpenAPI
//! document — all over plain HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn create_key(data_dir: &std::path::Path, role: &str, provider: Option<&str>) -> String {
    let mut args = vec![
        "apikey",
        "create",
        "--role",
        role,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    if let Some(p) = provider {
        args.extend(["--provider", p]);
    }
    let out = prognos(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role"], role);
    v["key"].as_str().unwrap().to_owned()
}

#[test]
fn ticket_lifecycle_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_key(dir.path(), "admin", None);
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let bearer = format!("Bearer {admin}");
    let auth = [("Authorization", bearer.as_str())];
    let post = |path: &str, body: Value| http_request(port, "POST", path, &auth, &body.to_string());

    // OpenAPI and authentication.
    let doc = http_request(port, "GET", "/openapi.json", &[], "");
    assert_eq!(doc.status, 200);
    assert!(doc.body["paths"]["/api/v1/tickets/{id}/transitions"]["post"].is_object());
    let r = http_request(port, "GET", "/api/v1/tickets", &[], "");
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (401, "application/problem+json")
    );

    // A small network.
    for body in [
        json!({"provider_id": "oem", "name": "OEM", "kind": "oem", "regions": ["north"]}),
        json!({"provider_id": "ag", "name": "Agent", "kind": "agent", "parent_id": "oem", "regions": ["north"]}),
        json!({"provider_id": "sp", "name": "Partner", "kind": "provider", "parent_id": "ag", "regions": ["north"]}),
    ] {
        assert_eq!(post("/api/v1/providers", body).status, 201);
    }
    assert_eq!(
        post(
            "/api/v1/customers",
            json!({"customer_id": "c1", "name": "Plant operator"})
        )
        .status,
        201
    );
    assert_eq!(
        post(
            "/api/v1/sites",
            json!({"site_id": "s1", "customer_id": "c1", "name": "Plant", "region": "north", "lat": 53.55, "lon": 10.0})
        )
        .status,
        201
    );
    assert_eq!(
        post(
            "/api/v1/devices",
            json!({"device_id": "pump-1", "site_id": "s1", "serial": "SN1", "model": "P100", "criticality": 3})
        )
        .status,
        201
    );
    assert_eq!(
        post(
            "/api/v1/technicians",
            json!({"technician_id": "t1", "provider_id": "sp", "name": "Tech", "region": "north",
                   "home_lat": 53.5, "home_lon": 10.1, "skills": [{"skill": "bearing_wear", "level": 5}]})
        )
        .status,
        201
    );
    assert_eq!(
        post(
            "/api/v1/parts",
            json!({"sku": "BRG", "name": "Bearing kit", "fixes_modes": ["bearing_wear"], "unit_cost": 120.0, "abc_class": "A"})
        )
        .status,
        201
    );
    let r = http_request(
        port,
        "PUT",
        "/api/v1/stock/van-t1/BRG",
        &auth,
        r#"{"on_hand": 1}"#,
    );
    assert_eq!(r.status, 200);

    // A ticket from the API: validation names the field, then the happy path.
    let r = post("/api/v1/tickets", json!({"title": "Noise"}));
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("device_id"))
    );
    let r = post(
        "/api/v1/tickets",
        json!({"title": "Bearing noise", "device_id": "pump-1", "failure_mode": "bearing_wear"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["ticket_id"].as_str().unwrap().to_owned();
    let code = r.body["tracking_code"].as_str().unwrap().to_owned();
    let transitions = format!("/api/v1/tickets/{id}/transitions");
    let r = post(&transitions, json!({"to": "resolved"}));
    assert_eq!(r.status, 409);
    assert_eq!(r.body["allowed"], json!(["triaged", "cancelled"]));

    let r = http_request(
        port,
        "GET",
        &format!("/api/v1/tickets/{id}/candidates?limit=all"),
        &auth,
        "",
    );
    assert_eq!(r.body[0]["technician_id"], "t1");
    let r = post("/api/v1/dispatch/batch", json!({"ticket_ids": [id]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["assignments"][0]["parts"][0]["source"], "van");
    let r = post(
        "/api/v1/parts/reservations",
        json!({"sku": "BRG", "location_id": "van-t1", "quantity": 1}),
    );
    assert_eq!(r.status, 409, "the van's only kit is held for the ticket");

    for to in ["en_route", "on_site", "resolved"] {
        assert_eq!(post(&transitions, json!({"to": to})).status, 200);
    }
    let r = post(
        &format!("/api/v1/tickets/{id}/close"),
        json!({"cause": "worn bearing", "fix": "replaced bearing", "signed_off_by": "shift lead",
               "close_code": "confirmed", "parts_used": [{"sku": "BRG", "quantity": 1}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "closed");

    // The customer's page and rating, without a key.
    let r = http_request(port, "GET", &format!("/track/{code}"), &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "closed");
    assert_eq!(r.body["timeline"].as_array().unwrap().len(), 7);
    let r = http_request(
        port,
        "POST",
        &format!("/track/{code}/rating"),
        &[],
        r#"{"score": 1, "comment": "late"}"#,
    );
    assert_eq!(r.body["follow_up_opened"], true);
    let r = http_request(port, "GET", "/api/v1/tickets?source=follow_up", &auth, "");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);

    // A provider key outside the subtree sees nothing.
    let other = create_key(dir.path(), "provider", Some("oem"));
    let r = http_request(
        port,
        "GET",
        "/api/v1/tickets",
        &[("Authorization", &format!("Bearer {other}"))],
        "",
    );
    assert_eq!(r.status, 200, "the OEM sees its whole tree");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);

    let (status, _) = server.terminate();
    assert!(status.success());
}
