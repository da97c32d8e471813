//! Settings: embedded defaults, overridden by a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The TOML file's shape. Unknown keys are errors: a typo must not silently fall back to a
/// default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub mqtt: MqttFile,
    #[serde(default)]
    pub http: HttpFile,
    #[serde(default)]
    pub ingest: IngestFile,
    #[serde(default)]
    pub models: ModelsFile,
    #[serde(default)]
    pub service: ServiceFile,
    #[serde(default)]
    pub webhooks: WebhooksFile,
}

/// Where webhooks may point. By default only public addresses: a webhook URL (or a name it
/// resolves to) on loopback, a private, link-local or unique-local network is refused at
/// registration and at delivery.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFile {
    /// Allow loopback, private, link-local and unique-local destinations (a receiver on the
    /// same host or the company network). Default false.
    pub allow_private_destinations: Option<bool>,
    /// CIDRs (`10.1.2.0/24`, `fd00:1::/64`) or addresses allowed whatever they are: the
    /// narrower way to let one internal receiver through.
    #[serde(default)]
    pub allowed_destinations: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// How often the SLA timer checks open tickets (default 10 000 ms).
    pub sla_check_interval_ms: Option<u64>,
    /// PEM file of CA certificates trusted for `https://` webhooks besides the Mozilla roots.
    pub webhook_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsFile {
    /// Run the online detectors on the stream (default true).
    pub enabled: Option<bool>,
    /// Asset profile files (TOML), one profile each: metrics and roles, named failure modes,
    /// thresholds, per device model. A device model without one is learned from the data.
    #[serde(default)]
    pub profiles: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    pub addr: Option<SocketAddr>,
    pub mqtt5_addr: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub ingest_buffer_mib: Option<usize>,
    /// Largest MQTT packet accepted (default 4 × `ingest.max_payload_bytes`, at least 64 KiB);
    /// larger ones disconnect the device. Payloads between the two are dead-lettered.
    pub max_packet_bytes: Option<usize>,
    /// Longest a TLS handshake may take (default 10 000 ms).
    pub tls_handshake_timeout_ms: Option<u64>,
    /// Longest topic or subscription filter (default 256 bytes).
    pub max_topic_bytes: Option<usize>,
    /// Subscriptions one device connection may hold (default 8).
    pub max_subscriptions_per_connection: Option<usize>,
    /// Distinct subscription filters the broker keeps in all (default 1024).
    pub max_filters: Option<usize>,
    /// Keep retained messages for later subscribers (default false).
    pub retain: Option<bool>,
    /// Sockets held open at once (default: max_connections + 256, within the open-files limit).
    pub max_open_sockets: Option<usize>,
    /// Failed logins of one client id per window before it is refused (default 5).
    pub auth_failures_per_client_id: Option<u32>,
    /// Failed logins from one address (IPv6: /64) per window before it is refused (default 30).
    pub auth_failures_per_address: Option<u32>,
    /// The throttling window (default 60 s).
    pub auth_failure_window_secs: Option<u64>,
    /// Client ids and addresses tracked for throttling, each (default 65 536).
    pub auth_throttle_max_tracked: Option<usize>,
    /// Sockets one address (IPv6: /64) may have in TLS handshake or CONNECT at once
    /// (default 128).
    pub max_connecting_per_address: Option<usize>,
    /// Keep-alive (s) assumed for a device that asks for 0, "none" (default 300).
    pub zero_keep_alive_secs: Option<u16>,
    /// PUBACK only once the publish is in the fsynced WAL (default true); false
    /// acknowledges on arrival in the broker's memory (faster, loses up to a commit on kill -9).
    pub ack_when_durable: Option<bool>,
    /// How often the broker probes its own listener (default 5000 ms).
    pub probe_interval_ms: Option<u64>,
    /// How long one probe may take (default 3000 ms).
    pub probe_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub addr: Option<SocketAddr>,
    /// From accept, or the end of the previous response, to a complete request head
    /// (default 10 000 ms); a slow or idle client is closed after it.
    pub header_read_timeout_ms: Option<u64>,
    /// One request, its body upload included, to its response (default 30 000 ms; 503 past it).
    pub request_timeout_ms: Option<u64>,
    /// Open HTTP connections (default 512); more wait to be accepted.
    pub max_connections: Option<usize>,
    /// Requests in handlers at once (default 64); more get 503 at once.
    pub max_concurrent_requests: Option<usize>,
    /// Request body (default 2 MiB; 413 past it).
    pub max_body_bytes: Option<usize>,
    /// Request line and headers (default 64 KiB; 431 past it).
    pub max_header_bytes: Option<usize>,
    /// Path and query string (default 8 KiB; 414 past it).
    pub max_uri_bytes: Option<usize>,
    /// Failed API-key authentications one address may make in a row (default 10)…
    pub auth_failures_burst: Option<u32>,
    /// …and per minute after that (default 10); then 429 with Retry-After.
    pub auth_failures_per_minute: Option<u32>,
    /// Most (device, metric) series one telemetry query may ask for (default 1,000).
    pub telemetry_max_series: Option<usize>,
    /// Most points in one telemetry answer, over all its series (default 1,000,000).
    pub telemetry_max_points: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestFile {
    pub flush_interval_secs: Option<u64>,
    pub flush_rows: Option<usize>,
    pub max_payload_bytes: Option<usize>,
    pub compact_min_files: Option<usize>,
    pub max_future_secs: Option<i64>,
    pub max_past_days: Option<i64>,
    /// All dead-letter files together (default 256 MiB); the oldest files go first past it.
    pub dead_letter_max_mib: Option<u64>,
    /// One dead-letter file before it rotates (default 16 MiB).
    pub dead_letter_file_mib: Option<u64>,
    /// Payload bytes kept per dead letter (default 4096).
    pub dead_letter_payload_bytes: Option<usize>,
    /// Distinct metric names one device may use (default 1000); a message with a new name
    /// past it is dead-lettered (`too_many_metrics`).
    pub max_metrics_per_device: Option<usize>,
    /// Devices whose metric names are tracked (default 100 000); past it a new device's
    /// messages are dead-lettered (`too_many_devices`).
    pub max_devices_tracked: Option<usize>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub mqtt_addr: SocketAddr,
    pub mqtt5_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    pub http_limits: prognos_http::server::HttpLimits,
    pub auth_throttle: prognos_http::throttle::AuthThrottleConfig,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_connections: usize,
    pub ingest_buffer_bytes: usize,
    /// `None`: derived from `max_payload_bytes`.
    pub max_packet_bytes: Option<usize>,
    pub tls_handshake_timeout: Duration,
    pub max_topic_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_filters: usize,
    pub retain: bool,
    pub max_open_sockets: Option<usize>,
    pub max_connecting_per_address: usize,
    pub zero_keep_alive_secs: u16,
    pub ack_when_durable: bool,
    pub mqtt_auth_throttle: prognos_broker::ThrottleConfig,
    pub probe: prognos_broker::ProbeConfig,
    pub max_metrics_per_device: usize,
    pub max_devices_tracked: usize,
    pub flush_interval: Duration,
    pub flush_rows: usize,
    pub max_payload_bytes: usize,
    pub compact_min_files: usize,
    pub dead_letters: prognos_ingest::deadletter::DeadLetterQuota,
    pub max_future_us: i64,
    pub max_past_us: i64,
    pub models_enabled: bool,
    pub profiles: Vec<prognos_models::profile::AssetProfile>,
    pub sla_check_interval: Duration,
    pub webhook_ca_file: Option<PathBuf>,
    pub webhook_policy: prognos_service::webhooks::DestinationPolicy,
    pub telemetry_limits: prognos_analytics::telemetry::SeriesLimits,
}

pub const DEFAULT_MQTT_ADDR: &str = "127.0.0.1:1883";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

/// Reads the asset profile files named in the config; relative paths are relative to the
/// config file. A file that is missing or not a valid profile is an error naming it.
fn load_profiles(
    files: &[PathBuf],
    config_path: Option<&Path>,
) -> anyhow::Result<Vec<prognos_models::profile::AssetProfile>> {
    const MAX_PROFILE_BYTES: u64 = 1024 * 1024;
    let base = config_path.and_then(Path::parent).unwrap_or(Path::new("."));
    let mut profiles = Vec::with_capacity(files.len());
    for file in files {
        let path = if file.is_absolute() {
            file.clone()
        } else {
            base.join(file)
        };
        let size = std::fs::metadata(&path)
            .with_context(|| format!("config: models.profiles: cannot read {}", path.display()))?
            .len();
        if size > MAX_PROFILE_BYTES {
            bail!(
                "config: models.profiles: {} is larger than 1 MiB",
                path.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("config: models.profiles: cannot read {}", path.display()))?;
        let profile: prognos_models::profile::AssetProfile =
            toml::from_str(&text).with_context(|| {
                format!(
                    "config: models.profiles: invalid profile {}",
                    path.display()
                )
            })?;
        if profile.name.trim().is_empty() {
            bail!("config: models.profiles: {} has no name", path.display());
        }
        profiles.push(profile);
    }
    Ok(profiles)
}

impl Settings {
    /// Reads `path` if given; flags win over the file, the file over defaults.
    pub fn resolve(
        path: Option<&Path>,
        data_dir: Option<PathBuf>,
        mqtt_addr: Option<SocketAddr>,
        http_addr: Option<SocketAddr>,
    ) -> anyhow::Result<Settings> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let defaults = Settings::defaults(PathBuf::from("prognos-data"));
        let tls = match (file.mqtt.tls_cert, file.mqtt.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("config: mqtt.tls_cert and mqtt.tls_key must be given together"),
        };
        let settings = Settings {
            data_dir: data_dir.or(file.data_dir).unwrap_or(defaults.data_dir),
            mqtt_addr: mqtt_addr.or(file.mqtt.addr).unwrap_or(defaults.mqtt_addr),
            mqtt5_addr: file.mqtt.mqtt5_addr,
            http_addr: http_addr.or(file.http.addr).unwrap_or(defaults.http_addr),
            http_limits: {
                let d = defaults.http_limits;
                let h = &file.http;
                prognos_http::server::HttpLimits {
                    header_read_timeout: h
                        .header_read_timeout_ms
                        .map_or(d.header_read_timeout, Duration::from_millis),
                    request_timeout: h
                        .request_timeout_ms
                        .map_or(d.request_timeout, Duration::from_millis),
                    max_connections: h.max_connections.unwrap_or(d.max_connections),
                    max_concurrent_requests: h
                        .max_concurrent_requests
                        .unwrap_or(d.max_concurrent_requests),
                    max_body_bytes: h.max_body_bytes.unwrap_or(d.max_body_bytes),
                    max_header_bytes: h.max_header_bytes.unwrap_or(d.max_header_bytes),
                    max_uri_bytes: h.max_uri_bytes.unwrap_or(d.max_uri_bytes),
                }
            },
            auth_throttle: prognos_http::throttle::AuthThrottleConfig {
                burst: file
                    .http
                    .auth_failures_burst
                    .unwrap_or(defaults.auth_throttle.burst),
                per_minute: file
                    .http
                    .auth_failures_per_minute
                    .unwrap_or(defaults.auth_throttle.per_minute),
                ..defaults.auth_throttle
            },
            tls,
            max_connections: file
                .mqtt
                .max_connections
                .unwrap_or(defaults.max_connections),
            ingest_buffer_bytes: file
                .mqtt
                .ingest_buffer_mib
                .map_or(defaults.ingest_buffer_bytes, |m| {
                    m.saturating_mul(1024 * 1024)
                }),
            max_packet_bytes: file.mqtt.max_packet_bytes,
            tls_handshake_timeout: file
                .mqtt
                .tls_handshake_timeout_ms
                .map_or(defaults.tls_handshake_timeout, Duration::from_millis),
            max_topic_bytes: file
                .mqtt
                .max_topic_bytes
                .unwrap_or(defaults.max_topic_bytes),
            max_subscriptions_per_connection: file
                .mqtt
                .max_subscriptions_per_connection
                .unwrap_or(defaults.max_subscriptions_per_connection),
            max_filters: file.mqtt.max_filters.unwrap_or(defaults.max_filters),
            retain: file.mqtt.retain.unwrap_or(defaults.retain),
            max_open_sockets: file.mqtt.max_open_sockets,
            max_connecting_per_address: file
                .mqtt
                .max_connecting_per_address
                .unwrap_or(defaults.max_connecting_per_address),
            zero_keep_alive_secs: file
                .mqtt
                .zero_keep_alive_secs
                .unwrap_or(defaults.zero_keep_alive_secs),
            ack_when_durable: file
                .mqtt
                .ack_when_durable
                .unwrap_or(defaults.ack_when_durable),
            mqtt_auth_throttle: prognos_broker::ThrottleConfig {
                failures_per_client_id: file
                    .mqtt
                    .auth_failures_per_client_id
                    .unwrap_or(defaults.mqtt_auth_throttle.failures_per_client_id),
                failures_per_address: file
                    .mqtt
                    .auth_failures_per_address
                    .unwrap_or(defaults.mqtt_auth_throttle.failures_per_address),
                window: file
                    .mqtt
                    .auth_failure_window_secs
                    .map_or(defaults.mqtt_auth_throttle.window, Duration::from_secs),
                max_tracked: file
                    .mqtt
                    .auth_throttle_max_tracked
                    .unwrap_or(defaults.mqtt_auth_throttle.max_tracked),
            },
            probe: prognos_broker::ProbeConfig {
                interval: file
                    .mqtt
                    .probe_interval_ms
                    .map_or(defaults.probe.interval, Duration::from_millis),
                timeout: file
                    .mqtt
                    .probe_timeout_ms
                    .map_or(defaults.probe.timeout, Duration::from_millis),
                ..defaults.probe.clone()
            },
            max_metrics_per_device: file
                .ingest
                .max_metrics_per_device
                .unwrap_or(defaults.max_metrics_per_device),
            max_devices_tracked: file
                .ingest
                .max_devices_tracked
                .unwrap_or(defaults.max_devices_tracked),
            flush_interval: file
                .ingest
                .flush_interval_secs
                .map_or(defaults.flush_interval, Duration::from_secs),
            flush_rows: file.ingest.flush_rows.unwrap_or(defaults.flush_rows),
            max_payload_bytes: file
                .ingest
                .max_payload_bytes
                .unwrap_or(defaults.max_payload_bytes),
            compact_min_files: file
                .ingest
                .compact_min_files
                .unwrap_or(defaults.compact_min_files),
            dead_letters: prognos_ingest::deadletter::DeadLetterQuota {
                max_total_bytes: file
                    .ingest
                    .dead_letter_max_mib
                    .map_or(defaults.dead_letters.max_total_bytes, |m| {
                        m.saturating_mul(1024 * 1024)
                    }),
                max_file_bytes: file
                    .ingest
                    .dead_letter_file_mib
                    .map_or(defaults.dead_letters.max_file_bytes, |m| {
                        m.saturating_mul(1024 * 1024)
                    }),
                max_payload_bytes: file
                    .ingest
                    .dead_letter_payload_bytes
                    .unwrap_or(defaults.dead_letters.max_payload_bytes),
            },
            max_future_us: file
                .ingest
                .max_future_secs
                .map_or(defaults.max_future_us, |s| s * 1_000_000),
            max_past_us: file
                .ingest
                .max_past_days
                .map_or(defaults.max_past_us, |d| d * 86_400_000_000),
            models_enabled: file.models.enabled.unwrap_or(defaults.models_enabled),
            profiles: load_profiles(&file.models.profiles, path)?,
            sla_check_interval: file
                .service
                .sla_check_interval_ms
                .map_or(defaults.sla_check_interval, Duration::from_millis),
            webhook_ca_file: file.service.webhook_ca_file,
            webhook_policy: prognos_service::webhooks::DestinationPolicy {
                allow_private: file.webhooks.allow_private_destinations.unwrap_or(false),
                allowed: prognos_service::webhooks::DestinationPolicy::parse_networks(
                    &file.webhooks.allowed_destinations,
                )
                .map_err(|e| anyhow::anyhow!("config: webhooks.allowed_destinations: {e}"))?,
            },
            telemetry_limits: prognos_analytics::telemetry::SeriesLimits {
                max_series: file
                    .http
                    .telemetry_max_series
                    .unwrap_or(defaults.telemetry_limits.max_series),
                max_response_points: file
                    .http
                    .telemetry_max_points
                    .unwrap_or(defaults.telemetry_limits.max_response_points),
            },
        };
        settings.validate()?;
        Ok(settings)
    }

    pub fn defaults(data_dir: PathBuf) -> Settings {
        let limits = prognos_ingest::Limits::default();
        let broker = prognos_broker::BrokerConfig::new(([127, 0, 0, 1], 1883).into());
        Settings {
            data_dir,
            mqtt_addr: DEFAULT_MQTT_ADDR
                .parse()
                .unwrap_or(([127, 0, 0, 1], 1883).into()),
            mqtt5_addr: None,
            http_addr: DEFAULT_HTTP_ADDR
                .parse()
                .unwrap_or(([127, 0, 0, 1], 8080).into()),
            http_limits: prognos_http::server::HttpLimits::default(),
            auth_throttle: prognos_http::throttle::AuthThrottleConfig::default(),
            tls: None,
            max_connections: broker.max_connections,
            ingest_buffer_bytes: 256 * 1024 * 1024,
            max_packet_bytes: None,
            tls_handshake_timeout: Duration::from_millis(broker.tls_handshake_timeout_ms),
            max_topic_bytes: broker.max_topic_bytes,
            max_subscriptions_per_connection: broker.max_subscriptions_per_connection,
            max_filters: broker.max_filters,
            retain: broker.retain,
            max_open_sockets: None,
            max_connecting_per_address: broker.max_connecting_per_address,
            zero_keep_alive_secs: broker.zero_keep_alive_secs,
            ack_when_durable: broker.ack_when_durable,
            mqtt_auth_throttle: prognos_broker::ThrottleConfig::default(),
            probe: broker.probe,
            max_metrics_per_device: limits.max_metrics_per_device,
            max_devices_tracked: limits.max_devices_tracked,
            flush_interval: Duration::from_secs(30),
            flush_rows: 1_000_000,
            max_payload_bytes: limits.max_payload_bytes,
            compact_min_files: 8,
            dead_letters: prognos_ingest::deadletter::DeadLetterQuota::default(),
            max_future_us: limits.max_future_us,
            max_past_us: limits.max_past_us,
            models_enabled: true,
            profiles: Vec::new(),
            sla_check_interval: Duration::from_secs(10),
            webhook_ca_file: None,
            webhook_policy: prognos_service::webhooks::DestinationPolicy::strict(),
            telemetry_limits: prognos_analytics::telemetry::SeriesLimits::default(),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.flush_rows == 0 {
            bail!("config: ingest.flush_rows must be at least 1");
        }
        if self.flush_interval.is_zero() {
            bail!("config: ingest.flush_interval_secs must be at least 1");
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 16 * 1024 * 1024 {
            bail!("config: ingest.max_payload_bytes must be between 1 and 16 MiB");
        }
        let dl = &self.dead_letters;
        if dl.max_file_bytes == 0 || dl.max_total_bytes < dl.max_file_bytes {
            bail!(
                "config: ingest.dead_letter_file_mib must be at least 1 and at most dead_letter_max_mib"
            );
        }
        if self.sla_check_interval < Duration::from_millis(50) {
            bail!("config: service.sla_check_interval_ms must be at least 50");
        }
        let h = &self.http_limits;
        if h.header_read_timeout < Duration::from_millis(100)
            || h.request_timeout < Duration::from_millis(100)
        {
            bail!(
                "config: http.header_read_timeout_ms and http.request_timeout_ms must be at least 100"
            );
        }
        if h.max_connections == 0 || h.max_concurrent_requests == 0 {
            bail!(
                "config: http.max_connections and http.max_concurrent_requests must be at least 1"
            );
        }
        if !(1024..=1024 * 1024 * 1024).contains(&h.max_body_bytes) {
            bail!("config: http.max_body_bytes must be between 1 KiB and 1 GiB");
        }
        if !(8 * 1024..=1024 * 1024).contains(&h.max_header_bytes) {
            bail!("config: http.max_header_bytes must be between 8 KiB and 1 MiB");
        }
        if h.max_uri_bytes < 256 || h.max_uri_bytes > h.max_header_bytes {
            bail!("config: http.max_uri_bytes must be at least 256 and at most max_header_bytes");
        }
        if self.auth_throttle.burst == 0 || self.auth_throttle.per_minute == 0 {
            bail!(
                "config: http.auth_failures_burst and http.auth_failures_per_minute must be at least 1"
            );
        }
        let t = &self.telemetry_limits;
        if t.max_series == 0 || t.max_series > 1_000_000 {
            bail!("config: http.telemetry_max_series must be between 1 and 1,000,000");
        }
        if t.max_response_points == 0 || t.max_response_points > 100_000_000 {
            bail!("config: http.telemetry_max_points must be between 1 and 100,000,000");
        }
        if self.ingest_buffer_bytes < 8 * 1024 {
            bail!("config: mqtt.ingest_buffer_mib must be at least 1");
        }
        if self
            .max_packet_bytes
            .is_some_and(|n| !(1024..=256 * 1024 * 1024).contains(&n))
        {
            bail!("config: mqtt.max_packet_bytes must be between 1 KiB and 256 MiB");
        }
        if self.tls_handshake_timeout < Duration::from_millis(100) {
            bail!("config: mqtt.tls_handshake_timeout_ms must be at least 100");
        }
        if self.max_topic_bytes < 64 {
            bail!("config: mqtt.max_topic_bytes must be at least 64");
        }
        let t = &self.mqtt_auth_throttle;
        if t.failures_per_client_id == 0 || t.failures_per_address == 0 || t.max_tracked == 0 {
            bail!(
                "config: mqtt.auth_failures_per_client_id, auth_failures_per_address and auth_throttle_max_tracked must be at least 1"
            );
        }
        if t.window.is_zero() {
            bail!("config: mqtt.auth_failure_window_secs must be at least 1");
        }
        if self.probe.interval < Duration::from_millis(50)
            || self.probe.timeout < Duration::from_millis(50)
        {
            bail!("config: mqtt.probe_interval_ms and probe_timeout_ms must be at least 50");
        }
        if self.max_metrics_per_device == 0 || self.max_devices_tracked == 0 {
            bail!(
                "config: ingest.max_metrics_per_device and max_devices_tracked must be at least 1"
            );
        }
        Ok(())
    }

    pub fn ingest_config(&self) -> prognos_ingest::IngestConfig {
        let mut config = prognos_ingest::IngestConfig::new(self.data_dir.clone());
        config.flush_interval = self.flush_interval;
        config.flush_rows = self.flush_rows;
        config.compact_min_files = self.compact_min_files;
        config.dead_letters = self.dead_letters;
        config.limits = prognos_ingest::Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_future_us: self.max_future_us,
            max_past_us: self.max_past_us,
            max_metrics_per_device: self.max_metrics_per_device,
            max_devices_tracked: self.max_devices_tracked,
        };
        config
    }

    pub fn broker_config(&self) -> prognos_broker::BrokerConfig {
        let mut config = prognos_broker::BrokerConfig::new(self.mqtt_addr);
        config.mqtt5_addr = self.mqtt5_addr;
        config.tls = self
            .tls
            .clone()
            .map(|(cert, key)| prognos_broker::TlsFiles { cert, key });
        config.max_connections = self.max_connections;
        config.ingest_ring_bytes = self.ingest_buffer_bytes;
        // Larger than the ingest limit so oversized payloads reach the dead-letter store.
        config.max_packet_bytes = self
            .max_packet_bytes
            .unwrap_or_else(|| self.max_payload_bytes.saturating_mul(4).max(64 * 1024));
        config.tls_handshake_timeout_ms =
            u64::try_from(self.tls_handshake_timeout.as_millis()).unwrap_or(u64::MAX);
        config.max_topic_bytes = self.max_topic_bytes;
        config.max_subscriptions_per_connection = self.max_subscriptions_per_connection;
        config.max_filters = self.max_filters;
        config.retain = self.retain;
        config.max_open_sockets = self.max_open_sockets;
        config.max_connecting_per_address = self.max_connecting_per_address.max(1);
        config.zero_keep_alive_secs = self.zero_keep_alive_secs.max(1);
        config.ack_when_durable = self.ack_when_durable;
        config.probe = self.probe.clone();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_half_tls_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[mqtt]\nadress = \"127.0.0.1:1\"\n").unwrap();
        let err = Settings::resolve(Some(&path), None, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("adress"), "{err:#}");
        std::fs::write(&path, "[mqtt]\ntls_cert = \"c.pem\"\n").unwrap();
        assert!(Settings::resolve(Some(&path), None, None, None).is_err());
    }

    #[test]
    fn http_limits_come_from_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[http]\nheader_read_timeout_ms = 500\nmax_connections = 20\nmax_body_bytes = 4096\nauth_failures_burst = 3\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&path), None, None, None).unwrap();
        assert_eq!(
            s.http_limits.header_read_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(s.http_limits.max_connections, 20);
        assert_eq!(s.http_limits.max_body_bytes, 4096);
        assert_eq!(s.auth_throttle.burst, 3);
        let defaults = prognos_http::server::HttpLimits::default();
        assert_eq!(s.http_limits.request_timeout, defaults.request_timeout);
        for bad in [
            "header_read_timeout_ms = 0",
            "max_connections = 0",
            "max_body_bytes = 10",
            "max_header_bytes = 100",
            "auth_failures_per_minute = 0",
        ] {
            std::fs::write(&path, format!("[http]\n{bad}\n")).unwrap();
            let err = Settings::resolve(Some(&path), None, None, None).unwrap_err();
            assert!(format!("{err:#}").contains("http."), "{bad}: {err:#}");
        }
    }

    #[test]
    fn webhook_destinations_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let s = Settings::resolve(None, None, None, None).unwrap();
        assert_eq!(
            s.webhook_policy,
            prognos_service::webhooks::DestinationPolicy::strict()
        );
        std::fs::write(
            &path,
            "[webhooks]\nallow_private_destinations = true\nallowed_destinations = [\"10.1.2.0/24\", \"::1\"]\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&path), None, None, None).unwrap();
        assert!(s.webhook_policy.allow_private);
        assert_eq!(s.webhook_policy.allowed.len(), 2);
        std::fs::write(&path, "[webhooks]\nallowed_destinations = [\"intranet\"]\n").unwrap();
        let err = Settings::resolve(Some(&path), None, None, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("webhooks.allowed_destinations"),
            "{err:#}"
        );
        std::fs::write(&path, "[webhooks]\nallow_private = true\n").unwrap();
        assert!(Settings::resolve(Some(&path), None, None, None).is_err());
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "data_dir = \"/x\"\n[mqtt]\naddr = \"127.0.0.1:2000\"\n[ingest]\nflush_rows = 5\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&path), Some("/y".into()), None, None).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/y"));
        assert_eq!(s.mqtt_addr.port(), 2000);
        assert_eq!(s.flush_rows, 5);
    }
}
