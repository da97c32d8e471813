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
