//! Webhooks through an outbox: events are written in the same transaction as the change they
//! describe, and a delivery pass POSTs them with an HMAC-SHA256 signature of the body
//! (`X-Prognos-Signature: sha256=<hex>`), retrying failures with exponential backoff.
//!
//! Delivery speaks HTTP/1.1 over TCP (`http://`) or TLS (`https://`, rustls with the Mozilla
//! root certificates plus any CA given with [`trust_extra_ca`], e.g. a company CA). HMAC is
//! written out here (RFC 2104 over the existing sha2) rather than pulling in another crate; it
//! is checked against the RFC 4231 vectors.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{Row, SqliteConnection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

use super::auth::{Action, Principal};
use super::{Result, Service, ServiceError, ms_to_rfc3339, new_id};

/// Attempts before an event is given up (state `dead`).
pub const MAX_ATTEMPTS: i64 = 8;

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The signature header value for a body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

/// Delay before attempt `attempts + 1`: 2^attempts seconds, at most an hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    1000 * (1i64 << attempts.clamp(0, 12)).min(3600)
}

#[derive(utoipa::ToSchema, Debug, Clone, Deserialize)]
pub struct NewWebhook {
    #[schema(
        pattern = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/[!-~]*)?$",
        max_length = 2000
    )]
    pub url: String,
    #[schema(min_length = 16, max_length = 256)]
    pub secret: String,
    /// Receive the events of this provider's subtree; none = every event (admin only).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub provider_id: Option<String>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct Webhook {
    pub webhook_id: String,
    pub url: String,
    pub provider_id: Option<String>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct OutboxEntry {
    pub event_id: String,
    pub webhook_id: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
}

/// Queues `data` for every webhook subscribed to the provider at `provider_path` or any
/// provider above it (and global webhooks). Runs inside the caller's transaction.
pub(crate) async fn enqueue(
    conn: &mut SqliteConnection,
    provider_path: Option<&str>,
    kind: &str,
    data: &serde_json::Value,
    now_ms: i64,
) -> Result<()> {
    let hooks = sqlx::query(
        "SELECT w.webhook_id, w.url, w.secret FROM webhooks w
         LEFT JOIN providers p ON p.provider_id = w.provider_id
         WHERE w.provider_id IS NULL OR ($1 IS NOT NULL AND $1 LIKE p.path || '%')",
    )
    .bind(provider_path)
    .fetch_all(&mut *conn)
    .await?;
    for h in hooks {
        let event_id = new_id("EV")?;
        let payload = serde_json::json!({
            "id": event_id,
            "type": kind,
            "created_at": ms_to_rfc3339(now_ms),
            "data": data,
        });
        sqlx::query(
            "INSERT INTO outbox (event_id, webhook_id, url, secret, payload, attempts, next_attempt_ms,
                state, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, 0, $6, 'pending', $6)",
        )
        .bind(&event_id)
        .bind(h.get::<String, _>(0))
        .bind(h.get::<String, _>(1))
        .bind(h.get::<String, _>(2))
        .bind(payload.to_string())
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

static TLS: OnceLock<Arc<ClientConfig>> = OnceLock::new();

fn client_config(extra: &[rustls::pki_types::CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // A CA that does not parse was already rejected by `trust_extra_ca`.
    roots.add_parsable_certificates(extra.iter().cloned());
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Trusts the CA certificates of a PEM file for `https://` webhooks, in addition to the Mozilla
/// roots. Call once at start, before the first delivery; a second call has no effect.
pub fn trust_extra_ca(pem: &Path) -> std::result::Result<(), String> {
    let text = std::fs::read(pem).map_err(|e| format!("cannot read {}: {e}", pem.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut text.as_slice())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{}: {e}", pem.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", pem.display()));
    }
    let mut probe = RootCertStore::empty();
    let (_, bad) = probe.add_parsable_certificates(certs.iter().cloned());
    if bad > 0 {
        return Err(format!(
            "{}: {bad} certificate(s) do not parse",
            pem.display()
        ));
    }
    let _ = TLS.set(client_config(&certs));
    Ok(())
}

/// Writes the request and reads the status code from the response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
    body: &[u8],
) -> std::result::Result<u16, String> {
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // The status line is all we need.
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad response {:?}", line.lines().next().unwrap_or("")))
}

/// `http://` or `https://` → (TLS?, host, port, path).
fn split_url(url: &str) -> std::result::Result<(bool, &str, u16, &str), String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("only http:// and https:// URLs are delivered".to_owned());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, rest) = v6.split_once(']').ok_or("bad IPv6 authority")?;
        match rest.strip_prefix(':') {
            Some(p) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
            None => (h, default_port),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    Ok((tls, host, port, path))
}

