//! Service operations through the real binary: an API key from the CLI, the registry, a ticket
//! through its state machine, dispatch with parts, the public tracking page and the OpenAPI
//! document — all over plain HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn ticket_lifecycle_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let admin = create_api_key_for(dir.path(), "admin", None);
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
    let other = create_api_key_for(dir.path(), "provider", Some("oem"));
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

/// A server with a small network over HTTP: OEM → agent → two providers (north, south), four
/// technicians each with a van, three devices, a bearing kit. Returns the admin bearer.
fn network_over_http(dir: &std::path::Path, server: &Server) -> String {
    let admin = format!("Bearer {}", create_api_key_for(dir, "admin", None));
    let port = server.http_port;
    let post = |path: &str, body: Value| {
        let r = http_request(
            port,
            "POST",
            path,
            &[("Authorization", &admin)],
            &body.to_string(),
        );
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    };
    post(
        "/api/v1/providers",
        json!({"provider_id": "oem", "name": "OEM", "kind": "oem", "regions": ["north", "south"]}),
    );
    post(
        "/api/v1/providers",
        json!({"provider_id": "ag", "name": "Agent", "kind": "agent", "parent_id": "oem", "regions": ["north", "south"]}),
    );
    post(
        "/api/v1/providers",
        json!({"provider_id": "sp-n", "name": "North", "kind": "provider", "parent_id": "ag", "regions": ["north"]}),
    );
    post(
        "/api/v1/providers",
        json!({"provider_id": "sp-s", "name": "South", "kind": "provider", "parent_id": "ag", "regions": ["south"]}),
    );
    post(
        "/api/v1/customers",
        json!({"customer_id": "c1", "name": "Plant operator"}),
    );
    for (i, (region, lat, lon)) in [
        ("north", 53.5, 10.0),
        ("north", 53.0, 9.0),
        ("south", 48.1, 11.6),
    ]
    .into_iter()
    .enumerate()
    {
        post(
            "/api/v1/sites",
            json!({"site_id": format!("s{i}"), "customer_id": "c1", "name": "Plant", "region": region, "lat": lat, "lon": lon}),
        );
        post(
            "/api/v1/devices",
            json!({"device_id": format!("d{i}"), "site_id": format!("s{i}"), "serial": format!("SN{i}"), "model": "P100", "criticality": 2}),
        );
    }
    let skills = [
        json!([{"skill": "bearing_wear", "level": 5}, {"skill": "seal_leak", "level": 2}]),
        json!([{"skill": "bearing_wear", "level": 3}, {"skill": "overheating", "level": 4}]),
        json!([{"skill": "seal_leak", "level": 5}, {"skill": "overheating", "level": 2}]),
        json!([{"skill": "bearing_wear", "level": 2}, {"skill": "seal_leak", "level": 4}, {"skill": "overheating", "level": 5}]),
    ];
    for (i, skills) in skills.into_iter().enumerate() {
        post(
            "/api/v1/technicians",
            json!({"technician_id": format!("t{i}"), "provider_id": "sp-n", "name": format!("Tech {i}"),
            "region": "north", "home_lat": 53.0 + 0.2 * i as f64, "home_lon": 9.0 + 0.3 * i as f64,
            "skills": skills, "max_daily_load": 1 + (i % 2)}),
        );
    }
    post(
        "/api/v1/technicians",
        json!({"technician_id": "t-south", "provider_id": "sp-s", "name": "South tech",
        "region": "south", "home_lat": 48.0, "home_lon": 11.5, "skills": [{"skill": "bearing_wear", "level": 4}]}),
    );
    post(
        "/api/v1/parts",
        json!({"sku": "BRG", "name": "Bearing kit", "fixes_modes": ["bearing_wear"], "unit_cost": 120.0, "abc_class": "A"}),
    );
    post(
        "/api/v1/locations",
        json!({"location_id": "central", "kind": "central", "name": "Central", "lat": 51.0, "lon": 10.0}),
    );
    admin
}

