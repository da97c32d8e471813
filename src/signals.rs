//! Signals: SIGTERM and SIGINT cancel the shutdown token (graceful drain).

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `token` on SIGINT or SIGTERM. The handlers are registered before this returns,
/// so a signal sent right after the caller announces readiness is not lost.
pub fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            info!("signal received: draining");
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        tokio::signal::ctrl_c().await.ok();
        token.cancel();
    });
    Ok(())
}

/// Reloads the MQTT TLS certificate and key on SIGHUP (e.g. after a renewal) until `stop`.
/// A file that does not load is logged and the certificate in use stays.
pub fn reload_tls_on_hangup(
    tls: prognos_broker::TlsReload,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    received = hangup.recv() => if received.is_none() { return },
                }
                match tls.reload() {
                    Ok(()) => info!("SIGHUP: MQTT TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: MQTT TLS certificate not reloaded; the previous one stays in use")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (tls, stop);
    Ok(())
}
