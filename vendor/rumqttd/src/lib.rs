use std::fmt;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Serialize};
#[cfg(feature = "console")]
use tracing_subscriber::{
    filter::EnvFilter,
    fmt::{
        format::{Format, Pretty},
        Layer,
    },
    layer::Layered,
    reload::Handle,
    Registry,
};

pub use link::alerts;
pub use link::local;
pub use link::meters;
pub use router::{Alert, Forward, IncomingMeter, Meter, Notification, OutgoingMeter, Router};
use segments::Storage;
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
pub use acl::TopicAcl;
pub use server::TlsReloader;
pub use server::{Broker, LinkType, Server, SetupLimit, DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS};

pub use self::router::shared_subs::Strategy;

/// Prognos patch: per-client topic rules.
pub mod acl;
mod link;
pub mod protocol;
mod router;
mod segments;
mod server;

pub type ConnectionId = usize;
pub type RouterId = usize;
pub type NodeId = usize;
pub type Topic = String;
pub type Filter = String;
pub type TopicId = usize;
pub type Offset = (u64, u64);
pub type Cursor = (u64, u64);

pub type ClientId = String;
pub type AuthUser = String;
pub type AuthPass = String;
pub type AuthHandler = Arc<
    dyn Fn(ClientId, AuthUser, AuthPass) -> Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