/// A minimal HTTP/1.1 POST over TCP or TLS; returns the status code.
pub async fn http_post(
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> std::result::Result<u16, String> {
    let (tls, host, port, path) = split_url(url)?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        if tls {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| format!("bad server name {host:?}: {e}"))?;
            let config = TLS.get_or_init(|| client_config(&[])).clone();
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(stream, &head, body).await
        } else {
            exchange(tcp, &head, body).await
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

impl Service {
    pub async fn create_webhook(&self, who: &Principal, new: &NewWebhook) -> Result<Webhook> {
        who.require(Action::Webhooks)?;
        if let Err(e) = split_url(&new.url) {
            return Err(ServiceError::invalid(
                "url",
                format!("must be an http:// or https:// URL ({e})"),
            ));
        }
        if new.secret.len() < 16 {
            return Err(ServiceError::invalid(
                "secret",
                "needs at least 16 characters",
            ));
        }
        let provider_id = match (who.scope(), &new.provider_id) {
            (None, p) => p.clone(),
            (Some(_), None) => who.provider_id.clone(),
            (Some(_), Some(p)) => {
                let path = self.provider(p).await?.path;
                if !who.sees(Some(&path)) {
                    return Err(ServiceError::Forbidden("another provider's network".into()));
                }
                Some(p.clone())
            }
        };
        if let Some(p) = &provider_id {
            self.provider(p)
                .await
                .map_err(|_| ServiceError::unknown("provider_id", "provider", p))?;
        }
        let id = new_id("WH")?;
        sqlx::query(
            "INSERT INTO webhooks (webhook_id, url, secret, provider_id, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(&new.url)
        .bind(&new.secret)
        .bind(&provider_id)
        .bind(self.now_ms())
        .execute(self.pool())
        .await?;
        Ok(Webhook {
            webhook_id: id,
            url: new.url.clone(),
            provider_id,
        })
    }

    pub async fn outbox(
        &self,
        who: &Principal,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>> {
        who.require(Action::ManageKeys)?;
        let rows = sqlx::query(
            "SELECT event_id, webhook_id, state, attempts, next_attempt_ms, last_error, payload
             FROM outbox WHERE ($1 IS NULL OR state = $1) ORDER BY created_at_ms, event_id LIMIT $2",
        )
        .bind(state)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxEntry {
                event_id: r.get(0),
                webhook_id: r.get(1),
                state: r.get(2),
                attempts: r.get(3),
                next_attempt_ms: r.get(4),
                last_error: r.get(5),
                payload: serde_json::from_str(&r.get::<String, _>(6))
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    /// Delivers the events that are due; returns (delivered, failed attempts).
    pub async fn deliver_webhooks(&self, batch: i64) -> Result<(usize, usize)> {
        let now = self.now_ms();
        let due = sqlx::query(
            "SELECT event_id, url, secret, payload, attempts FROM outbox
             WHERE state = 'pending' AND next_attempt_ms <= $1
             ORDER BY next_attempt_ms, event_id LIMIT $2",
        )
        .bind(now)
        .bind(batch)
        .fetch_all(self.pool())
        .await?;
        let (mut ok, mut failed) = (0, 0);
        for row in due {
            let event_id: String = row.get(0);
            let url: String = row.get(1);
            let secret: String = row.get(2);
            let payload: String = row.get(3);
            let attempts: i64 = row.get(4);
            let headers = [
                (
                    "X-Prognos-Signature",
                    signature(&secret, payload.as_bytes()),
                ),
                ("X-Prognos-Event-Id", event_id.clone()),
            ];
            let result =
                http_post(&url, &headers, payload.as_bytes(), Duration::from_secs(5)).await;
            let now = self.now_ms();
            match result {
                Ok(code) if (200..300).contains(&code) => {
                    ok += 1;
                    sqlx::query(
                        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                            delivered_at_ms = $2, last_error = NULL WHERE event_id = $1",
                    )
                    .bind(&event_id)
                    .bind(now)
                    .execute(self.pool())
                    .await?;
                }
                other => {
                    failed += 1;
                    let error = match other {
                        Ok(code) => format!("HTTP {code}"),
                        Err(e) => e,
                    };
                    let attempts = attempts + 1;
                    let state = if attempts >= MAX_ATTEMPTS {
                        "dead"
                    } else {
                        "pending"
                    };
                    tracing::warn!(event_id, url, attempts, error, "webhook delivery failed");
                    sqlx::query(
                        "UPDATE outbox SET state = $2, attempts = $3, next_attempt_ms = $4,
                            last_error = $5 WHERE event_id = $1",
                    )
                    .bind(&event_id)
                    .bind(state)
                    .bind(attempts)
                    .bind(now + backoff_ms(attempts))
                    .bind(&error)
                    .execute(self.pool())
                    .await?;
                }
            }
        }
        Ok((ok, failed))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        assert_eq!(
            split_url("https://hooks.example.com/a/b").unwrap(),
            (true, "hooks.example.com", 443, "/a/b")
        );
        assert_eq!(
            split_url("http://127.0.0.1:8080").unwrap(),
            (false, "127.0.0.1", 8080, "/")
        );
        assert_eq!(
            split_url("https://[::1]:9443/h").unwrap(),
            (true, "::1", 9443, "/h")
        );
        assert!(split_url("ftp://x/").is_err());
        assert!(split_url("https://:80/").is_err());
        assert!(split_url("http://host:port/").is_err());
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // Test case 1.
        let key = [0x0b; 20];
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let key = [0xaa; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(0), 1000);
        assert_eq!(backoff_ms(3), 8000);
        assert_eq!(backoff_ms(40), 3_600_000);
    }
}
