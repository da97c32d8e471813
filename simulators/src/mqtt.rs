//! MQTT publishing with rumqttc: [`publish_fleet`] drives a simulated fleet
//! (one connection per device) and [`run_load`] is a load generator for
//! benchmarks.
//!
//! rumqttc facts this module is built around:
//! - nothing happens unless the `EventLoop` is polled, and `poll()` is not
//!   documented as cancel-safe (an interrupted write can leave a publish
//!   marked in flight that never reached the socket), so every event loop runs
//!   in its own task and is only ever abandoned as a whole;
//! - `AsyncClient::publish` returns when the request is queued, not when the
//!   broker acknowledged it, so acknowledgements are counted from
//!   `Outgoing::Publish(pkid)` / `Incoming::PubAck` events;
//! - after a reconnect with `session_present = false` rumqttc drops the
//!   unacknowledged QoS 1 messages; the driver rescues them from
//!   `EventLoop::pending` at the error and re-queues them after the new
//!   CONNACK, so at-least-once survives a broker restart (duplicates possible);
//! - the default maximum packet size is 10 KiB and a keep-alive of 0 is
//!   rejected by rumqttd, so both are set explicitly.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    Request,
};
use tokio::task::JoinSet;

use crate::fleet::{Fleet, Tick};

/// Errors that stop a publishing run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A configuration value is unusable.
    #[error("invalid MQTT config: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Per-device credentials were given but lack this device.
    #[error("no credentials for device {0}")]
    MissingCredentials(String),
    /// A broker address string could not be parsed.
    #[error("invalid broker address {0:?}: expected host:port")]
    InvalidAddr(String),
}

/// Where the broker listens (plain TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerAddr {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl From<SocketAddr> for BrokerAddr {
    fn from(a: SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl FromStr for BrokerAddr {
    type Err = MqttError;

    /// Parses `host:port` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, MqttError> {
        let bad = || MqttError::InvalidAddr(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self::new(host, port))
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How devices authenticate.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No username/password (e.g. a plain Mosquitto).
    #[default]
    Anonymous,
    /// Username = device id, password = the device's secret from this map
    /// (device id → secret). A device missing from the map is an error.
    PerDevice(HashMap<String, String>),
}

impl fmt::Debug for Credentials {
    /// Never prints secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::PerDevice(m) => write!(f, "PerDevice({} devices, secrets redacted)", m.len()),
        }
    }
}

impl Credentials {
    /// (username, password) of a device, `None` when anonymous.
    fn for_device(&self, id: &str) -> Result<Option<(String, String)>, MqttError> {
        match self {
            Self::Anonymous => Ok(None),
            Self::PerDevice(m) => m
                .get(id)
                .map(|p| Some((id.to_owned(), p.clone())))
                .ok_or_else(|| MqttError::MissingCredentials(id.to_owned())),
        }
    }
}

/// Telemetry topic of a device.
pub fn telemetry_topic(device_id: &str) -> String {
    format!("prognos/v1/{device_id}/telemetry")
}

/// Status topic of a device (retained `online` / `offline`).
pub fn status_topic(device_id: &str) -> String {
    format!("prognos/v1/{device_id}/status")
}

/// Connection settings shared by the fleet driver and the load generator.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Keep-alive; at least 1 s (rumqttd rejects 0, rumqttc panics below 1 s).
    pub keep_alive: Duration,
    /// Max packet size both ways (rumqttc's default is only 10 KiB).
    pub max_packet_size: usize,
    /// QoS 1 messages in flight per connection (1..=65535).
    pub inflight: u16,
    /// Capacity of each client's request queue.
    pub channel_capacity: usize,
    /// Connection errors tolerated per connection before it gives up.
    pub max_reconnects: u32,
}

impl Default for ConnSettings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(30),
            max_packet_size: 256 * 1024,
            inflight: 100,
            channel_capacity: 256,
            max_reconnects: 10,
        }
    }
}

