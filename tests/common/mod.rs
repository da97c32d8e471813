//! Test harness: the real `prognos` binary on loopback ports, a real MQTT client that is not
//! ours (`mosquitto_pub`), and a Parquet reader that is not ours (the parquet crate directly).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod mqtt_raw;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const BIN: &str = env!("CARGO_BIN_EXE_prognos");

pub fn prognos(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run prognos")
}

/// Runs the binary and parses its standard output as JSON; it must succeed.
pub fn prognos_json(args: &[&str]) -> serde_json::Value {
    let out = prognos(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Registers a device; returns its secret.
pub fn add_device(data_dir: &Path, id: &str) -> String {
    let v = prognos_json(&[
        "device",
        "add",
        id,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(v["device_id"], id);
    v["secret"].as_str().unwrap().to_owned()
}

/// How [`Server::start_with`] runs the binary.
#[derive(Debug, Default, Clone)]
pub struct ServerOptions {
    /// Write the server's log (its stderr) here instead of the test's stderr.
    pub log_file: Option<PathBuf>,
    /// RLIMIT_NOFILE of the server process.
    pub max_open_files: Option<u32>,
}

pub struct Server {
    pub child: Child,
    pub mqtt_port: u16,
    /// Every MQTT listener's port, in the order the server printed them (3.1.1, then 5).
    pub mqtt_ports: Vec<u16>,
    pub http_port: u16,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `prognos serve` on port 0 and reads the bound ports from its first line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(data_dir, extra, &ServerOptions::default())
    }

    /// [`Server::start`] with extra environment variables (test hooks).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command.envs(env.iter().copied());
        Self::spawn(command, data_dir, extra, Stdio::inherit())
    }

    /// Like [`Server::start`], with the server's standard error captured (see [`Stderr`]).
    pub fn start_capturing_stderr(data_dir: &Path, extra: &[&str]) -> (Server, Stderr) {
        let mut server = Self::spawn(Command::new(BIN), data_dir, extra, Stdio::piped());
        let stderr = Stderr::capture(server.child.stderr.take().unwrap());
        (server, stderr)
    }

    /// [`Server::start`] with the log (stderr) in a file and/or a file-descriptor limit.
    pub fn start_with(data_dir: &Path, extra: &[&str], options: &ServerOptions) -> Server {
        // `prlimit` (util-linux) sets the limit of the process it then becomes.
        let command = match options.max_open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let stderr = match &options.log_file {
            Some(path) => Stdio::from(File::create(path).unwrap()),
            None => Stdio::inherit(),
        };
        Self::spawn(command, data_dir, extra, stderr)
    }

    fn spawn(mut command: Command, data_dir: &Path, extra: &[&str], stderr: Stdio) -> Server {
        let mut child = command
            .args([
                "serve",
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--mqtt-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn prognos serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "prognos: serving MQTT on 127.0.0.1:P and HTTP on 127.0.0.1:Q, data in …"
        let port_after = |marker: &str| -> u16 {
            let rest = &line[line
                .find(marker)
                .unwrap_or_else(|| panic!("no {marker} in {line:?}"))
                + marker.len()..];
            let addr = rest.split([' ', ',']).next().unwrap();
            addr.rsplit(':').next().unwrap().parse().unwrap()
        };
        let mqtt_list = line
            .split("MQTT on ")
            .nth(1)
            .and_then(|rest| rest.split(" and HTTP").next())
            .unwrap_or_default();
        let mqtt_ports = mqtt_list
            .split(", ")
            .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
            .collect();
        Server {
            mqtt_ports,
            mqtt_port: port_after("MQTT on "),
            http_port: port_after("HTTP on "),
            child,
            data_dir: data_dir.to_owned(),
        }
    }

    pub fn pub_qos1(&self, id: &str, secret: &str, topic: &str, payload: &str) -> ExitStatus {
        mosquitto_pub(self.mqtt_port, id, secret, topic, payload)
    }

    pub fn http_get(&self, path: &str) -> String {
        http_get(self.http_port, path)
    }

    /// SIGTERM and wait; returns the exit status and how long it took.
    pub fn terminate(mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server's standard error, read by a thread: every line is echoed to the test's own
/// standard error (cut to 300 bytes) and the last 10 000 are kept, with the longest length.
#[derive(Clone)]
pub struct Stderr(std::sync::Arc<std::sync::Mutex<StderrLines>>);

#[derive(Default)]
pub struct StderrLines {
    pub lines: std::collections::VecDeque<String>,
    pub longest: usize,
    pub count: usize,
}

impl Stderr {
    fn capture(pipe: std::process::ChildStderr) -> Stderr {
        let shared = Stderr(Default::default());
        let sink = shared.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut raw = Vec::new();
            // Bytes, not `lines()`: a line need not be UTF-8.
            while reader
                .read_until(b'\n', &mut raw)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                raw.clear();
                let mut cut = line.len().min(300);
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                eprintln!("{}", &line[..cut]);
                let mut s = sink.0.lock().unwrap();
                s.longest = s.longest.max(line.len());
                s.count += 1;
                if s.lines.len() == 10_000 {
                    s.lines.pop_front();
                }
                s.lines.push_back(line);
            }
        });
        shared
    }

    /// The longest line so far (bytes).
    pub fn longest_line(&self) -> usize {
        self.0.lock().unwrap().longest
    }

    /// Lines kept that contain `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

pub fn mosquitto_pub(port: u16, id: &str, secret: &str, topic: &str, payload: &str) -> ExitStatus {
    Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            id,
            "-u",
            id,
            "-P",
            secret,
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub is installed (scripts/test.sh installs mosquitto-clients)")
}

/// A minimal HTTP/1.1 GET over a raw socket (keeps test dependencies small).
pub fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Every (device, metric) → [(ts_us, value)] in the data set, read with the parquet crate.
pub type Series = BTreeMap<(String, String), Vec<(i64, f64)>>;

pub fn read_telemetry(data_dir: &Path) -> Series {
    let mut out = Series::new();
    let mut files = Vec::new();
    collect_parquet(&data_dir.join("telemetry"), &mut files);
    for path in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            add_batch(&batch.unwrap(), &mut out);
        }
    }
    for points in out.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    out
}

fn collect_parquet(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_parquet(&path, files);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
}

fn arrow_cast_utf8(array: &dyn Array) -> Vec<String> {
    if let Some(dict) = array.as_any_dictionary_opt() {
        let values = dict.values().as_string::<i32>();
        let keys = dict.normalized_keys();
        return keys.iter().map(|k| values.value(*k).to_owned()).collect();
    }
    let s = array.as_string::<i32>();
    (0..s.len()).map(|i| s.value(i).to_owned()).collect()
}

fn add_batch(batch: &RecordBatch, out: &mut Series) {
    let ts = batch
        .column_by_name("ts")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let devices = arrow_cast_utf8(batch.column_by_name("device_id").unwrap().as_ref());
    let metrics = arrow_cast_utf8(batch.column_by_name("metric").unwrap().as_ref());
    let values = batch
        .column_by_name("value")
        .unwrap()
        .as_primitive::<Float64Type>();
    for i in 0..batch.num_rows() {
        out.entry((devices[i].clone(), metrics[i].clone()))
            .or_default()
            .push((ts.value(i), values.value(i)));
    }
}

pub fn read_dead_letters(data_dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir.join("deadletter")) else {
        return out;
    };
    for entry in entries {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        out.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
    }
    out
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: serde_json::Value,
    /// The body as text (for non-JSON responses).
    pub text: String,
}

/// A minimal HTTP/1.1 request over a raw socket.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    Reply {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        content_type: head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_owned)
            })
            .unwrap_or_default(),
        body: serde_json::from_str(rest).unwrap_or(serde_json::Value::Null),
        text: rest.to_owned(),
    }
}

