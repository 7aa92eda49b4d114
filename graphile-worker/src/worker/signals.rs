//! SIGINT/SIGTERM handling for `Worker::run`.

use super::ShutdownHandle;

/// First SIGINT/SIGTERM: graceful shutdown; second: interrupt running jobs.
pub(super) async fn watch_signals(handle: ShutdownHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot watch SIGINT/SIGTERM; stop the worker with its shutdown handle");
            return;
        };
        for count in 1.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if count == 1 {
                tracing::info!(
                    "shutdown signal received; finishing running jobs (send it again to stop at once)"
                );
                handle.shutdown();
            } else {
                tracing::warn!("second shutdown signal; interrupting running jobs");
                handle.shutdown_now();
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            handle.shutdown();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            handle.shutdown_now();
        }
    }
}