impl ConnSettings {
    fn validate(&self) -> Result<(), MqttError> {
        let bad = |field, reason| Err(MqttError::InvalidConfig { field, reason });
        if self.keep_alive < Duration::from_secs(1) || self.keep_alive > Duration::from_secs(65_535)
        {
            return bad("keep_alive", "must be between 1 s and 65535 s");
        }
        if self.max_packet_size < 1024 || self.max_packet_size > 256 * 1024 * 1024 {
            return bad("max_packet_size", "must be between 1 KiB and 256 MiB");
        }
        if self.inflight == 0 {
            return bad("inflight", "must be at least 1");
        }
        if self.channel_capacity == 0 || self.channel_capacity > 1_000_000 {
            return bad("channel_capacity", "must be in 1..=1000000");
        }
        Ok(())
    }

    fn options(
        &self,
        id: &str,
        addr: &BrokerAddr,
        login: Option<(String, String)>,
        will: Option<LastWill>,
    ) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.host.clone(), addr.port);
        o.set_keep_alive(self.keep_alive)
            .set_max_packet_size(self.max_packet_size, self.max_packet_size)
            .set_inflight(self.inflight)
            .set_request_channel_capacity(self.channel_capacity)
            .set_clean_session(true);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        if let Some(w) = will {
            o.set_last_will(w);
        }
        o
    }
}

/// Pacing of [`publish_fleet`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the connections' in-flight windows allow.
    AsFastAsPossible,
    /// Simulated time runs this many times faster than wall time (1.0 = real
    /// time). Timestamps in payloads are always simulated time: for a live
    /// demo start the fleet at "now"; for a fast back-fill start it in the past
    /// so timestamps do not run into the future.
    Speedup(f64),
}

/// Settings of [`publish_fleet`].
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Broker address.
    pub addr: BrokerAddr,
    /// Device authentication.
    pub credentials: Credentials,
    /// Number of ticks to publish.
    pub ticks: u64,
    /// Pacing.
    pub pace: Pace,
    /// Connection settings.
    pub conn: ConnSettings,
    /// How long the generator waits for room in a device's queue before it
    /// drops that reading (a device whose link is down cannot buffer forever).
    pub publish_timeout: Duration,
    /// How long to wait for outstanding acks after the last tick.
    pub drain_timeout: Duration,
    /// Hard bound on the whole run.
    pub time_limit: Duration,
}

impl PublishConfig {
    /// Defaults for a broker at `addr`: anonymous, as fast as possible.
    pub fn new(addr: BrokerAddr, ticks: u64) -> Self {
        Self {
            addr,
            credentials: Credentials::Anonymous,
            ticks,
            pace: Pace::AsFastAsPossible,
            conn: ConnSettings::default(),
            publish_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            time_limit: Duration::from_secs(3600),
        }
    }
}

/// Outcome of [`publish_fleet`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishReport {
    /// Devices (connections).
    pub devices: usize,
    /// Ticks generated.
    pub ticks: u64,
    /// Telemetry messages handed to the clients.
    pub telemetry_published: u64,
    /// Telemetry messages dropped because a device's queue stayed full or its
    /// connection had given up.
    pub telemetry_dropped: u64,
    /// Status messages (online / offline) handed to the clients.
    pub status_published: u64,
    /// QoS 1 acknowledgements received (telemetry and status).
    pub acked: u64,
    /// Messages handed to the clients but never acknowledged.
    pub unacked: u64,
    /// Connection errors seen (each may have been followed by a reconnect).
    pub connection_errors: u64,
    /// Connections that gave up (refused or too many errors).
    pub connections_failed: usize,
    /// One of the errors, for the log.
    pub last_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether the time limit cut the run short.
    pub timed_out: bool,
}

/// Publish-to-ack latency summary, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl LatencySummary {
    /// Summary of sorted samples.
    fn of_sorted(s: &[u64]) -> Self {
        let pick = |q: f64| -> u64 {
            if s.is_empty() {
                return 0;
            }
            let i = ((s.len() as f64 - 1.0) * q).round() as usize;
            s.get(i.min(s.len() - 1)).copied().unwrap_or(0)
        };
        Self {
            count: s.len() as u64,
            p50_us: pick(0.5),
            p90_us: pick(0.9),
            p99_us: pick(0.99),
            max_us: s.last().copied().unwrap_or(0),
        }
    }
}

