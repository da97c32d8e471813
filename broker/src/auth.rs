//! Device authentication: client id = username = device id, password = the device secret.
//! Named clients (integrations, gateways, test clients) log in with their name and secret
//! and any client id their entry allows, and get their own topic rules ([`TopicAcl`]).
//!
//! The broker does not know where secrets live; the binary hands it an [`AuthCheck`] backed
//! by the device registry. Failed logins are throttled per client id and per remote address
//! (bounded maps), so a password cannot be guessed at line rate and a flood of bad logins
//! costs no registry lookups; every string a client sent is bounded and escaped before it
//! reaches a log line.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rumqttd::protocol::ConnectReturnCode;
use rumqttd::{ConnectDecision, ConnectRequest, TopicAcl, loggable};
use subtle::ConstantTimeEq;
use tracing::warn;

/// Verifies a device's secret, and a named client's login; implemented by the registry.
pub trait AuthCheck: Send + Sync + 'static {
    fn check<'a>(
        &'a self,
        device_id: &'a str,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

    /// A named MQTT client (not a device) logging in: its topic rules when the login is
    /// good, `None` otherwise. The default knows no named clients.
    fn client<'a>(
        &'a self,
        _login: ClientLogin<'a>,
    ) -> Pin<Box<dyn Future<Output = Option<TopicAcl>> + Send + 'a>> {
        Box::pin(async { None })
    }
}

/// What a CONNECT that is not a device's login presents.
#[derive(Debug, Clone, Copy)]
pub struct ClientLogin<'a> {
    /// Empty: no login (an anonymous client, if one is configured).
    pub username: &'a str,
    pub password: &'a str,
    /// Empty: the client asked the broker to assign one.
    pub client_id: &'a str,
}

/// The client id of the broker's own liveness probe (see `probe.rs`). `:` is not allowed in
/// device ids, so no device can have it.
pub(crate) const PROBE_CLIENT_ID: &str = "prognos:probe";

/// Longest client id, username or password accepted (bytes). Device ids are at most 64
/// characters and secrets 64 hex digits; MQTT allows 65,535, which only an attacker uses.
pub const MAX_CREDENTIAL_BYTES: usize = 256;

/// How failed logins are throttled.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failed logins of one client id within `window` after which that id is refused (even
    /// with the right secret) until the window ends.
    pub failures_per_client_id: u32,
    /// Failed logins from one address (an IPv6 /64) within `window` after which every login
    /// from it is refused until the window ends.
    pub failures_per_address: u32,
    pub window: Duration,
    /// Most client ids, and most addresses, tracked at once (memory bound); past it the
    /// expired entries go, then the oldest.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            failures_per_client_id: 5,
            failures_per_address: 30,
            window: Duration::from_secs(60),
            max_tracked: 65_536,
        }
    }
}

/// The broker's view of authentication: enforces the id rules, throttles failures,
/// delegates the secret check, and counts refusals.
#[derive(Clone)]
pub struct Authenticator {
    check: Arc<dyn AuthCheck>,
    throttle: Arc<Throttle>,
    /// The probe's password: random per process, never stored.
    probe_secret: Arc<str>,
}

impl Authenticator {
    pub fn new(check: Arc<dyn AuthCheck>) -> Self {
        Self::with_throttle(check, ThrottleConfig::default())
    }

    pub fn with_throttle(check: Arc<dyn AuthCheck>, config: ThrottleConfig) -> Self {
        let mut secret = [0u8; 32];
        // Without randomness the probe cannot log in (health turns red); never a fixed secret.
        let probe_secret = match getrandom::fill(&mut secret) {
            Ok(()) => hex::encode(secret),
            Err(e) => {
                warn!(error = %e, "no randomness for the MQTT probe secret");
                String::new()
            }
        };
        Self {
            check,
            throttle: Arc::new(Throttle::new(config)),
            probe_secret: probe_secret.into(),
        }
    }

    /// The probe's credentials (client id = username, password).
    pub(crate) fn probe_credentials(&self) -> (&'static str, Arc<str>) {
        (PROBE_CLIENT_ID, self.probe_secret.clone())
    }

