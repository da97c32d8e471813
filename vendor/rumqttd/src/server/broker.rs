use crate::link::alerts::{self};
#[cfg(feature = "console")]
use crate::link::console::ConsoleLink;
use crate::link::network::{self, Network, N};
use crate::link::remote::{self, mqtt_connect, RemoteLink};
use crate::link::{bridge, timer};
use crate::local::LinkBuilder;
use crate::protocol::v4::V4;
use crate::protocol::v5::V5;
use crate::protocol::{Packet, Protocol};
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
use crate::server::tls::{self, TLSAcceptor};
#[cfg(feature = "console")]
use crate::Meter;
use crate::{meters, ConnectionSettings};
use flume::{RecvError, SendError, Sender};
use std::collections::HashMap;
#[cfg(feature = "console")]
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tracing::{error, field, info, warn, Instrument};
use uuid::Uuid;

#[cfg(feature = "websocket")]
use async_tungstenite::tokio::accept_hdr_async;
#[cfg(feature = "websocket")]
use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
#[cfg(feature = "websocket")]
use async_tungstenite::tungstenite::http::HeaderValue;
#[cfg(feature = "websocket")]
use ws_stream_tungstenite::WsStream;

#[cfg(feature = "console")]
use metrics::gauge;
#[cfg(feature = "console")]
use metrics_exporter_prometheus::PrometheusBuilder;
use std::time::Duration;
use std::{io, thread};

#[cfg(feature = "console")]
use crate::link::console;
use crate::link::local::{self, LinkRx, LinkTx};
use crate::router::{Event, Router};
use crate::{Config, ConnectionId, ServerSettings};

use tokio::net::TcpListener;
use tokio::time::error::Elapsed;
use tokio::{task, time};