/// Settings of [`run_load`].
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Broker address.
    pub addr: BrokerAddr,
    /// Concurrent connections (1..=100000), ids `{id_prefix}-{i:05}`.
    pub devices: usize,
    /// Messages each connection publishes.
    pub messages_per_device: u64,
    /// Metrics per message (`m0000`, `m0001`, ...), 1..=10000.
    pub metrics_per_message: usize,
    /// QoS 1 (acknowledged) or QoS 0.
    pub qos1: bool,
    /// Authentication; `PerDevice` must contain every id of [`Self::device_ids`].
    pub credentials: Credentials,
    /// Hard bound on the whole run.
    pub time_limit: Duration,
    /// Client id prefix, `[a-z0-9-]+`.
    pub id_prefix: String,
    /// Connection settings.
    pub conn: ConnSettings,
    /// Messages per second per connection; `None` publishes as fast as the in-flight window
    /// allows (a saturating load).
    pub rate_per_device: Option<f64>,
}

impl LoadConfig {
    /// Defaults: anonymous, QoS 1, 8 metrics per message, 60 s limit.
    pub fn new(addr: BrokerAddr, devices: usize, messages_per_device: u64) -> Self {
        Self {
            addr,
            devices,
            messages_per_device,
            metrics_per_message: 8,
            qos1: true,
            credentials: Credentials::Anonymous,
            time_limit: Duration::from_secs(60),
            id_prefix: "load".to_owned(),
            // A load generator must not silently reconnect: a dropped
            // connection is a result to report, not to hide.
            conn: ConnSettings {
                max_reconnects: 0,
                ..ConnSettings::default()
            },
            rate_per_device: None,
        }
    }

    /// Client id (= username) of connection `i`.
    pub fn device_id(&self, i: usize) -> String {
        format!("{}-{i:05}", self.id_prefix)
    }

    /// All client ids, for registering them with the broker.
    pub fn device_ids(&self) -> Vec<String> {
        (0..self.devices).map(|i| self.device_id(i)).collect()
    }

