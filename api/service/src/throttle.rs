//! Throttling of failed authentication per client address — API keys and console passwords
//! share one bucket per address: a token bucket per address in a bounded map. An address out
//! of tokens gets 429 with `Retry-After` before its key or password is even looked at, so
//! guessing is slow, argon2 is not run for it, and the failure log stays small; other
//! addresses are unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failed authentications an address may make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuthThrottleConfig {
    /// Failures in a row before throttling starts (the bucket size).
    pub burst: u32,
    /// Failures per minute allowed after that (the refill rate).
    pub per_minute: u32,
    /// Addresses tracked at once; past it, addresses whose bucket is full again are
    /// forgotten first, then the least recently failed.
    pub max_clients: usize,
}

impl Default for AuthThrottleConfig {
    fn default() -> Self {
        AuthThrottleConfig {
            burst: 10,
            per_minute: 10,
            max_clients: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Failed-authentication buckets by client address (IPv6 by /64: one host has many).
#[derive(Debug)]
pub struct AuthThrottle {
    config: AuthThrottleConfig,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

impl AuthThrottle {
    pub fn new(config: AuthThrottleConfig) -> Self {
        AuthThrottle {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.config.per_minute.max(1)) / 60.0
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * self.per_sec()).min(f64::from(self.config.burst));
        bucket.updated = now;
    }

    fn wait_for_token(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens).max(0.0) / self.per_sec()).max(0.001))
    }

    /// `Err(retry_after)` when `addr` has no failure left to spend: answer 429 and do not
    /// check its key.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let key = bucket_key(addr);
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = clients.get_mut(&key) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait_for_token(bucket.tokens))
        }
    }

    /// Spends one token of `addr` for a failed authentication; true when that was its last
    /// (it is throttled from now on).
    pub fn failed(&self, addr: IpAddr) -> bool {
        let key = bucket_key(addr);
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.contains_key(&key) && clients.len() >= self.config.max_clients.max(1) {
            self.make_room(&mut clients, now);
        }
        let burst = f64::from(self.config.burst);
        let bucket = clients.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        self.refill(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        bucket.tokens < 1.0
    }

    /// Forgets addresses whose bucket has filled up again (they are as good as new); if none
    /// has, the one that failed least recently. Linear in the map size, which is bounded, and
    /// only paid by a failure from a new address when the map is full.
    fn make_room(&self, clients: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = f64::from(self.config.burst);
        let per_sec = self.per_sec();
        clients.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * per_sec < burst
        });
        if clients.len() >= self.config.max_clients.max(1)
            && let Some(oldest) = clients
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| *k)
        {
            clients.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// IPv4 addresses as they are; IPv6 by their /64 network, which one host usually owns whole.
fn bucket_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::from(segments)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_throttled_after_its_burst_and_others_are_not() {
        let t = AuthThrottle::new(AuthThrottleConfig {
            burst: 3,
            per_minute: 6,
            max_clients: 10,
        });
        for i in 0..3 {
            assert!(t.check(ip("10.0.0.1")).is_ok());
            assert_eq!(t.failed(ip("10.0.0.1")), i == 2);
        }
        let wait = t.check(ip("10.0.0.1")).unwrap_err();
        // 6 a minute: one token every 10 s.
        assert!(
            wait > Duration::from_secs(8) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(t.check(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn ipv6_hosts_share_their_64() {
        let t = AuthThrottle::new(AuthThrottleConfig {
            burst: 1,
            per_minute: 1,
            max_clients: 10,
        });
        t.failed(ip("2001:db8:1:2::1"));
        assert!(t.check(ip("2001:db8:1:2::ffff")).is_err());
        assert!(t.check(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn the_map_stays_bounded() {
        let t = AuthThrottle::new(AuthThrottleConfig {
            burst: 2,
            per_minute: 1,
            max_clients: 16,
        });
        for i in 0..1000u32 {
            t.failed(IpAddr::from(i.to_be_bytes()));
            assert!(t.tracked() <= 16);
        }
        // The most recent failures are still remembered.
        t.failed(IpAddr::from(999u32.to_be_bytes()));
        assert!(t.check(IpAddr::from(999u32.to_be_bytes())).is_err());
    }
}