#[derive(Debug, Default, Serialize, Deserialize, Clone)]
pub struct Config {
    pub id: usize,
    pub router: RouterConfig,
    pub v4: Option<HashMap<String, ServerSettings>>,
    pub v5: Option<HashMap<String, ServerSettings>>,
    pub ws: Option<HashMap<String, ServerSettings>>,
    pub cluster: Option<ClusterSettings>,
    pub console: Option<ConsoleSettings>,
    pub bridge: Option<BridgeConfig>,
    pub prometheus: Option<PrometheusSetting>,
    pub metrics: Option<HashMap<MetricType, MetricSettings>>,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct PrometheusSetting {
    #[deprecated(note = "Use listen instead")]
    port: Option<u16>,
    listen: Option<SocketAddr>,
    // How frequently to update metrics
    interval: u64,
}

// TODO: Change names without _ until config-rs issue is resolved
// https://github.com/mehcode/config-rs/issues/369
#[derive(Debug, Serialize, Deserialize, Clone)]
#[serde(untagged)]
pub enum TlsConfig {
    Rustls {
        capath: Option<String>,
        certpath: String,
        keypath: String,
    },
    NativeTls {
        pkcs12path: String,
        pkcs12pass: String,
    },
}

impl TlsConfig {
    // Returns true only if all of the file paths inside `TlsConfig` actually exists on file system.
    // NOTE: This doesn't verify if certificate files are in required format or not.
    pub fn validate_paths(&self) -> bool {
        match self {
            TlsConfig::Rustls {
                capath,
                certpath,
                keypath,
            } => {
                let ca = capath.is_none() || capath.as_ref().is_some_and(|v| Path::new(v).exists());

                ca && [certpath, keypath].iter().all(|v| Path::new(v).exists())
            }
            TlsConfig::NativeTls { pkcs12path, .. } => Path::new(pkcs12path).exists(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ServerSettings {
    pub name: String,
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub next_connection_delay_ms: u64,
    pub connections: ConnectionSettings,
    /// Prognos patch: longest a TLS handshake may take before the socket is closed
    /// (default `DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS`, 10 s).
    #[serde(default)]
    pub tls_handshake_timeout_ms: Option<u64>,
}

impl ServerSettings {
    pub fn set_auth_handler<F, O>(&mut self, auth_fn: F)
    where
        F: Fn(ClientId, AuthUser, AuthPass) -> O + Send + Sync + 'static,
        O: IntoFuture<Output = bool> + 'static,
        O::IntoFuture: Send,
    {
        self.connections.set_auth_handler(auth_fn)
    }
}

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct BridgeConfig {
    pub name: String,
    pub addr: String,
    pub qos: u8,
    pub sub_path: Filter,
    pub reconnection_delay: u64,
    pub ping_delay: u64,
    pub connections: ConnectionSettings,
    #[serde(default)]
    pub transport: Transport,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct ConnectionSettings {
    pub connection_timeout_ms: u16,
    pub max_payload_size: usize,
    pub max_inflight_count: usize,
    pub auth: Option<HashMap<String, String>>,
    #[serde(skip)]
    pub external_auth: Option<AuthHandler>,
    #[serde(default)]
    pub dynamic_filters: bool,
    /// Prognos patch: the topic prefix a client of this listener may publish and subscribe
    /// under, with `{client_id}` replaced by the client's id (e.g. `prognos/v1/{client_id}/`).
    /// A publish, subscription or last will outside it is refused and the client disconnected.
    #[serde(default)]
    pub client_topic_prefix: Option<String>,
    /// Prognos patch: decides every CONNECT, with the peer's address, and may refuse it with
    /// a CONNACK return code (upstream closed the socket without a CONNACK). When set, it
    /// alone decides (`auth` and `external_auth` are not consulted).
    #[serde(skip)]
    pub connect_handler: Option<ConnectHandler>,
    /// Prognos patch: longest topic or filter (bytes) a client may use; longer ones
    /// disconnect it. `None`: the protocol's 65,535.
    #[serde(default)]
    pub max_topic_len: Option<usize>,
    /// Prognos patch: accept keep-alive 0 (MQTT allows it; upstream closed the socket
    /// without a CONNACK) and treat it as this keep-alive: the connection is closed after
    /// 1.5 times this long without a packet. `None`: refuse keep-alive 0.
    #[serde(default)]
    pub zero_keep_alive_idle_secs: Option<u16>,
}

/// Prognos patch: what a [`ConnectHandler`] is asked. Strings come from the network: bound
/// and escape them before logging them (see [`loggable`]).
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub client_id: String,
    /// Empty when the CONNECT carries no login.
    pub username: String,
    pub password: String,
    pub peer: SocketAddr,
}

/// Prognos patch: a [`ConnectHandler`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectDecision {
    /// Accept; the client is confined to the listener's `client_topic_prefix`.
    Accept,
    /// Accept; the client may use exactly the topics its rules allow (the listener's
    /// `client_topic_prefix` does not apply to it).
    AcceptWithAcl(Arc<TopicAcl>),
    /// Answer with a CONNACK carrying this code, then close.
    Refuse(protocol::ConnectReturnCode),
}

pub type ConnectHandler = Arc<
    dyn Fn(ConnectRequest) -> Pin<Box<dyn std::future::Future<Output = ConnectDecision> + Send>>
        + Send
        + Sync,
>;

/// Prognos patch: about the longest text (in bytes, after escaping) that [`loggable`] keeps.
pub const LOGGABLE_MAX_CHARS: usize = 200;

/// Prognos patch: a client-supplied string fit for a log line: control characters and
/// non-ASCII escaped, cut after [`LOGGABLE_MAX_CHARS`] bytes with the original length noted. An MQTT
/// string may be 64 KiB; logging it whole lets a client write huge lines or forge entries.
pub fn loggable(text: &str) -> String {
    let (mut out, cut) = escape_prefix(text);
    if cut {
        out.push_str(&format!("…({} bytes)", text.len()));
    }
    out
}

/// Prognos patch: [`loggable`] for bytes that may not be UTF-8 (topics).
pub fn loggable_bytes(bytes: &[u8]) -> String {
    // Decode no more than can be shown; a cut through a character shows as U+FFFD.
    let shown = &bytes[..bytes.len().min(LOGGABLE_MAX_CHARS * 4)];
    let (mut out, cut) = escape_prefix(&String::from_utf8_lossy(shown));
    if cut || shown.len() < bytes.len() {
        out.push_str(&format!("…({} bytes)", bytes.len()));
    }
    out
}

/// About the first [`LOGGABLE_MAX_CHARS`] bytes of `text`, escaped, and whether it was cut.
fn escape_prefix(text: &str) -> (String, bool) {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= LOGGABLE_MAX_CHARS {
            return (out, true);
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    (out, false)
}

/// Prognos patch: publishes, subscriptions and last wills refused because their topic lies
/// outside the client's topic prefix (see `ConnectionSettings::client_topic_prefix`).
static TOPIC_PREFIX_VIOLATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Prognos patch: the number of topic prefix violations since the process started.
pub fn topic_prefix_violations() -> u64 {
    TOPIC_PREFIX_VIOLATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn count_topic_prefix_violation() {
    TOPIC_PREFIX_VIOLATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl ConnectionSettings {
    pub fn set_auth_handler<F, O>(&mut self, auth_fn: F)
    where
        F: Fn(ClientId, AuthUser, AuthPass) -> O + Send + Sync + 'static,
        O: IntoFuture<Output = bool> + 'static,
        O::IntoFuture: Send,
    {
        self.external_auth = Some(Arc::new(move |client_id, username, password| {
            let auth = auth_fn(client_id, username, password).into_future();
            Box::pin(auth)
        }));
    }
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSettings")
            .field("connection_timeout_ms", &self.connection_timeout_ms)
            .field("max_payload_size", &self.max_payload_size)
            .field("max_inflight_count", &self.max_inflight_count)
            .field("auth", &self.auth)
            .field("external_auth", &self.external_auth.is_some())
            .field("dynamic_filters", &self.dynamic_filters)
            .field("client_topic_prefix", &self.client_topic_prefix)
            .field("connect_handler", &self.connect_handler.is_some())
            .field("max_topic_len", &self.max_topic_len)
            .field("zero_keep_alive_idle_secs", &self.zero_keep_alive_idle_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Id with which this node connects to other nodes of the mesh
    pub node_id: NodeId,
    /// Address on which this broker is listening for mesh connections
    pub listen: String,
    /// Address of clusters that this node has to initiate connection
    pub seniors: Vec<(ConnectionId, String)>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RouterConfig {
    pub max_connections: usize,
    pub max_outgoing_packet_count: u64,
    pub max_segment_size: usize,
    pub max_segment_count: usize,
    pub custom_segment: Option<HashMap<String, SegmentConfig>>,
    pub initialized_filters: Option<Vec<Filter>>,
    // defaults to Round Robin
    #[serde(default)]
    pub shared_subscriptions_strategy: Strategy,
    /// Prognos patch: keep no retained messages. A publish with the retain flag is delivered
    /// to current subscribers as usual but not stored for later ones (upstream kept every
    /// retained message in memory, per topic, without bound).
    #[serde(default)]
    pub disable_retain: bool,
    /// Prognos patch: most subscriptions one connection may hold; a SUBSCRIBE beyond it is
    /// answered with a failure code for that filter.
    #[serde(default)]
    pub max_subscriptions_per_connection: Option<usize>,
    /// Prognos patch: most distinct filters the router keeps (each with its own ring of up to
    /// `max_segment_size × max_segment_count` bytes, never freed); a subscription that would
    /// create one more is answered with a failure code.
    #[serde(default)]
    pub max_filters: Option<usize>,
    /// Prognos patch: acknowledge a QoS 1 or 2 publish (PUBACK, PUBREC) only once the reader
    /// of this filter has confirmed it durable (`LinkTx::durable_handle`); upstream
    /// acknowledged on arrival in the router's memory. Publishes outside the filter are
    /// acknowledged as before, but never ahead of the same connection's held ones.
    #[serde(default)]
    pub durable_ack_filter: Option<String>,
    /// Prognos patch: most acknowledgements held for `durable_ack_filter` at once (all
    /// connections; default 1,000,000). A publish past it, or past 65,535 held for one
    /// connection, disconnects its client, which publishes it again after reconnecting.
    #[serde(default)]
    pub max_held_acks: Option<usize>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SegmentConfig {
    pub max_segment_size: usize,
    pub max_segment_count: usize,
}

#[cfg(feature = "console")]
type ReloadHandle = Handle<EnvFilter, Layered<Layer<Registry, Pretty, Format<Pretty>>, Registry>>;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ConsoleSettings {
    pub listen: String,
    #[cfg(feature = "console")]
    #[serde(skip)]
    filter_handle: Option<ReloadHandle>,
}

#[cfg(feature = "console")]
impl ConsoleSettings {
    pub fn set_filter_reload_handle(&mut self, handle: ReloadHandle) {
        self.filter_handle.replace(handle);
    }
}

#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub enum Transport {
    #[serde(rename = "tcp")]
    #[default]
    Tcp,
    #[serde(rename = "tls")]
    Tls {
        ca: PathBuf,
        client_auth: Option<ClientAuth>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientAuth {
    certs: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, Clone, Hash, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Meters,
    Alerts,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct MetricSettings {
    push_interval: u64,
}
