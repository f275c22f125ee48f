//! Listeners: loopback only, HTTP/1.1 with keep-alive, every connection counted and dropped
//! at shutdown (so a stalled body never holds the process).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Binds `addr`, which must be a loopback address.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    coldstart_fakeserve::check_loopback(addr, "fake hub")?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Serves `router` on `listener` until `shutdown` is cancelled; every connection is counted
/// while it lives and cut at shutdown.
pub(crate) fn spawn(
    listener: TcpListener,
    router: Router,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        while let Some((stream, peer)) =
            coldstart_fakeserve::next_connection(&listener, &shutdown).await
        {
            let guard = stats.connection();
            let (router, cut) = (router.clone(), shutdown.clone());
            tokio::spawn(async move {
                coldstart_fakeserve::serve_connection(stream, peer, router, cut).await;
                drop(guard);
            });
        }
    });
}