/// Every assignment of tickets to technicians (or none) within capacity: the best total score.
fn brute_force_best(scores: &[Vec<Option<f64>>], capacity: &[i64]) -> f64 {
    fn go(i: usize, scores: &[Vec<Option<f64>>], left: &mut [i64]) -> f64 {
        if i == scores.len() {
            return 0.0;
        }
        let mut best = go(i + 1, scores, left);
        for (k, s) in scores[i].iter().enumerate() {
            if let Some(s) = s
                && left[k] > 0
            {
                left[k] -= 1;
                best = best.max(s + go(i + 1, scores, left));
                left[k] += 1;
            }
        }
        best
    }
    go(0, scores, &mut capacity.to_vec())
}

#[test]
fn concurrent_reservations_optimal_batches_and_the_role_matrix_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let admin = network_over_http(dir.path(), &server);
    let auth = |k: &str| vec![("Authorization", k.to_owned())];
    let call = |key: &str, method: &str, path: &str, body: Value| {
        let h = auth(key);
        let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        http_request(port, method, path, &h, &body.to_string())
    };

    // 50 concurrent reservations of a part with 10 in stock: exactly 10 succeed.
    assert_eq!(
        call(
            &admin,
            "PUT",
            "/api/v1/stock/central/BRG",
            json!({"on_hand": 10})
        )
        .status,
        200
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    call(
                        &admin,
                        "POST",
                        "/api/v1/parts/reservations",
                        json!({"sku": "BRG", "location_id": "central", "quantity": 1}),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        40,
        "{statuses:?}"
    );
    let r = call(
        &admin,
        "GET",
        "/api/v1/stock?location_id=central&sku=BRG",
        json!(null),
    );
    let row = &r.body["items"][0];
    assert_eq!(
        (row["on_hand"].as_i64(), row["reserved"].as_i64()),
        (Some(10), Some(10)),
        "{}",
        r.body
    );

    // Batch dispatch equals the brute-force optimum of the candidates' score matrix, on small
    // random cases (all tickets normal priority, so the batch maximises the sum of scores).
    let modes = ["bearing_wear", "seal_leak", "overheating"];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for case in 0..3 {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let r = call(
                &admin,
                "POST",
                "/api/v1/tickets",
                json!({
                "title": format!("case {case}"), "device_id": format!("d{}", next(2)),
                "failure_mode": modes[next(3) as usize], "priority": "normal", "parts_needed": []}),
            );
            assert_eq!(r.status, 201, "{}", r.body);
            ids.push(r.body["ticket_id"].as_str().unwrap().to_owned());
        }
        let techs = ["t0", "t1", "t2", "t3"];
        let mut capacity = vec![0i64; techs.len()];
        let mut scores = Vec::new();
        for id in &ids {
            let r = call(
                &admin,
                "GET",
                &format!("/api/v1/tickets/{id}/candidates?limit=all"),
                json!(null),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            let mut row = vec![None; techs.len()];
            for c in r.body.as_array().unwrap() {
                if let Some(k) = techs.iter().position(|t| c["technician_id"] == *t) {
                    capacity[k] = c["capacity"].as_i64().unwrap();
                    if c["eligible"] == true {
                        row[k] = Some(c["score"].as_f64().unwrap());
                    }
                }
            }
            scores.push(row);
        }
        let best = brute_force_best(&scores, &capacity);
        assert!(best > 0.0, "case {case}: nobody eligible: {scores:?}");
        let r = call(
            &admin,
            "POST",
            "/api/v1/dispatch/batch",
            json!({"ticket_ids": ids}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let total: f64 = r.body["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["score"].as_f64().unwrap())
            .sum();
        assert!(
            (total - best).abs() < 1e-3,
            "case {case}: batch {total} vs optimum {best}; {scores:?} {capacity:?}"
        );
        // Free the technicians for the next case.
        for a in r.body["assignments"].as_array().unwrap() {
            let id = a["ticket_id"].as_str().unwrap();
            let r = call(
                &admin,
                "POST",
                &format!("/api/v1/tickets/{id}/transitions"),
                json!({"to": "cancelled"}),
            );
            assert_eq!(r.status, 200, "{}", r.body);
        }
        for id in r.body["unassigned"].as_array().unwrap() {
            let path = format!("/api/v1/tickets/{}/transitions", id.as_str().unwrap());
            assert_eq!(
                call(&admin, "POST", &path, json!({"to": "cancelled"})).status,
                200
            );
        }
    }

    // The role and provider-subtree matrix on one ticket of the north provider.
    let key = |role: &str, provider: Option<&str>| {
        format!("Bearer {}", create_api_key_for(dir.path(), role, provider))
    };
    let scheduler = key("scheduler", None);
    let engineer = key("engineer", None);
    // A technician key belongs to its technician and sees that technician's jobs.
    let technician = format!("Bearer {}", create_technician_key(dir.path(), "t0"));
    let north = key("provider", Some("sp-n"));
    let south = key("provider", Some("sp-s"));
    let agent = key("provider", Some("ag"));
    let r = call(
        &north,
        "POST",
        "/api/v1/tickets",
        json!({"title": "Noise", "device_id": "d0", "failure_mode": "bearing_wear"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["ticket_id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &south,
            "POST",
            "/api/v1/tickets",
            json!({"title": "Noise", "device_id": "d0"})
        )
        .status,
        403
    );
    let ticket = format!("/api/v1/tickets/{id}");
    // The ticket is t0's job (the stock is all reserved: it waits for parts).
    let r = call(
        &admin,
        "POST",
        &format!("{ticket}/assign"),
        json!({"technician_id": "t0"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let candidates = format!("{ticket}/candidates");
    let transitions = format!("{ticket}/transitions");
    let reserve = json!({"sku": "BRG", "location_id": "central", "quantity": 1, "ticket_id": id});
    // (who, GET ticket, GET candidates, reserve for the ticket, GET mtbf analytics)
    let matrix = [
        ("admin", &admin, 200, 200, 409, 200),
        ("scheduler", &scheduler, 200, 200, 409, 200),
        ("engineer", &engineer, 200, 403, 403, 200),
        ("technician", &technician, 200, 403, 409, 403),
        ("north provider", &north, 200, 200, 409, 403),
        ("its agent", &agent, 200, 200, 409, 403),
        ("south provider", &south, 404, 404, 404, 403),
    ];
    for (who, k, get, cand, res, analytics) in matrix {
        let got = (
            call(k, "GET", &ticket, json!(null)).status,
            call(k, "GET", &candidates, json!(null)).status,
            // Stock is all reserved: an authorised caller gets 409, never 201.
            call(k, "POST", "/api/v1/parts/reservations", reserve.clone()).status,
            call(k, "GET", "/api/v1/analytics/mtbf", json!(null)).status,
        );
        assert_eq!(got, (get, cand, res, analytics), "{who}");
    }
    // Moves: an engineer and a technician may not triage; the other provider does not see it.
    assert_eq!(
        call(&engineer, "POST", &transitions, json!({"to": "triaged"})).status,
        403
    );
    assert_eq!(
        call(&technician, "POST", &transitions, json!({"to": "triaged"})).status,
        403
    );
    assert_eq!(
        call(&south, "POST", &transitions, json!({"to": "triaged"})).status,
        404
    );
    assert_eq!(
        call(
            &south,
            "POST",
            "/api/v1/dispatch/batch",
            json!({"ticket_ids": [id]})
        )
        .status,
        404
    );
    assert_eq!(
        call(&north, "POST", &transitions, json!({"to": "triaged"})).status,
        200
    );
    // A provider's ticket list is its subtree.
    let count = |k: &str| {
        call(k, "GET", "/api/v1/tickets?open=true", json!(null)).body["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((count(&north), count(&south), count(&agent)), (1, 0, 1));
    // Stock and locations: a provider sees its own subtree's (its technicians' vans), not the
    // OEM's central warehouse, and holds stock for no ticket only there.
    let stock = |k: &str| {
        call(k, "GET", "/api/v1/stock", json!(null)).body["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((stock(&admin), stock(&north)), (1, 0));
    let locations = call(&north, "GET", "/api/v1/locations", json!(null)).body;
    let ids: Vec<&str> = locations
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["location_id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.is_empty() && !ids.contains(&"central") && !ids.contains(&"van-t-south"),
        "{ids:?}"
    );
    let loose = json!({"sku": "BRG", "location_id": "central", "quantity": 1});
    assert_eq!(
        call(&north, "POST", "/api/v1/parts/reservations", loose).status,
        403
    );
    // Bad keys.
    assert_eq!(
        call("Bearer prg_nope", "GET", &ticket, json!(null)).status,
        401
    );
    assert_eq!(call("", "GET", &ticket, json!(null)).status, 401);

    let (status, _) = server.terminate();
    assert!(status.success());
}

/// A one-shot HTTPS receiver on a loopback port: returns its port and a handle yielding the
/// request it got (head and body as text).
fn https_receiver(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    use tokio_rustls::rustls::ServerConfig;
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let config = std::sync::Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        // Bounded: give up after 20 s without a connection.
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut tcp = loop {
            match listener.accept() {
                Ok((tcp, _)) => break tcp,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no webhook delivery in 20 s"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut conn = tokio_rustls::rustls::ServerConnection::new(config).unwrap();
        let mut tls = tokio_rustls::rustls::Stream::new(&mut conn, &mut tcp);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the body announced by Content-Length is complete.
        loop {
            let n = tls.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        tls.flush().unwrap();
        String::from_utf8_lossy(&got).to_string()
    });
    (port, handle)
}

#[test]
fn webhooks_are_delivered_over_https_to_a_trusted_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_signed_cert(dir.path());
    let config = dir.path().join("prognos.toml");
    std::fs::write(
        &config,
        // The receiver is on loopback: the configuration must allow inside destinations.
        format!(
            "[service]\nwebhook_ca_file = {:?}\n[webhooks]\nallow_private_destinations = true\n",
            ca.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let admin = network_over_http(dir.path(), &server);
    let (port, received) = https_receiver(&cert, &key);
    let auth = [("Authorization", admin.as_str())];
    let hook = json!({"url": format!("https://127.0.0.1:{port}/hooks/prognos"), "secret": "0123456789abcdef-secret"});
    let r = http_request(
        server.http_port,
        "POST",
        "/api/v1/webhooks",
        &auth,
        &hook.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let bad = json!({"url": "ftp://127.0.0.1/x", "secret": "0123456789abcdef-secret"});
    let r = http_request(
        server.http_port,
        "POST",
        "/api/v1/webhooks",
        &auth,
        &bad.to_string(),
    );
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("url")));
    let r = http_request(
        server.http_port,
        "POST",
        "/api/v1/tickets",
        &auth,
        &json!({"title": "Noise", "device_id": "d0", "failure_mode": "bearing_wear"}).to_string(),
    );
    assert_eq!(r.status, 201);
    let ticket = r.body["ticket_id"].as_str().unwrap().to_owned();
    let request = received.join().unwrap();
    assert!(
        request.starts_with("POST /hooks/prognos HTTP/1.1"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("x-prognos-signature: sha256="),
        "{request}"
    );
    assert!(request.contains(&ticket), "{request}");
    server.terminate();

    // A CA file that is not a certificate is a configuration error at start.
    std::fs::write(
        &config,
        "[service]\nwebhook_ca_file = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let out = prognos(&[
        "serve",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--mqtt-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhook_ca_file"));
}
