//! Property tests of the HTTP surface in-process (the axum router, `tower::ServiceExt::oneshot`,
//! a real SQLite file): arbitrary JSON bodies and query strings on representative routes —
//! ticket create, rating, telemetry query, ticket list, API keys — never get a 5xx, and every
//! 4xx is `application/problem+json` whose `status` matches. `PROPTEST_CASES` overrides the
//! modest default case count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use prognos_http::{ApiContext, router};
use prognos_service::auth::{NewApiKey, Principal, Role};
use prognos_service::db::Database;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

struct App {
    rt: tokio::runtime::Runtime,
    router: Router,
    admin: String,
    _dir: tempfile::TempDir,
}

fn app() -> App {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (router, admin) = rt.block_on(async {
        let db = Database::open_file(&dir.path().join("p.db")).await.unwrap();
        let mut ctx = ApiContext::new(db);
        // An empty data set: telemetry queries read real (absent) files.
        std::fs::create_dir_all(dir.path().join("telemetry")).unwrap();
        ctx.telemetry_root = Some(dir.path().join("telemetry"));
        let admin = ctx
            .service()
            .create_api_key(&Principal::system("test"), &NewApiKey::of(Role::Admin))
            .await
            .unwrap()
            .key;
        (router(ctx), admin)
    });
    App {
        rt,
        router,
        admin,
        _dir: dir,
    }
}

/// Sends one request; checks the contract on the answer.
fn check(app: &App, method: &str, uri: &str, body: Option<&[u8]>) -> Result<(), TestCaseError> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", app.admin));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let Ok(req) = req.body(Body::from(body.unwrap_or_default().to_vec())) else {
        // Not a request `http` can even represent (a URI with bytes it refuses).
        return Ok(());
    };
    let (status, content_type, bytes) = app.rt.block_on(async {
        let response = app.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        (status, content_type, bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(
        !status.is_server_error(),
        "{} {} → {}: {}",
        method,
        uri,
        status,
        text
    );
    if status.is_client_error() {
        prop_assert_eq!(
            content_type.as_str(),
            "application/problem+json",
            "{} {} → {}",
            method,
            uri,
            status
        );
        let problem: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("problem is not JSON ({e}): {text}")))?;
        prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status.as_u16())));
        prop_assert!(problem["type"].is_string() && problem["title"].is_string());
        prop_assert!(problem["detail"].is_string());
    }
    Ok(())
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "",
            "api",
            "customer_form",
            "emergency",
            "major",
            "normal",
            "admin",
            "provider",
            "technician",
            "viewer",
            "dev-1",
            "NaN",
            "0",
            "-1",
            "99999999999999999999",
        ])
        .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        (1usize..20_000).prop_map(|n| Value::from("x".repeat(n))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with the route's real field names (and some others), values of any type.
fn body_for(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        4 => prop::sample::select(fields).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ];
    prop_oneof![
        4 => prop::collection::btree_map(key, prop_oneof![3 => scalar(), 1 => json_value()], 0..8)
            .prop_map(|m| serde_json::to_vec(&Value::Object(m.into_iter().collect())).unwrap()),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        // Nesting past serde_json's limit, and a duplicated key.
        1 => (0usize..300).prop_map(|d| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d)).into_bytes()),
        1 => Just(br#"{"device_id":"a","device_id":"b","device_id":7}"#.to_vec()),
    ]
}

const TICKET_FIELDS: &[&str] = &[
    "source",
    "title",
    "description",
    "device_id",
    "failure_mode",
    "skill",
    "priority",
    "contact_name",
    "contact_phone",
    "parts_needed",
];
const KEY_FIELDS: &[&str] = &["role", "provider_id", "technician_id", "label"];
const RATING_FIELDS: &[&str] = &["score", "comment"];

/// A query string: known parameter names and hostile values, percent-encoded or raw.
fn query(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let value = prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "-1",
            "1",
            "1000",
            "18446744073709551616",
            "1e999",
            "NaN",
            "2025-11-24",
            "2025-11-24T16:00:00Z",
            "1764000000000",
            "-9223372036854775808",
            "30s",
            "15m",
            "1h",
            "1d",
            "0s",
            "raw",
            "buckets",
            "lttb",
            "json",
            "csv",
            "arrow",
            "parquet",
            "a,b",
            ",,,",
            "true",
            "dev-1",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,16}"
            .prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()),
        "[%a-zA-Z0-9=&+.,:-]{0,16}",
    ];
    let pair = (
        prop_oneof![4 => prop::sample::select(names).prop_map(str::to_owned), 1 => "[a-z%]{0,6}"],
        value,
    );
    prop::collection::vec(pair, 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

const TELEMETRY_PARAMS: &[&str] = &[
    "device", "metric", "from", "to", "agg", "step", "points", "format",
];
const TICKET_PARAMS: &[&str] = &[
    "state",
    "priority",
    "source",
    "device_id",
    "provider_id",
    "technician_id",
    "open",
    "limit",
    "offset",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn ticket_create_bodies(body in body_for(TICKET_FIELDS)) {
        let app = APP.with(|a| a.clone());
        check(&app, "POST", "/api/v1/tickets", Some(&body))?;
    }

    #[test]
    fn api_key_bodies(body in body_for(KEY_FIELDS)) {
        let app = APP.with(|a| a.clone());
        check(&app, "POST", "/api/v1/apikeys", Some(&body))?;
    }

    #[test]
    fn rating_bodies(body in body_for(RATING_FIELDS), code in "[A-Za-z0-9_-]{0,24}") {
        let app = APP.with(|a| a.clone());
        check(&app, "POST", &format!("/track/{code}x/rating"), Some(&body))?;
    }

    #[test]
    fn telemetry_queries(q in query(TELEMETRY_PARAMS)) {
        let app = APP.with(|a| a.clone());
        check(&app, "GET", &format!("/api/v1/telemetry?{q}"), None)?;
    }

    #[test]
    fn ticket_list_queries(q in query(TICKET_PARAMS)) {
        let app = APP.with(|a| a.clone());
        check(&app, "GET", &format!("/api/v1/tickets?{q}"), None)?;
    }
}

thread_local! {
    /// One server (runtime, database, admin key) per test thread, shared by its cases.
    static APP: std::rc::Rc<App> = std::rc::Rc::new(app());
}
