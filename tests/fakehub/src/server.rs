//! Listeners: loopback only, HTTP/1.1 with keep-alive, every connection counted and dropped
//! at shutdown (so a stalled body never holds the process).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::stats::Stats;

/// Binds `addr`, which must be a loopback address.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing to listen on {addr}: the fake hub serves loopback addresses only"
    );
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub(crate) fn spawn(
    listener: TcpListener,
    router: Router,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let guard = stats.connection();
            let service = TowerToHyperService::new(router.clone());
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        debug!(%peer, error = %e, "connection ended with an error");
                    },
                    _ = shutdown.cancelled() => {}
                }
                drop(guard);
            });
        }
    });
}
