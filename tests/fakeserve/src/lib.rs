//! What the in-repo fake servers (the fake Kubernetes API server and the fake Hub) share, so
//! their start-up and shutdown cannot drift apart: listeners that refuse any address but
//! loopback, an accept loop that backs off instead of spinning, HTTP/1.1 connections that end
//! when a token is cancelled, a server thread joined when the last handle goes, and the signal
//! wait of their binaries.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Refuses any address but loopback: no test server is ever reachable from elsewhere.
/// `what` names the server in the error.
pub fn check_loopback(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing to listen on {addr}: the {what} serves loopback addresses only"
    );
    Ok(())
}

/// Binds a loopback `addr` synchronously (so it works from any thread) for the runtime `rt`.
pub fn bind_loopback(
    addr: SocketAddr,
    what: &str,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<TcpListener> {
    check_loopback(addr, what)?;
    let std = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    std.set_nonblocking(true)?;
    let _guard = rt.enter();
    Ok(TcpListener::from_std(std)?)
}

/// The next connection, with `TCP_NODELAY` set; `None` once `stop` is cancelled. A failed
/// accept (EMFILE and friends) is logged and retried after a short pause.
pub async fn next_connection(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Serves `router` on one connection (HTTP/1.1, keep-alive) until the client goes or `cut`
/// is cancelled.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    cut: CancellationToken,
) {
    let service = TowerToHyperService::new(router);
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        r = conn => if let Err(e) = r {
            debug!(%peer, error = %e, "connection ended with an error");
        },
        _ = cut.cancelled() => {}
    }
}

/// A server's life: cancelling `stop` ends it; a server started on a runtime of its own also
/// has that runtime's thread, joined when this drops (the last handle of the server went).
#[derive(Debug)]
pub struct ServerThread {
    stop: CancellationToken,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ServerThread {
    /// A life ended by `stop`, with no thread of its own yet.
    pub fn new(stop: CancellationToken) -> ServerThread {
        ServerThread {
            stop,
            thread: Mutex::new(None),
        }
    }

    /// The token that stops the server.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Joins `thread` (the server's runtime) when this drops.
    pub fn own_thread(&self, thread: std::thread::JoinHandle<()>) {
        *self.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
    }

    /// Stops the server and waits for its runtime's thread, if it has one (idempotent).
    pub fn stop_and_join(&self) {
        self.stop.cancel();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A two-worker runtime named after `name` on a thread of its own, running until `stop` is
/// cancelled: for servers started from synchronous tests and programs.
pub fn runtime_thread(
    name: &str,
    stop: CancellationToken,
) -> anyhow::Result<(tokio::runtime::Handle, std::thread::JoinHandle<()>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("{name}-rt"))
        .enable_all()
        .build()
        .context("building the runtime")?;
    let handle = rt.handle().clone();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            rt.block_on(stop.cancelled());
            rt.shutdown_timeout(Duration::from_secs(5));
        })
        .with_context(|| format!("spawning the {name} thread"))?;
    Ok((handle, thread))
}

/// Waits for SIGTERM or SIGINT (the binaries' way to stop).
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
