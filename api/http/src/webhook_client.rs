//! The webhook transport: the domain's [`WebhookTransport`] over hyper's HTTP/1.1 client
//! (hyper-util's legacy `Client`, with its connection pool), plain TCP or TLS (rustls with
//! the Mozilla roots plus any CA given, e.g. a company CA).
//!
//! What is sent where is the domain's decision (`prognos_service::webhooks`); this module
//! only puts it on the wire. Its one security duty is the connector: every new connection
//! resolves the host, has the domain's [`DestinationPolicy`] check every address, and
//! connects to a checked address — so a name that resolved outside at registration and
//! inside now (DNS rebinding) is refused. The request line and headers are built by hyper
//! from a parsed URL and typed header values, so nothing in a URL reaches the wire raw.
//! Redirects are not followed (a 3xx is a failed delivery).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use url::Url;

use prognos_service::webhooks::{BoxFuture, DestinationPolicy, WebhookTransport};

/// Response body bytes read (and thrown away) so a kept-alive connection can be reused.
const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// Idle connections kept per endpoint, and for how long.
const IDLE_PER_HOST: usize = 2;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Ca { path: String, message: String },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Webhook POSTs over hyper.
pub struct HyperTransport {
    client: Client<GuardedConnector, Full<Bytes>>,
}

impl HyperTransport {
    /// A transport that connects only where `policy` allows, trusting the Mozilla roots and
    /// the CA certificates of the PEM file `extra_ca` (if given) for `https://`.
    pub fn new(policy: DestinationPolicy, extra_ca: Option<&Path>) -> Result<Self, TransportError> {
        let extra = match extra_ca {
            Some(path) => read_ca(path)?,
            None => Vec::new(),
        };
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        roots.add_parsable_certificates(extra);
        let tls = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = GuardedConnector {
            policy: Arc::new(policy),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(connector);
        Ok(HyperTransport { client })
    }
}

/// The CA certificates of a PEM file; an unreadable file, one without certificates or one
/// whose certificates do not parse is an error.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let name = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| TransportError::Read {
        path: name.clone(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut text.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TransportError::Ca {
            path: name.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TransportError::Ca {
            path: name,
            message: "holds no PEM certificate".into(),
        });
    }
    let mut probe = RootCertStore::empty();
    let (_, bad) = probe.add_parsable_certificates(certs.iter().cloned());
    if bad > 0 {
        return Err(TransportError::Ca {
            path: name,
            message: format!("{bad} certificate(s) do not parse"),
        });
    }
    Ok(certs)
}

/// An error and its causes, as one line (hyper's top-level messages alone say little).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl WebhookTransport for HyperTransport {
    fn post<'a>(
        &'a self,
        url: &'a Url,
        headers: &'a [(&'static str, String)],
        body: &'a [u8],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u16, String>> {
        Box::pin(async move {
            let uri: Uri = url.as_str().parse().map_err(|e| format!("bad URL: {e}"))?;
            let mut request = hyper::Request::post(uri);
            for (name, value) in headers {
                request = request.header(*name, value.as_str());
            }
            let request = request
                .body(Full::new(Bytes::copy_from_slice(body)))
                .map_err(|e| format!("bad request: {e}"))?;
            let started = tokio::time::Instant::now();
            let response = tokio::time::timeout(timeout, self.client.request(request))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| chain(&e))?;
            let status = response.status().as_u16();
            // Read a little of the body so the connection can go back to the pool; a body
            // that is large or slow just closes it. The status is the answer either way.
            let left = timeout
                .saturating_sub(started.elapsed())
                .min(Duration::from_secs(1));
            let mut incoming = response.into_body();
            let _ = tokio::time::timeout(left, async {
                let mut seen = 0;
                while let Some(Ok(frame)) = incoming.frame().await {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > MAX_DRAIN_BYTES {
                        break;
                    }
                }
            })
            .await;
            Ok(status)
        })
    }
}

/// Makes the pool's connections: resolve, check every address with the domain's policy,
/// connect to a checked one, TLS for `https`.
#[derive(Clone)]
struct GuardedConnector {
    policy: Arc<DestinationPolicy>,
    tls: tokio_rustls::TlsConnector,
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                other => return Err(format!("unsupported scheme {other:?}").into()),
            };
            let raw_host = uri.host().ok_or("no host")?;
            // The same parser as the URL's (brackets around IPv6, IDNA for names).
            let host = url::Host::parse(raw_host).map_err(|e| format!("bad host: {e}"))?;
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let addrs = this
                .policy
                .resolve(
                    match &host {
                        url::Host::Domain(d) => url::Host::Domain(d.as_str()),
                        url::Host::Ipv4(ip) => url::Host::Ipv4(*ip),
                        url::Host::Ipv6(ip) => url::Host::Ipv6(*ip),
                    },
                    port,
                )
                .await?;
            let mut last = None;
            let mut tcp = None;
            for addr in &addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        tcp = Some(s);
                        break;
                    }
                    Err(e) => last = Some(format!("connect {addr}: {e}")),
                }
            }
            let tcp = tcp.ok_or_else(|| last.unwrap_or_else(|| "no address".into()))?;
            let _ = tcp.set_nodelay(true);
            if !tls {
                return Ok(TokioIo::new(Stream::Plain(tcp)));
            }
            let name = match host {
                url::Host::Domain(d) => {
                    ServerName::try_from(d).map_err(|e| format!("bad server name: {e}"))?
                }
                url::Host::Ipv4(ip) => ServerName::from(std::net::IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => ServerName::from(std::net::IpAddr::V6(ip)),
            };
            let stream = this
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {raw_host}: {e}"))?;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
        })
    }
}

/// A connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
