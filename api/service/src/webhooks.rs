//! Webhooks through an outbox: events are written in the same transaction as the change they
//! describe, and delivery POSTs them with an HMAC-SHA256 signature of the body
//! (`X-Prognos-Signature: sha256=<hex>`), retrying failures with exponential backoff and
//! jitter.
//!
//! The rules live here, the wire does not: a [`WebhookTransport`] (implemented over hyper in
//! `prognos-http`, so no HTTP type reaches this crate) carries one POST. What this module
//! decides:
//! - **Which URLs are accepted** ([`parse_webhook_url`]): `http://` or `https://` only, parsed
//!   by the `url` crate (WHATWG), no control characters or whitespace, no credentials, no
//!   fragment, at most [`MAX_URL_BYTES`].
//! - **Which destinations are reached** ([`DestinationPolicy`]): never loopback, private,
//!   link-local, unique-local, shared, documentation, multicast, broadcast or unspecified
//!   addresses (nor IPv6 forms embedding them) unless the configuration allows private
//!   destinations or an allow-list CIDR covers the address. Checked when a webhook is
//!   registered and again when each connection is made ([`DestinationPolicy::resolve`]: the
//!   transport resolves, checks, and connects to the checked address, so DNS rebinding does
//!   not reach the inside).
//! - **Delivery order and isolation**: each endpoint's events go out one at a time in the
//!   order they were queued (`outbox.seq`); a failure backs that endpoint off (the head event
//!   waits, the ones behind it wait for it) while other endpoints are delivered concurrently
//!   (at most [`MAX_CONCURRENT_ENDPOINTS`]), each request bounded by [`DELIVERY_TIMEOUT`].
//!
//! HMAC is written out here (RFC 2104 over the existing sha2) rather than pulling in another
//! crate; it is checked against the RFC 4231 vectors.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{Row, SqliteConnection};
use url::Url;

use super::auth::{Action, Principal};
use super::{Result, Service, ServiceError, ms_to_rfc3339, new_id};

/// Attempts before an event is given up (state `dead`).
pub const MAX_ATTEMPTS: i64 = 8;
/// The longest webhook URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// Webhooks one provider (or the global scope) may register: each event is queued once per
/// subscribed webhook, so an unbounded number would multiply every change.
pub const MAX_WEBHOOKS_PER_OWNER: i64 = 20;
/// One delivery attempt: connect, TLS, request and response, all together.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Endpoints delivered at the same time.
pub const MAX_CONCURRENT_ENDPOINTS: usize = 16;
/// Events one endpoint gets in one go before others' turn (its next go is the next tick).
pub const EVENTS_PER_TURN: usize = 50;
/// Endpoints one tick looks at.
const MAX_DUE_PER_TICK: usize = 256;
/// Resolving a webhook host name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses of one host name looked at (each must be allowed).
const MAX_ADDRESSES: usize = 32;

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

/// The longest delay before attempt `attempts + 1`: 2^attempts seconds, at most an hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    1000 * (1i64 << attempts.clamp(0, 12)).min(3600)
}

/// The delay actually used: uniformly within the upper half of [`backoff_ms`] ("equal
/// jitter"), so endpoints that failed together do not retry together. `random` is any
/// random number.
pub fn jittered_backoff_ms(attempts: i64, random: u64) -> i64 {
    let cap = backoff_ms(attempts);
    let half = cap / 2;
    half + (random % (cap - half + 1) as u64) as i64
}

// ---------------------------------------------------------------- destinations

/// Why an address is not a public unicast destination, if it is not one.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified (this network)",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "reserved (IETF protocol assignments)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // Forms that carry an IPv4 address: judge the address they carry.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96).
        return special_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    if s[0] == 0x2002 {
        // 6to4 (2002::/16) embeds the IPv4 address in the next 32 bits.
        return special_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // IPv4-compatible (deprecated ::a.b.c.d) and the rest of ::/96.
        0 if s[1..6] == [0, 0, 0, 0, 0] => "reserved (IPv4-compatible)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xfc00..=0xfdff => "unique-local",
        0xff00..=0xffff => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        _ => return None,
    })
}

/// Which destinations webhooks may reach. The default refuses every address that is not
/// public unicast; the configuration may allow private destinations (a receiver on the
/// company network) or name CIDRs that are allowed whatever they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Allow loopback, private, link-local, unique-local and the other special unicast
    /// ranges (multicast, broadcast and unspecified addresses stay refused).
    pub allow_private: bool,
    /// Networks allowed whatever they are (checked first).
    pub allowed: Vec<ipnet::IpNet>,
}

