//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! started here on a free loopback port; `scripts/test.sh` installs both from Debian) against
//! the real binary after a small demo run. Plain-HTTP checks (CSRF, sizes, no external URL)
//! go over a raw socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server, http_request, read_telemetry};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

// ------------------------------------------------------------------ harness

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--lang=en-US",
                 format!("--user-data-dir={}", driver._profile.path().display())],
    });
    if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port)),
    )
    .await
    .expect("the browser started in time")
    .expect("WebDriver session")
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

const WAIT: Duration = Duration::from_secs(15);

async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => panic!("no {css} on {:?}: {e}", c.current_url().await.ok()),
    }
}

async fn text(c: &Client, css: &str) -> String {
    find(c, css).await.text().await.unwrap()
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Clicks and waits for the next page to have loaded (the old `body` goes stale).
async fn click_and_wait(c: &Client, css: &str) {
    let body = find(c, "body").await;
    find(c, css).await.click().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while body.tag_name().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "no navigation after clicking {css}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    find(c, "main h1").await;
}

async fn sign_in(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    find(c, "#name").await.send_keys(name).await.unwrap();
    find(c, "#password")
        .await
        .send_keys(password)
        .await
        .unwrap();
    click_and_wait(c, "#sign-in").await;
    assert!(
        c.find(Locator::Css("#sign-out")).await.is_ok(),
        "{name} is not signed in at {:?}",
        c.current_url().await
    );
}

async fn sign_out(c: &Client) {
    click_and_wait(c, "#sign-out").await;
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
}

/// No page may load or link anything from another origin. The SVG namespace is a name,
/// not a fetch.
fn assert_no_external_url(what: &str, text: &str) {
    let cleaned = text.replace("http://www.w3.org/2000/svg", "");
    for needle in [
        "http://",
        "https://",
        "src=\"//",
        "href=\"//",
        "url(//",
        "@import",
    ] {
        assert!(
            !cleaned.contains(needle),
            "{what} references an external URL ({needle}): …{}…",
            &cleaned[cleaned.find(needle).unwrap().saturating_sub(80)..][..160.min(cleaned.len())]
        );
    }
}

/// `prognos user add … --password-stdin`.
fn add_user(dir: &Path, name: &str, role: &str, extra: &[&str]) -> String {
    let password = format!("pw-{name}-long-enough");
    let mut child = Command::new(BIN)
        .args([
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role"], role);
    assert!(
        v.get("password").is_none(),
        "a given password is never echoed"
    );
    password
}

fn demo(dir: &Path, days: &str, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--data-dir",
            dir.to_str().unwrap(),
            "--days",
            days,
            "--seed",
            "7",
            "--exit",
        ])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("admin API key")
                .map(|k| k.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no admin key in {stdout}"));
    format!("Bearer {key}")
}

/// A raw HTTP/1.1 exchange: status, headers (lower-case names), body bytes.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .filter_map(|(_, v)| {
                let kv = v.split(';').next()?;
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn raw(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut body = all[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    Raw {
        status,
        headers,
        body,
    }
}

/// Fills and posts the sign-in form over plain HTTP (with its CSRF token and cookie).
fn post_login(port: u16, name: &str, password: &str, next: &str) -> Raw {
    let page = raw(port, "GET", "/login", &[], "");
    let token = page
        .text()
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let (_, login) = page
        .cookies()
        .into_iter()
        .find(|(k, _)| k == "prognos_login")
        .unwrap();
    raw(
        port,
        "POST",
        "/login",
        &[
            ("Cookie", &format!("prognos_login={login}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("name={name}&password={password}&csrf={token}&next={next}"),
    )
}

/// Signs in over plain HTTP; returns the `Cookie` header value of the session.
fn http_sign_in(port: u16, name: &str, password: &str) -> String {
    let r = post_login(port, name, password, "/fleet");
    assert_eq!(r.status, 303, "{}", r.text());
    let session = r
        .cookies()
        .into_iter()
        .find(|(k, _)| k == "prognos_session")
        .unwrap();
    let set = r.header("set-cookie").unwrap().to_owned();
    let attrs = r
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("prognos_session="))
        .map(|(_, v)| v.clone())
        .unwrap_or(set);
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax"),
        "{attrs}"
    );
    format!("prognos_session={}", session.1)
}

// ------------------------------------------------------------------ tests

#[test]
fn forms_without_the_csrf_token_are_refused_and_cookies_are_strict() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "sam", "scheduler", &[]);
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let form = ("Content-Type", "application/x-www-form-urlencoded");

    // Sign-in without the form's token (or with another one) is refused.
    let r = raw(
        port,
        "POST",
        "/login",
        &[form],
        "name=sam&password=pw-sam-long-enough&csrf=x",
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.cookies().iter().all(|(k, _)| k != "prognos_session"));
    // A wrong password says so without a session.
    let cookie = http_sign_in(port, "sam", "pw-sam-long-enough");
    let page = raw(port, "GET", "/tickets", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    let token = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap()[..64].to_owned();

    // Every POST of a signed-in user needs the session's token.
    for (path, body) in [
        ("/logout", String::new()),
        ("/lang", "lang=zh".to_owned()),
        ("/tickets/T-1/transition", "to=triaged".to_owned()),
        ("/logout", "csrf=0000".to_owned()),
        ("/lang", format!("lang=zh&csrf={}", "f".repeat(64))),
    ] {
        let r = raw(port, "POST", path, &[("Cookie", &cookie), form], &body);
        assert!(
            r.status == 403 || r.status == 422,
            "{path} {body}: {} {}",
            r.status,
            r.text()
        );
        if r.status == 403 {
            assert!(r.text().contains("id=\"error\""), "{}", r.text());
        }
    }
    // The session still works (nothing above signed out), and with the token it does.
    assert_eq!(
        raw(port, "GET", "/tickets", &[("Cookie", &cookie)], "").status,
        200
    );
    let r = raw(
        port,
        "POST",
        "/logout",
        &[("Cookie", &cookie), form],
        &format!("csrf={token}"),
    );
    assert_eq!(r.status, 303);
    let r = raw(port, "GET", "/tickets", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 303, "signed out");
    assert!(r.header("location").unwrap().starts_with("/login"));

    // Behind a TLS proxy the session cookie is Secure.
    let page = raw(port, "GET", "/login", &[("X-Forwarded-Proto", "https")], "");
    assert!(page.header("set-cookie").unwrap().contains("; Secure"));

    // No open redirect after sign-in.
    let page = raw(port, "GET", "/login?next=//evil.example/x", &[], "");
    assert!(
        page.text().contains("name=\"next\" value=\"/\""),
        "{}",
        page.text()
    );
    server.terminate();
}

/// Password guessing is throttled per address like API keys (one shared budget): after the
/// burst of failures even the right password gets 429 with `Retry-After`, and no session.
#[test]
fn failed_sign_ins_are_throttled_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let password = add_user(dir.path(), "sam", "scheduler", &[]);
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let attempt = |pw: &str| post_login(port, "sam", pw, "/tickets");
    // The first failures are told apart from throttling: back to the form with an error.
    for i in 0..10 {
        let r = attempt(&format!("wrong-{i}"));
        assert_eq!(r.status, 303, "failure {i}: {}", r.text());
        assert!(r.header("location").unwrap().contains("failed=1"));
    }
    let r = attempt(&password);
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.cookies().iter().all(|(k, _)| k != "prognos_session"));
    assert!(r.text().contains("id=\"error\""), "{}", r.text());
    // API keys from the same address draw on the same budget.
    let api = http_request(
        port,
        "GET",
        "/api/v1/tickets",
        &[(
            "Authorization",
            "Bearer prg_nokey_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        )],
        "",
    );
    assert_eq!(api.status, 429, "{}", api.text);
    server.terminate();
}

/// `prognos demo` without `--exit`: after the summary the server keeps serving the console,
/// every printed sign-in works (the technician's jobs were left open for it, the provider
/// user sees only its subtree), and Ctrl-C (SIGINT) stops it cleanly.
#[test]
fn the_demo_keeps_serving_the_console_with_sign_ins_until_interrupted() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--data-dir", dir.path().to_str().unwrap()])
        // Enough weeks for the models to raise alerts that become dispatched tickets.
        .args(["--days", "20", "--seed", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(Ok(line)) => {
                let done = line.contains("keeps running");
                lines.push(line);
                if done {
                    break;
                }
            }
            other => {
                let _ = child.kill();
                panic!("the demo ended without serving ({other:?}): {lines:#?}");
            }
        }
    }
    let url = lines
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("console")
                .map(|u| u.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no console URL: {lines:#?}"));
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("not a loopback URL: {url}"));
    let sign_ins: Vec<(String, String, String)> = lines
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["sign", "in", role, name, "password", pw] => {
                    Some((role.to_string(), name.to_string(), pw.to_string()))
                }
                _ => None,
            }
        })
        .collect();
    let roles: Vec<&str> = sign_ins.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        roles,
        ["scheduler", "engineer", "technician", "provider"],
        "{lines:#?}"
    );
    for (role, name, password) in &sign_ins {
        let cookie = http_sign_in(port, name, password);
        let home = match role.as_str() {
            "technician" => "/jobs",
            "engineer" => "/analytics",
            _ => "/tickets",
        };
        let page = raw(port, "GET", home, &[("Cookie", &cookie)], "");
        assert_eq!(page.status, 200, "{role} {home}: {}", page.text());
        if role == "technician" {
            let jobs = page.text().matches("class=\"job\"").count();
            assert!(jobs > 0, "the technician has no open job: {}", page.text());
        }
    }
    // The scheduler sees tickets of several providers; the provider user only its own.
    let api_key = lines
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("admin API key")
                .map(|k| k.trim().to_owned())
        })
        .unwrap();
    let provider = &sign_ins[3].1;
    let all = http_request(
        port,
        "GET",
        "/api/v1/tickets?limit=500",
        &[("Authorization", &format!("Bearer {api_key}"))],
        "",
    );
    assert_eq!(all.status, 200, "{}", all.text);
    let outside = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            // Another region's service partner (a sibling, never in this user's subtree).
            t["provider_id"]
                .as_str()
                .is_some_and(|p| p.starts_with("sp-") && p != provider)
        })
        .map(|t| t["ticket_id"].as_str().unwrap().to_owned());
    if let Some(other) = outside {
        let cookie = http_sign_in(port, provider, &sign_ins[3].2);
        let page = raw(
            port,
            "GET",
            &format!("/tickets/{other}"),
            &[("Cookie", &cookie)],
            "",
        );
        assert!(page.status == 403 || page.status == 404, "{}", page.status);
    }

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let admin_key = demo(dir.path(), "2", &[]);
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let base = format!("http://127.0.0.1:{port}");
    let api = |method: &str, path: &str, body: Value| {
        let r = http_request(
            port,
            method,
            path,
            &[("Authorization", &admin_key)],
            &body.to_string(),
        );
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text);
        r.body
    };
    let pw_admin = add_user(dir.path(), "ada", "admin", &[]);
    let pw_sched = add_user(dir.path(), "sam", "scheduler", &[]);
    let pw_eng = add_user(dir.path(), "eve", "engineer", &[]);

    // A fresh ticket on a device with telemetry: the scheduler works it through the console.
    let devices: Vec<(String, String)> = read_telemetry(dir.path())
        .keys()
        .map(|(d, m)| (d.clone(), m.clone()))
        .collect();
    let device = devices
        .iter()
        .find(|(d, _)| d.starts_with("pump"))
        .unwrap()
        .0
        .clone();
    let ticket = api(
        "POST",
        "/api/v1/tickets",
        json!({"device_id": device, "source": "api", "title": "Bearing noise reported",
               "failure_mode": "bearing_wear", "skill": "bearing_wear"}),
    );
    let ticket_id = ticket["ticket_id"].as_str().unwrap().to_owned();
    let code = ticket["tracking_code"].as_str().unwrap().to_owned();
    let owner = ticket["provider_id"].as_str().unwrap().to_owned();
    let providers = api("GET", "/api/v1/providers", json!({}));
    let path_of = |id: &str| {
        providers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider_id"] == id)
            .unwrap()["path"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let owner_path = path_of(&owner);
    let other = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "provider" && !owner_path.starts_with(p["path"].as_str().unwrap()))
        .unwrap()["provider_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pw_owner = add_user(dir.path(), "pat", "provider", &["--provider", &owner]);
    let pw_other = add_user(dir.path(), "oscar", "provider", &["--provider", &other]);

    let driver = start_driver();
    let c = browser(&driver).await;

    // --- admin: lands on the fleet; every page is free of external URLs.
    sign_in(&c, &base, "ada", &pw_admin).await;
    assert_eq!(c.current_url().await.unwrap().path(), "/fleet");
    let rows = js(
        &c,
        "return document.querySelectorAll('#fleet tbody tr').length",
    )
    .await;
    assert_eq!(rows, json!(50), "the demo's 50 devices");
    assert_eq!(
        js(
            &c,
            "return +document.getElementById('site-map').dataset.sites > 0"
        )
        .await,
        json!(true)
    );
    shot(&c, "fleet").await;
    assert_no_external_url("/fleet", &c.source().await.unwrap());
    sign_out(&c).await;

    // --- engineer: the device file draws its telemetry.
    sign_in(&c, &base, "eve", &pw_eng).await;
    c.goto(&format!("{base}/devices/{device}?range=7d"))
        .await
        .unwrap();
    find(&c, "svg.chart").await;
    let chart = js(
        &c,
        "const data = JSON.parse(document.getElementById('chart-data').textContent);
         return [...document.querySelectorAll('svg.chart')].map(s => {
           const d = data.find(x => x.metric === s.dataset.metric);
           const pts = s.querySelector('polyline.line').getAttribute('points').trim().split(/\\s+/);
           const ys = pts.map(p => +p.split(',')[1]);
           return {metric: s.dataset.metric, points: +s.dataset.points, drawn: pts.length,
                   fed: d.value.filter(Number.isFinite).length, min: Math.min(...d.value),
                   max: Math.max(...d.value), ymin: Math.min(...ys), ymax: Math.max(...ys)};
         });",
    )
    .await;
    let charts = chart.as_array().unwrap();
    assert!(charts.len() >= 5, "{chart}");
    let raw_points = read_telemetry(dir.path());
    for ch in charts {
        let metric = ch["metric"].as_str().unwrap();
        let n = ch["points"].as_u64().unwrap();
        assert!(n > 50, "{metric}: only {n} points drawn: {ch}");
        assert_eq!(ch["drawn"], ch["points"], "{ch}");
        assert_eq!(ch["fed"], ch["points"], "{ch}");
        // The line has a shape (not flat) and its bucket means lie within the stored values.
        assert!(
            ch["ymax"].as_f64().unwrap() - ch["ymin"].as_f64().unwrap() > 5.0,
            "{ch}"
        );
        let stored = &raw_points[&(device.clone(), metric.to_owned())];
        let lo = stored.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = stored.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        assert!(
            ch["min"].as_f64().unwrap() >= lo - 1e-9 && ch["max"].as_f64().unwrap() <= hi + 1e-9,
            "{ch} vs [{lo}, {hi}]"
        );
        assert!((stored.len() as u64) >= n);
    }
    let timing = js(
        &c,
        "const n = performance.getEntriesByType('navigation')[0];
         return {interactive_ms: n.domInteractive, ready_ms: window.prognosReady, transfer: n.transferSize};",
    )
    .await;
    println!("device file (2 days, 10-min data, 7 metrics): {timing}");
    shot(&c, "device-file").await;
    assert_no_external_url("device file", &c.source().await.unwrap());
    // Chinese: switch the user's language; it sticks across pages.
    click_and_wait(&c, "#lang-switch").await;
    assert_eq!(
        js(&c, "return document.documentElement.lang").await,
        json!("zh-CN")
    );
    c.goto(&format!("{base}/fleet")).await.unwrap();
    assert_eq!(text(&c, "main h1").await, "设备总览");
    assert!(
        c.source().await.unwrap().contains("告警中") || c.source().await.unwrap().contains("正常")
    );
    shot(&c, "fleet-zh").await;
    click_and_wait(&c, "#lang-switch").await;
    assert_eq!(
        js(&c, "return document.documentElement.lang").await,
        json!("en")
    );
    // Reliability analytics as pictures, the same figures the API gives.
    c.goto(&format!("{base}/analytics")).await.unwrap();
    let weibull = api("GET", "/api/v1/analytics/weibull?group_by=fleet", json!({}));
    let fit = &weibull["groups"][0]["fit"];
    let plot = js(
        &c,
        "const s = document.querySelector('svg.weibull'); return [+s.dataset.points, +s.dataset.beta, +s.dataset.eta, s.querySelectorAll('circle.pt').length, !!s.querySelector('line.fit')]",
    )
    .await;
    let points = weibull["groups"][0]["probability_plot"]
        .as_array()
        .unwrap()
        .len();
    assert!(points > 0, "the demo's history has failures: {weibull}");
    assert_eq!(plot[0], json!(points));
    assert_eq!(plot[3], json!(points), "one marker per failure");
    assert_eq!(plot[4], json!(true), "the fitted line is drawn");
    assert!(
        (plot[1].as_f64().unwrap() - fit["beta"].as_f64().unwrap()).abs() < 1e-3,
        "{plot} {fit}"
    );
    assert!(
        (plot[2].as_f64().unwrap() - fit["eta"].as_f64().unwrap()).abs() < 1e-3,
        "{plot} {fit}"
    );
    let heat = api("GET", "/api/v1/analytics/heatmap", json!({}));
    let api_total: u64 = heat["counts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
        .sum();
    let page_total = js(
        &c,
        "return [...document.querySelectorAll('#heatmap td.heat')].reduce((a, t) => a + +t.dataset.failures, 0)",
    )
    .await;
    assert_eq!(page_total, json!(api_total));
    assert!(api_total > 0);
    // The recall list downloads as CSV, one line per device of the flagged batches.
    let batches = api("GET", "/api/v1/analytics/batches", json!({}));
    let csv = js(
        &c,
        "const r = new XMLHttpRequest(); r.open('GET', document.getElementById('recall-csv').href, false); r.send(); return [r.status, r.getResponseHeader('content-type'), r.responseText]",
    )
    .await;
    assert_eq!(csv[0], json!(200));
    assert!(csv[1].as_str().unwrap().starts_with("text/csv"), "{csv}");
    let lines: Vec<&str> = csv[2].as_str().unwrap().lines().collect();
    assert!(
        lines[0].starts_with("device_id,serial,model,batch"),
        "{csv}"
    );
    assert_eq!(lines.len() - 1, batches["recall"].as_array().unwrap().len());
    assert!(
        js(&c, "return document.querySelectorAll('#mtbf tbody tr, #kpis tbody tr, #accuracy tbody tr').length")
            .await
            .as_u64()
            .unwrap()
            > 0
    );
    shot(&c, "analytics").await;
    assert_no_external_url("/analytics", &c.source().await.unwrap());
    // An engineer may not move tickets: the ticket page offers no move.
    c.goto(&format!("{base}/tickets/{ticket_id}"))
        .await
        .unwrap();
    find(&c, "#ticket-state").await;
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('.actions form').length"
        )
        .await,
        json!(0)
    );
    sign_out(&c).await;

    // --- scheduler: board, triage, assign from the ranked candidates.
    sign_in(&c, &base, "sam", &pw_sched).await;
    c.goto(&format!("{base}/tickets?view=board")).await.unwrap();
    find(
        &c,
        &format!("#board .col[data-state=new] a[data-ticket='{ticket_id}']"),
    )
    .await;
    assert!(
        text(&c, &format!("a[data-ticket='{ticket_id}'] .sla"))
            .await
            .contains("left")
    );
    shot(&c, "board").await;
    c.goto(&format!("{base}/tickets/{ticket_id}"))
        .await
        .unwrap();
    // Only the state machine's moves from `new` are offered.
    let offered = js(
        &c,
        "return [...document.querySelectorAll('.actions button')].map(b => b.dataset.to)",
    )
    .await;
    assert_eq!(offered, json!(["triaged", "cancelled"]));
    click_and_wait(&c, "button[data-to=triaged]").await;
    assert_eq!(
        js(
            &c,
            "return document.getElementById('ticket-state').dataset.state"
        )
        .await,
        json!("triaged")
    );
    let tech = js(&c, "const r = document.querySelector('#candidates tbody tr'); return r && r.dataset.technician").await;
    let tech = tech
        .as_str()
        .expect("an eligible candidate for the ticket")
        .to_owned();
    shot(&c, "ticket").await;
    click_and_wait(&c, "#candidates tbody tr button").await;
    assert_eq!(
        js(
            &c,
            "return document.getElementById('ticket-state').dataset.state"
        )
        .await,
        json!("assigned")
    );
    assert_eq!(text(&c, "#ticket-technician").await, tech);

    // Batch dispatch: two fresh tickets on other pumps, picked on the dispatch board.
    let mut pumps: Vec<String> = devices
        .iter()
        .map(|(d, _)| d.clone())
        .filter(|d| d.starts_with("pump") && *d != device)
        .collect();
    pumps.dedup();
    let batch: Vec<String> = pumps[..2]
        .iter()
        .map(|d| {
            api(
                "POST",
                "/api/v1/tickets",
                json!({"device_id": d, "source": "api", "title": "Pump vibration",
                       "failure_mode": "bearing_wear", "skill": "bearing_wear"}),
            )["ticket_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Empty every van's free stock, so the batch's parts have to travel from a warehouse.
    let stock = api("GET", "/api/v1/stock?limit=1000", json!({}));
    for row in stock["items"].as_array().unwrap() {
        let location = row["location_id"].as_str().unwrap();
        if location.starts_with("van-") && row["available"].as_i64().unwrap() > 0 {
            // What is reserved stays (it belongs to the ticket assigned above).
            api(
                "PUT",
                &format!("/api/v1/stock/{location}/{}", row["sku"].as_str().unwrap()),
                json!({"on_hand": row["reserved"]}),
            );
        }
    }
    c.goto(&format!("{base}/dispatch")).await.unwrap();
    for id in &batch {
        find(&c, &format!("#pick-{id}"))
            .await
            .click()
            .await
            .unwrap();
    }
    assert!(
        js(
            &c,
            "return document.querySelectorAll('#technicians tbody tr').length"
        )
        .await
        .as_u64()
        .unwrap()
            > 0,
        "the board lists the technicians"
    );
    shot(&c, "dispatch-board").await;
    assert_no_external_url("/dispatch", &c.source().await.unwrap());
    click_and_wait(&c, "#dispatch-selected").await;
    let summary = js(
        &c,
        "const s = document.getElementById('dispatch-summary').dataset; return [s.assigned, s.unassigned]",
    )
    .await;
    assert_eq!(summary, json!(["2", "0"]), "both tickets dispatched");
    for id in &batch {
        let shown = js(
            &c,
            &format!("const r = document.querySelector(\"#assignments tr[data-ticket='{id}']\"); return r && r.dataset.technician"),
        )
        .await;
        let t = api("GET", &format!("/api/v1/tickets/{id}"), json!({}));
        assert!(
            ["assigned", "waiting_parts"].contains(&t["state"].as_str().unwrap()),
            "{t}"
        );
        assert_eq!(
            shown, t["technician_id"],
            "the page shows whom the domain assigned"
        );
    }
    shot(&c, "dispatch-result").await;
    let travelling = js(
        &c,
        "return [...document.querySelectorAll('#assignments [data-source=transfer]')].length",
    )
    .await;
    assert!(
        travelling.as_u64().unwrap() >= 2,
        "parts travel: {travelling}"
    );

    // Parts: the transfers are in flight with their ETA; receiving one moves the stock.
    c.goto(&format!("{base}/parts")).await.unwrap();
    let transfers = api("GET", "/api/v1/parts/transfers", json!({}));
    let mine: Vec<&Value> = transfers
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["state"] == "in_transit" && batch.iter().any(|b| t["ticket_id"] == b.as_str())
        })
        .collect();
    assert!(mine.len() >= 2, "{transfers}");
    for t in &mine {
        find(
            &c,
            &format!(
                "#transfers tr[data-transfer='{}']",
                t["transfer_id"].as_str().unwrap()
            ),
        )
        .await;
    }
    assert!(
        js(
            &c,
            "return document.querySelectorAll('#stock tbody tr').length"
        )
        .await
        .as_u64()
        .unwrap()
            > 0
    );
    shot(&c, "parts").await;
    assert_no_external_url("/parts", &c.source().await.unwrap());
    let first = mine[0]["transfer_id"].as_str().unwrap().to_owned();
    click_and_wait(&c, &format!("button[data-receive='{first}']")).await;
    assert!(
        c.find(Locator::Css(&format!(
            "#transfers tr[data-transfer='{first}']"
        )))
        .await
        .is_err(),
        "a received transfer is no longer in flight"
    );
    let after = api("GET", "/api/v1/parts/transfers", json!({}));
    let received = after
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["transfer_id"] == first.as_str())
        .unwrap();
    assert_eq!(received["state"], "received", "{received}");
    sign_out(&c).await;

    // --- technician: the phone-sized "my jobs", the field moves.
    let pw_tech = add_user(dir.path(), "tom", "technician", &["--technician", &tech]);
    c.set_window_size(390, 844).await.unwrap();
    sign_in(&c, &base, "tom", &pw_tech).await;
    assert_eq!(c.current_url().await.unwrap().path(), "/jobs");
    let jobs = js(
        &c,
        "return [...document.querySelectorAll('#jobs .job')].map(j => j.dataset.ticket)",
    )
    .await;
    assert!(
        jobs.as_array().unwrap().contains(&json!(ticket_id)),
        "{jobs}"
    );
    shot(&c, "jobs-phone").await;
    for to in ["en_route", "on_site", "resolved"] {
        click_and_wait(
            &c,
            &format!(".job[data-ticket='{ticket_id}'] button[data-to={to}]"),
        )
        .await;
        assert_eq!(c.current_url().await.unwrap().path(), "/jobs");
    }
    // A technician opens only its own jobs: another ticket is a 403 page.
    let others = api("GET", "/api/v1/tickets?open=false&limit=5", json!({}));
    let other_ticket = others["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ticket_id"] != ticket_id.as_str() && t["technician_id"] != tech.as_str())
        .unwrap()["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.goto(&format!("{base}/tickets/{other_ticket}"))
        .await
        .unwrap();
    assert_eq!(
        js(&c, "return document.getElementById('error').dataset.status").await,
        json!("403")
    );
    // A technician is never offered a state it may not set (cancel, triage).
    c.goto(&format!("{base}/tickets/{ticket_id}"))
        .await
        .unwrap();
    assert_eq!(
        js(
            &c,
            "return document.getElementById('ticket-state').dataset.state"
        )
        .await,
        json!("resolved")
    );
    let offered = js(
        &c,
        "return [...document.querySelectorAll('.actions button')].map(b => b.dataset.to)",
    )
    .await;
    assert_eq!(offered, json!(["on_site"]));
    // …and closes with the service report.
    find(&c, "#close-form textarea[name=cause]")
        .await
        .send_keys("Worn outer race")
        .await
        .unwrap();
    find(&c, "#close-form textarea[name=fix]")
        .await
        .send_keys("Bearing replaced")
        .await
        .unwrap();
    find(&c, "#close-form input[name=sku1]")
        .await
        .clear()
        .await
        .unwrap();
    find(&c, "#close-form input[name=signed_off_by]")
        .await
        .send_keys("Plant foreman")
        .await
        .unwrap();
    shot(&c, "close-form-phone").await;
    click_and_wait(&c, "#close-ticket").await;
    assert_eq!(
        js(
            &c,
            "return document.getElementById('ticket-state').dataset.state"
        )
        .await,
        json!("closed")
    );
    let kinds = js(
        &c,
        "return [...document.querySelectorAll('#timeline li')].map(l => l.dataset.kind)",
    )
    .await;
    assert!(
        kinds.as_array().unwrap().contains(&json!("report")),
        "{kinds}"
    );
    sign_out(&c).await;
    c.set_window_size(1280, 1000).await.unwrap();

    // --- the customer rates on the tracking page (phone): a low score opens a follow-up.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/track/{code}")).await.unwrap();
    assert_eq!(
        js(
            &c,
            "return document.getElementById('tracking').dataset.state"
        )
        .await,
        json!("closed")
    );
    let steps = js(
        &c,
        "return document.querySelectorAll('#track-timeline li').length",
    )
    .await;
    assert!(steps.as_u64().unwrap() >= 5, "{steps}");
    let public = c.source().await.unwrap();
    assert!(
        !public.contains(&tech) && !public.contains("Plant foreman"),
        "no personal data"
    );
    assert_no_external_url("tracking page", &public);
    find(&c, "input[name=score][value='1']")
        .await
        .click()
        .await
        .unwrap();
    shot(&c, "tracking-phone").await;
    click_and_wait(&c, "#rate-send").await;
    find(&c, "#rated").await;
    shot(&c, "tracking-rated").await;
    let follow = http_request(
        port,
        "GET",
        "/api/v1/tickets?source=follow_up",
        &[("Authorization", &admin_key)],
        "",
    );
    assert!(
        follow.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["parent_ticket_id"] == ticket_id.as_str()),
        "{}",
        follow.body
    );
    // The API keeps its JSON.
    let r = http_request(
        port,
        "GET",
        &format!("/track/{code}"),
        &[("Accept", "application/json")],
        "",
    );
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("closed")));
    c.set_window_size(1280, 1000).await.unwrap();

    // --- providers: the owner sees the ticket, another provider gets the 403 page.
    sign_in(&c, &base, "pat", &pw_owner).await;
    c.goto(&format!("{base}/tickets/{ticket_id}"))
        .await
        .unwrap();
    find(&c, "#ticket-state").await;
    sign_out(&c).await;
    sign_in(&c, &base, "oscar", &pw_other).await;
    c.goto(&format!("{base}/tickets/{ticket_id}"))
        .await
        .unwrap();
    assert!(!text(&c, "#error").await.is_empty());
    assert_eq!(
        js(&c, "return document.getElementById('error').dataset.status").await,
        json!("403")
    );
    shot(&c, "forbidden").await;
    c.goto(&format!("{base}/tickets?open=false")).await.unwrap();
    find(&c, "main h1").await;
    assert!(
        !c.source().await.unwrap().contains(&ticket_id),
        "not in the other provider's list"
    );
    sign_out(&c).await;

    // Assets: embedded, long-cached, no external URL; compressed sizes for BENCHMARKS.md.
    let cookie = http_sign_in(port, "eve", &pw_eng);
    let mut total = 0usize;
    let page = raw(
        port,
        "GET",
        &format!("/devices/{device}"),
        &[("Cookie", &cookie), ("Accept-Encoding", "gzip")],
        "",
    );
    assert_eq!(page.header("content-encoding"), Some("gzip"));
    total += page.body.len();
    let html = raw(
        port,
        "GET",
        &format!("/devices/{device}"),
        &[("Cookie", &cookie)],
        "",
    )
    .text();
    for asset in html
        .split("/assets/")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
    {
        let r = raw(
            port,
            "GET",
            &format!("/assets/{asset}"),
            &[("Accept-Encoding", "gzip")],
            "",
        );
        assert_eq!(r.status, 200, "{asset}");
        assert!(
            r.header("cache-control")
                .unwrap()
                .contains("max-age=31536000")
        );
        total += r.body.len();
        let plain = raw(port, "GET", &format!("/assets/{asset}"), &[], "");
        assert_no_external_url(&asset, &plain.text());
    }
    println!("device file compressed: HTML+JS+CSS+icon {total} bytes");
    assert!(total < 300 * 1024);

    c.close().await.unwrap();
    drop(driver);
    server.terminate();
}

