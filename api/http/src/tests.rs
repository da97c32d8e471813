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
            Role::Admin,
            None,
            None,
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
            Role::Engineer,
            None,
            None,
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
            Role::Provider,
            Some("sps"),
            None,
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
            Role::Provider,
            Some("spn"),
            None,
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