impl DestinationPolicy {
    /// Public unicast addresses only.
    pub fn strict() -> DestinationPolicy {
        DestinationPolicy::default()
    }

    /// Also private and loopback addresses (a receiver on the same host or network).
    pub fn allow_private() -> DestinationPolicy {
        DestinationPolicy {
            allow_private: true,
            allowed: Vec::new(),
        }
    }

    /// Parses CIDRs (`10.1.2.0/24`, `fd00::/8`, or a bare address) for [`Self::allowed`].
    pub fn parse_networks(cidrs: &[String]) -> std::result::Result<Vec<ipnet::IpNet>, String> {
        cidrs
            .iter()
            .map(|c| {
                c.parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{c:?} is not a CIDR (like 10.1.2.0/24) or an address"))
            })
            .collect()
    }

    /// `None` when `ip` may be reached, else why not.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        let why = special_address(ip)?;
        let never = ["unspecified", "broadcast", "multicast"]
            .iter()
            .any(|w| why.starts_with(w));
        if self.allow_private && !never {
            None
        } else {
            Some(why)
        }
    }

    /// Resolves `host` (a URL's host: a name or an address literal) and checks every
    /// address; all of them must be allowed, so a name that also resolves inside is refused.
    /// Returns the checked addresses to connect to, in resolver order.
    pub async fn resolve(
        &self,
        host: url::Host<&str>,
        port: u16,
    ) -> std::result::Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = match host {
            url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            url::Host::Domain(name) => {
                let found =
                    tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
                        .await
                        .map_err(|_| format!("resolving {name} timed out"))?
                        .map_err(|e| format!("{name} does not resolve: {e}"))?;
                found.take(MAX_ADDRESSES).collect()
            }
        };
        if addrs.is_empty() {
            return Err("the host resolves to no address".to_owned());
        }
        for a in &addrs {
            if let Some(why) = self.refuses(a.ip()) {
                return Err(format!(
                    "destination {} is {why}; webhooks reach only public addresses unless \
                     [webhooks] allow_private_destinations or allowed_destinations permits it",
                    a.ip()
                ));
            }
        }
        Ok(addrs)
    }
}

/// Checks a webhook URL as given: `http://` or `https://` with a host, no control characters
/// or whitespace anywhere (they would be header or request injection in a hand-made request
/// line), no user name or password, no fragment, at most [`MAX_URL_BYTES`].
pub fn parse_webhook_url(raw: &str) -> std::result::Result<Url, String> {
    if raw.len() > MAX_URL_BYTES {
        return Err(format!("longer than {MAX_URL_BYTES} bytes"));
    }
    if let Some(c) = raw.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "contains a control or whitespace character ({c:?})"
        ));
    }
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http:// and https:// URLs are delivered".to_owned());
    }
    if url.host().is_none() {
        return Err("no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are not supported (the secret signs each event)".into(),
        );
    }
    if url.fragment().is_some() {
        return Err("a fragment is never sent; leave it out".to_owned());
    }
    // What goes on the wire: RFC 3986 characters only (the WHATWG parser leaves a few it
    // tolerates, like `|` or `^`, which an HTTP request target may not carry).
    if let Some(c) = url
        .as_str()
        .chars()
        .find(|c| !c.is_ascii_graphic() || "\"<>\\^`{|}".contains(*c))
    {
        return Err(format!("{c:?} must be percent-encoded"));
    }
    Ok(url)
}

// ---------------------------------------------------------------- transport

/// A boxed future (the transport is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One webhook POST on the wire. Implementations (`prognos_http::webhook_client`) must
/// connect only to addresses [`DestinationPolicy::resolve`] returned for the URL's host —
/// resolving, checking and connecting in one step — follow no redirects, and give up after
/// `timeout`.
pub trait WebhookTransport: Send + Sync {
    /// POSTs `body` to `url` with `headers`; the response status, or why there is none.
    fn post<'a>(
        &'a self,
        url: &'a Url,
        headers: &'a [(&'static str, String)],
        body: &'a [u8],
        timeout: Duration,
    ) -> BoxFuture<'a, std::result::Result<u16, String>>;
}

// ---------------------------------------------------------------- registration

