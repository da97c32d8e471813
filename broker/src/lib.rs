//! The embedded MQTT broker: rumqttd's router and listeners on our runtime, device
//! authentication against the registry, and per-device topic authorisation.
//!
//! This crate never parses payloads: it hands every publish under `prognos/v1/#` to the
//! ingest link untouched ([`IngestLink`]).

mod auth;
mod link;
mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rumqttd::local::LinkBuilder;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::{
    ConnectionSettings, LinkType, Router, RouterConfig, SegmentConfig, Server, ServerSettings,
    TlsConfig,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use auth::{AuthCheck, Authenticator, ClientLogin, MAX_CREDENTIAL_BYTES, ThrottleConfig};
pub use link::{DurableAck, IngestLink, LinkError, LinkEvent, RawPublish};
pub use probe::{BrokerHealth, MqttState, ProbeConfig};
pub use rumqttd::TopicAcl;
pub use rumqttd::acl::{filter_covers, topic_matches};

/// The topic filter the ingest link subscribes to; every device topic lies under it.
pub const TELEMETRY_FILTER: &str = "prognos/v1/#";

/// The prefix a device may publish and subscribe under; `{client_id}` is its device id.
pub const DEVICE_TOPIC_PREFIX: &str = "prognos/v1/{client_id}/";

/// How the broker listens and how much it buffers for the ingest link.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 listener.
    pub mqtt_addr: SocketAddr,
    /// MQTT 5 listener (rumqttd serves each protocol version on its own port).
    pub mqtt5_addr: Option<SocketAddr>,
    /// TLS certificate chain and key (PEM); when set, both listeners speak TLS.
    pub tls: Option<TlsFiles>,
    /// Device connections at once (the self-probe briefly takes one of them too).
    pub max_connections: usize,
    /// Largest publish accepted on the wire; the ingest applies its own (smaller) limit and
    /// dead-letters what lies between, so an oversized payload is recorded, not just dropped.
    pub max_packet_bytes: usize,
    /// Bytes the router keeps for the ingest filter: if the ingest falls further behind than
    /// this, rumqttd drops the oldest messages (detected and counted by [`IngestLink`]).
    pub ingest_ring_bytes: usize,
    pub connection_timeout_ms: u16,
    /// Longest a TLS handshake may take; the handshake runs in the connection's own task, so
    /// a slow one delays only itself.
    pub tls_handshake_timeout_ms: u64,
    /// Longest topic or filter a device may use (bytes); longer ones disconnect it.
    pub max_topic_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Distinct filters the router keeps for device subscriptions (each has its own ring).
    pub max_filters: usize,
    /// Whether the broker keeps retained messages (see [`BrokerConfig::new`]).
    pub retain: bool,
    /// Sockets the listeners hold open at once, before and after CONNECT. `None`:
    /// `max_connections` plus room for connections in setup, within the open-files limit.
    pub max_open_sockets: Option<usize>,
    /// Sockets one remote address (IPv6: /64) may have in setup (TLS handshake, CONNECT) at
    /// once; more are closed at once, so one host cannot hold every socket.
    pub max_connecting_per_address: usize,
    /// A device connecting with keep-alive 0 (allowed by MQTT: "no keep-alive") is treated
    /// as if it had asked for this many seconds, so an idle connection still ends.
    pub zero_keep_alive_secs: u16,
    /// PUBACK (and PUBREC) only once the ingest has made the publish durable and said so
    /// through [`IngestLink::durable_ack`]; otherwise on arrival in the router's memory.
    pub ack_when_durable: bool,
    pub probe: ProbeConfig,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl BrokerConfig {
    pub fn new(mqtt_addr: SocketAddr) -> Self {
        Self {
            mqtt_addr,
            mqtt5_addr: None,
            tls: None,
            max_connections: 10_000,
            max_packet_bytes: 1024 * 1024,
            ingest_ring_bytes: 256 * 1024 * 1024,
            connection_timeout_ms: 10_000,
            tls_handshake_timeout_ms: rumqttd::DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
            max_topic_bytes: 256,
            max_subscriptions_per_connection: 8,
            max_filters: 1024,
            // Retained messages are off: nothing in Prognos reads them (the ingest link
            // subscribes before any device connects and stores every message durably itself;
            // devices may subscribe only under their own prefix), while rumqttd kept each one
            // in memory, per topic, forever — a device could pin gigabytes. A retained
            // publish is still delivered and stored, only not kept for later subscribers.
            retain: false,
            max_open_sockets: None,
            max_connecting_per_address: 128,
            zero_keep_alive_secs: 300,
            ack_when_durable: true,
            probe: ProbeConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS file {0} does not exist")]
    TlsFile(PathBuf),
    #[error("cannot attach the ingest link to the router: {0}")]
    Link(String),
    #[error("cannot load the TLS certificate or key: {0}")]
    Tls(String),
}

enum Listener {
    V4(Server<V4>, TcpListener),
    V5(Server<V5>, TcpListener),
}

/// A started router with its ingest link and bound (not yet serving) listeners.
pub struct Broker {
    listeners: Vec<(SocketAddr, Listener)>,
    link: Option<IngestLink>,
    tls: Vec<rumqttd::TlsReloader>,
    health: Arc<BrokerHealth>,
    probe: (probe::Target, ProbeConfig),
}

/// Reloads the listeners' TLS certificate and key from their files (e.g. on SIGHUP).
#[derive(Clone)]
pub struct TlsReload(Vec<rumqttd::TlsReloader>);

impl TlsReload {
    /// Connections accepted afterwards use the new files; on an error every listener keeps
    /// the certificate it had.
    pub fn reload(&self) -> Result<(), BrokerError> {
        for reloader in &self.0 {
            reloader
                .reload()
                .map_err(|e| BrokerError::Tls(e.to_string()))?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// File descriptors kept back from MQTT sockets for the WAL, Parquet files, SQLite and HTTP.
const RESERVED_FDS: u64 = 512;
/// Sockets allowed beyond `max_connections` for connections still in TLS or CONNECT.
const SETUP_SOCKETS: usize = 256;

/// The soft open-files limit (Linux: from /proc; elsewhere unknown).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many sockets the listeners may hold: `max_connections` plus room for setup, but
/// never so many that the process runs out of file descriptors (then every accept fails,
/// and so do WAL and Parquet files).
fn socket_budget(config: &BrokerConfig) -> usize {
    if let Some(n) = config.max_open_sockets {
        return n.max(1);
    }
    let wanted = config.max_connections.saturating_add(SETUP_SOCKETS);
    match open_files_limit() {
        Some(limit) => {
            let allowed = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            if allowed < wanted {
                warn!(
                    max_connections = config.max_connections,
                    open_files_limit = limit,
                    mqtt_sockets = allowed,
                    "the open-files limit allows fewer MQTT sockets than max_connections needs: raise it (ulimit -n)"
                );
            }
            wanted.min(allowed).max(1)
        }
        None => wanted,
    }
}

/// Segments of the ingest filter's ring; rumqttd drops whole segments, so several smaller
/// ones lose less at once than one big one.
const INGEST_RING_SEGMENTS: usize = 8;

impl Broker {
    /// Starts the router thread, attaches the ingest link and binds the listeners.
    ///
    /// Must be called inside a tokio runtime (binding uses it). Bind errors (port in use)
    /// are returned here, before anything is served.
    pub async fn start(config: &BrokerConfig, auth: Authenticator) -> Result<Broker, BrokerError> {
        let segment = SegmentConfig {
            max_segment_size: (config.ingest_ring_bytes / INGEST_RING_SEGMENTS).max(1024),
            max_segment_count: INGEST_RING_SEGMENTS,
        };
        let router_config = RouterConfig {
            // The in-process ingest link takes a slot of its own.
            max_connections: config.max_connections.saturating_add(1),
            max_outgoing_packet_count: 200,
            // Devices may subscribe (under their own prefix) to commands; keep those rings small.
            max_segment_size: 1024 * 1024,
            max_segment_count: 2,
            custom_segment: Some(HashMap::from([(
                TELEMETRY_FILTER.to_owned(),
                segment.clone(),
            )])),
            initialized_filters: Some(vec![TELEMETRY_FILTER.to_owned()]),
            shared_subscriptions_strategy: Default::default(),
            disable_retain: !config.retain,
            max_subscriptions_per_connection: Some(config.max_subscriptions_per_connection),
            // The ingest filter is one of them.
            max_filters: Some(config.max_filters.saturating_add(1)),
            durable_ack_filter: config.ack_when_durable.then(|| TELEMETRY_FILTER.to_owned()),
            max_held_acks: None,
        };
        let router_tx = Router::new(0, router_config).spawn();

        let (link_tx, link_rx, _ack) = LinkBuilder::new("prognos-ingest", router_tx.clone())
            .build()
            .map_err(|e| BrokerError::Link(e.to_string()))?;
        let link = IngestLink::subscribe(link_tx, link_rx, TELEMETRY_FILTER)?;

        let tls = match &config.tls {
            Some(files) => {
                for path in [&files.cert, &files.key] {
                    if !path.exists() {
                        return Err(BrokerError::TlsFile(path.clone()));
                    }
                }
                Some(TlsConfig::Rustls {
                    capath: None,
                    certpath: files.cert.display().to_string(),
                    keypath: files.key.display().to_string(),
                })
            }
            None => None,
        };

        let mut listeners = Vec::new();
        let mut reloaders = Vec::new();
        // One budget for every listener: what runs out is the process's file descriptors.
        let sockets = Arc::new(tokio::sync::Semaphore::new(socket_budget(config)));
        let setup = rumqttd::SetupLimit::new(config.max_connecting_per_address);
        let mut addrs = vec![(config.mqtt_addr, false)];
        if let Some(addr) = config.mqtt5_addr {
            addrs.push((addr, true));
        }
        for (addr, v5) in addrs {
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(|source| BrokerError::Bind { addr, source })?;
            let local = tcp
                .local_addr()
                .map_err(|source| BrokerError::Bind { addr, source })?;
            let mut settings = ServerSettings {
                name: if v5 { "mqtt5" } else { "mqtt" }.to_owned(),
                listen: local,
                tls: tls.clone(),
                next_connection_delay_ms: 0,
                tls_handshake_timeout_ms: Some(config.tls_handshake_timeout_ms),
                connections: ConnectionSettings {
                    connection_timeout_ms: config.connection_timeout_ms,
                    max_payload_size: config.max_packet_bytes,
                    max_inflight_count: 500,
                    auth: None,
                    external_auth: None,
                    dynamic_filters: false,
                    client_topic_prefix: Some(DEVICE_TOPIC_PREFIX.to_owned()),
                    connect_handler: Some(connect_handler(auth.clone())),
                    max_topic_len: Some(config.max_topic_bytes),
                    zero_keep_alive_idle_secs: Some(config.zero_keep_alive_secs),
                },
            };
            // The handler alone decides; the upstream hooks stay unset.
            settings.connections.external_auth = None;
            let (listener, reloader) = if v5 {
                let mut server = Server::new(settings, router_tx.clone(), V5);
                server.limit_sockets(sockets.clone());
                server.limit_setup_per_address(setup.clone());
                let reloader = server
                    .load_tls()
                    .map_err(|e| BrokerError::Tls(e.to_string()))?;
                (Listener::V5(server, tcp), reloader)
            } else {
                let mut server = Server::new(settings, router_tx.clone(), V4);
                server.limit_sockets(sockets.clone());
                server.limit_setup_per_address(setup.clone());
                let reloader = server
                    .load_tls()
                    .map_err(|e| BrokerError::Tls(e.to_string()))?;
                (Listener::V4(server, tcp), reloader)
            };
            reloaders.extend(reloader);
            listeners.push((local, listener));
        }
        // The probe speaks MQTT 3.1.1, so it checks the first (3.1.1) listener.
        let (client_id, secret) = auth.probe_credentials();
        let target = probe::Target {
            addr: probe::Target::loopback(listeners[0].0),
            tls: tls.as_ref().map(|_| probe::tls_connector()),
            client_id,
            secret,
        };
        Ok(Broker {
            listeners,
            link: Some(link),
            tls: reloaders,
            health: Arc::new(BrokerHealth::default()),
            probe: (target, config.probe.clone()),
        })
    }

    /// What the self-probe finds (for `/healthz`).
    pub fn health(&self) -> Arc<BrokerHealth> {
        self.health.clone()
    }

    /// Reloads the TLS certificate and key (empty without TLS).
    pub fn tls_reload(&self) -> TlsReload {
        TlsReload(self.tls.clone())
    }

    /// The address each listener is bound to: MQTT 3.1.1 first, then MQTT 5 if configured.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(addr, _)| *addr).collect()
    }

    /// The ingest link; there is exactly one, so this returns it once.
    pub fn take_ingest_link(&mut self) -> Option<IngestLink> {
        self.link.take()
    }

    /// Serves MQTT until `shutdown` is cancelled. Connections already open keep being served
    /// by their own tasks until the process exits (rumqttd has no way to close them), but no
    /// new ones are accepted.
    pub async fn serve(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let (target, probe_config) = self.probe;
        // Not in `tasks`: the probe never ends by itself, and must not stop the listeners.
        let probe = tokio::spawn(probe::run(
            target,
            probe_config,
            self.health.clone(),
            shutdown.clone(),
        ));
        for (addr, listener) in self.listeners {
            info!(%addr, "MQTT listener serving");
            match listener {
                Listener::V4(mut server, tcp) => {
                    tasks.spawn(async move { server.run(tcp, LinkType::Remote).await });
                }
                Listener::V5(mut server, tcp) => {
                    tasks.spawn(async move { server.run(tcp, LinkType::Remote).await });
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(result) = tasks.join_next() => {
                error!(?result, "an MQTT listener stopped");
            }
        }
        tasks.abort_all();
        probe.abort();
    }
}

/// The listeners' connect handler: every CONNECT goes through [`Authenticator::decide`].
fn connect_handler(auth: Authenticator) -> rumqttd::ConnectHandler {
    Arc::new(move |request| {
        let auth = auth.clone();
        Box::pin(async move { auth.decide(request).await })
    })
}

/// Counters of what the broker refused, for `/metrics`.
pub fn topic_violations() -> u64 {
    rumqttd::topic_prefix_violations()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;

    struct AllowAll;
    impl AuthCheck for AllowAll {
        fn check<'a>(
            &'a self,
            _device_id: &'a str,
            secret: &'a str,
        ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
            Box::pin(async move { secret == "s" })
        }
    }

    /// A broker on a free loopback port with an ingest ring of `ring_bytes`, serving.
    async fn serving(
        ring_bytes: usize,
        ack_when_durable: bool,
    ) -> (SocketAddr, IngestLink, CancellationToken) {
        let mut config = BrokerConfig::new(([127, 0, 0, 1], 0).into());
        config.ingest_ring_bytes = ring_bytes;
        config.ack_when_durable = ack_when_durable;
        let mut broker = Broker::start(&config, Authenticator::new(Arc::new(AllowAll)))
            .await
            .unwrap();
        let addr = broker.local_addrs()[0];
        let link = broker.take_ingest_link().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(broker.serve(shutdown.clone()));
        (addr, link, shutdown)
    }

    /// Publishes `n` QoS 1 messages as device `d1` and waits for every PUBACK.
    async fn publish_acked(addr: SocketAddr, n: usize, payload: Vec<u8>) {
        let acked = publish_counting_acks(addr, n, payload, Duration::from_secs(60)).await;
        assert_eq!(acked, n, "publishing took too long");
    }

    /// Publishes `n` QoS 1 messages as device `d1`; the PUBACKs that came within `limit`.
    async fn publish_counting_acks(
        addr: SocketAddr,
        n: usize,
        payload: Vec<u8>,
        limit: Duration,
    ) -> usize {
        let mut opts = rumqttc::MqttOptions::new("d1", addr.ip().to_string(), addr.port());
        opts.set_credentials("d1", "s");
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
        let sender = tokio::spawn(async move {
            for _ in 0..n {
                client
                    .publish(
                        "prognos/v1/d1/telemetry",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                    .unwrap();
            }
            client
        });
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + limit;
        while acked < n {
            let Ok(event) = tokio::time::timeout_at(deadline, eventloop.poll()).await else {
                break;
            };
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event.unwrap() {
                acked += 1;
            }
        }
        sender.abort();
        acked
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_ingest_loses_messages_visibly_and_exactly() {
        // Acknowledged on arrival (the ingest confirms nothing here).
        let (addr, mut link, shutdown) = serving(64 * 1024, false).await;

        // The ingest does not read while 2,000 × 500 bytes (~1 MB) go through a 64 KiB ring.
        let n = 2000;
        publish_acked(addr, n, vec![b'x'; 500]).await;

        let (received, lost) = tokio::task::spawn_blocking(move || {
            let (mut received, mut lost) = (0u64, 0u64);
            while let Some(event) = link.recv_timeout(Duration::from_millis(500)).unwrap() {
                match event {
                    LinkEvent::Publish(_) => received += 1,
                    LinkEvent::Lost(k) => lost += k,
                }
            }
            (received, lost)
        })
        .await
        .unwrap();
        shutdown.cancel();
        assert!(lost > 0, "the ring overflowed, so something was lost");
        assert_eq!(
            received + lost,
            n as u64,
            "received {received}, lost {lost}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reading_ingest_receives_everything_in_order() {
        let (addr, mut link, shutdown) = serving(256 * 1024 * 1024, true).await;
        let durable = link.durable_ack();
        let reader = tokio::task::spawn_blocking(move || {
            let mut received = 0u64;
            let mut lost = 0u64;
            while let Some(event) = link.recv_timeout(Duration::from_secs(2)).unwrap() {
                match event {
                    LinkEvent::Publish(p) => {
                        assert_eq!(p.topic, b"prognos/v1/d1/telemetry");
                        received += 1;
                        durable.confirm(p.offset.unwrap());
                    }
                    LinkEvent::Lost(k) => lost += k,
                }
            }
            (received, lost)
        });
        publish_acked(addr, 3000, b"{}".to_vec()).await;
        let (received, lost) = reader.await.unwrap();
        shutdown.cancel();
        assert_eq!((received, lost), (3000, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pubacks_wait_for_the_ingest_to_confirm_and_never_pass_it() {
        let (addr, mut link, shutdown) = serving(256 * 1024 * 1024, true).await;
        let durable = link.durable_ack();
        // Nothing is confirmed: the broker has every publish, the device no PUBACK.
        let acked = publish_counting_acks(addr, 50, b"{}".to_vec(), Duration::from_secs(2)).await;
        assert_eq!(acked, 0, "PUBACKs before the ingest confirmed anything");
        // The device goes (its held acknowledgements with it) and comes back with 50 more;
        // the reader confirms 40 of those: exactly those are acknowledged.
        let offsets = tokio::task::spawn_blocking(move || {
            let mut offsets = Vec::new();
            while let Some(event) = link.recv_timeout(Duration::from_millis(500)).unwrap() {
                if let LinkEvent::Publish(p) = event {
                    offsets.push(p.offset.unwrap());
                }
            }
            (offsets, link)
        })
        .await
        .unwrap();
        let (offsets, mut link) = offsets;
        assert_eq!(offsets.len(), 50);
        let confirmer = tokio::task::spawn_blocking(move || {
            // Confirm as the publishes arrive, but never the 10 last ones.
            let mut seen = Vec::new();
            while let Some(event) = link.recv_timeout(Duration::from_millis(1500)).unwrap() {
                if let LinkEvent::Publish(p) = event {
                    seen.push(p.offset.unwrap());
                    if seen.len() <= 40 {
                        durable.confirm(*seen.last().unwrap());
                    }
                }
            }
            seen.len()
        });
        let acked = publish_counting_acks(addr, 50, b"{}".to_vec(), Duration::from_secs(3)).await;
        assert_eq!(confirmer.await.unwrap(), 50);
        shutdown.cancel();
        assert_eq!(
            acked, 40,
            "exactly the confirmed publishes are acknowledged"
        );
    }
}
