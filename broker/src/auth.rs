//! Device authentication: client id = username = device id, password = the device secret.
//!
//! The broker does not know where secrets live; the binary hands it an [`AuthCheck`] backed
//! by the device registry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::warn;

/// Verifies a device's secret; implemented by the registry.
pub trait AuthCheck: Send + Sync + 'static {
    fn check<'a>(
        &'a self,
        device_id: &'a str,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// The broker's view of authentication: enforces the id rules, delegates the secret check,
/// and counts failures.
#[derive(Clone)]
pub struct Authenticator {
    check: Arc<dyn AuthCheck>,
}

impl Authenticator {
    pub fn new(check: Arc<dyn AuthCheck>) -> Self {
        Self { check }
    }

    pub async fn verify(&self, client_id: &str, username: &str, password: &str) -> bool {
        let reason = if client_id != username {
            Some("client_id_mismatch")
        } else if !self.check.check(client_id, password).await {
            Some("bad_credentials")
        } else {
            None
        };
        match reason {
            None => true,
            Some(reason) => {
                metrics::counter!("prognos_broker_auth_failures_total", "reason" => reason)
                    .increment(1);
                warn!(client_id, username, reason, "MQTT authentication refused");
                false
            }
        }
    }
}
