//! The listener: loopback only, HTTP/1.1; an outage can close it and cut every open connection,
//! and a restore binds the same port again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Binds `addr` (loopback only) synchronously, so a restore works from any thread.
pub(crate) fn bind(addr: SocketAddr, rt: &tokio::runtime::Handle) -> anyhow::Result<TcpListener> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing to listen on {addr}: the fake API server serves loopback addresses only"
    );
    let std = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    std.set_nonblocking(true)?;
    let _guard = rt.enter();
    Ok(TcpListener::from_std(std)?)
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
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let cut = conns.lock().unwrap_or_else(|p| p.into_inner()).clone();
            tokio::spawn(async move {
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        debug!(%peer, error = %e, "connection ended with an error");
                    },
                    _ = cut.cancelled() => {}
                }
            });
        }
    })
}
