//! The HTTP surface on a real socket with a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use prognos_service::auth::Role;

struct Reply {
    status: u16,
    content_type: String,
    body: Value,
}

async fn call(port: u16, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let body = body.unwrap_or("");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    // Bodies are small: axum sends them with Content-Length.
    Reply {
        status,
        content_type,
        body: serde_json::from_str(rest).unwrap_or(Value::Null),
    }
}

async fn server() -> (tempfile::TempDir, u16, prognos_service::Service) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_file(&dir.path().join("p.db")).await.unwrap();
    let ctx = ApiContext::new(db);
    let svc = ctx.service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router(ctx)).await });
    (dir, port, svc)
}

#[tokio::test]
async fn openapi_lists_every_route_and_every_route_answers() {
    let (_d, port, _svc) = server().await;
    let doc = call(port, "GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let table = route_table();
    let paths = doc.body["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, table.len());
    for (route, _) in &table {
        let op = &paths[route.path][route.method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} undocumented",
            route.method,
            route.path
        );
        if let Some(body) = route.body_name() {
            assert!(doc.body["components"]["schemas"][body.as_str()].is_object());
        }
        // The route exists: no bare 404/405 from the router.
        let path = route.path.replace(['{', '}'], "");
        let r = call(port, route.method, &path, None, Some("{}")).await;
        assert_ne!(r.status, 405, "{} {}", route.method, route.path);
        if r.status == 404 {
            assert_eq!(
                r.content_type, "application/problem+json",
                "{} {}",
                route.method, route.path
            );
        }
        if route.auth {
            assert_eq!(
                r.status, 401,
                "{} {} without a key",
                route.method, route.path
            );
            assert_eq!(r.body["status"], 401);
        }
    }
}

#[tokio::test]
async fn ticket_flow_over_http_with_roles_and_problems() {
    let (_d, port, svc) = server().await;
    let admin = svc
        .create_api_key(
            &prognos_service::auth::Principal::system("test"),
            &prognos_service::auth::NewApiKey::of(Role::Admin),
        )
        .await
        .unwrap()
        .key;
    let a = Some(admin.as_str());
    let post = |path: &'static str, body: Value| {
        let admin = admin.clone();
        async move { call(port, "POST", path, Some(&admin), Some(&body.to_string())).await }
    };
    for body in [
        json!({"provider_id": "oem", "name": "OEM", "kind": "oem", "regions": ["north", "south"]}),
        json!({"provider_id": "ag", "name": "Agent", "kind": "agent", "parent_id": "oem", "regions": ["north"]}),
        json!({"provider_id": "spn", "name": "North", "kind": "provider", "parent_id": "ag", "regions": ["north"]}),
        json!({"provider_id": "sps", "name": "South", "kind": "provider", "parent_id": "oem", "regions": ["south"]}),
    ] {
        assert_eq!(post("/api/v1/providers", body).await.status, 201);
    }
    assert_eq!(
        post(
            "/api/v1/customers",
            json!({"customer_id": "c", "name": "C"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        post("/api/v1/sites", json!({"site_id": "s", "customer_id": "c", "name": "S", "region": "north", "lat": 53.5, "lon": 10.0})).await.status,
        201
    );
    assert_eq!(
        post(
            "/api/v1/devices",
            json!({"device_id": "d1", "site_id": "s", "serial": "SN1", "model": "P100"})
        )
        .await
        .status,
        201
    );
    let r = post("/api/v1/technicians", json!({"technician_id": "t1", "provider_id": "spn", "name": "T", "region": "north", "home_lat": 53.4, "home_lon": 10.1, "skills": [{"skill": "bearing_wear", "level": 4}]})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["van_location_id"], "van-t1");
    assert_eq!(
        post("/api/v1/parts", json!({"sku": "BRG", "name": "Bearing", "fixes_modes": ["bearing_wear"], "unit_cost": 100.0, "abc_class": "A"})).await.status,
        201
    );
    assert_eq!(
        post(
            "/api/v1/locations",
            json!({"location_id": "wh", "kind": "regional", "name": "WH", "lat": 53.0, "lon": 10.0})
        )
        .await
        .status,
        201
    );
    let r = call(
        port,
        "PUT",
        "/api/v1/stock/wh/BRG",
        a,
        Some(r#"{"on_hand": 1}"#),
    )
    .await;
    assert_eq!((r.status, r.body["available"].clone()), (200, json!(1)));

    // Bad input.
    let r = call(port, "POST", "/api/v1/tickets", a, Some("{nope")).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (400, "application/problem+json")
    );
    let r = post("/api/v1/tickets", json!({"title": "x"})).await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("device_id"))
    );
    let r = post(
        "/api/v1/tickets",
        json!({"title": "x", "device_id": "d1", "priority": "urgent"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("priority"))
    );
    assert_eq!(
        call(port, "GET", "/api/v1/tickets/nope", a, None)
            .await
            .status,
        404
    );
    assert_eq!(
        call(port, "GET", "/api/v1/tickets", Some("prg_x_y"), None)
            .await
            .status,
        401
    );

    // Create, list, illegal move, dispatch, reserve, track.
    let r = post("/api/v1/tickets", json!({"title": "Bearing noise", "device_id": "d1", "failure_mode": "bearing_wear", "contact_name": "Ann"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["ticket_id"].as_str().unwrap().to_owned();
    let code = r.body["tracking_code"].as_str().unwrap().to_owned();
    assert_eq!(r.body["sla"]["phase"], "response");
    let r = call(port, "GET", "/api/v1/tickets?state=new&limit=1", a, None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = call(port, "GET", "/api/v1/tickets?limit=0", a, None).await;
    // A query parameter outside its documented bounds is a 400 naming it.
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("limit")));
    let path = format!("/api/v1/tickets/{id}/transitions");
    let r = call(port, "POST", &path, a, Some(r#"{"to": "on_site"}"#)).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["allowed"], json!(["triaged", "cancelled"]));
    let r = call(port, "POST", &path, a, Some(r#"{"to": "flying"}"#)).await;
    assert_eq!((r.status, r.body["field"].clone()), (422, json!("to")));
    let r = call(port, "POST", &path, a, Some(r#"{"note": "x"}"#)).await;
    assert_eq!((r.status, r.body["field"].clone()), (422, json!("to")));

    // Roles: an engineer may read but not move; a foreign provider sees nothing.
    let eng = svc
        .create_api_key(
            &prognos_service::auth::Principal::system("test"),
            &prognos_service::auth::NewApiKey::of(Role::Engineer),
        )
        .await
        .unwrap()
        .key;
    assert_eq!(
        call(
            port,
            "GET",
            &format!("/api/v1/tickets/{id}"),
            Some(&eng),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(
            port,
            "POST",
            &path,
            Some(&eng),
            Some(r#"{"to": "triaged"}"#)
        )
        .await
        .status,
        403
    );
    let south = svc
        .create_api_key(
            &prognos_service::auth::Principal::system("test"),
            &prognos_service::auth::NewApiKey::of(Role::Provider).provider("sps"),
        )
        .await
        .unwrap()
        .key;
    assert_eq!(
        call(
            port,
            "GET",
            &format!("/api/v1/tickets/{id}"),
            Some(&south),
            None
        )
        .await
        .status,
        404
    );
    let r = call(port, "GET", "/api/v1/tickets", Some(&south), None).await;
    assert_eq!(r.body["items"], json!([]));
    let north = svc
        .create_api_key(
            &prognos_service::auth::Principal::system("test"),
            &prognos_service::auth::NewApiKey::of(Role::Provider).provider("spn"),
        )
        .await
        .unwrap()
        .key;
    assert_eq!(
        call(
            port,
            "GET",
            &format!("/api/v1/tickets/{id}"),
            Some(&north),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(
            port,
            "POST",
            "/api/v1/apikeys",
            Some(&north),
            Some(r#"{"role": "admin"}"#)
        )
        .await
        .status,
        403
    );

    let r = call(
        port,
        "GET",
        &format!("/api/v1/tickets/{id}/candidates?limit=all"),
        a,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body[0]["technician_id"], "t1");
    assert_eq!(r.body[0]["factors"].as_array().unwrap().len(), 6);
    let r = post(
        "/api/v1/dispatch/batch",
        json!({"ticket_ids": [id.clone()]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["assignments"][0]["technician_id"], "t1");
    // The van was empty: the kit comes from the warehouse, the ticket waits for parts.
    assert_eq!(r.body["assignments"][0]["state"], "waiting_parts");
    let r = post(
        "/api/v1/parts/reservations",
        json!({"sku": "BRG", "location_id": "wh", "quantity": 1}),
    )
    .await;
    assert_eq!((r.status, r.body["available"].clone()), (409, json!(0)));
    let r = call(port, "GET", "/api/v1/parts/transfers", a, None).await;
    let transfer = r.body[0]["transfer_id"].as_str().unwrap().to_owned();
    let r = call(
        port,
        "POST",
        &format!("/api/v1/parts/transfers/{transfer}/receive"),
        a,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(port, "GET", &format!("/api/v1/tickets/{id}"), a, None).await;
    assert_eq!(r.body["state"], "assigned");

    let r = call(port, "GET", &format!("/track/{code}"), None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "assigned");
    let states: Vec<&str> = r.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        vec!["new", "triaged", "assigned", "waiting_parts", "assigned"]
    );
    assert!(!r.body.to_string().contains("Ann"));
    assert_eq!(
        call(port, "GET", "/track/ZZZZZZZZZZ", None, None)
            .await
            .status,
        404
    );
}

// ---------------------------------------------------------------- webhook delivery
//
// The outbox's rules are the domain's (prognos_service::webhooks); the wire is this crate's
// `webhook_client`. These tests run both together against real loopback receivers.

use std::sync::Arc;

use prognos_service::auth::Principal;
use prognos_service::webhooks::{self, DestinationPolicy, NewWebhook, Outbox, WebhookTransport};
use prognos_service::{ManualClock, Service};

/// A service on a manual clock whose webhooks may reach loopback receivers.
async fn hook_service() -> (tempfile::TempDir, Service, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_file(&dir.path().join("p.db")).await.unwrap();
    let clock = Arc::new(ManualClock::new(1_767_225_600_000));
    let svc = Service::with_clock(db, clock.clone())
        .with_webhook_policy(DestinationPolicy::allow_private());
    (dir, svc, clock)
}

/// oem → agent-a → sp-north (north), oem → agent-b → sp-south (south); devices dev-1 (north)
/// and dev-s (south).
async fn hook_network(svc: &Service) {
    let admin = Principal::system("test");
    for p in [
        json!({"provider_id": "oem", "name": "OEM", "kind": "oem", "regions": ["north", "south"]}),
        json!({"provider_id": "agent-a", "name": "A", "kind": "agent", "parent_id": "oem", "regions": ["north"]}),
        json!({"provider_id": "sp-north", "name": "N", "kind": "provider", "parent_id": "agent-a", "regions": ["north"]}),
        json!({"provider_id": "agent-b", "name": "B", "kind": "agent", "parent_id": "oem", "regions": ["south"]}),
        json!({"provider_id": "sp-south", "name": "S", "kind": "provider", "parent_id": "agent-b", "regions": ["south"]}),
    ] {
        svc.create_provider(&admin, &serde_json::from_value(p).unwrap())
            .await
            .unwrap();
    }
    svc.create_customer(
        &admin,
        &serde_json::from_value(json!({"customer_id": "cust", "name": "C"})).unwrap(),
    )
    .await
    .unwrap();
    for (site, region, dev) in [("site-n", "north", "dev-1"), ("site-s", "south", "dev-s")] {
        svc.create_site(&admin, &serde_json::from_value(json!({"site_id": site, "customer_id": "cust", "name": site, "region": region, "lat": 50.0, "lon": 10.0})).unwrap())
            .await
            .unwrap();
        svc.create_device(
            &admin,
            &serde_json::from_value(
                json!({"device_id": dev, "site_id": site, "serial": dev, "model": "P100"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    }
}

fn api_ticket(device: &str) -> prognos_service::tickets::NewTicket {
    serde_json::from_value(
        json!({"title": "Noisy bearing", "device_id": device, "failure_mode": "bearing_wear"}),
    )
    .unwrap()
}

/// The value of a header in a raw request head (names are case-insensitive).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one request (head and Content-Length body) from a socket; `None` at EOF.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let k = s.read(&mut chunk).await.ok()?;
        buf.extend_from_slice(&chunk[..k]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(i) = text.find("\r\n\r\n") {
            let len: usize = header(&text[..i], "content-length")?.parse().ok()?;
            if buf.len() >= i + 4 + len {
                return Some((text[..i].to_owned(), text[i + 4..i + 4 + len].to_owned()));
            }
        }
        if k == 0 {
            return None;
        }
    }
}

fn transport(policy: DestinationPolicy) -> Arc<dyn WebhookTransport> {
    Arc::new(webhook_client::HyperTransport::new(policy, None).unwrap())
}

#[tokio::test]
async fn webhooks_are_signed_and_retried_with_backoff() {
    let (_d, svc, clock) = hook_service().await;
    hook_network(&svc).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    // Fails the first request with 500, accepts the rest.
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let Some((head, body)) = read_request(&mut s).await else {
                continue;
            };
            let sig = header(&head, "x-prognos-signature").unwrap().to_owned();
            tx.send((sig, body)).unwrap();
            n += 1;
            let status = if n == 1 {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            s.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        }
    });
    let secret = "0123456789abcdef-secret";
    let north = Principal {
        key_id: "k".into(),
        role: Role::Provider,
        provider_id: Some("agent-a".into()),
        provider_path: Some("/oem/agent-a/".into()),
        technician_id: None,
    };
    svc.create_webhook(
        &north,
        &NewWebhook {
            url: format!("http://127.0.0.1:{port}/hook"),
            secret: secret.into(),
            provider_id: None,
        },
    )
    .await
    .unwrap();
    let admin = Principal::system("test");
    // A south ticket is not agent-a's business; a north one is.
    svc.create_ticket(&admin, &api_ticket("dev-s"))
        .await
        .unwrap();
    let t = svc
        .create_ticket(&admin, &api_ticket("dev-1"))
        .await
        .unwrap();
    svc.transition(
        &admin,
        &t.ticket_id,
        prognos_service::tickets::TicketState::Triaged,
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(svc.outbox(&admin, None, 100).await.unwrap().len(), 2);
    let wire = transport(DestinationPolicy::allow_private());
    // The first event fails: the endpoint backs off, and the event behind it waits for it
    // (per-endpoint order) instead of overtaking it.
    let (ok, failed) = svc.deliver_webhooks(wire.clone(), 10).await.unwrap();
    assert_eq!((ok, failed), (0, 1));
    // The failed one waits for its backoff.
    assert_eq!(
        svc.deliver_webhooks(wire.clone(), 10).await.unwrap(),
        (0, 0)
    );
    clock.advance_secs(2);
    assert_eq!(
        svc.deliver_webhooks(wire.clone(), 10).await.unwrap(),
        (2, 0)
    );
    let mut bodies = Vec::new();
    while let Ok((sig, body)) = rx.try_recv() {
        assert_eq!(sig, webhooks::signature(secret, body.as_bytes()));
        bodies.push(serde_json::from_str::<serde_json::Value>(&body).unwrap());
    }
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies
            .iter()
            .any(|b| b["type"] == "ticket.transition" && b["data"]["to"] == "triaged")
    );
    // In order: the creation (tried, failed, retried), then the transition.
    let kinds: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ticket.created", "ticket.created", "ticket.transition"]
    );
    let outbox = svc.outbox(&admin, Some("delivered"), 100).await.unwrap();
    assert_eq!(outbox.len(), 2);
}

/// A webhook registered while inside destinations were allowed (or whose name resolves
/// inside by now) is refused when the connection is made, and a URL stored before URLs were
/// checked is never sent as it is: the receiver sees no connection at all.
#[tokio::test]
async fn delivery_checks_the_destination_again_when_it_connects() {
    let (_d, svc, _clock) = hook_service().await;
    hook_network(&svc).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let admin = Principal::system("test");
    // Registered through a name: `localhost` resolves to loopback.
    svc.create_webhook(
        &admin,
        &NewWebhook {
            url: format!("http://localhost:{port}/hook"),
            secret: "0123456789abcdef".into(),
            provider_id: None,
        },
    )
    .await
    .unwrap();
    // A row from before URLs were checked, with a request smuggled into its path.
    sqlx::query(
        "INSERT INTO webhooks (webhook_id, url, secret, provider_id, created_at_ms)
         VALUES ('WH-old', $1, '0123456789abcdef', NULL, 0)",
    )
    .bind(format!(
        "http://127.0.0.1:{port}/a HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled"
    ))
    .execute(svc.pool())
    .await
    .unwrap();
    svc.create_ticket(&admin, &api_ticket("dev-1"))
        .await
        .unwrap();
    let strict = transport(DestinationPolicy::strict());
    assert_eq!(svc.deliver_webhooks(strict, 10).await.unwrap(), (0, 2));
    let errors: Vec<String> = svc
        .outbox(&admin, Some("pending"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.last_error.unwrap_or_default())
        .collect();
    assert!(errors.iter().any(|e| e.contains("loopback")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("stored URL refused")),
        "{errors:?}"
    );
    let accepted =
        tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "the receiver was contacted");
    // The same policy refuses the registration itself.
    let strict_svc = svc.clone().with_webhook_policy(DestinationPolicy::strict());
    let err = strict_svc
        .create_webhook(
            &admin,
            &NewWebhook {
                url: format!("http://localhost:{port}/hook"),
                secret: "0123456789abcdef".into(),
                provider_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, prognos_service::ServiceError::Refused { field, message }
            if field == "url" && message.contains("loopback")),
        "{err:?}"
    );
}

/// One receiver accepts and never answers; another answers. The outbox delivers the second
/// one's events at once, in order and one at a time, while the first one's wait.
#[tokio::test]
async fn a_silent_endpoint_does_not_hold_up_the_others() {
    let (_d, svc, _clock) = hook_service().await;
    hook_network(&svc).await;
    let admin = Principal::system("test");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s); // never answered, never closed
        }
    });
    let normal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let normal_port = normal.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, usize)>();
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = normal.accept().await {
            let (tx, in_flight) = (tx.clone(), in_flight.clone());
            tokio::spawn(async move {
                while let Some((_, body)) = read_request(&mut s).await {
                    let now = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    tx.send((body, now)).unwrap();
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    for port in [silent_port, normal_port] {
        svc.create_webhook(
            &admin,
            &NewWebhook {
                url: format!("http://127.0.0.1:{port}/hook"),
                secret: "0123456789abcdef".into(),
                provider_id: None,
            },
        )
        .await
        .unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            svc.create_ticket(&admin, &api_ticket("dev-1"))
                .await
                .unwrap()
                .ticket_id,
        );
    }
    let mut outbox = Outbox::new(
        svc.clone(),
        transport(DestinationPolicy::allow_private()),
        50,
    );
    let started = std::time::Instant::now();
    assert_eq!(outbox.tick().await.unwrap(), 2, "both endpoints start");
    let mut got = Vec::new();
    while got.len() < 4 {
        let (body, concurrent) = tokio::time::timeout(std::time::Duration::from_secs(3), rx.recv())
            .await
            .expect("the answering endpoint's events arrive while the other hangs")
            .unwrap();
        assert_eq!(concurrent, 1, "one request at a time per endpoint");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        got.push(v["data"]["ticket_id"].as_str().unwrap().to_owned());
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(got, ids, "in the order they were queued");
    // The last answer is being recorded; wait for it (bounded).
    for _ in 0..100 {
        if svc
            .outbox(&admin, Some("delivered"), 10)
            .await
            .unwrap()
            .len()
            == 4
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        svc.outbox(&admin, Some("delivered"), 10)
            .await
            .unwrap()
            .len(),
        4
    );
    // A second tick does not start the silent endpoint again while it is running.
    assert_eq!(outbox.tick().await.unwrap(), 0);
    outbox.shutdown().await;
    let pending = svc.outbox(&admin, Some("pending"), 10).await.unwrap();
    assert_eq!(
        pending.len(),
        4,
        "the silent endpoint's events wait, none lost"
    );
}

/// What schemathesis found on the old document and server (each line failed there): the
/// document and the server now agree on types, bounds and statuses.
#[tokio::test]
async fn the_server_accepts_what_the_document_allows_and_nothing_else() {
    let (_d, port, svc) = server().await;
    let admin = svc
        .create_api_key(
            &prognos_service::auth::Principal::system("test"),
            &prognos_service::auth::NewApiKey::of(Role::Admin),
        )
        .await
        .unwrap()
        .key;
    let a = Some(admin.as_str());
    let send = |method: &'static str, path: String, body: Option<Value>| {
        let admin = admin.clone();
        async move {
            let body = body.map(|b| b.to_string());
            call(port, method, &path, Some(&admin), body.as_deref()).await
        }
    };
    for (path, body) in [
        (
            "/api/v1/providers",
            json!({"provider_id": "oem", "name": "OEM", "kind": "oem"}),
        ),
        (
            "/api/v1/customers",
            json!({"customer_id": "c1", "name": "Operator"}),
        ),
        (
            "/api/v1/sites",
            json!({"site_id": "s1", "customer_id": "c1", "name": "Plant", "region": "north", "lat": 1.0, "lon": 2.0}),
        ),
        (
            "/api/v1/devices",
            json!({"device_id": "d1", "site_id": "s1", "serial": "SN", "model": "P"}),
        ),
        (
            "/api/v1/parts",
            json!({"sku": "BRG", "name": "Bearing", "unit_cost": 1.0, "abc_class": "A"}),
        ),
        (
            "/api/v1/locations",
            json!({"location_id": "wh", "kind": "central", "name": "WH", "lat": 0.0, "lon": 0.0}),
        ),
    ] {
        let r = send("POST", path.into(), Some(body)).await;
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    }

    // A number with a zero fraction is an integer (JSON Schema): accepted as one.
    let r = send(
        "PUT",
        "/api/v1/stock/wh/BRG".into(),
        Some(json!({"on_hand": 3.0})),
    )
    .await;
    assert_eq!((r.status, r.body["on_hand"].clone()), (200, json!(3)));
    // Query numbers are numbers (the old document said strings) and bounded as documented.
    let r = call(port, "GET", "/api/v1/analytics/batches?alpha=0.05", a, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(port, "GET", "/api/v1/analytics/batches?alpha=1", a, None).await;
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("alpha")));
    // An offset near i64::MAX overflowed (the connection dropped); now out of bounds.
    let r = call(
        port,
        "GET",
        "/api/v1/tickets?offset=9223372036854775806",
        a,
        None,
    )
    .await;
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("offset")));
    let r = call(port, "GET", "/api/v1/tickets?offset=1000000000", a, None).await;
    assert_eq!(r.status, 200);
    // An enum query parameter: a documented value works, another is refused.
    let r = call(
        port,
        "GET",
        "/api/v1/tickets?state=closed&open=false",
        a,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(port, "GET", "/api/v1/tickets?state=flying", a, None).await;
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("state")));
    // A period ending before 1970 starts "at the beginning", not at the epoch after it.
    let r = call(
        port,
        "GET",
        "/api/v1/analytics/heatmap?to=1960-01-01",
        a,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(port, "GET", "/api/v1/analytics/heatmap?to=", a, None).await;
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("to")));
    // A compare group that does not exist is not found, not a malformed request.
    let r = call(
        port,
        "GET",
        "/api/v1/analytics/weibull?compare=nope",
        a,
        None,
    )
    .await;
    assert_eq!((r.status, r.body["field"].clone()), (404, json!("compare")));

    // A body id that refers to nothing: 409 naming the field (valid JSON, unknown target).
    let r = send(
        "POST",
        "/api/v1/sites".into(),
        Some(json!({"customer_id": "nobody", "name": "P", "region": "r", "lat": 0, "lon": 0})),
    )
    .await;
    assert_eq!(
        (
            r.status,
            r.body["field"].clone(),
            r.body["resource"].clone()
        ),
        (409, json!("customer_id"), json!("customer"))
    );
    let r = send(
        "POST",
        "/api/v1/locations".into(),
        Some(json!({"kind": "central", "name": "L", "lat": 0, "lon": 0, "provider_id": "nobody"})),
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (409, json!("provider_id"))
    );
    // Documented lengths are enforced.
    let long = "x".repeat(201);
    let r = send(
        "POST",
        "/api/v1/customers".into(),
        Some(json!({"name": long})),
    )
    .await;
    assert_eq!((r.status, r.body["field"].clone()), (422, json!("name")));
    // Blank text is refused by the schema's pattern, for the same characters as the domain
    // (Rust's Unicode white space, and the separators \x1c-\x1f).
    for blank in ["\u{1c} ", "\u{85}\u{3000}", "\t\u{a0}"] {
        let r = send(
            "POST",
            "/api/v1/customers".into(),
            Some(json!({"name": blank})),
        )
        .await;
        assert_eq!(
            (r.status, r.body["field"].clone()),
            (422, json!("name")),
            "{blank:?}"
        );
    }
    let r = send(
        "POST",
        "/api/v1/customers".into(),
        Some(json!({"name": "\u{85}x"})),
    )
    .await;
    assert_eq!(r.status, 201);
    // Vans come with their technician: not a kind a caller may post.
    let r = send(
        "POST",
        "/api/v1/locations".into(),
        Some(json!({"kind": "van", "name": "V", "lat": 0, "lon": 0})),
    )
    .await;
    assert_eq!((r.status, r.body["field"].clone()), (422, json!("kind")));

    // Closing an open ticket is an illegal transition (409), whatever parts the report lists.
    let r = send(
        "POST",
        "/api/v1/tickets".into(),
        Some(json!({"title": "Noise", "device_id": "d1"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["ticket_id"].as_str().unwrap().to_owned();
    let r = send(
        "POST",
        format!("/api/v1/tickets/{id}/close"),
        Some(
            json!({"cause": "c", "fix": "f", "signed_off_by": "s", "close_code": "confirmed",
                    "parts_used": [{"sku": "BRG", "quantity": 1}]}),
        ),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["allowed"], json!(["triaged", "cancelled"]));

    // A body over the limit is 413, not 400.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    let r = call(port, "POST", "/api/v1/customers", a, Some(&big)).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (413, "application/problem+json")
    );
}

/// Every `$ref` of the document resolves, every operation documents its error answers as
/// problem+json, and the query parameters carry real types.
#[test]
fn the_document_is_complete() {
    let doc = openapi_document();
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved $ref {name}");
    }
    let mut typed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.contains_key("default"), "{method} {path}");
            for (status, response) in responses {
                if status.starts_with('4') {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{method} {path} {status}"
                    );
                }
            }
            if op["security"] != json!([]) {
                assert!(responses.contains_key("401"), "{method} {path}");
            }
            for p in op["parameters"].as_array().unwrap() {
                if p["in"] == "query" && p["schema"]["type"] != "string" {
                    typed += 1;
                }
            }
        }
    }
    // limit/offset, enums, numbers, booleans and time parameters.
    assert!(typed >= 25, "{typed} typed query parameters");
    let key = &schemas["NewApiKey"]["properties"];
    assert!(
        key["provider_id"]["type"]
            .as_array()
            .unwrap()
            .contains(&json!("null"))
    );
    assert_eq!(key["role"]["$ref"], "#/components/schemas/Role");
}
