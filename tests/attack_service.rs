//! Attacks on the service API through the real binary: provider scope through look-alike ids,
//! parts across providers, technician keys, webhook SSRF and request smuggling, a webhook
//! receiver that never answers, and IDOR, escalation and out-of-range input. Each test is
//! one finding; the receivers are real sockets on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn call(port: u16, key: &str, method: &str, path: &str, body: Value) -> Reply {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    http_request(port, method, path, &[("Authorization", key)], &body)
}

fn bearer(key: String) -> String {
    format!("Bearer {key}")
}

/// POSTs as `key` and insists on 201.
fn create(port: u16, key: &str, path: &str, body: Value) -> Value {
    let r = call(port, key, "POST", path, body);
    assert_eq!(r.status, 201, "{path}: {}", r.body);
    r.body
}

fn ids(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x[field].as_str().unwrap().to_owned())
        .collect()
}

/// A config file letting webhooks reach loopback receivers.
fn private_destinations(dir: &Path) -> String {
    let path = dir.join("prognos.toml");
    std::fs::write(&path, "[webhooks]\nallow_private_destinations = true\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// The admin's network: an OEM and an agent, then `providers` (id, region) under the agent,
/// a customer, one site and device `d-{region}` per provider region.
fn network(port: u16, admin: &str, providers: &[(&str, &str)]) {
    let regions: Vec<&str> = providers.iter().map(|p| p.1).collect();
    create(
        port,
        admin,
        "/api/v1/providers",
        json!({"provider_id": "oem", "name": "OEM", "kind": "oem", "regions": regions}),
    );
    create(
        port,
        admin,
        "/api/v1/providers",
        json!({"provider_id": "ag", "name": "Agent", "kind": "agent", "parent_id": "oem"}),
    );
    create(
        port,
        admin,
        "/api/v1/customers",
        json!({"customer_id": "c1", "name": "Plant operator"}),
    );
    for (id, region) in providers {
        create(
            port,
            admin,
            "/api/v1/providers",
            json!({"provider_id": id, "name": id, "kind": "provider", "parent_id": "ag", "regions": [region]}),
        );
        create(
            port,
            admin,
            "/api/v1/sites",
            json!({"site_id": format!("s-{region}"), "customer_id": "c1", "name": "Plant", "region": region, "lat": 53.5, "lon": 10.0}),
        );
        create(
            port,
            admin,
            "/api/v1/devices",
            json!({"device_id": format!("d-{region}"), "site_id": format!("s-{region}"), "serial": format!("SN-{region}"), "model": "P100"}),
        );
    }
    create(
        port,
        admin,
        "/api/v1/parts",
        json!({"sku": "BRG", "name": "Bearing kit", "fixes_modes": ["bearing_wear"], "unit_cost": 120.0, "abc_class": "A"}),
    );
}

fn technician(port: u16, admin: &str, id: &str, provider: &str, region: &str) {
    create(
        port,
        admin,
        "/api/v1/technicians",
        json!({"technician_id": id, "provider_id": provider, "name": id, "region": region,
               "home_lat": 53.5, "home_lon": 10.0, "skills": [{"skill": "bearing_wear", "level": 5}],
               "shift_start_min": 0, "shift_end_min": 1440, "max_daily_load": 5}),
    );
}

fn ticket(port: u16, key: &str, device: &str) -> String {
    create(
        port,
        key,
        "/api/v1/tickets",
        json!({"title": "Bearing noise", "device_id": device, "failure_mode": "bearing_wear"}),
    )["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A webhook receiver on loopback: answers 200 to every request (keep-alive), or accepts and
/// never answers. Records each request (arrival time, head and body). Its threads stop when
/// it is dropped, or after a minute at most.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<(Instant, String)>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(answer: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, c, s) = (requests.clone(), connections.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        if answer {
                            let r = r.clone();
                            std::thread::spawn(move || serve(stream, &r));
                        } else {
                            held.push(stream); // never answered
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Receiver {
            port,
            requests,
            connections,
            stop,
        }
    }

    fn requests(&self) -> Vec<(Instant, String)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers the requests of one connection (bounded by a read timeout).
fn serve(mut stream: std::net::TcpStream, requests: &Mutex<Vec<(Instant, String)>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One complete request in the buffer?
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(i) = text.find("\r\n\r\n") {
            let len: usize = text[..i]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                let request = String::from_utf8_lossy(&buf[..i + 4 + len]).to_string();
                buf.drain(..i + 4 + len);
                requests.lock().unwrap().push((Instant::now(), request));
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                continue;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Finding 5: `sp_1`'s key matched `sp-1` (`_` in LIKE), `SP-1`'s too (LIKE ignores ASCII
/// case): tickets, technicians and dispatch to sp-1's technician.
#[test]
fn look_alike_provider_ids_do_not_share_a_subtree() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let admin = bearer(create_api_key_for(dir.path(), "admin", None));
    network(
        port,
        &admin,
        &[
            ("sp-1", "r1"),
            ("sp_1", "r2"),
            ("SP-1", "r3"),
            ("sp-10", "r4"),
        ],
    );
    // sp-1's technician also serves r2: eligible for sp_1's ticket there by region.
    technician(port, &admin, "tech-a", "sp-1", "r2");
    let underscore = bearer(create_api_key_for(dir.path(), "provider", Some("sp_1")));
    let upper = bearer(create_api_key_for(dir.path(), "provider", Some("SP-1")));
    let dash = bearer(create_api_key_for(dir.path(), "provider", Some("sp-1")));
    let theirs = ticket(port, &dash, "d-r1");
    let mine = ticket(port, &underscore, "d-r2");
    let ten = ticket(port, &admin, "d-r4");

    let listed = |key: &str| {
        let r = call(port, key, "GET", "/api/v1/tickets", Value::Null);
        assert_eq!(r.status, 200, "{}", r.body);
        ids(&r.body["items"], "ticket_id")
    };
    assert_eq!(listed(&underscore), vec![mine.clone()]);
    assert!(listed(&upper).is_empty());
    assert_eq!(
        listed(&dash),
        vec![theirs.clone()],
        "sp-1 does not see sp-10"
    );
    assert!(!listed(&dash).contains(&ten));
    for key in [&underscore, &upper] {
        let r = call(port, key, "GET", "/api/v1/technicians", Value::Null);
        assert_eq!(r.body["items"], json!([]), "{}", r.body);
        let r = call(port, key, "GET", "/api/v1/technicians/tech-a", Value::Null);
        assert_eq!(r.status, 404);
        let r = call(
            port,
            key,
            "GET",
            &format!("/api/v1/tickets/{theirs}"),
            Value::Null,
        );
        assert_eq!(r.status, 404);
    }
    // No dispatch to sp-1's technician, by batch or by name.
    let r = call(
        port,
        &underscore,
        "POST",
        "/api/v1/dispatch/batch",
        json!({"ticket_ids": [mine]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["assignments"], json!([]), "{}", r.body);
    let r = call(
        port,
        &underscore,
        "GET",
        &format!("/api/v1/tickets/{mine}/candidates?limit=all"),
        Value::Null,
    );
    assert_eq!(r.body, json!([]));
    let r = call(
        port,
        &underscore,
        "POST",
        &format!("/api/v1/tickets/{mine}/assign"),
        json!({"technician_id": "tech-a"}),
    );
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (409, Some("technician_id"))
    );
    server.terminate();
}

/// Finding 5, webhook half: `sp_1`'s webhook was queued sp-1's events.
#[test]
fn look_alike_provider_ids_do_not_share_webhook_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = private_destinations(dir.path());
    let server = Server::start(dir.path(), &["--config", &config]);
    let port = server.http_port;
    let admin = bearer(create_api_key_for(dir.path(), "admin", None));
    network(port, &admin, &[("sp-1", "r1"), ("sp_1", "r2")]);
    let underscore = bearer(create_api_key_for(dir.path(), "provider", Some("sp_1")));
    let receiver = Receiver::start(true);
    let hook = create(
        port,
        &underscore,
        "/api/v1/webhooks",
        json!({"url": format!("http://127.0.0.1:{}/hook", receiver.port), "secret": "0123456789abcdef"}),
    );
    let theirs = ticket(port, &admin, "d-r1");
    let mine = ticket(port, &admin, "d-r2");
    let r = call(port, &admin, "GET", "/api/v1/webhooks/outbox", Value::Null);
    let events: Vec<String> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["webhook_id"] == hook["webhook_id"])
        .map(|e| {
            e["payload"]["data"]["ticket_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(events, vec![mine.clone()], "not {theirs}");
    // And only that one reaches the receiver.
    assert!(wait_until(Duration::from_secs(10), || !receiver
        .requests()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(1500));
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert!(got[0].1.contains(&mine) && !got[0].1.contains(&theirs));
    server.terminate();
}

/// Finding 6: listing and receiving transfers, reserving on another provider's shelf by
/// citing one's own ticket, the reorder report and batch dispatch's transfers all crossed
/// providers.
#[test]
fn parts_stay_within_the_callers_network() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let admin = bearer(create_api_key_for(dir.path(), "admin", None));
    network(port, &admin, &[("sp-n", "north"), ("sp-s", "south")]);
    technician(port, &admin, "tn", "sp-n", "north");
    technician(port, &admin, "ts", "sp-s", "south");
    // South's warehouse is right by the north technician; the central stock is far.
    create(
        port,
        &admin,
        "/api/v1/locations",
        json!({"location_id": "wh-s", "kind": "regional", "name": "South WH", "lat": 53.5, "lon": 10.0, "provider_id": "sp-s"}),
    );
    create(
        port,
        &admin,
        "/api/v1/locations",
        json!({"location_id": "central", "kind": "central", "name": "Central", "lat": 48.0, "lon": 11.0}),
    );
    for (loc, on_hand, rop) in [("wh-s", 5, 8), ("central", 5, 0)] {
        let r = call(
            port,
            &admin,
            "PUT",
            &format!("/api/v1/stock/{loc}/BRG"),
            json!({"on_hand": on_hand, "reorder_point": rop}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let north = bearer(create_api_key_for(dir.path(), "provider", Some("sp-n")));

    // North dispatches its ticket: the kit comes from the central stock, not south's shelf.
    let own = ticket(port, &north, "d-north");
    let r = call(
        port,
        &north,
        "POST",
        "/api/v1/dispatch/batch",
        json!({"ticket_ids": [own]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let plan = &r.body["assignments"][0]["parts"][0];
    assert_eq!(plan["source"], "transfer", "{}", r.body);
    assert_eq!(plan["location_id"], "central", "{}", r.body);

    // The OEM side ships to south from south's shelf.
    let south_ticket = ticket(port, &admin, "d-south");
    let r = call(
        port,
        &admin,
        "POST",
        &format!("/api/v1/tickets/{south_ticket}/assign"),
        json!({"technician_id": "ts"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let all = call(port, &admin, "GET", "/api/v1/parts/transfers", Value::Null).body;
    let south_transfer = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ticket_id"] == json!(south_ticket))
        .unwrap()["transfer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = call(port, &north, "GET", "/api/v1/parts/transfers", Value::Null).body;
    let seen = ids(&seen, "transfer_id");
    assert_eq!(seen.len(), 1, "north sees only its own transfer: {seen:?}");
    assert!(!seen.contains(&south_transfer));
    let r = call(
        port,
        &north,
        "POST",
        &format!("/api/v1/parts/transfers/{south_transfer}/receive"),
        Value::Null,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Citing its own ticket does not open south's shelf.
    let r = call(
        port,
        &north,
        "POST",
        "/api/v1/parts/reservations",
        json!({"sku": "BRG", "location_id": "wh-s", "quantity": 1, "ticket_id": own}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let level = call(
        port,
        &admin,
        "GET",
        "/api/v1/stock?location_id=wh-s&sku=BRG",
        Value::Null,
    );
    assert_eq!(
        level.body["items"][0]["reserved"], 1,
        "only the OEM's transfer"
    );
    // The reorder report: south's shelf is short, but not north's business.
    let admin_lines = call(port, &admin, "GET", "/api/v1/parts/reorder", Value::Null).body;
    assert!(ids(&admin_lines, "location_id").contains(&"wh-s".to_owned()));
    let lines = call(port, &north, "GET", "/api/v1/parts/reorder", Value::Null);
    assert_eq!(lines.status, 200);
    assert!(
        !ids(&lines.body, "location_id").contains(&"wh-s".to_owned()),
        "{}",
        lines.body
    );
    server.terminate();
}

/// Finding 7: a technician key saw and moved every ticket. Now it is issued for one
/// technician and sees that technician's jobs only.
#[test]
fn technician_keys_are_bound_to_their_technician() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let admin = bearer(create_api_key_for(dir.path(), "admin", None));
    network(port, &admin, &[("sp-n", "north")]);
    technician(port, &admin, "tn", "sp-n", "north");
    technician(port, &admin, "tn2", "sp-n", "north");
    // Kits in both vans, so the jobs do not wait for parts.
    for van in ["van-tn", "van-tn2"] {
        let r = call(
            port,
            &admin,
            "PUT",
            &format!("/api/v1/stock/{van}/BRG"),
            json!({"on_hand": 1}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mine = ticket(port, &admin, "d-north");
    let theirs = ticket(port, &admin, "d-north");
    let nobodys = ticket(port, &admin, "d-north");
    for (id, tech) in [(&mine, "tn"), (&theirs, "tn2")] {
        let r = call(
            port,
            &admin,
            "POST",
            &format!("/api/v1/tickets/{id}/assign"),
            json!({"technician_id": tech}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let tn = bearer(create_technician_key(dir.path(), "tn"));
    let r = call(port, &tn, "GET", "/api/v1/tickets", Value::Null);
    assert_eq!(ids(&r.body["items"], "ticket_id"), vec![mine.clone()]);
    for other in [&theirs, &nobodys] {
        let get = call(
            port,
            &tn,
            "GET",
            &format!("/api/v1/tickets/{other}"),
            Value::Null,
        );
        let moved = call(
            port,
            &tn,
            "POST",
            &format!("/api/v1/tickets/{other}/transitions"),
            json!({"to": "en_route"}),
        );
        assert_eq!((get.status, moved.status), (404, 404));
    }
    let path = format!("/api/v1/tickets/{mine}/transitions");
    assert_eq!(
        call(port, &tn, "POST", &path, json!({"to": "triaged"})).status,
        403
    );
    for to in ["en_route", "on_site", "resolved"] {
        let r = call(port, &tn, "POST", &path, json!({"to": to}));
        assert_eq!(r.status, 200, "{to}: {}", r.body);
    }
    let r = call(port, &tn, "GET", "/api/v1/technicians", Value::Null);
    assert_eq!(
        ids(&r.body["items"], "technician_id"),
        vec!["tn".to_owned()]
    );
    let r = call(
        port,
        &admin,
        "GET",
        &format!("/api/v1/tickets/{theirs}"),
        Value::Null,
    );
    assert_eq!(r.body["state"], "assigned", "untouched");

    // Issuing: the CLI and the API both need an existing technician for the role.
    let data = dir.path().to_str().unwrap();
    for extra in [vec![], vec!["--technician", "ghost"]] {
        let mut args = vec![
            "apikey",
            "create",
            "--role",
            "technician",
            "--data-dir",
            data,
        ];
        args.extend(extra);
        let out = prognos(&args);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--technician"), "{stderr}");
    }
    // Missing or misplaced: 422; an id that names no technician: 409 (unknown reference).
    for (body, status) in [
        (json!({"role": "technician"}), 422),
        (json!({"role": "technician", "technician_id": "ghost"}), 409),
        (json!({"role": "engineer", "technician_id": "tn"}), 422),
    ] {
        let r = call(port, &admin, "POST", "/api/v1/apikeys", body);
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (status, Some("technician_id"))
        );
    }
    let r = call(
        port,
        &admin,
        "POST",
        "/api/v1/apikeys",
        json!({"role": "technician", "technician_id": "tn2"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (
            r.body["technician_id"].as_str(),
            r.body["provider_id"].as_str()
        ),
        (Some("tn2"), Some("sp-n"))
    );
    server.terminate();
}

/// Finding 3: a provider pointed a webhook at the server's own API, the metadata address or
/// any private host; the URL's path went raw into a hand-written request line.
#[test]
fn webhooks_reach_no_inside_destination_and_smuggle_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let admin = bearer(create_api_key_for(dir.path(), "admin", None));
    network(port, &admin, &[("sp-n", "north")]);
    let provider = bearer(create_api_key_for(dir.path(), "provider", Some("sp-n")));
    let receiver = Receiver::start(true);
    let r_port = receiver.port;
    // Well-formed URLs of inside destinations: refused by the policy (409 naming the
    // field); malformed or smuggling ones: 422.
    for (url, status) in [
        (format!("http://127.0.0.1:{port}/api/v1/apikeys"), 409),
        (format!("http://localhost:{port}/api/v1/tickets"), 409),
        (format!("http://[::1]:{port}/"), 422), // the schema takes host names and IPv4 only
        (format!("http://[::ffff:127.0.0.1]:{port}/"), 422), // the schema takes host names and IPv4 only
        (format!("http://2130706433:{port}/"), 409),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), 409),
        ("http://10.1.2.3/".to_owned(), 409),
        ("http://0.0.0.0/".to_owned(), 409),
        (
            format!("http://127.0.0.1:{r_port}/a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b"),
            422,
        ),
        ("gopher://127.0.0.1:25/".to_owned(), 422),
    ] {
        let r = call(
            port,
            &provider,
            "POST",
            "/api/v1/webhooks",
            json!({"url": url, "secret": "0123456789abcdef"}),
        );
        assert_eq!(
            (r.status, r.content_type.as_str(), r.body["field"].as_str()),
            (status, "application/problem+json", Some("url")),
            "{url:?}: {}",
            r.body
        );
    }
    server.terminate();

    // Allowed by configuration, a loopback receiver gets exactly the request it should.
    let config = private_destinations(dir.path());
    let server = Server::start(dir.path(), &["--config", &config]);
    let port = server.http_port;
    let smuggle =
        format!("http://127.0.0.1:{r_port}/a\r\nX-Injected: 1\r\n\r\nPOST /second HTTP/1.1");
    let r = call(
        port,
        &provider,
        "POST",
        "/api/v1/webhooks",
        json!({"url": smuggle, "secret": "0123456789abcdef"}),
    );
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("url")),
        "even when allowed"
    );
    create(
        port,
        &provider,
        "/api/v1/webhooks",
        json!({"url": format!("http://127.0.0.1:{r_port}/hooks/a%0D%0Ab?x=1"), "secret": "0123456789abcdef"}),
    );
    let id = ticket(port, &admin, "d-north");
    assert!(wait_until(Duration::from_secs(10), || !receiver
        .requests()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(1000));
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let request = &got[0].1;
    assert!(
        request.starts_with("POST /hooks/a%0D%0Ab?x=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        !request.to_ascii_lowercase().contains("x-injected"),
        "{request}"
    );
    assert!(request.contains(&id), "{request}");
    server.terminate();

    // Registered while allowed, refused when the connection is made under the default
    // configuration: the receiver sees no connection, the event waits with the reason.
    let before = receiver.connections.load(Ordering::SeqCst);
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let id = ticket(port, &admin, "d-north");
    let refused = wait_until(Duration::from_secs(10), || {
        let r = call(
            port,
            &admin,
            "GET",
            "/api/v1/webhooks/outbox?state=pending",
            Value::Null,
        );
        r.body.as_array().unwrap().iter().any(|e| {
            e["payload"]["data"]["ticket_id"] == json!(id)
                && e["last_error"]
                    .as_str()
                    .is_some_and(|m| m.contains("loopback"))
        })
    });
    assert!(refused, "the delivery was not refused at connect time");
    assert_eq!(receiver.connections.load(Ordering::SeqCst), before);
    server.terminate();
}

/// Finding 13: delivery was sequential, so a receiver that never answers delayed every
/// other endpoint by 5 s per queued event.
#[test]
fn a_silent_receiver_does_not_delay_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = private_destinations(dir.path());
    let server = Server::start(dir.path(), &["--config", &config]);
    let port = server.http_port;
    let admin = bearer(create_api_key_for(dir.path(), "admin", None));
    network(port, &admin, &[("sp-n", "north")]);
    let silent = Receiver::start(false);
    let normal = Receiver::start(true);
    for r in [&silent, &normal] {
        create(
            port,
            &admin,
            "/api/v1/webhooks",
            json!({"url": format!("http://127.0.0.1:{}/hook", r.port), "secret": "0123456789abcdef"}),
        );
    }
    // Queue the events in one go: sequentially, the silent receiver's five would cost 5 s
    // each, interleaved with the normal receiver's (its last would wait about 20 s).
    let started = Instant::now();
    let tickets: Vec<String> = (0..5).map(|_| ticket(port, &admin, "d-north")).collect();
    assert!(
        wait_until(Duration::from_secs(30), || normal.requests().len() >= 5),
        "only {} events arrived",
        normal.requests().len()
    );
    let last = normal.requests().iter().map(|r| r.0).max().unwrap();
    let took = last.duration_since(started);
    assert!(
        took < Duration::from_secs(10),
        "the normal receiver waited {took:?}"
    );
    // In the order they were queued.
    let order: Vec<String> = normal
        .requests()
        .iter()
        .map(|(_, req)| {
            let body = req.split_once("\r\n\r\n").unwrap().1;
            let v: Value = serde_json::from_str(body).unwrap();
            v["data"]["ticket_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(order, tickets);
    // The silent one was tried, and its events are still waiting (none lost).
    assert!(silent.connections.load(Ordering::SeqCst) >= 1);
    let r = call(
        port,
        &admin,
        "GET",
        "/api/v1/webhooks/outbox?state=pending",
        Value::Null,
    );
    assert_eq!(r.body.as_array().unwrap().len(), 5, "{}", r.body);
    server.terminate();
}

/// IDOR across providers, role escalation, out-of-range quantities and offsets, duplicated
/// ids and oversized text: each refused with the right status and field, nothing written.
#[test]
fn idor_escalation_and_out_of_range_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let admin = bearer(create_api_key_for(dir.path(), "admin", None));
    network(port, &admin, &[("sp-n", "north"), ("sp-s", "south")]);
    technician(port, &admin, "ts", "sp-s", "south");
    create(
        port,
        &admin,
        "/api/v1/locations",
        json!({"location_id": "wh-s", "kind": "regional", "name": "South WH", "lat": 48.0, "lon": 11.0, "provider_id": "sp-s"}),
    );
    let r = call(
        port,
        &admin,
        "PUT",
        "/api/v1/stock/wh-s/BRG",
        json!({"on_hand": 5}),
    );
    assert_eq!(r.status, 200);
    let north = bearer(create_api_key_for(dir.path(), "provider", Some("sp-n")));
    let south = bearer(create_api_key_for(dir.path(), "provider", Some("sp-s")));
    let own = ticket(port, &north, "d-north");
    let foreign = ticket(port, &south, "d-south");
    let hold = create(
        port,
        &south,
        "/api/v1/parts/reservations",
        json!({"sku": "BRG", "location_id": "wh-s", "quantity": 1}),
    )["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = create(
        port,
        &south,
        "/api/v1/parts/reservations",
        json!({"sku": "BRG", "location_id": "wh-s", "quantity": 1, "ticket_id": foreign}),
    )["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Every id-taking endpoint: another provider's object is absent or forbidden.
    let report = json!({"cause": "x", "fix": "y", "signed_off_by": "z", "close_code": "confirmed"});
    for (method, path, body, expect) in [
        (
            "GET",
            format!("/api/v1/tickets/{foreign}"),
            Value::Null,
            404,
        ),
        (
            "GET",
            format!("/api/v1/tickets/{foreign}/events"),
            Value::Null,
            404,
        ),
        (
            "GET",
            format!("/api/v1/tickets/{foreign}/reservations"),
            Value::Null,
            404,
        ),
        (
            "GET",
            format!("/api/v1/tickets/{foreign}/candidates"),
            Value::Null,
            404,
        ),
        (
            "POST",
            format!("/api/v1/tickets/{foreign}/transitions"),
            json!({"to": "cancelled"}),
            404,
        ),
        (
            "POST",
            format!("/api/v1/tickets/{foreign}/assign"),
            json!({"technician_id": "ts"}),
            404,
        ),
        (
            "POST",
            format!("/api/v1/tickets/{foreign}/close"),
            report.clone(),
            404,
        ),
        (
            "POST",
            format!("/api/v1/tickets/{own}/assign"),
            json!({"technician_id": "ts"}),
            409,
        ),
        (
            "POST",
            format!("/api/v1/parts/reservations/{held}/release"),
            Value::Null,
            404,
        ),
        (
            "POST",
            format!("/api/v1/parts/reservations/{hold}/consume"),
            Value::Null,
            403,
        ),
        ("GET", "/api/v1/technicians/ts".to_owned(), Value::Null, 404),
        (
            "GET",
            "/api/v1/devices/d-south".to_owned(),
            Value::Null,
            404,
        ),
        ("GET", "/api/v1/customers/c1".to_owned(), Value::Null, 403),
        (
            "PUT",
            "/api/v1/stock/wh-s/BRG".to_owned(),
            json!({"on_hand": 0}),
            403,
        ),
        // Escalation: no key of any role, no webhook for another provider.
        (
            "POST",
            "/api/v1/apikeys".to_owned(),
            json!({"role": "admin"}),
            403,
        ),
        (
            "POST",
            "/api/v1/apikeys".to_owned(),
            json!({"role": "provider", "provider_id": "sp-s"}),
            403,
        ),
        (
            "POST",
            "/api/v1/webhooks".to_owned(),
            json!({"url": "http://192.0.2.1/", "secret": "0123456789abcdef", "provider_id": "sp-s"}),
            403,
        ),
        (
            "GET",
            "/api/v1/webhooks/outbox".to_owned(),
            Value::Null,
            403,
        ),
        (
            "POST",
            "/api/v1/providers".to_owned(),
            json!({"provider_id": "x", "name": "x", "kind": "oem"}),
            403,
        ),
    ] {
        let r = call(port, &north, method, &path, body);
        assert_eq!(r.status, expect, "{method} {path}: {}", r.body);
    }
    let r = call(
        port,
        &admin,
        "GET",
        &format!("/api/v1/tickets/{foreign}"),
        Value::Null,
    );
    assert_eq!(r.body["state"], "new", "the foreign ticket is untouched");
    let r = call(
        port,
        &admin,
        "GET",
        "/api/v1/stock?location_id=wh-s",
        Value::Null,
    );
    assert_eq!(
        (
            r.body["items"][0]["on_hand"].as_i64(),
            r.body["items"][0]["reserved"].as_i64()
        ),
        (Some(5), Some(2)),
        "south's stock is untouched"
    );

    // Quantities, offsets, duplicated ids and oversized text.
    for q in [
        json!(0),
        json!(-1),
        json!(1_000_000_000_000i64),
        json!(i64::MAX),
    ] {
        let r = call(
            port,
            &admin,
            "POST",
            "/api/v1/parts/reservations",
            json!({"sku": "BRG", "location_id": "wh-s", "quantity": q}),
        );
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (422, Some("quantity")),
            "{q}"
        );
    }
    for (body, field) in [
        (json!({"on_hand": 1_000_000_000_000i64}), "on_hand"),
        (json!({"on_hand": -1}), "on_hand"),
        (json!({"on_hand": 1, "reorder_point": -1}), "reorder_point"),
        (
            json!({"on_hand": 1, "reorder_point": i64::MAX}),
            "reorder_point",
        ),
    ] {
        let r = call(port, &admin, "PUT", "/api/v1/stock/wh-s/BRG", body);
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some(field)));
    }
    // A huge offset once overflowed `offset + limit` (a panic in a debug build: no answer).
    let r = call(
        port,
        &admin,
        "GET",
        "/api/v1/tickets?offset=9223372036854775807",
        Value::Null,
    );
    assert_eq!((r.status, r.body["field"].as_str()), (400, Some("offset")));
    let r = call(
        port,
        &admin,
        "POST",
        "/api/v1/dispatch/batch",
        json!({"ticket_ids": [own, own]}),
    );
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("ticket_ids[1]"))
    );
    let r = call(
        port,
        &admin,
        "POST",
        &format!("/api/v1/tickets/{own}/transitions"),
        json!({"to": "triaged", "note": "x".repeat(100_000)}),
    );
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("note")));
    let r = call(
        port,
        &admin,
        "POST",
        "/api/v1/tickets",
        json!({"title": "t".repeat(10_000), "device_id": "d-north"}),
    );
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("title")));
    let r = call(
        port,
        &admin,
        "GET",
        &format!("/api/v1/tickets/{own}/events"),
        Value::Null,
    );
    assert_eq!(r.body.as_array().unwrap().len(), 1, "nothing was written");
    server.terminate();
}