/// An open predictive alert, raised by the real models from telemetry published over MQTT, is
/// acknowledged and then resolved by a scheduler on the alerts page; an engineer is offered
/// neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_acknowledge_and_resolve_an_alert_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    // 21 days: motor-0004 is overheating at the end, its alert open.
    let report = common::publish_failing_fleet_days(server.mqtt_port, &data, None, 21);
    assert_eq!(report["dropped"], 0, "{report}");
    // The models run behind the ingest: wait until the alert is stored.
    let open_alert = || {
        let out = common::prognos(&[
            "alerts",
            "list",
            "--device",
            "motor-0004",
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap_or_default()
            .iter()
            .any(|a| a["state"] == "open")
    };
    assert!(
        common::wait_until(Duration::from_secs(60), open_alert),
        "motor-0004 raised an open alert"
    );
    let base = format!("http://127.0.0.1:{}", server.http_port);
    let pw_sched = add_user(&data, "sam", "scheduler", &[]);
    let pw_eng = add_user(&data, "eve", "engineer", &[]);
    let driver = start_driver();
    let c = browser(&driver).await;

    sign_in(&c, &base, "eve", &pw_eng).await;
    c.goto(&format!("{base}/alerts?state=open")).await.unwrap();
    find(&c, "table.alerts tbody tr[data-state=open]").await;
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('[data-ack], [data-resolve]').length"
        )
        .await,
        json!(0),
        "an engineer reads alerts and is offered no move"
    );
    sign_out(&c).await;

    sign_in(&c, &base, "sam", &pw_sched).await;
    c.goto(&format!("{base}/alerts?state=open")).await.unwrap();
    let id = js(
        &c,
        "const r = [...document.querySelectorAll('table.alerts tbody tr')].find(r => r.textContent.includes('motor-0004')); return r && r.dataset.alert",
    )
    .await;
    let id = id
        .as_str()
        .expect("motor-0004's open alert is listed")
        .to_owned();
    shot(&c, "alerts").await;
    assert_no_external_url("/alerts", &c.source().await.unwrap());
    click_and_wait(&c, &format!("button[data-ack='{id}']")).await;
    // Back on the open list, which no longer has it; the acknowledged list does.
    assert_eq!(c.current_url().await.unwrap().query(), Some("state=open"));
    c.goto(&format!("{base}/alerts?state=acknowledged"))
        .await
        .unwrap();
    let row = format!("tr[data-alert='{id}']");
    assert_eq!(
        find(&c, &row)
            .await
            .attr("data-state")
            .await
            .unwrap()
            .as_deref(),
        Some("acknowledged")
    );
    assert!(
        c.find(Locator::Css(&format!("button[data-ack='{id}']")))
            .await
            .is_err()
    );
    click_and_wait(&c, &format!("button[data-resolve='{id}']")).await;
    c.goto(&format!("{base}/alerts")).await.unwrap();
    assert_eq!(
        find(&c, &row)
            .await
            .attr("data-state")
            .await
            .unwrap()
            .as_deref(),
        Some("resolved")
    );
    let (status, _) = server.terminate();
    assert!(status.success());
    let out = common::prognos(&[
        "alerts",
        "list",
        "--device",
        "motor-0004",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stored: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let stored = stored
        .iter()
        .find(|a| a["alert_id"] == id.as_str())
        .unwrap();
    assert_eq!(stored["state"], "resolved");
    assert!(stored["acknowledged_at_ms"].is_i64(), "{stored}");
    c.close().await.unwrap();
}

/// The device file's budget (BENCHMARKS.md): 30 days of 1-minute data on 7 metrics. Prints
/// the browser's timings; no timed assertion (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement for BENCHMARKS.md"]
async fn device_file_with_30_days_of_minute_data() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path(), "30", &["--devices", "2", "--interval-min", "1"]);
    let pw = add_user(dir.path(), "eve", "engineer", &[]);
    let series = read_telemetry(dir.path());
    let device = series.keys().next().unwrap().0.clone();
    let points: usize = series
        .iter()
        .filter(|((d, _), _)| *d == device)
        .map(|(_, v)| v.len())
        .sum();
    let server = Server::start(dir.path(), &[]);
    let base = format!("http://127.0.0.1:{}", server.http_port);
    let driver = start_driver();
    let c = browser(&driver).await;
    sign_in(&c, &base, "eve", &pw).await;
    for round in 0..3 {
        c.goto(&format!("{base}/devices/{device}?range=30d"))
            .await
            .unwrap();
        find(&c, "svg.chart").await;
        let t = js(
            &c,
            "const n = performance.getEntriesByType('navigation')[0];
             return {response_end_ms: n.responseEnd, interactive_ms: n.domInteractive,
                     script_ready_ms: window.prognosReady, charts: document.querySelectorAll('svg.chart').length,
                     drawn: [...document.querySelectorAll('svg.chart')].map(s => +s.dataset.points)};",
        )
        .await;
        println!("round {round}: {device}, {points} stored points: {t}");
    }
    c.close().await.unwrap();
    drop(driver);
    server.terminate();
}