    /// Decides a CONNECT. Refusals carry a CONNACK code: bad credentials "bad user name or
    /// password", a throttled id or address "server unavailable" (try later).
    pub async fn decide(&self, request: ConnectRequest) -> ConnectDecision {
        let ConnectRequest {
            client_id,
            username,
            password,
            peer,
        } = request;
        let address = address_key(peer.ip());
        if client_id == PROBE_CLIENT_ID {
            // Never throttled: an attacker must not be able to turn health red by failing
            // logins as the probe.
            let good = !self.probe_secret.is_empty()
                && username == PROBE_CLIENT_ID
                && bool::from(password.as_bytes().ct_eq(self.probe_secret.as_bytes()));
            if good {
                return ConnectDecision::Accept;
            }
            self.refused(&client_id, &username, address, "bad_credentials", false);
            return ConnectDecision::Refuse(ConnectReturnCode::BadUserNamePassword);
        }
        let now = Instant::now();
        if self.throttle.address_throttled(address, now)
            || self.throttle.client_id_throttled(&client_id, now)
        {
            metrics::counter!("prognos_broker_auth_failures_total", "reason" => "throttled")
                .increment(1);
            return ConnectDecision::Refuse(ConnectReturnCode::ServiceUnavailable);
        }
        let oversized = [&client_id, &username, &password]
            .iter()
            .any(|s| s.len() > MAX_CREDENTIAL_BYTES);
        let reason = if oversized {
            Some("oversized_credentials")
        } else if client_id == username
            && !client_id.is_empty()
            && self.check.check(&client_id, &password).await
        {
            None
        } else if let Some(acl) = self
            .check
            .client(ClientLogin {
                username: &username,
                password: &password,
                client_id: &client_id,
            })
            .await
        {
            // A named client: its own topic rules instead of a device's prefix.
            self.throttle.succeeded(&client_id);
            return ConnectDecision::AcceptWithAcl(Arc::new(acl));
        } else if client_id != username {
            Some("client_id_mismatch")
        } else {
            Some("bad_credentials")
        };
        match reason {
            None => {
                self.throttle.succeeded(&client_id);
                ConnectDecision::Accept
            }
            Some(reason) => {
                self.refused(&client_id, &username, address, reason, !oversized);
                ConnectDecision::Refuse(if reason == "oversized_credentials" {
                    ConnectReturnCode::ClientIdentifierNotValid
                } else {
                    ConnectReturnCode::BadUserNamePassword
                })
            }
        }
    }

    /// Counts, logs (bounded and escaped) and records a failed login.
    fn refused(
        &self,
        client_id: &str,
        username: &str,
        address: IpAddr,
        reason: &'static str,
        track_client_id: bool,
    ) {
        metrics::counter!("prognos_broker_auth_failures_total", "reason" => reason).increment(1);
        let now = Instant::now();
        // An oversized client id is not worth a map entry; its address still pays.
        let id_throttled = track_client_id && self.throttle.failed_client_id(client_id, now);
        let address_throttled = self.throttle.failed_address(address, now);
        warn!(
            client_id = %loggable(client_id),
            username = %loggable(username),
            %address,
            reason,
            "MQTT authentication refused"
        );
        if id_throttled || address_throttled {
            warn!(
                client_id = %loggable(client_id),
                %address,
                client_id_throttled = id_throttled,
                address_throttled,
                window_secs = self.throttle.config.window.as_secs(),
                "too many failed MQTT logins: further logins refused for the window"
            );
        }
    }
}

/// The unit a remote address is throttled by: the address itself for IPv4, the /64 for
/// IPv6 (one host usually holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

struct Throttle {
    config: ThrottleConfig,
    client_ids: Mutex<Windows<String>>,
    addresses: Mutex<Windows<IpAddr>>,
}

impl Throttle {
    fn new(config: ThrottleConfig) -> Self {
        Self {
            client_ids: Mutex::new(Windows::default()),
            addresses: Mutex::new(Windows::default()),
            config,
        }
    }

    fn client_id_throttled(&self, client_id: &str, now: Instant) -> bool {
        let limit = self.config.failures_per_client_id;
        lock(&self.client_ids).throttled(client_id, limit, self.config.window, now)
    }

    fn address_throttled(&self, address: IpAddr, now: Instant) -> bool {
        let limit = self.config.failures_per_address;
        lock(&self.addresses).throttled(&address, limit, self.config.window, now)
    }

    /// Returns whether this failure throttled the id.
    fn failed_client_id(&self, client_id: &str, now: Instant) -> bool {
        let c = &self.config;
        lock(&self.client_ids).fail(
            client_id.to_owned(),
            c.failures_per_client_id,
            c.window,
            c.max_tracked,
            now,
        )
    }

    fn failed_address(&self, address: IpAddr, now: Instant) -> bool {
        let c = &self.config;
        lock(&self.addresses).fail(
            address,
            c.failures_per_address,
            c.window,
            c.max_tracked,
            now,
        )
    }

    fn succeeded(&self, client_id: &str) {
        lock(&self.client_ids).0.remove(client_id);
    }
}