#[derive(Debug, thiserror::Error)]
#[error("Acceptor error")]
pub enum Error {
    #[error("I/O {0}")]
    Io(#[from] io::Error),
    #[error("Timeout")]
    Timeout(#[from] Elapsed),
    #[error("Channel recv error")]
    Recv(#[from] RecvError),
    #[error("Channel send error")]
    Send(#[from] SendError<(ConnectionId, Event)>),
    #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
    #[error("Certs error = {0}")]
    Certs(#[from] tls::Error),
    #[error("Accept error = {0}")]
    Accept(String),
    #[error("Remote error = {0}")]
    Remote(#[from] remote::Error),
    #[error("Invalid configuration")]
    Config(String),
}

pub struct Broker {
    config: Arc<Config>,
    router_tx: Sender<(ConnectionId, Event)>,
}

impl Broker {
    pub fn new(config: Config) -> Broker {
        let config = Arc::new(config);
        let router_config = config.router.clone();
        let router: Router = Router::new(config.id, router_config);

        // Setup cluster if cluster settings are configured.
        match config.cluster.clone() {
            Some(_cluster_config) => {
                // let node_id = cluster_config.node_id;
                // let listen = cluster_config.listen;
                // let seniors = cluster_config.seniors;
                // let mut cluster = RemoteCluster::new(node_id, &listen, seniors);
                // Broker::setup_remote_cluster(&mut router, node_id, &mut cluster);

                // Start router first and then cluster in the background
                let router_tx = router.spawn();
                // cluster.spawn();
                Broker { config, router_tx }
            }
            None => {
                let router_tx = router.spawn();
                Broker { config, router_tx }
            }
        }
    }

    // pub fn new_local_cluster(
    //     config: Config,
    //     node_id: NodeId,
    //     seniors: Vec<(NodeId, Sender<ReplicationData>)>,
    // ) -> (Broker, Sender<ReplicationData>) {
    //     let config = Arc::new(config);
    //     let router_config = config.router.clone();

    //     let mut router = Router::new(config.id, router_config);
    //     let (mut cluster, tx) = LocalCluster::new(node_id, seniors);
    //     Broker::setup_local_cluster(&mut router, node_id, &mut cluster);

    //     // Start router first and then cluster in the background
    //     let router_tx = router.spawn();
    //     cluster.spawn();

    //     (Broker { config, router_tx }, tx)
    // }

    // fn setup_remote_cluster(router: &mut Router, node_id: NodeId, cluster: &mut RemoteCluster) {
    //     // Retrieve pre-configured list of router <-> replica link from router
    //     // and add the link to cluster
    //     let nodes: Vec<NodeId> = (0..MAX_NODES).filter(|v| *v != node_id).collect();
    //     for node_id in nodes {
    //         let link = router.get_replica_handle(node_id);
    //         cluster.add_replica_router_handle(node_id, link);
    //     }
    // }

    // fn setup_local_cluster(router: &mut Router, node_id: NodeId, cluster: &mut LocalCluster) {
    //     // Retrieve pre-configured list of router <-> replica link from router
    //     // and add the link to cluster
    //     let nodes: Vec<NodeId> = (0..MAX_NODES).filter(|v| *v != node_id).collect();
    //     for node_id in nodes {
    //         let link = router.get_replica_handle(node_id);
    //         cluster.add_replica_router_handle(node_id, link);
    //     }
    // }

    // Link to get meters
    pub fn meters(&self) -> Result<meters::MetersLink, meters::LinkError> {
        let link = meters::MetersLink::new(self.router_tx.clone())?;
        Ok(link)
    }

    // Link to get alerts
    pub fn alerts(&self) -> Result<alerts::AlertsLink, alerts::LinkError> {
        let link = alerts::AlertsLink::new(self.router_tx.clone())?;
        Ok(link)
    }

    pub fn link(&self, client_id: &str) -> Result<(LinkTx, LinkRx), local::LinkError> {
        // Register this connection with the router. Router replies with ack which if ok will
        // start the link. Router can sometimes reject the connection (ex. max connection limit).
        let (link_tx, link_rx, _ack) =
            LinkBuilder::new(client_id, self.router_tx.clone()).build()?;
        Ok((link_tx, link_rx))
    }

    #[tracing::instrument(skip(self))]
    pub fn start(&mut self) -> Result<(), Error> {
        if self.config.v4.is_none()
            && self.config.v5.is_none()
            && (cfg!(not(feature = "websocket")) || self.config.ws.is_none())
        {
            return Err(Error::Config(
                "Atleast one server config must be specified, \
                consider adding either of [v4.x]/[v5.x] or [ws.x] (if enabled) in config file."
                    .to_string(),
            ));
        }

        // we don't know which servers (v4/v5/ws) user will spawn
        // so we collect handles for all of the spawned servers
        let mut server_thread_handles = Vec::new();

        if let Some(metrics_config) = self.config.metrics.clone() {
            let timer_thread = thread::Builder::new().name("timer".to_owned());
            let router_tx = self.router_tx.clone();
            timer_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();

                runtime.block_on(async move {
                    timer::start(metrics_config, router_tx).await;
                });
            })?;
        }

        // Spawn bridge in a separate thread.
        if let Some(bridge_config) = self.config.bridge.clone() {
            let bridge_thread = thread::Builder::new().name(bridge_config.name.clone());
            let router_tx = self.router_tx.clone();
            bridge_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();

                runtime.block_on(async move {
                    if let Err(e) = bridge::start(bridge_config, router_tx, V4).await {
                        error!(error=?e, "Bridge Link error");
                    };
                });
            })?;
        }

        // Spawn servers in a separate thread.
        if let Some(v4_config) = &self.config.v4 {
            for (_, config) in v4_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                let mut server = Server::new(config, self.router_tx.clone(), V4);
                let handle = server_thread.spawn(move || {
                    let mut runtime = tokio::runtime::Builder::new_current_thread();
                    let runtime = runtime.enable_all().build().unwrap();

                    runtime.block_on(async {
                        if let Err(e) = server.start(LinkType::Remote).await {
                            error!(error=?e, "Server error - V4");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        if let Some(v5_config) = &self.config.v5 {
            for (_, config) in v5_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                let mut server = Server::new(config, self.router_tx.clone(), V5);
                let handle = server_thread.spawn(move || {
                    let mut runtime = tokio::runtime::Builder::new_current_thread();
                    let runtime = runtime.enable_all().build().unwrap();

                    runtime.block_on(async {
                        if let Err(e) = server.start(LinkType::Remote).await {
                            error!(error=?e, "Server error - V5");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        #[cfg(not(feature = "websocket"))]
        if self.config.ws.is_some() {
            warn!("websocket feature is disabled, [ws] config will be ignored.");
        }

        #[cfg(feature = "websocket")]
        if let Some(ws_config) = &self.config.ws {
            for (_, config) in ws_config.clone() {
                let server_thread = thread::Builder::new().name(config.name.clone());
                //TODO: Add support for V5 procotol with websockets. Registered in config or on ServerSettings
                let mut server = Server::new(config, self.router_tx.clone(), V4);
                let handle = server_thread.spawn(move || {
                    let mut runtime = tokio::runtime::Builder::new_current_thread();
                    let runtime = runtime.enable_all().build().unwrap();

                    runtime.block_on(async {
                        if let Err(e) = server.start(LinkType::Websocket).await {
                            error!(error=?e, "Server error - WS");
                        }
                    });
                })?;
                server_thread_handles.push(handle)
            }
        }

        #[cfg(feature = "console")]
        if let Some(prometheus_setting) = &self.config.prometheus {
            let timeout = prometheus_setting.interval;
            // If port is specified use it instead of listen.
            // NOTE: This means listen is ignored when `port` is specified.
            // `port` will be removed in future release in favour of `listen`
            let addr = {
                #[allow(deprecated)]
                match prometheus_setting.port {
                    Some(port) => SocketAddr::new("127.0.0.1".parse().unwrap(), port),
                    None => prometheus_setting.listen.unwrap_or(SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                        9042,
                    )),
                }
            };
            let metrics_thread = thread::Builder::new().name("Metrics".to_owned());
            let meter_link = self.meters().unwrap();
            metrics_thread.spawn(move || {
                let builder = PrometheusBuilder::new().with_http_listener(addr);
                builder.install().unwrap();

                let total_publishes = gauge!("metrics.router.total_publishes");
                let total_connections = gauge!("metrics.router.total_connections");
                let failed_publishes = gauge!("metrics.router.failed_publishes");
                loop {
                    if let Ok(metrics) = meter_link.recv() {
                        for m in metrics {
                            match m {
                                Meter::Router(_, ref r) => {
                                    total_connections.set(r.total_connections as f64);
                                    total_publishes.set(r.total_publishes as f64);
                                    failed_publishes.set(r.failed_publishes as f64);
                                }
                                _ => continue,
                            }
                        }
                    }

                    std::thread::sleep(Duration::from_secs(timeout));
                }
            })?;
        }

        #[cfg(feature = "console")]
        if let Some(console) = self.config.console.clone() {
            let console_link = ConsoleLink::new(console, self.router_tx.clone());

            let console_link = Arc::new(console_link);
            let console_thread = thread::Builder::new().name("Console".to_string());
            console_thread.spawn(move || {
                let mut runtime = tokio::runtime::Builder::new_current_thread();
                let runtime = runtime.enable_all().build().unwrap();
                runtime.block_on(console::start(console_link));
            })?;
        }

        // in ideal case, where server doesn't crash, join() will never resolve
        // we still try to join threads so that we don't return from function
        // unless everything crashes.
        server_thread_handles.into_iter().for_each(|handle| {
            // join() might panic in case the thread panics
            // we just ignore it
            let _ = handle.join();
        });

        Ok(())
    }
}

#[derive(Copy, Clone)]
pub enum LinkType {
    #[cfg(feature = "websocket")]
    Websocket,
    Remote,
}

#[derive(PartialEq)]
enum AwaitingWill {
    Cancel,
    Fire,
}

pub struct Server<P> {
    config: ServerSettings,
    router_tx: Sender<(ConnectionId, Event)>,
    protocol: P,
    awaiting_will_handler: Arc<Mutex<HashMap<String, Sender<AwaitingWill>>>>,
    /// Prognos patch: the TLS acceptor, built once from the certificate files (upstream read
    /// and parsed them again for every connection), replaceable by [`TlsReloader`].
    #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
    tls: Option<Arc<std::sync::RwLock<Arc<TLSAcceptor>>>>,
    /// Prognos patch: bound on the sockets this listener holds open at once (shared with
    /// other listeners if the caller wishes), including those not yet past CONNECT.
    sockets: Option<Arc<tokio::sync::Semaphore>>,
    /// Prognos patch: bound on sockets per remote address still in setup (TLS, CONNECT).
    setup_limit: Option<SetupLimit>,
}

/// Prognos patch: counts, per remote address (IPv6: per /64), the sockets that have not
/// finished their TLS handshake and CONNECT, so that one host cannot hold every socket (and
/// connection slot) for the length of the connection timeout, again and again. The map
/// holds only addresses with such a socket, so it is bounded by the open sockets.
#[derive(Clone)]
pub struct SetupLimit {
    max_per_address: usize,
    open: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
}

impl SetupLimit {
    pub fn new(max_per_address: usize) -> Self {
        SetupLimit {
            max_per_address: max_per_address.max(1),
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn enter(&self, ip: std::net::IpAddr) -> Option<SetupGuard> {
        let key = address_key(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max_per_address {
            return None;
        }
        *count += 1;
        Some(SetupGuard {
            limit: self.clone(),
            key,
        })
    }
}

/// Prognos patch: one socket in setup; dropped when its CONNECT has been decided.
pub struct SetupGuard {
    limit: SetupLimit,
    key: std::net::IpAddr,
}

impl Drop for SetupGuard {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The unit an address is limited by: itself for IPv4, its /64 for IPv6.
fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Prognos patch: logs refused sockets at most once a second (a flood must not flood the
/// log), with the number refused since the last line.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    since: u64,
}

impl RefusalLog {
    fn refused(&mut self, name: &str, addr: std::net::SocketAddr, why: &str) {
        self.since += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        warn!(
            name,
            ?addr,
            refused = self.since,
            "{why}: connection closed"
        );
        self.last = Some(now);
        self.since = 0;
    }
}

/// Prognos patch: how long a TLS handshake may take when `ServerSettings` names no limit.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Prognos patch: pause after a failed `accept` (typically EMFILE, out of file descriptors),
/// which would otherwise repeat at once and spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Prognos patch: reloads a listener's certificate and key from the files its `TlsConfig`
/// names; connections accepted afterwards use them, open connections keep theirs.
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
#[derive(Clone)]
pub struct TlsReloader {
    config: crate::TlsConfig,
    slot: Arc<std::sync::RwLock<Arc<TLSAcceptor>>>,
}

#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
impl TlsReloader {
    /// Reads the files again; on an error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), Error> {
        let acceptor = Arc::new(TLSAcceptor::new(&self.config)?);
        *self
            .slot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = acceptor;
        Ok(())
    }
}

impl<P: Protocol + Clone + Send + 'static> Server<P> {
    pub fn new(
        config: ServerSettings,
        router_tx: Sender<(ConnectionId, Event)>,
        protocol: P,
    ) -> Server<P> {
        Server {
            config,
            router_tx,
            protocol,
            awaiting_will_handler: Arc::new(Mutex::new(HashMap::default())),
            #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
            tls: None,
            sockets: None,
            setup_limit: None,
        }
    }

    /// Prognos patch: loads the TLS certificate and key now (once), so that a bad file is an
    /// error before serving, and returns a handle that reloads them. `None` without TLS.
    #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
    pub fn load_tls(&mut self) -> Result<Option<TlsReloader>, Error> {
        let Some(config) = &self.config.tls else {
            return Ok(None);
        };
        let acceptor = Arc::new(TLSAcceptor::new(config)?);
        let slot = Arc::new(std::sync::RwLock::new(acceptor));
        self.tls = Some(slot.clone());
        Ok(Some(TlsReloader {
            config: config.clone(),
            slot,
        }))
    }

    /// Prognos patch: holds a permit of `sockets` for every socket this listener keeps open;
    /// a socket accepted while none is free is closed at once.
    pub fn limit_sockets(&mut self, sockets: Arc<tokio::sync::Semaphore>) {
        self.sockets = Some(sockets);
    }

    /// Prognos patch: at most `limit`'s number of sockets per remote address in setup; more
    /// are closed at once.
    pub fn limit_setup_per_address(&mut self, limit: SetupLimit) {
        self.setup_limit = Some(limit);
    }

    pub async fn start(&mut self, link_type: LinkType) -> Result<(), Error> {
        let listener = TcpListener::bind(&self.config.listen).await?;
        self.run(listener, link_type).await
    }

    /// Prognos patch: serve on a listener the caller has bound, so that the caller sees bind
    /// errors and may use port 0.
    ///
    /// Also (Prognos patch) the TLS handshake runs in the connection's own task under a
    /// timeout (`ServerSettings::tls_handshake_timeout_ms`): upstream awaited it in the accept
    /// loop, so one client that opened a TCP connection and sent nothing stopped every new
    /// connection on the listener.
    pub async fn run(&mut self, listener: TcpListener, link_type: LinkType) -> Result<(), Error> {
        let delay = Duration::from_millis(self.config.next_connection_delay_ms);
        let mut count: usize = 0;

        #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
        if self.config.tls.is_some() && self.tls.is_none() {
            self.load_tls()?;
        }
        let handshake_timeout = Duration::from_millis(
            self.config
                .tls_handshake_timeout_ms
                .unwrap_or(DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS),
        );

        let config = Arc::new(self.config.connections.clone());
        let mut refusals = RefusalLog::default();
        info!(
            config = self.config.name,
            listen_addr = self.config.listen.to_string(),
            "Listening for remote connections",
        );
        loop {
            // Await new network connection.
            let (stream, addr) = match listener.accept().await {
                Ok((s, r)) => (s, r),
                Err(e) => {
                    error!(error=?e, "Unable to accept socket.");
                    time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };

            let permit = match &self.sockets {
                Some(sockets) => match sockets.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        refusals.refused(&self.config.name, addr, "too many open MQTT sockets");
                        drop(stream);
                        continue;
                    }
                },
                None => None,
            };
            let setup = match &self.setup_limit {
                Some(limit) => match limit.enter(addr.ip()) {
                    Some(guard) => Some(guard),
                    None => {
                        refusals.refused(
                            &self.config.name,
                            addr,
                            "too many connections in setup from one address",
                        );
                        drop(stream);
                        continue;
                    }
                },
                None => None,
            };

            #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
            let tls = self.tls.as_ref().map(|slot| {
                slot.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            });

            let config = config.clone();
            let router_tx = self.router_tx.clone();
            let name = self.config.name.clone();
            let will_handlers = self.awaiting_will_handler.clone();
            count += 1;
            let connection_number = count;

            let protocol = self.protocol.clone();
            task::spawn(async move {
                // Released when the connection ends, whichever way.
                let _permit = permit;
                #[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
                let accepted = match tls {
                    Some(acceptor) => {
                        match time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok((tenant_id, network))) => Ok((network, tenant_id)),
                            Ok(Err(e)) => Err(format!("{e}")),
                            Err(_) => Err(format!(
                                "no TLS handshake within {} ms",
                                handshake_timeout.as_millis()
                            )),
                        }
                    }
                    None => Ok((Box::new(stream) as Box<dyn N>, None)),
                };
                #[cfg(not(any(feature = "use-rustls", feature = "use-native-tls")))]
                let accepted: Result<(Box<dyn N>, Option<String>), String> = {
                    let _ = handshake_timeout;
                    Ok((Box::new(stream), None))
                };
                let (network, tenant_id) = match accepted {
                    Ok(o) => o,
                    Err(e) => {
                        warn!(?addr, error = e, "Tls accept error");
                        return;
                    }
                };

                info!(name, ?addr, count = connection_number, tenant=?tenant_id, "accept");

                match link_type {
                    #[cfg(feature = "websocket")]
                    LinkType::Websocket => {
                        let stream = match accept_hdr_async(network, WSCallback).await {
                            Ok(s) => Box::new(WsStream::new(s)),
                            Err(e) => {
                                error!(error=?e, "Websocket failed handshake");
                                return;
                            }
                        };
                        remote(
                            config,
                            tenant_id.clone(),
                            router_tx,
                            stream,
                            protocol,
                            will_handlers,
                            addr,
                            setup,
                        )
                        .instrument(tracing::info_span!(
                            "websocket_link",
                            client_id = field::Empty,
                            connection_id = field::Empty
                        ))
                        .await
                    }
                    LinkType::Remote => {
                        remote(
                            config,
                            tenant_id.clone(),
                            router_tx,
                            network,
                            protocol,
                            will_handlers,
                            addr,
                            setup,
                        )
                        .instrument(tracing::error_span!(
                            "remote_link",
                            ?tenant_id,
                            client_id = field::Empty,
                            connection_id = field::Empty,
                        ))
                        .await
                    }
                }
            });

            if !delay.is_zero() {
                time::sleep(delay).await;
            }
        }
    }
}

/// Configures the Websocket connection to indicate the correct protocol
/// by adding the "sec-websocket-protocol" with value of "mqtt" to the response header
#[cfg(feature = "websocket")]
struct WSCallback;
#[cfg(feature = "websocket")]
impl Callback for WSCallback {
    fn on_request(
        self,
        _request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    }
}

/// A new network connection should wait for a mqtt connect packet. This should be handled
/// asynchronously to avoid blocking other new connections while this connection is
/// waiting for mqtt connect packet. Also this honours connection wait time as per config to prevent
/// denial of service attacks (rogue clients which only establish network connections without
/// sending a mqtt connection packet to make the server reach its concurrent connection limit).
async fn remote<P: Protocol>(
    config: Arc<ConnectionSettings>,
    tenant_id: Option<String>,
    router_tx: Sender<(ConnectionId, Event)>,
    stream: Box<dyn N>,
    protocol: P,
    will_handlers: Arc<Mutex<HashMap<String, Sender<AwaitingWill>>>>,
    peer: std::net::SocketAddr,
    setup: Option<SetupGuard>,
) {
    let mut network = Network::new(
        stream,
        config.max_payload_size,
        config.max_inflight_count,
        protocol,
    );

    let dynamic_filters = config.dynamic_filters;
    let topic_prefix_template = config.client_topic_prefix.clone();
    let max_topic_len = config.max_topic_len;

    let (connect_packet, acl) = match mqtt_connect(config, &mut network, peer).await {
        Ok(p) => p,
        Err(e) => {
            error!(error=%e, "Error while handling MQTT connect packet");
            return;
        }
    };
    // Prognos patch: the CONNECT is decided; this socket no longer counts as in setup.
    drop(setup);

    let (mut client_id, clean_session) = match &connect_packet {
        Packet::Connect(ref connect, _, _, _, _) => {
            (connect.client_id.clone(), connect.clean_session)
        }
        _ => unreachable!(),
    };

    // Prognos patch: the topic prefix this client is confined to
    // (a client with its own topic rules is confined by them instead)
    let topic_prefix = topic_prefix_template
        .filter(|_| acl.is_none())
        .map(|prefix| prefix.replace("{client_id}", &client_id));

    let mut assigned_client_id = None;
    if client_id.is_empty() {
        let uuid = Uuid::new_v4().simple();
        client_id = format!("rumqtt-{uuid}");
        assigned_client_id = Some(client_id.clone());
    }

    if let Some(tenant_id) = &tenant_id {
        // client_id is set to "tenant_id.client_id"
        // this is to make sure we are consistent,
        // as Connection uses this format of client_id
        client_id = format!("{tenant_id}.{client_id}");
    }

    // Prognos patch (upstream issue #1062, fix proposed in PR #1066): take the previous
    // connection's sender out of the map and release the lock before sending, and never
    // unwrap the send. A connection that failed during setup (a reset before its CONNACK, a
    // full router) leaves a sender whose receiver is gone; upstream unwrapped that send while
    // holding the lock, so its panic poisoned the mutex and every later CONNECT on the
    // listener panicked too. `lock_will_handlers` also recovers a poisoned map, so no panic
    // elsewhere can spread to every connection again.
    let previous = lock_will_handlers(&will_handlers).remove(&client_id);
    if let Some(sender) = previous {
        let awaiting_will = if clean_session {
            AwaitingWill::Fire
        } else {
            AwaitingWill::Cancel
        };
        // Disconnected: that connection's will task is gone; there is nothing to tell it.
        let _ = sender.try_send(awaiting_will);
    }

    let (will_tx, will_rx) = flume::bounded::<AwaitingWill>(1);
    lock_will_handlers(&will_handlers).insert(client_id.clone(), will_tx.clone());

    // Start the link
    let mut link = match RemoteLink::new(
        router_tx.clone(),
        tenant_id.clone(),
        network,
        connect_packet,
        dynamic_filters,
        assigned_client_id,
        topic_prefix,
        acl,
        max_topic_len,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            error!(error=?e, "Remote link error");
            // Prognos patch: a connection that never started leaves no entry behind.
            remove_will_handler(&will_handlers, &client_id, &will_tx);
            return;
        }
    };

    let connection_id = link.connection_id;
    let disconnect_request = link.disconnect_request();
    let will_delay_interval = link.will_delay_interval;
    let mut send_disconnect = true;

    match link.start().await {
        // Connection got closed. This shouldn't usually happen.
        Ok(_) => error!("connection-stop"),
        // No need to send a disconnect message when disconnection
        // originated internally in the router.
        Err(remote::Error::Link(e)) => {
            error!(error=?e, "router-drop");
            send_disconnect = false;
        }
        // Connection was closed by peer
        Err(remote::Error::Network(network::Error::Io(err)) | remote::Error::Io(err))
            if err.kind() == io::ErrorKind::ConnectionAborted =>
        {
            info!(error=?err, "disconnected");
        }
        // Any other error
        Err(e) => {
            error!(error=?e, "disconnected");
        }
    };

    // Prognos patch: a disconnect the router can tell from one for a newer connection that
    // got this id (see `Event::DisconnectLink`), sent without blocking the runtime thread.
    if send_disconnect {
        router_tx.send_async(disconnect_request).await.ok();
    }

    // this is important to stop the connection
    drop(link);

    let publish_will = match tokio::time::timeout(
        Duration::from_secs(will_delay_interval as u64),
        will_rx.recv_async(),
    )
    .await
    {
        Ok(w) => w.is_ok_and(|k| k == AwaitingWill::Fire),
        Err(_) => {
            // no need to keep the sender after timeout (Prognos patch: only if it is still
            // ours; a newer connection with this client id may have put its own there)
            remove_will_handler(&will_handlers, &client_id, &will_tx);
            // as will delay interval has passed, publish the will message
            true
        }
    };

    if publish_will {
        let message = Event::PublishWill((client_id, tenant_id));
        // is this connection_id really correct at this point?
        // as we have disconnected already, some other connection
        // might be using this connection ID!
        // It won't matter in this case as we don't use it
        // but might affect logs?
        router_tx.send_async((connection_id, message)).await.ok();
    }
}

type WillHandlers = Mutex<HashMap<String, Sender<AwaitingWill>>>;

/// Prognos patch: the will handler map, recovered if a panic elsewhere poisoned it (the map
/// holds only senders, which stay consistent whatever panicked).
fn lock_will_handlers(
    handlers: &WillHandlers,
) -> std::sync::MutexGuard<'_, HashMap<String, Sender<AwaitingWill>>> {
    handlers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Prognos patch: removes `client_id`'s entry only if it is `ours`.
fn remove_will_handler(handlers: &WillHandlers, client_id: &str, ours: &Sender<AwaitingWill>) {
    let mut map = lock_will_handlers(handlers);
    if map.get(client_id).is_some_and(|s| s.same_channel(ours)) {
        map.remove(client_id);
    }
}
