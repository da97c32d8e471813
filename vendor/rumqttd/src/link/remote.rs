use crate::link::local::{LinkError, LinkRx, LinkTx};
use crate::link::network;
use crate::link::network::Network;
use crate::local::LinkBuilder;
use crate::protocol::{ConnAck, Connect, ConnectReturnCode, Login, Packet, Protocol};
use crate::router::{Event, Notification};
use crate::{ConnectionId, ConnectionSettings};

use flume::{RecvError, SendError, Sender, TrySendError};
use std::cmp::min;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::time::error::Elapsed;
use tokio::{select, time};
use tracing::{trace, Span};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O")]
    Io(#[from] io::Error),
    #[error("Zero keep alive")]
    ZeroKeepAlive,
    #[error("Not connect packet")]
    NotConnectPacket(Packet),
    #[error("Network {0}")]
    Network(#[from] network::Error),
    #[error("Timeout")]
    Timeout(#[from] Elapsed),
    #[error("Channel send error")]
    Send(#[from] SendError<(ConnectionId, Event)>),
    #[error("Channel recv error")]
    Recv(#[from] RecvError),
    #[error("Got new session, disconnecting old one")]
    SessionEnd,
    #[error("Persistent session requires valid client id")]
    InvalidClientId,
    #[error("Unexpected router message")]
    NotConnectionAck,
    #[error("ConnAck error {0}")]
    ConnectionAck(String),
    #[error("Authentication error")]
    InvalidAuth,
    #[error("Channel try send error")]
    TrySend(#[from] TrySendError<(ConnectionId, Event)>),
    #[error("Link error = {0}")]
    Link(#[from] LinkError),
    /// Prognos patch: a packet refused by `RemoteLink::check_packet`.
    #[error("Protocol violation: {0}")]
    ProtocolViolation(String),
}

/// Orchestrates between Router and Network.
pub struct RemoteLink<P> {
    connect: Connect,
    pub(crate) connection_id: ConnectionId,
    network: Network<P>,
    link_tx: LinkTx,
    link_rx: LinkRx,
    notifications: VecDeque<Notification>,
    pub(crate) will_delay_interval: u32,
    /// Prognos patch: `ConnectionSettings::max_topic_len`.
    max_topic_len: Option<usize>,
}

impl<P: Protocol> RemoteLink<P> {
    pub async fn new(
        router_tx: Sender<(ConnectionId, Event)>,
        tenant_id: Option<String>,
        mut network: Network<P>,
        connect_packet: Packet,
        dynamic_filters: bool,
        assigned_client_id: Option<String>,
        topic_prefix: Option<String>,
        acl: Option<Arc<crate::TopicAcl>>,
        max_topic_len: Option<usize>,
    ) -> Result<RemoteLink<P>, Error> {
        let Packet::Connect(connect, props, lastwill, lastwill_props, _) = connect_packet else {
            return Err(Error::NotConnectPacket(connect_packet));
        };

        // Register this connection with the router. Router replys with ack which if ok will
        // start the link. Router can sometimes reject the connection (ex max connection limit)
        let client_id = assigned_client_id.as_ref().unwrap_or(&connect.client_id);
        let clean_session = connect.clean_session;

        let topic_alias_max = props.as_ref().and_then(|p| p.topic_alias_max);
        let session_expiry = props
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
            .unwrap_or(0);

        let delay_interval = lastwill_props
            .as_ref()
            .and_then(|f| f.delay_interval)
            .unwrap_or(0);

        // The Server delays publishing the Client’s Will Message until
        // the Will Delay Interval has passed or the Session ends, whichever happens first
        let will_delay_interval = min(session_expiry, delay_interval);

        let built = LinkBuilder::new(client_id, router_tx.clone())
            .tenant_id(tenant_id)
            .clean_session(clean_session)
            .last_will(lastwill)
            .last_will_properties(lastwill_props)
            .dynamic_filters(dynamic_filters)
            .topic_alias_max(topic_alias_max.unwrap_or(0))
            .topic_prefix(topic_prefix)
            .acl(acl)
            .build();
        let (link_tx, link_rx, notification) = match built {
            Ok(built) => built,
            Err(e) => {
                // Prognos patch: the router refused the connection (no free slot, or an
                // invalid client id) without a CONNACK; say so instead of just closing.
                let ack = ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::ServerUnavailable,
                };
                let _ = network.write(Packet::ConnAck(ack, None)).await;
                return Err(e.into());
            }
        };

        let id = link_rx.id();
        Span::current().record("connection_id", id);

        if let Some(mut packet) = notification.into() {
            if let Packet::ConnAck(_ack, props) = &mut packet {
                let mut new_props = props.clone().unwrap_or_default();
                new_props.assigned_client_identifier = assigned_client_id;
                *props = Some(new_props);
                if let Err(e) = network.write(packet).await {
                    // Prognos patch: the router has registered this connection; tell it the
                    // connection is gone, or its slot stays taken (counted against
                    // `max_connections`) with no link behind it.
                    let _ = router_tx.send_async(link_rx.disconnect_request()).await;
                    return Err(e.into());
                }
            }
        }

        Ok(RemoteLink {
            connect,
            connection_id: id,
            network,
            link_tx,
            link_rx,
            notifications: VecDeque::with_capacity(100),
            will_delay_interval,
            max_topic_len,
        })
    }

    pub async fn start(&mut self) -> Result<(), Error> {
        self.network.set_keepalive(self.connect.keep_alive);

        // Note:
        // Shouldn't result in bounded queue deadlocks because of blocking n/w send
        loop {
            select! {
                o = self.network.read() => {
                    let packet = o?;
                    // Prognos patch: read into a local batch and check every packet before
                    // the router sees any of it.
                    let mut batch = VecDeque::new();
                    batch.push_back(packet);
                    self.network.readv(&mut batch)?;
                    for packet in &batch {
                        self.check_packet(packet)?;
                    }
                    let len = {
                        let mut buffer = self.link_tx.buffer();
                        buffer.extend(batch);
                        buffer.len()
                    };

                    trace!("Packets read from network, count = {}", len);
                    self.link_tx.notify().await?;
                }
                // Receive from router when previous when state isn't in collision
                // due to previously received data request
                o = self.link_rx.exchange(&mut self.notifications) => {
                    o?;
                    let mut packets = VecDeque::new();
                    let mut unscheduled = false;

                    for notif in self.notifications.drain(..) {
                        if let Some(packet) = notif.into() {
                            packets.push_back(packet);
                        } else {
                            unscheduled = true;
                        }

                    }
                    self.network.writev(packets).await?;
                    if unscheduled {
                        self.link_rx.wake().await?;
                    }
                }
            }
        }
    }
}

impl<P> RemoteLink<P> {
    /// Prognos patch: see `LinkRx::disconnect_request`.
    pub(crate) fn disconnect_request(&self) -> (ConnectionId, Event) {
        self.link_rx.disconnect_request()
    }

    /// Prognos patch: refuses (and so disconnects) packets a client must not send or whose
    /// topic or filter is invalid: upstream let wildcards and NUL into publish topics, never
    /// checked filter syntax (`valid_filter` was unused), passed topics of any length to the
    /// router (which caches every distinct one), and only logged a second CONNECT or a
    /// server-to-client packet.
    fn check_packet(&self, packet: &Packet) -> Result<(), Error> {
        let refuse = |what: &str, text: &str| {
            tracing::warn!(
                target: "prognos_broker::protocol",
                client_id = %crate::loggable(&self.connect.client_id),
                text = %crate::loggable(text),
                "{what}: client disconnected"
            );
            Err(Error::ProtocolViolation(what.to_owned()))
        };
        let too_long = |text: &str| self.max_topic_len.is_some_and(|max| text.len() > max);
        match packet {
            Packet::Publish(publish, _) => {
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    return refuse(
                        "publish topic is not UTF-8",
                        &crate::loggable_bytes(&publish.topic),
                    );
                };
                if too_long(topic) {
                    return refuse("publish topic too long", topic);
                }
                // An empty topic is valid only with an MQTT 5 topic alias (the router checks).
                if !crate::protocol::valid_topic(topic) || topic.contains('\0') {
                    return refuse("publish topic with a wildcard or NUL", topic);
                }
            }
            Packet::Subscribe(subscribe, _) => {
                if subscribe.filters.is_empty() {
                    return refuse("subscribe without a filter", "");
                }
                for filter in &subscribe.filters {
                    if too_long(&filter.path) {
                        return refuse("subscription filter too long", &filter.path);
                    }
                    if !crate::protocol::valid_filter(&filter.path) || filter.path.contains('\0') {
                        return refuse("invalid subscription filter", &filter.path);
                    }
                }
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                if unsubscribe.filters.is_empty() {
                    return refuse("unsubscribe without a filter", "");
                }
                if let Some(filter) = unsubscribe.filters.iter().find(|f| too_long(f)) {
                    return refuse("unsubscribe filter too long", filter);
                }
            }
            Packet::Connect(..) => return refuse("second CONNECT", ""),
            Packet::ConnAck(..)
            | Packet::SubAck(..)
            | Packet::UnsubAck(..)
            | Packet::PingResp(..) => return refuse("server-to-client packet from a client", ""),
            _ => {}
        }
        Ok(())
    }
}

/// Read MQTT connect packet from network and verify it.
/// authentication and checks are done here.
pub async fn mqtt_connect<P>(
    config: Arc<ConnectionSettings>,
    network: &mut Network<P>,
    peer: SocketAddr,
) -> Result<(Packet, Option<Arc<crate::TopicAcl>>), Error>
where
    P: Protocol,
{
    // Wait for MQTT connect packet and error out if it's not received in time to prevent
    // DOS attacks by filling total connections that the server can handle with idle open
    // connections which results in server rejecting new connections
    let connection_timeout_ms = config.connection_timeout_ms.into();
    let packet = time::timeout(Duration::from_millis(connection_timeout_ms), async {
        let packet = network.read().await?;
        Ok::<_, network::Error>(packet)
    })
    .await??;

    let (connect, _props, login) = match packet {
        Packet::Connect(ref connect, ref props, _, _, ref login) => (connect, props, login),
        packet => return Err(Error::NotConnectPacket(packet)),
    };

    // Prognos patch: the client id is the peer's text; bound it in the span (logs).
    Span::current().record(
        "client_id",
        tracing::field::display(crate::loggable(&connect.client_id)),
    );

    // Prognos patch: a connect handler decides with the peer's address and answers a refusal
    // with a CONNACK (upstream closed the socket without one); it may hand the client its own
    // topic rules.
    let mut acl = None;
    if let Some(handler) = &config.connect_handler {
        let request = crate::ConnectRequest {
            client_id: connect.client_id.clone(),
            username: login
                .as_ref()
                .map(|l| l.username.clone())
                .unwrap_or_default(),
            password: login
                .as_ref()
                .map(|l| l.password.clone())
                .unwrap_or_default(),
            peer,
        };
        match handler(request).await {
            crate::ConnectDecision::Accept => {}
            crate::ConnectDecision::AcceptWithAcl(rules) => acl = Some(rules),
            crate::ConnectDecision::Refuse(code) => {
                let ack = ConnAck {
                    session_present: false,
                    code,
                };
                network.write(Packet::ConnAck(ack, None)).await?;
                return Err(Error::InvalidAuth);
            }
        }
    } else {
        handle_auth(config.clone(), login.as_ref(), &connect.client_id).await?;
    }

    // When keep_alive feature is disabled client can live forever, which is not good in
    // distributed broker context so currenlty we don't allow it.
    // (Prognos patch: MQTT allows keep-alive 0; with `zero_keep_alive_idle_secs` set such a
    // client is accepted and closed after that long without a packet.)
    let mut packet = packet;
    let (empty_client_id, clean_session) = match &mut packet {
        Packet::Connect(connect, ..) => {
            if connect.keep_alive == 0 {
                match config.zero_keep_alive_idle_secs {
                    Some(idle) => connect.keep_alive = idle.max(1),
                    None => return Err(Error::ZeroKeepAlive),
                }
            }
            (connect.client_id.is_empty(), connect.clean_session)
        }
        _ => return Err(Error::NotConnectPacket(packet)),
    };

    if empty_client_id && !clean_session {
        let ack = ConnAck {
            session_present: false,
            code: ConnectReturnCode::ClientIdentifierNotValid,
        };

        let packet = Packet::ConnAck(ack, None);
        network.write(packet).await?;

        return Err(Error::InvalidClientId);
    }

    // Ok((connect, props, lastwill, lastwill_props))
    Ok((packet, acl))
}

async fn handle_auth(
    config: Arc<ConnectionSettings>,
    login: Option<&Login>,
    client_id: &str,
) -> Result<(), Error> {
    if config.auth.is_none() && config.external_auth.is_none() {
        return Ok(());
    }

    // if authentication is configured and connect packet doesn't have login details
    // return an error
    let Some(login) = login else {
        return Err(Error::InvalidAuth);
    };

    let username = &login.username;
    let password = &login.password;

    if let Some(auth) = &config.external_auth {
        if !auth(
            client_id.to_owned(),
            username.to_owned(),
            password.to_owned(),
        )
        .await
        {
            return Err(Error::InvalidAuth);
        }

        return Ok(());
    }

    if let Some(pairs) = &config.auth {
        if let Some(stored_password) = pairs.get(username) {
            if stored_password.as_bytes().ct_eq(password.as_bytes()).into() {
                return Ok(());
            }
        }

        return Err(Error::InvalidAuth);
    }

    Err(Error::InvalidAuth)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use crate::{protocol::Login, ConnectionSettings};

    use super::handle_auth;

    fn config() -> ConnectionSettings {
        ConnectionSettings {
            connection_timeout_ms: 0,
            max_payload_size: 0,
            max_inflight_count: 0,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
            client_topic_prefix: None,
            connect_handler: None,
            max_topic_len: None,
            zero_keep_alive_idle_secs: None,
        }
    }

    fn login() -> Login {
        Login {
            username: "u".to_owned(),
            password: "p".to_owned(),
        }
    }

    #[tokio::test]
    async fn no_login_no_auth() {
        let cfg = Arc::new(config());
        let r = handle_auth(cfg, None, "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn some_login_no_auth() {
        let cfg = Arc::new(config());
        let login = login();
        let r = handle_auth(cfg, Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_matches_static_auth() {
        let login = login();
        let mut map = HashMap::<String, String>::new();
        map.insert(login.username.clone(), login.password.clone());

        let mut cfg = config();
        cfg.auth = Some(map);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_fails_static_no_external() {
        let login = login();
        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let mut cfg = config();
        cfg.auth = Some(map);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn login_fails_static_matches_external() {
        let login = login();

        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let dynamic = |_: String, _: String, _: String| async { true };

        let mut cfg = config();
        cfg.auth = Some(map);
        cfg.set_auth_handler(dynamic);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_fails_static_fails_external() {
        let login = login();

        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let dynamic = |_: String, _: String, _: String| async { false };

        let mut cfg = config();
        cfg.auth = Some(map);
        cfg.set_auth_handler(dynamic);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn external_auth_clousre_or_fnptr_type_check_or_fail_compile() {
        let closure = |_: String, _: String, _: String| async { false };
        async fn fnptr(_: String, _: String, _: String) -> bool {
            true
        }

        let mut cfg = config();
        cfg.set_auth_handler(closure);
        cfg.set_auth_handler(fnptr);
    }
}