/// The maps hold counters only: consistent whatever panicked while one was held.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Failures per key in fixed windows.
struct Windows<K>(HashMap<K, Window>);

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl<K: Hash + Eq + Clone> Windows<K> {
    fn throttled<Q>(&self, key: &Q, limit: u32, window: Duration, now: Instant) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0
            .get(key)
            .is_some_and(|w| now.duration_since(w.start) < window && w.failures >= limit)
    }

    /// Counts a failure; returns whether it reached the limit just now.
    fn fail(&mut self, key: K, limit: u32, window: Duration, max: usize, now: Instant) -> bool {
        if !self.0.contains_key(&key) && self.0.len() >= max.max(1) {
            self.make_room(window, max.max(1), now);
        }
        let entry = self.0.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.duration_since(entry.start) >= window {
            *entry = Window {
                start: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.failures == limit
    }

    /// Drops expired windows; if that is not enough, the oldest eighth.
    fn make_room(&mut self, window: Duration, max: usize, now: Instant) {
        self.0.retain(|_, w| now.duration_since(w.start) < window);
        if self.0.len() < max {
            return;
        }
        let mut starts: Vec<Instant> = self.0.values().map(|w| w.start).collect();
        let cut = (starts.len() / 8).max(1);
        let (_, nth, _) = starts.select_nth_unstable(cut - 1);
        let cutoff = *nth;
        self.0.retain(|_, w| w.start > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_throttles_at_its_limit_and_expires() {
        let mut w = Windows::<String>::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        for i in 1..=3 {
            let hit = w.fail("a".into(), 3, window, 10, t0);
            assert_eq!(hit, i == 3);
        }
        assert!(w.throttled("a", 3, window, t0 + Duration::from_secs(59)));
        assert!(!w.throttled("a", 3, window, t0 + window));
        assert!(!w.throttled("b", 3, window, t0));
        // A failure after the window starts a new count.
        assert!(!w.fail("a".into(), 3, window, 10, t0 + window));
        assert!(!w.throttled("a", 3, window, t0 + window));
    }

    #[test]
    fn the_maps_stay_bounded() {
        let mut w = Windows::<u32>::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        for i in 0..10_000u32 {
            w.fail(i, 3, window, 100, t0 + Duration::from_millis(u64::from(i)));
            assert!(w.0.len() <= 100);
        }
        // The newest stay.
        assert!(w.0.contains_key(&9_999));
    }

    #[test]
    fn ipv6_is_throttled_by_its_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}

/// The vendored topic rules (`rumqttd::acl`), tested here where the tests run.
#[cfg(test)]
mod acl_tests {
    use rumqttd::TopicAcl;
    use rumqttd::acl::{filter_covers, topic_matches};

    fn acl(publish: &[&str], subscribe: &[&str], deny: &[&str]) -> TopicAcl {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        TopicAcl {
            publish: own(publish),
            subscribe: own(subscribe),
            deny: own(deny),
        }
    }

    #[test]
    fn topic_matching_follows_the_specification() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(topic_matches("+", ""));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches("/+", "/TopicA"));
    }

    #[test]
    fn a_rule_covers_a_filter_only_when_it_matches_all_its_topics() {
        assert!(filter_covers(
            "prognos/v1/+/telemetry",
            "prognos/v1/+/telemetry"
        ));
        assert!(filter_covers(
            "prognos/v1/+/telemetry",
            "prognos/v1/pump-1/telemetry"
        ));
        assert!(!filter_covers("prognos/v1/+/telemetry", "prognos/v1/#"));
        assert!(!filter_covers("prognos/v1/+/telemetry", "#"));
        assert!(!filter_covers(
            "prognos/v1/pump-1/telemetry",
            "prognos/v1/+/telemetry"
        ));
        assert!(filter_covers("#", "a/#"));
        assert!(filter_covers("a/#", "a/+/b"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("#", "$SYS/#"));
    }

    #[test]
    fn deny_rules_win_even_through_wildcards() {
        let a = acl(&["#"], &["#"], &["nosubscribe", "secret/#"]);
        assert!(a.allows_subscribe("TopicA/+"));
        assert!(!a.allows_subscribe("nosubscribe"));
        assert!(!a.allows_subscribe("secret/x"));
        // `#` could deliver a denied topic, so it is refused too.
        assert!(!a.allows_subscribe("#"));
        assert!(!a.allows_subscribe("+/x"));
        assert!(a.allows_publish("TopicA"));
        assert!(!a.allows_publish("secret/x"));
        assert!(!a.allows_subscribe("$share/g/secret/x"));
        assert!(a.allows_subscribe("$share/g/TopicA"));
        assert!(!a.allows_subscribe("$share/nofilter"));
    }

    #[test]
    fn a_read_only_client_cannot_publish() {
        let a = acl(&[], &["prognos/v1/+/telemetry"], &[]);
        assert!(a.allows_subscribe("prognos/v1/+/telemetry"));
        assert!(!a.allows_subscribe("prognos/v1/+/commands"));
        assert!(!a.allows_publish("prognos/v1/pump-1/telemetry"));
    }
}