/// Publishes the reference failing fleet over MQTT to `mqtt_port`, registering its devices in
/// `data_dir` first: seed 11, 6 machines, 24 days from 2026-10-01, in which motor-0004
/// overheats from day 16.1 and fails on day 22.6. Returns the simulator's JSON report.
pub fn publish_failing_fleet(
    mqtt_port: u16,
    data_dir: &Path,
    labels: Option<&Path>,
) -> serde_json::Value {
    publish_failing_fleet_days(mqtt_port, data_dir, labels, 24)
}

/// [`publish_failing_fleet`] for the first `days` days only: with 21, motor-0004 is
/// still degrading at the end, so its alert is open.
pub fn publish_failing_fleet_days(
    mqtt_port: u16,
    data_dir: &Path,
    labels: Option<&Path>,
    days: u32,
) -> serde_json::Value {
    let days = days.to_string();
    let mut command = Command::new(BIN);
    command
        .args([
            "simulate",
            "--devices",
            "6",
            "--days",
            &days,
            "--seed",
            "11",
        ])
        .args(["--start", "2026-10-01T00:00:00Z"])
        .args(["--mqtt-addr", &format!("127.0.0.1:{mqtt_port}")])
        .arg("--register-in")
        .arg(data_dir);
    if let Some(labels) = labels {
        command.arg("--labels").arg(labels);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Creates an API key with `role` in `data_dir`'s store; returns the key.
pub fn create_api_key(data_dir: &Path, role: &str) -> String {
    create_api_key_for(data_dir, role, None)
}

/// Creates an API key with `role`, for `provider`'s subtree when given; returns the key.
pub fn create_api_key_for(data_dir: &Path, role: &str, provider: Option<&str>) -> String {
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
    let v = prognos_json(&args);
    assert_eq!(v["role"], role);
    v["key"].as_str().unwrap().to_owned()
}

/// Creates a `technician` API key bound to `technician` (it sees and moves only that
/// technician's jobs); returns the key.
pub fn create_technician_key(data_dir: &Path, technician: &str) -> String {
    let v = prognos_json(&[
        "apikey",
        "create",
        "--role",
        "technician",
        "--technician",
        technician,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(v["technician_id"], technician);
    v["key"].as_str().unwrap().to_owned()
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made with the openssl CLI
/// (installed by scripts/test.sh): (cert.pem, key.pem) in `dir`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// A test CA and a leaf certificate it signed for `localhost` and 127.0.0.1 (a verifying TLS
/// client refuses a self-signed CA certificate as a server's): (ca.pem, leaf.pem, leaf.key).
pub fn ca_signed_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (leaf, leaf_key, csr, ext) = (
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
        dir.join("leaf.csr"),
        dir.join("leaf.ext"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |v: &str| std::ffi::OsString::from(v);
    let p = |v: &PathBuf| v.as_os_str().to_owned();
    let steps: [Vec<std::ffi::OsString>; 3] = [
        vec![
            s("req"),
            s("-x509"),
            s("-newkey"),
            s("rsa:2048"),
            s("-nodes"),
            s("-days"),
            s("1"),
            s("-subj"),
            s("/CN=Prognos test CA"),
            s("-keyout"),
            p(&ca_key),
            s("-out"),
            p(&ca),
        ],
        vec![
            s("req"),
            s("-newkey"),
            s("rsa:2048"),
            s("-nodes"),
            s("-subj"),
            s("/CN=localhost"),
            s("-keyout"),
            p(&leaf_key),
            s("-out"),
            p(&csr),
        ],
        vec![
            s("x509"),
            s("-req"),
            s("-in"),
            p(&csr),
            s("-CA"),
            p(&ca),
            s("-CAkey"),
            p(&ca_key),
            s("-CAcreateserial"),
            s("-days"),
            s("1"),
            s("-extfile"),
            p(&ext),
            s("-out"),
            p(&leaf),
        ],
    ];
    for step in &steps {
        let args: Vec<&std::ffi::OsStr> = step.iter().map(|a| a.as_os_str()).collect();
        run(&args);
    }
    (ca, leaf, leaf_key)
}