#[derive(utoipa::ToSchema, Debug, Clone, Deserialize)]
pub struct NewWebhook {
    #[schema(
        pattern = "^https?://[A-Za-z0-9.-]+(:(0[0-9]{0,4}|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[!$-;=?-\\[\\]_a-z~]*)?$",
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
    // `provider_path` lies in the webhook's subtree: an exact prefix, never LIKE.
    let hooks = sqlx::query(
        "SELECT w.webhook_id, w.url, w.secret FROM webhooks w
         LEFT JOIN providers p ON p.provider_id = w.provider_id
         WHERE w.provider_id IS NULL
            OR ($1 IS NOT NULL AND p.path IS NOT NULL AND substr($1, 1, length(p.path)) = p.path)
         ORDER BY w.webhook_id",
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
        // The sequence is taken under the write lock every write transaction holds, so it
        // is unique and follows commit order.
        sqlx::query(
            "INSERT INTO outbox (event_id, webhook_id, url, secret, payload, attempts, next_attempt_ms,
                state, created_at_ms, seq)
             VALUES ($1, $2, $3, $4, $5, 0, $6, 'pending', $6,
                (SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox))",
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

impl Service {
    /// Subscribes a webhook. The URL must pass [`parse_webhook_url`] and resolve only to
    /// destinations the [`DestinationPolicy`] allows (422 naming `url` otherwise); a provider
    /// subscribes for its own subtree (or a provider below it).
    pub async fn create_webhook(&self, who: &Principal, new: &NewWebhook) -> Result<Webhook> {
        who.require(Action::Webhooks)?;
        let url = parse_webhook_url(&new.url).map_err(|e| ServiceError::invalid("url", e))?;
        if new.secret.len() < 16 {
            return Err(ServiceError::invalid(
                "secret",
                "needs at least 16 characters",
            ));
        }
        if new.secret.len() > 256 {
            return Err(ServiceError::invalid("secret", "at most 256 bytes"));
        }
        let provider_id = match (who.scope(), &new.provider_id) {
            (None, p) => p.clone(),
            (Some(_), None) => who.provider_id.clone(),
            (Some(_), Some(p)) => {
                let path = self
                    .provider(p)
                    .await
                    .map_err(|_| ServiceError::invalid("provider_id", "unknown provider"))?
                    .path;
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
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return Err(ServiceError::invalid("url", "no host"));
        };
        self.webhook_policy()
            .resolve(host, port)
            .await
            .map_err(|message| ServiceError::Refused {
                field: "url".to_owned(),
                message,
            })?;
        let id = new_id("WH")?;
        let mut tx = self.begin_write().await?;
        let existing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhooks WHERE provider_id = $1 OR ($1 IS NULL AND provider_id IS NULL)",
        )
        .bind(&provider_id)
        .fetch_one(&mut *tx)
        .await?;
        if existing >= MAX_WEBHOOKS_PER_OWNER {
            return Err(ServiceError::Conflict(format!(
                "at most {MAX_WEBHOOKS_PER_OWNER} webhooks per provider"
            )));
        }
        sqlx::query(
            "INSERT INTO webhooks (webhook_id, url, secret, provider_id, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(url.as_str())
        .bind(&new.secret)
        .bind(&provider_id)
        .bind(self.now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Webhook {
            webhook_id: id,
            url: url.as_str().to_owned(),
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
             FROM outbox WHERE ($1 IS NULL OR state = $1) ORDER BY seq, event_id LIMIT $2",
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

    /// Endpoints (webhook ids) whose oldest pending event is due, longest waiting first.
    async fn due_endpoints(&self, limit: usize) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT o.webhook_id FROM outbox o
             WHERE o.state = 'pending' AND o.next_attempt_ms <= $1
               AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.webhook_id = o.webhook_id
                               AND e.state = 'pending' AND e.seq < o.seq)
             ORDER BY o.next_attempt_ms, o.seq LIMIT $2",
        )
        .bind(self.now_ms())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?)
    }

    /// Delivers one endpoint's due events in order, at most `budget`, stopping at the first
    /// failure (which backs the endpoint off: the events behind it wait for it). Returns
    /// (delivered, failed attempts).
    pub async fn deliver_endpoint(
        &self,
        transport: &dyn WebhookTransport,
        webhook_id: &str,
        budget: usize,
    ) -> Result<(usize, usize)> {
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..budget {
            let Some(row) = sqlx::query(
                "SELECT event_id, url, secret, payload, attempts, next_attempt_ms FROM outbox
                 WHERE webhook_id = $1 AND state = 'pending' ORDER BY seq LIMIT 1",
            )
            .bind(webhook_id)
            .fetch_optional(self.pool())
            .await?
            else {
                break;
            };
            if row.get::<i64, _>(5) > self.now_ms() {
                break;
            }
            let event_id: String = row.get(0);
            let url: String = row.get(1);
            let secret: String = row.get(2);
            let payload: String = row.get(3);
            let attempts: i64 = row.get(4);
            let headers = [
                ("content-type", "application/json".to_owned()),
                (
                    "x-prognos-signature",
                    signature(&secret, payload.as_bytes()),
                ),
                ("x-prognos-event-id", event_id.clone()),
            ];
            let result = match parse_webhook_url(&url) {
                // A URL stored before URLs were checked is never sent as it is.
                Err(e) => Err(format!("stored URL refused: {e}")),
                Ok(url) => {
                    // The transport bounds itself; this bounds a transport that does not.
                    let post = transport.post(&url, &headers, payload.as_bytes(), DELIVERY_TIMEOUT);
                    tokio::time::timeout(DELIVERY_TIMEOUT + Duration::from_secs(1), post)
                        .await
                        .unwrap_or_else(|_| Err("timed out".to_owned()))
                }
            };
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
                    let mut random = [0u8; 8];
                    getrandom::fill(&mut random)
                        .map_err(|e| ServiceError::Random(e.to_string()))?;
                    let delay = jittered_backoff_ms(attempts, u64::from_le_bytes(random));
                    tracing::warn!(
                        event_id,
                        webhook_id,
                        attempts,
                        error,
                        "webhook delivery failed"
                    );
                    sqlx::query(
                        "UPDATE outbox SET state = $2, attempts = $3, next_attempt_ms = $4,
                            last_error = $5 WHERE event_id = $1",
                    )
                    .bind(&event_id)
                    .bind(state)
                    .bind(attempts)
                    .bind(now.saturating_add(delay))
                    .bind(&error)
                    .execute(self.pool())
                    .await?;
                    if state == "pending" {
                        break;
                    }
                }
            }
        }
        Ok((ok, failed))
    }