    fn validate(&self) -> Result<(), MqttError> {
        let bad = |field, reason| Err(MqttError::InvalidConfig { field, reason });
        self.conn.validate()?;
        if self.devices == 0 || self.devices > 100_000 {
            return bad("devices", "must be in 1..=100000");
        }
        if self.metrics_per_message == 0 || self.metrics_per_message > 10_000 {
            return bad("metrics_per_message", "must be in 1..=10000");
        }
        if self.id_prefix.is_empty()
            || self.id_prefix.len() > 32
            || !self.id_prefix.bytes().all(is_id_byte)
        {
            return bad("id_prefix", "must be 1..=32 chars of [a-z0-9-]");
        }
        // ts, seq and ~28 bytes per metric must fit in a packet.
        if 64 + 28 * self.metrics_per_message > self.conn.max_packet_size {
            return bad("max_packet_size", "too small for metrics_per_message");
        }
        Ok(())
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// Outcome of [`run_load`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Messages written to the connections (first transmissions).
    pub sent: u64,
    /// Messages acknowledged (QoS 1 only).
    pub acked: u64,
    /// Connection errors.
    pub errors: u64,
    /// Connections that gave up.
    pub connections_failed: usize,
    /// One of the errors, for the log.
    pub last_error: Option<String>,
    /// Wall time from start to the last ack (or the time limit).
    pub elapsed: Duration,
    /// Whether the time limit cut the run short.
    pub timed_out: bool,
    /// Publish-to-ack latency (from the client writing the publish to the
    /// client reading the PUBACK), microseconds.
    pub latency: LatencySummary,
    /// All latency samples, sorted ascending.
    pub ack_latency_us: Vec<u64>,
}

impl LoadReport {
    /// Acknowledged (QoS 1) or sent (QoS 0) messages per second.
    pub fn throughput_per_sec(&self) -> f64 {
        let n = if self.acked > 0 {
            self.acked
        } else {
            self.sent
        };
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { n as f64 / s } else { 0.0 }
    }
}

/// Marks "expected number of first transmissions not yet known".
const UNKNOWN: u64 = u64::MAX;

/// What one connection's event-loop task observed. Updated on every event so a
/// task aborted at the time limit still leaves its counts behind.
#[derive(Debug, Default)]
struct ConnStats {
    /// First transmissions of publishes (QoS 0 and 1).
    first_sent: u64,
    /// Publishes the event loop itself added ("online" after a reconnect).
    extra: u64,
    acked: u64,
    errors: u64,
    gave_up: bool,
    last_error: Option<String>,
    latencies_us: Vec<u64>,
}

#[derive(Debug)]
struct Shared {
    stats: Mutex<ConnStats>,
    /// Number of publishes the producer will make in total (set before the
    /// last one is queued, so the event loop sees it when that one is acked).
    expected: AtomicU64,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            stats: Mutex::new(ConnStats::default()),
            expected: AtomicU64::new(UNKNOWN),
        })
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, ConnStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Polls one connection until everything expected has been written and
/// acknowledged, then disconnects. Never cancels `poll()`; bounded by
/// `max_reconnects` here and by the caller's time limit (which aborts the task).
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    shared: Arc<Shared>,
    status: Option<String>,
    max_reconnects: u32,
) {
    let mut inflight: HashMap<u16, Instant> = HashMap::new();
    // Unacknowledged publishes and queued requests rescued from a broken
    // connection (see below).
    let mut rescued: VecDeque<Request> = VecDeque::new();
    let mut connections = 0u64;
    let mut disconnecting = false;
    let mut errors = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connections += 1;
                if connections > 1 {
                    // rumqttc drops its pending requests when the broker has
                    // no session for us (clean session), which would silently
                    // lose QoS 1 messages. We took them out at the error and
                    // put them back first in line: at-least-once holds, the
                    // broker may see duplicates (same seq and ts).
                    rescued.extend(eventloop.pending.drain(..));
                    eventloop.pending = std::mem::take(&mut rescued);
                    if let Some(topic) = &status
                        && client
                            .try_publish(topic.as_str(), QoS::AtLeastOnce, true, "online")
                            .is_ok()
                    {
                        shared.stats().extra += 1;
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if pkid == 0 {
                    shared.stats().first_sent += 1;
                } else if let std::collections::hash_map::Entry::Vacant(e) = inflight.entry(pkid) {
                    e.insert(Instant::now());
                    shared.stats().first_sent += 1;
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(t0) = inflight.remove(&ack.pkid) {
                    let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let mut s = shared.stats();
                    s.acked += 1;
                    s.latencies_us.push(us);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                errors = errors.saturating_add(1);
                let refused = matches!(e, ConnectionError::ConnectionRefused(_));
                {
                    let mut s = shared.stats();
                    s.errors += 1;
                    s.last_error = Some(e.to_string());
                }
                if disconnecting {
                    break;
                }
                if refused || errors > max_reconnects {
                    tracing::warn!(error = %e, "mqtt connection gives up");
                    shared.stats().gave_up = true;
                    break;
                }
                rescued.extend(eventloop.pending.drain(..));
                tracing::debug!(error = %e, errors, "mqtt connection error, reconnecting");
                let backoff = 100u64 << errors.min(5);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                continue;
            }
        }
        if !disconnecting {
            let expected = shared.expected.load(Ordering::Acquire);
            if expected != UNKNOWN && inflight.is_empty() {
                let (first_sent, extra) = {
                    let s = shared.stats();
                    (s.first_sent, s.extra)
                };
                if first_sent >= expected.saturating_add(extra) {
                    disconnecting = true;
                    if client.try_disconnect().is_err() {
                        break;
                    }
                }
            }
        }
    }
}

fn now_epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Publishes `cfg.ticks` ticks of `fleet` over MQTT, one connection per
/// device (client id = username = device id), QoS 1 JSON to
/// `prognos/v1/{id}/telemetry` with the reading's per-device `seq`.
///
/// Each device announces a retained `online` on `prognos/v1/{id}/status`,
/// has a retained last will `offline` there, and publishes a retained
/// `offline` itself before its clean disconnect (a clean disconnect
/// suppresses the will). Devices that are down (failed or in maintenance)
/// publish nothing. Stops after all acks arrived, `drain_timeout` after the
/// last tick, or at `time_limit`, whichever is first. Dropping the future
/// aborts all connection tasks.
pub async fn publish_fleet(
    fleet: &mut Fleet,
    cfg: &PublishConfig,
) -> Result<PublishReport, MqttError> {
    cfg.conn.validate()?;
    if let Pace::Speedup(x) = cfg.pace
        && !(x.is_finite() && x > 0.0)
    {
        return Err(MqttError::InvalidConfig {
            field: "pace",
            reason: "speedup must be finite and positive",
        });
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + cfg.time_limit;
    let specs = fleet.devices().to_vec();

    struct Dev {
        client: AsyncClient,
        shared: Arc<Shared>,
        telemetry: String,
        status: String,
        queued: u64,
        stalled: bool,
    }
    let mut tasks = JoinSet::new();
    let mut devs = Vec::with_capacity(specs.len());
    for spec in &specs {
        let login = cfg.credentials.for_device(&spec.id)?;
        let status = status_topic(&spec.id);
        let will = LastWill::new(status.clone(), "offline", QoS::AtLeastOnce, true);
        let opts = cfg.conn.options(&spec.id, &cfg.addr, login, Some(will));
        let (client, eventloop) = AsyncClient::new(opts, cfg.conn.channel_capacity);
        let shared = Shared::new();
        tasks.spawn(drive(
            eventloop,
            client.clone(),
            shared.clone(),
            Some(status.clone()),
            cfg.conn.max_reconnects,
        ));
        devs.push(Dev {
            client,
            shared,
            telemetry: telemetry_topic(&spec.id),
            status,
            queued: 0,
            stalled: false,
        });
    }

    let mut report = PublishReport {
        devices: specs.len(),
        ..PublishReport::default()
    };
    // Announce: the first request in every queue, so it goes out right after
    // CONNACK.
    for d in &mut devs {
        if d.client
            .try_publish(d.status.as_str(), QoS::AtLeastOnce, true, "online")
            .is_ok()
        {
            d.queued += 1;
            report.status_published += 1;
        }
    }

    let first_ts = fleet.now_ms();
    let wall0 = tokio::time::Instant::now();
    let mut tick = Tick::default();
    let mut payload = Vec::with_capacity(512);
    'ticks: for _ in 0..cfg.ticks {
        fleet.next_tick_into(&mut tick);
        report.ticks += 1;
        if let Pace::Speedup(x) = cfg.pace {
            let sim = (tick.ts_ms - first_ts).max(0) as f64 / x;
            let at = wall0 + Duration::from_secs_f64((sim / 1000.0).min(1e9));
            if at >= deadline {
                report.timed_out = true;
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        for r in &tick.readings {
            if tokio::time::Instant::now() >= deadline {
                report.timed_out = true;
                break 'ticks;
            }
            let Some(d) = devs.get_mut(r.device) else {
                continue;
            };
            payload.clear();
            r.write_json(r.seq, &mut payload);
            let topic = d.telemetry.as_str();
            let ok = if d.stalled {
                // Do not wait on a device that already stalled once (link down,
                // reconnecting): drop until its queue has room again.
                let ok = d
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload.clone())
                    .is_ok();
                d.stalled = !ok;
                ok
            } else {
                let send = d
                    .client
                    .publish(topic, QoS::AtLeastOnce, false, payload.clone());
                let ok = matches!(
                    tokio::time::timeout(cfg.publish_timeout, send).await,
                    Ok(Ok(()))
                );
                d.stalled = !ok;
                ok
            };
            if ok {
                d.queued += 1;
                report.telemetry_published += 1;
            } else {
                report.telemetry_dropped += 1;
            }
        }
    }

    // Say goodbye: set the expected count first so the event loop recognises
    // the last ack, then queue the retained "offline".
    for d in &mut devs {
        d.shared.expected.store(d.queued + 1, Ordering::Release);
        let bye = d
            .client
            .publish(d.status.as_str(), QoS::AtLeastOnce, true, "offline");
        match tokio::time::timeout(cfg.publish_timeout, bye).await {
            Ok(Ok(())) => {
                d.queued += 1;
                report.status_published += 1;
            }
            _ => d.shared.expected.store(d.queued, Ordering::Release),
        }
    }
    drop(tick);
    let drain_deadline = (tokio::time::Instant::now() + cfg.drain_timeout).min(deadline);
    let finished = join_until(&mut tasks, drain_deadline).await;
    if !finished {
        report.timed_out = true;
    }

    let mut queued = 0;
    for d in &devs {
        queued += d.queued;
        let s = d.shared.stats();
        report.acked += s.acked;
        report.status_published += s.extra;
        queued += s.extra;
        report.connection_errors += s.errors;
        if s.gave_up {
            report.connections_failed += 1;
        }
        if s.last_error.is_some() {
            report.last_error.clone_from(&s.last_error);
        }
    }
    report.unacked = queued.saturating_sub(report.acked);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Waits for all tasks until `deadline`, then aborts the rest. Returns whether
/// all finished on their own.
async fn join_until(tasks: &mut JoinSet<()>, deadline: tokio::time::Instant) -> bool {
    let all = async {
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r
                && e.is_panic()
            {
                tracing::error!(error = %e, "mqtt connection task panicked");
            }
        }
    };
    let finished = tokio::time::timeout_at(deadline, all).await.is_ok();
    if !finished {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    finished
}

/// Runs `cfg.devices` connections concurrently, each publishing
/// `messages_per_device` messages as fast as its in-flight window allows, and
/// measures publish→ack latency by packet id. Bounded by `time_limit`.
/// Connections do not reconnect unless `conn.max_reconnects > 0`.
pub async fn run_load(cfg: &LoadConfig) -> Result<LoadReport, MqttError> {
    cfg.validate()?;
    let qos = if cfg.qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    // The first names are the fleet's sensors, so consumers that understand them (the
    // online models) do their real work on load traffic; the rest are synthetic.
    let names: Arc<Vec<String>> = Arc::new(
        (0..cfg.metrics_per_message)
            .map(|i| match crate::fleet::FLEET_METRICS.get(i) {
                Some(name) => (*name).to_owned(),
                None => format!("m{i:04}"),
            })
            .collect(),
    );
    let mut conns = Vec::with_capacity(cfg.devices);
    let mut logins = Vec::with_capacity(cfg.devices);
    for i in 0..cfg.devices {
        let id = cfg.device_id(i);
        logins.push(cfg.credentials.for_device(&id)?);
        conns.push(id);
    }

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + cfg.time_limit;
    let mut tasks = JoinSet::new();
    let mut shareds = Vec::with_capacity(cfg.devices);
    for (id, login) in conns.into_iter().zip(logins) {
        let opts = cfg.conn.options(&id, &cfg.addr, login, None);
        let (client, eventloop) = AsyncClient::new(opts, cfg.conn.channel_capacity);
        let shared = Shared::new();
        // Known up front, so the event loop can finish on the last ack.
        shared
            .expected
            .store(cfg.messages_per_device, Ordering::Release);
        tasks.spawn(drive(
            eventloop,
            client.clone(),
            shared.clone(),
            None,
            cfg.conn.max_reconnects,
        ));
        let topic = telemetry_topic(&id);
        let names = names.clone();
        let n = cfg.messages_per_device;
        let interval = cfg
            .rate_per_device
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        tasks.spawn(async move {
            let mut s = String::with_capacity(64 + 20 * names.len());
            let mut ticker = interval.map(|i| {
                let mut t = tokio::time::interval(i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            for seq in 0..n {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                load_payload(&mut s, seq, &names);
                if client
                    .publish(topic.as_str(), qos, false, s.as_bytes().to_vec())
                    .await
                    .is_err()
                {
                    // The event loop ended (gave up); nothing more can be sent.
                    break;
                }
            }
        });
        shareds.push(shared);
    }
    let finished = join_until(&mut tasks, deadline).await;

    let mut report = LoadReport {
        timed_out: !finished,
        elapsed: started.elapsed(),
        ..LoadReport::default()
    };
    let mut lat = Vec::new();
    for sh in &shareds {
        let mut s = sh.stats();
        report.sent += s.first_sent;
        report.acked += s.acked;
        report.errors += s.errors;
        if s.gave_up {
            report.connections_failed += 1;
        }
        if s.last_error.is_some() {
            report.last_error.clone_from(&s.last_error);
        }
        lat.append(&mut s.latencies_us);
    }
    lat.sort_unstable();
    report.latency = LatencySummary::of_sorted(&lat);
    report.ack_latency_us = lat;
    Ok(report)
}

/// `{"ts":<now>,"seq":<seq>,"metrics":{"m0000":<v>,...}}` with values that
/// vary per message so compression or dedup cannot flatter the benchmark.
fn load_payload(s: &mut String, seq: u64, names: &[String]) {
    use std::fmt::Write as _;
    s.clear();
    let _ = write!(
        s,
        "{{\"ts\":{},\"seq\":{seq},\"metrics\":{{",
        now_epoch_ms()
    );
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = ((seq.wrapping_mul(31).wrapping_add(i as u64 * 17)) % 10_000) as f64 / 100.0;
        let _ = write!(s, "\"{name}\":{v}");
    }
    s.push_str("}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addr_parses() {
        let a: BrokerAddr = "localhost:1883".parse().unwrap();
        assert_eq!(a, BrokerAddr::new("localhost", 1883));
        let b: BrokerAddr = "[::1]:1884".parse().unwrap();
        assert_eq!(b.host, "::1");
        assert_eq!(b.to_string(), "[::1]:1884");
        assert!("nohost".parse::<BrokerAddr>().is_err());
        assert!(":1883".parse::<BrokerAddr>().is_err());
        assert!("h:99999".parse::<BrokerAddr>().is_err());
    }

    #[test]
    fn credentials_debug_redacts_and_lookup_fails_closed() {
        let mut m = HashMap::new();
        m.insert("pump-0001".to_owned(), "s3cret".to_owned());
        let c = Credentials::PerDevice(m);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c.for_device("pump-0001").unwrap().is_some());
        assert!(matches!(
            c.for_device("pump-0002"),
            Err(MqttError::MissingCredentials(_))
        ));
        assert!(Credentials::Anonymous.for_device("x").unwrap().is_none());
    }

    #[test]
    fn load_config_validates() {
        let mut c = LoadConfig::new(BrokerAddr::new("127.0.0.1", 1883), 2, 10);
        assert!(c.validate().is_ok());
        assert_eq!(c.device_ids(), vec!["load-00000", "load-00001"]);
        c.id_prefix = "Bad_Prefix".to_owned();
        assert!(c.validate().is_err());
        c.id_prefix = "load".to_owned();
        c.conn.keep_alive = Duration::ZERO;
        assert!(c.validate().is_err());
        c.conn.keep_alive = Duration::from_secs(5);
        c.metrics_per_message = 10_000;
        c.conn.max_packet_size = 10 * 1024;
        assert!(c.validate().is_err());
    }

    #[test]
    fn load_payload_is_json() {
        let names: Vec<String> = (0..3).map(|i| format!("m{i:04}")).collect();
        let mut s = String::new();
        load_payload(&mut s, 42, &names);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["metrics"].as_object().unwrap().len(), 3);
    }

    /// No broker: every device gives up, readings are dropped, nothing hangs.
    #[tokio::test]
    async fn fleet_against_closed_port_is_bounded() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut fleet = Fleet::new(crate::FleetConfig {
            devices: 3,
            ..crate::FleetConfig::default()
        })
        .unwrap();
        let mut cfg = PublishConfig::new(addr.into(), 20);
        cfg.conn.max_reconnects = 0;
        cfg.publish_timeout = Duration::from_millis(200);
        cfg.time_limit = Duration::from_secs(10);
        let t0 = Instant::now();
        let r = publish_fleet(&mut fleet, &cfg).await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(9), "{r:?}");
        assert_eq!(r.ticks, 20);
        assert_eq!(r.acked, 0);
        assert_eq!(r.connections_failed, 3);
        assert_eq!(r.telemetry_published + r.telemetry_dropped, 60);
    }

    #[test]
    fn latency_percentiles() {
        let s: Vec<u64> = (1..=100).collect();
        let l = LatencySummary::of_sorted(&s);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_us, 51);
        assert_eq!(l.p99_us, 99);
        assert_eq!(l.max_us, 100);
        assert_eq!(LatencySummary::of_sorted(&[]), LatencySummary::default());
    }

    /// Nothing listens on the port: the run ends promptly with errors, no hang.
    #[tokio::test]
    async fn load_against_closed_port_is_bounded() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut c = LoadConfig::new(addr.into(), 2, 5);
        c.time_limit = Duration::from_secs(10);
        let t0 = Instant::now();
        let r = run_load(&c).await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(9));
        assert_eq!(r.acked, 0);
        assert_eq!(r.connections_failed, 2);
        assert!(r.errors >= 2);
    }
}
