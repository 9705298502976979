//! Serving both planes on already-bound listeners until a shutdown signal,
//! then draining in-flight requests and event deliveries and flushing the
//! store.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::Host;

/// The sockets a host serves on. Bind them first (port 0 in tests) so the
/// caller knows the addresses before serving starts.
pub struct Listeners {
    /// Data plane.
    pub data: TcpListener,
    /// Admin plane; `None` serves no admin API (an embedding application
    /// may nest [`Host::admin_router`] itself).
    pub admin: Option<TcpListener>,
}

impl Host {
    /// Serves until `shutdown` resolves; then stops accepting, lets
    /// in-flight requests finish for up to `grace`, and flushes the store.
    pub async fn serve(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        self.start_events()?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let wait = move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        // With the peer's address: preview-1 (CGI) functions see it as
        // REMOTE_ADDR. Recorded once per connection, not per request.
        let data = axum::serve(listeners.data, crate::gateway::MakeGateway(self.clone()))
            .with_graceful_shutdown(wait());
        let data = tokio::spawn(async move { data.await });
        let admin = listeners.admin.map(|l| {
            let s = axum::serve(l, self.admin_router()).with_graceful_shutdown(wait());
            tokio::spawn(async move { s.await })
        });

        shutdown.await;
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining in-flight requests"
        );
        let _ = tx.send(true);
        let drained = tokio::time::timeout(grace, async {
            let _ = data.await;
            if let Some(a) = admin {
                let _ = a.await;
            }
        });
        // At the same time: no new event deliveries; running ones get the
        // same grace period (those left stay pending for the next start).
        let (drained, ()) = tokio::join!(drained, self.stop_events(grace));
        if drained.is_err() {
            tracing::warn!("grace period over; dropping the requests still in flight");
        }
        let host = self.clone();
        tokio::task::spawn_blocking(move || host.flush()).await??;
        tracing::info!("store flushed; bye");
        Ok(())
    }
}