/// BENCHMARKS.md: the ticket board and queue with 1,000 open tickets (the list limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement for BENCHMARKS.md"]
async fn ticket_board_with_1000_open_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let admin = demo(dir.path(), "2", &[]);
    let pw = add_user(dir.path(), "sam", "scheduler", &[]);
    let server = Server::start(dir.path(), &[]);
    let port = server.http_port;
    let ids: Vec<String> = std::fs::read_to_string(dir.path().join("devices.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut created = 0;
    let priorities = ["normal", "major", "emergency"];
    let mut i = 0usize;
    while created < 1000 {
        let body = json!({
            "title": format!("Customer call {i}: noise at start-up"),
            "device_id": ids[i % ids.len()],
            "priority": priorities[i % priorities.len()],
            "skill": "bearing_wear",
        });
        let r = http_request(
            port,
            "POST",
            "/api/v1/tickets",
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        created += 1;
        i += 1;
    }
    let base = format!("http://127.0.0.1:{port}");
    let driver = start_driver();
    let c = browser(&driver).await;
    sign_in(&c, &base, "sam", &pw).await;
    for path in ["/tickets?view=board", "/tickets"] {
        for round in 0..3 {
            c.goto(&format!("{base}{path}")).await.unwrap();
            let t = js(
                &c,
                "const n = performance.getEntriesByType('navigation')[0];
                 return {response_end_ms: n.responseEnd, interactive_ms: n.domInteractive,
                         load_ms: n.loadEventEnd, bytes: n.transferSize, decoded: n.decodedBodySize,
                         cards: document.querySelectorAll('a.tk').length,
                         rows: document.querySelectorAll('table tbody tr').length};",
            )
            .await;
            println!("{path} round {round}: {t}");
        }
    }
    c.close().await.unwrap();
    drop(driver);
    server.terminate();
}