    /// One delivery pass, waited for: every endpoint with a due event, concurrently (at most
    /// [`MAX_CONCURRENT_ENDPOINTS`] at a time), each endpoint's events in order, at most
    /// `per_endpoint` each. Returns (delivered, failed attempts). The service's jobs use the
    /// non-blocking [`Outbox`] instead.
    pub async fn deliver_webhooks(
        &self,
        transport: Arc<dyn WebhookTransport>,
        per_endpoint: usize,
    ) -> Result<(usize, usize)> {
        let mut outbox = Outbox::new(self.clone(), transport, per_endpoint);
        outbox.tick().await?;
        let mut total = (0, 0);
        while let Some(done) = outbox.tasks.join_next().await {
            match done {
                Ok(r) => {
                    let (ok, failed) = r?;
                    total.0 += ok;
                    total.1 += failed;
                }
                Err(e) => tracing::error!(error = %e, "webhook delivery task failed"),
            }
        }
        Ok(total)
    }
}

/// The outbox as the jobs run it: each [`Outbox::tick`] starts a delivery for every
/// endpoint that has a due event and no delivery running, and returns at once — a receiver
/// that never answers holds up only its own events, for at most [`DELIVERY_TIMEOUT`] a try.
pub struct Outbox {
    svc: Service,
    transport: Arc<dyn WebhookTransport>,
    per_endpoint: usize,
    running: Arc<Mutex<HashSet<String>>>,
    permits: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<Result<(usize, usize)>>,
}

/// Takes an endpoint off the running set when its delivery ends (or is aborted).
struct Running {
    set: Arc<Mutex<HashSet<String>>>,
    webhook_id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.webhook_id);
        }
    }
}

