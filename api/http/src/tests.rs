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

/// What schemathesis found on the old document and server (each line failed there): the
/// document and the server now agree on types, bounds and statuses.
#[tokio::test]
async fn the_server_accepts_what_the_document_allows_and_nothing_else() {
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
