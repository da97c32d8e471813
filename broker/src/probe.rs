//! The broker's self-probe: a real MQTT client that connects to our own listener over
//! loopback (through TLS when it is on) at an interval and waits for the CONNACK.
//!
//! It sees every way the broker can stop accepting devices while the process lives on: a
//! stuck accept loop, a poisoned lock or a panic in the connection setup, a dead router (no
//! CONNACK), a TLS acceptor that fails. The result is [`BrokerHealth`], which `/healthz`
//! reports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How often and how patiently the probe connects.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub interval: Duration,
    /// For one whole attempt: TCP connect, TLS handshake, CONNECT, CONNACK.
    pub timeout: Duration,
    /// Consecutive failed attempts before the broker counts as not accepting.
    pub failures_before_unhealthy: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            failures_before_unhealthy: 2,
        }
    }
}

/// What the last probes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttState {
    /// No probe has finished yet.
    Starting,
    Accepting,
    /// The broker answered "server unavailable": every connection slot is taken. A capacity
    /// limit, not a fault: a restart would only drop the connected devices.
    Full,
    /// The last `failures_before_unhealthy` probes got no CONNACK.
    NotAccepting,
}

impl MqttState {
    pub fn as_str(self) -> &'static str {
        match self {
            MqttState::Starting => "starting",
            MqttState::Accepting => "ok",
            MqttState::Full => "full",
            MqttState::NotAccepting => "not_accepting",
        }
    }
}

/// The probe's findings, shared with `/healthz`.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    probes: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl BrokerHealth {
    pub fn state(&self) -> MqttState {
        match self.state.load(Ordering::Relaxed) {
            1 => MqttState::Accepting,
            2 => MqttState::Full,
            3 => MqttState::NotAccepting,
            _ => MqttState::Starting,
        }
    }

    /// Why the last failed probe failed (kept after a success, for the operator).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Probes finished since the start.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    fn set(&self, state: MqttState) {
        let n = match state {
            MqttState::Starting => 0,
            MqttState::Accepting => 1,
            MqttState::Full => 2,
            MqttState::NotAccepting => 3,
        };
        self.state.store(n, Ordering::Relaxed);
    }

    fn record(&self, outcome: &Result<Answer, String>, config: &ProbeConfig) {
        let before = self.state();
        let after = match outcome {
            Ok(answer) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                match answer {
                    Answer::Accepted => MqttState::Accepting,
                    Answer::Full => MqttState::Full,
                }
            }
            Err(e) => {
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
                let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= config.failures_before_unhealthy {
                    MqttState::NotAccepting
                } else {
                    before
                }
            }
        };
        self.set(after);
        self.probes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("prognos_broker_probes_total", "result" => match outcome {
            Ok(Answer::Accepted) => "accepted",
            Ok(Answer::Full) => "full",
            Err(_) => "failed",
        })
        .increment(1);
        if before != after {
            match after {
                MqttState::NotAccepting => error!(
                    error = self.last_error().unwrap_or_default(),
                    "the MQTT broker no longer accepts connections (self-probe)"
                ),
                MqttState::Full => error!("the MQTT broker is full: no connection slot free"),
                _ => info!(state = after.as_str(), "MQTT broker self-probe"),
            }
        }
    }
}

/// What the broker answered a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted,
    Full,
}

/// Where and as whom the probe connects.
#[derive(Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub client_id: &'static str,
    pub secret: Arc<str>,
}

impl Target {
    /// A listener bound to every address is probed on loopback.
    pub fn loopback(bound: SocketAddr) -> SocketAddr {
        let ip = match bound.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, bound.port())
    }
}

/// Probes `target` until `shutdown`.
pub(crate) async fn run(
    target: Target,
    config: ProbeConfig,
    health: Arc<BrokerHealth>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = match tokio::time::timeout(config.timeout, probe_once(&target)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no CONNACK within {} ms",
                config.timeout.as_millis()
            )),
        };
        health.record(&outcome, &config);
    }
}

async fn probe_once(target: &Target) -> Result<Answer, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    tcp.set_nodelay(true).ok();
    match &target.tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            exchange(tls, target).await
        }
        None => exchange(tcp, target).await,
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: &Target,
) -> Result<Answer, String> {
    let connect = connect_packet(target.client_id, &target.secret);
    stream
        .write_all(&connect)
        .await
        .map_err(|e| format!("cannot send CONNECT: {e}"))?;
    stream.flush().await.ok();
    let mut connack = [0u8; 4];
    stream
        .read_exact(&mut connack)
        .await
        .map_err(|e| format!("connection closed without a CONNACK: {e}"))?;
    if connack[0] != 0x20 || connack[1] != 0x02 {
        return Err(format!(
            "not a CONNACK: {:02x} {:02x}",
            connack[0], connack[1]
        ));
    }
    match connack[3] {
        0 => {
            // DISCONNECT, so the broker publishes no will and frees the slot at once.
            stream.write_all(&[0xe0, 0x00]).await.ok();
            stream.shutdown().await.ok();
            Ok(Answer::Accepted)
        }
        3 => Ok(Answer::Full),
        code => Err(format!("CONNACK refused the probe with code {code}")),
    }
}

/// An MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s, username = client id.
fn connect_packet(client_id: &str, password: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0b1100_0010); // username, password, clean session
    body.extend_from_slice(&10u16.to_be_bytes());
    string(&mut body, client_id.as_bytes());
    string(&mut body, client_id.as_bytes());
    string(&mut body, password.as_bytes());
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// The probe's TLS client: it connects to our own loopback port to see whether the broker
/// answers, not to learn who it is, so it accepts the certificate it is shown (its secret is
/// good only for the probe's id, which may publish nothing anyone reads). The handshake
/// signatures are still checked.
pub(crate) fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn target(addr: SocketAddr) -> Target {
        Target {
            addr,
            tls: None,
            client_id: "prognos:probe",
            secret: "s".into(),
        }
    }

    fn config() -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(300),
            failures_before_unhealthy: 2,
        }
    }

    /// Runs the probe against `addr` until the state is `want` (or 5 s pass).
    async fn state_reaches(addr: SocketAddr, want: MqttState) -> MqttState {
        let health = Arc::new(BrokerHealth::default());
        let stop = CancellationToken::new();
        tokio::spawn(run(target(addr), config(), health.clone(), stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while health.state() != want && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        health.state()
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_is_not_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and holds sockets, never writes: a stuck broker.
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                sockets.push(s);
            }
        });
        assert_eq!(
            state_reaches(addr, MqttState::NotAccepting).await,
            MqttState::NotAccepting
        );
        held.abort();
    }

    #[tokio::test]
    async fn a_listener_that_closes_without_connack_is_not_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        assert_eq!(
            state_reaches(addr, MqttState::NotAccepting).await,
            MqttState::NotAccepting
        );
        closer.abort();
    }

    #[tokio::test]
    async fn connack_codes_decide_the_state() {
        for (code, want) in [(0u8, MqttState::Accepting), (3, MqttState::Full)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(&[0x20, 0x02, 0x00, code]).await;
                }
            });
            assert_eq!(state_reaches(addr, want).await, want);
            server.abort();
        }
    }

    #[test]
    fn the_connect_packet_is_well_formed() {
        let p = connect_packet("prognos:probe", "secret");
        assert_eq!(p[0], 0x10);
        assert_eq!(usize::from(p[1]), p.len() - 2);
        assert_eq!(&p[4..8], b"MQTT");
        assert_eq!(p[8], 4);
    }
}