impl Outbox {
    pub fn new(svc: Service, transport: Arc<dyn WebhookTransport>, per_endpoint: usize) -> Outbox {
        Outbox {
            svc,
            transport,
            per_endpoint: per_endpoint.max(1),
            running: Arc::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ENDPOINTS)),
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Starts deliveries for due endpoints that have none running; returns how many started.
    /// Finished deliveries are collected (their errors logged).
    pub async fn tick(&mut self) -> Result<usize> {
        while let Some(done) = self.tasks.try_join_next() {
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "webhook delivery failed"),
                Err(e) => tracing::error!(error = %e, "webhook delivery task failed"),
            }
        }
        // Deliveries beyond the concurrency bound wait for a permit; an endpoint already
        // running (or waiting) is not started twice, so its events stay in order.
        let due = self.svc.due_endpoints(MAX_DUE_PER_TICK).await?;
        let mut started = 0;
        for webhook_id in due {
            {
                let Ok(mut set) = self.running.lock() else {
                    break;
                };
                if !set.insert(webhook_id.clone()) {
                    continue;
                }
            }
            let guard = Running {
                set: self.running.clone(),
                webhook_id,
            };
            let (svc, transport, permits, budget) = (
                self.svc.clone(),
                self.transport.clone(),
                self.permits.clone(),
                self.per_endpoint,
            );
            self.tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.ok();
                let r = svc
                    .deliver_endpoint(transport.as_ref(), &guard.webhook_id, budget)
                    .await;
                drop(guard);
                r
            });
            started += 1;
        }
        Ok(started)
    }

    /// Stops every delivery in flight (its event stays pending and is sent again later:
    /// delivery is at least once, receivers deduplicate on `X-Prognos-Event-Id`).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn webhook_urls_are_parsed_strictly() {
        let u = parse_webhook_url("https://hooks.example.com/a/b?x=1").unwrap();
        assert_eq!(
            (
                u.scheme(),
                u.host_str(),
                u.port_or_known_default(),
                u.path()
            ),
            ("https", Some("hooks.example.com"), Some(443), "/a/b")
        );
        let u = parse_webhook_url("http://[::1]:9443/h").unwrap();
        assert_eq!(u.host(), Some(url::Host::Ipv6(Ipv6Addr::LOCALHOST)));
        // Obfuscated IPv4 literals are normalised by the WHATWG parser, so the address
        // check sees the real address.
        let u = parse_webhook_url("http://2130706433/").unwrap();
        assert_eq!(u.host(), Some(url::Host::Ipv4(Ipv4Addr::LOCALHOST)));
        let u = parse_webhook_url("http://0x7f.1/").unwrap();
        assert_eq!(u.host(), Some(url::Host::Ipv4(Ipv4Addr::LOCALHOST)));
        for bad in [
            "ftp://x/",
            "file:///etc/passwd",
            "gopher://x:70/",
            "https://:80/",
            "http://host:port/",
            "http://x/a\r\nHost: evil",
            "http://x/a\nb",
            "http://x/a\tb",
            "http://x/a b",
            "http://x/\u{7f}",
            "http://x/\u{85}",
            "http://user:pw@x/",
            "http://x/#frag",
            "http://x/a|b",
            "http://x/a^b",
            "http://x/?q={1}",
            "x",
            "",
        ] {
            assert!(parse_webhook_url(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_webhook_url(&format!("http://x/{}", "a".repeat(MAX_URL_BYTES))).is_err());
    }

    #[test]
    fn special_addresses_are_refused_unless_allowed() {
        let strict = DestinationPolicy::strict();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "fec0::1",
            "2001:db8::1",
            "100::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(strict.refuses(ip).is_some(), "{ip} allowed");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(strict.refuses(ip), None, "{ip} refused");
        }
        let private = DestinationPolicy::allow_private();
        for ip in ["127.0.0.1", "10.1.2.3", "::1", "fd00::1", "169.254.1.1"] {
            assert_eq!(private.refuses(ip.parse().unwrap()), None, "{ip}");
        }
        // Never a unicast destination, whatever the switch says.
        for ip in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            assert!(private.refuses(ip.parse().unwrap()).is_some(), "{ip}");
        }
        let listed = DestinationPolicy {
            allow_private: false,
            allowed: DestinationPolicy::parse_networks(&["10.1.2.0/24".into(), "::1".into()])
                .unwrap(),
        };
        assert_eq!(listed.refuses("10.1.2.77".parse().unwrap()), None);
        assert_eq!(listed.refuses("::1".parse().unwrap()), None);
        assert!(listed.refuses("10.1.3.1".parse().unwrap()).is_some());
        assert!(listed.refuses("127.0.0.1".parse().unwrap()).is_some());
        assert!(DestinationPolicy::parse_networks(&["10.0.0.0/33".into()]).is_err());
        assert!(DestinationPolicy::parse_networks(&["intranet".into()]).is_err());
    }

    #[tokio::test]
    async fn resolution_checks_every_address() {
        let strict = DestinationPolicy::strict();
        let err = strict
            .resolve(url::Host::Ipv4(Ipv4Addr::LOCALHOST), 80)
            .await
            .unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        // `localhost` is a name that resolves inside: refused like its address.
        let err = strict
            .resolve(url::Host::Domain("localhost"), 80)
            .await
            .unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        let ok = DestinationPolicy::allow_private()
            .resolve(url::Host::Domain("localhost"), 8080)
            .await
            .unwrap();
        assert!(ok.iter().all(|a| a.ip().is_loopback() && a.port() == 8080));
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

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for attempts in [1, 3, 12, 40] {
            let cap = backoff_ms(attempts);
            let mut seen = std::collections::BTreeSet::new();
            for r in [0u64, 1, 7, 12_345, u64::MAX / 3, u64::MAX] {
                let d = jittered_backoff_ms(attempts, r);
                assert!((cap / 2..=cap).contains(&d), "{attempts}: {d}");
                seen.insert(d);
            }
            assert!(seen.len() > 1, "no jitter at {attempts}");
        }
    }
}
