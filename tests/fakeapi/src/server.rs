//! The listener: loopback only, HTTP/1.1; an outage can close it and cut every open connection,
//! and a restore binds the same port again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Binds `addr` (loopback only) synchronously, so a restore works from any thread.
pub(crate) fn bind(addr: SocketAddr, rt: &tokio::runtime::Handle) -> anyhow::Result<TcpListener> {
    coldstart_fakeserve::bind_loopback(addr, "fake API server", rt)
}

/// Serves `router` on `listener` until `stop` is cancelled; the task ends (and the listener is
/// closed) then. Each connection lives until the token in `conns` at its accept time is
/// cancelled, which cuts open connections (watches) without closing the listener.
pub(crate) fn spawn(
    rt: &tokio::runtime::Handle,
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    conns: Arc<Mutex<CancellationToken>>,
) -> JoinHandle<()> {
    rt.spawn(async move {
        while let Some((stream, peer)) =
            coldstart_fakeserve::next_connection(&listener, &stop).await
        {
            let cut = conns.lock().unwrap_or_else(|p| p.into_inner()).clone();
            tokio::spawn(coldstart_fakeserve::serve_connection(
                stream,
                peer,
                router.clone(),
                cut,
            ));
        }
    })
}
