//! A fake Hugging Face Hub for tests and benchmarks.
//!
//! It serves repositories made from directories on disk or from in-memory files with the
//! Hub's protocol: `GET /api/models/{repo}/revision/{rev}`, the paged recursive tree listing,
//! `HEAD`/`GET /{repo}/resolve/{rev}/{path}` with Range support and, optionally, LFS files
//! redirected (302) to a second "CDN" listener on another loopback address. Fault knobs
//! (statuses, truncation, corruption, stalls, pacing, ignored ranges) are set at run time
//! through the cloneable [`FakeHub`] handle, which also exposes what the server saw.
//!
//! It listens on loopback addresses only.

mod api;
mod body;
mod download;
mod faults;
mod handle;
pub mod hashing;
mod routes;
mod server;
mod stats;
mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::watch;

pub use stats::{Counters, Endpoint, RangeSeen};
pub use store::{Commit, FileEntry, LfsInfo};

use body::BodyCtx;
use faults::Knobs;
use stats::Stats;
use store::Store;

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Main listener (loopback only); port 0 picks one.
    pub addr: SocketAddr,
    /// When set, a second listener on this (loopback) address serves `/cdn/{sha256}` and
    /// resolves of LFS files answer 302 to it, like the Hub's CDN redirects. Use another
    /// loopback address than `addr` (e.g. `127.0.0.2:0`) so the host changes.
    pub redirect_lfs_to: Option<SocketAddr>,
    /// Token every request to the main listener must carry as `Authorization: Bearer ...`.
    pub token: Option<String>,
    /// Entries per tree page.
    pub tree_page_size: usize,
    /// Pace each response body (so each keep-alive connection) at this many bytes per second.
    pub rate_limit_per_connection: Option<u64>,
    /// Answer Range requests with 200 and the whole body.
    pub ignore_range: bool,
    /// Longest stall of a body stalled by [`FakeHub::stall_next`].
    pub stall_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            redirect_lfs_to: None,
            token: None,
            tree_page_size: 1000,
            rate_limit_per_connection: None,
            ignore_range: false,
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// State shared by the handlers and the handle.
pub(crate) struct Shared {
    store: RwLock<Store>,
    pub(crate) knobs: Knobs,
    pub(crate) stats: Arc<Stats>,
    pub(crate) token: RwLock<Option<String>>,
    tree_page_size: AtomicUsize,
    redirect_lfs: AtomicBool,
    pub(crate) main_addr: SocketAddr,
    pub(crate) cdn_addr: Option<SocketAddr>,
    release: watch::Sender<u64>,
    stall_timeout: Duration,
}

impl Shared {
    pub(crate) fn read_store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn tree_page_size(&self) -> usize {
        self.tree_page_size.load(Ordering::Relaxed)
    }

    pub(crate) fn redirect_lfs(&self) -> bool {
        self.redirect_lfs.load(Ordering::Relaxed)
    }

    pub(crate) fn body_ctx(&self) -> BodyCtx {
        BodyCtx {
            stats: self.stats.clone(),
            release: self.release.subscribe(),
            stall_timeout: self.stall_timeout,
        }
    }
}

/// Stops the server when the last handle goes.
type Lifetime = coldstart_fakeserve::ServerThread;

/// A running fake Hub. Cloning gives another handle to the same server; the server stops at
/// [`FakeHub::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct FakeHub {
    shared: Arc<Shared>,
    life: Arc<Lifetime>,
}

impl std::fmt::Debug for FakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHub")
            .field("addr", &self.shared.main_addr)
            .field("cdn_addr", &self.shared.cdn_addr)
            .finish_non_exhaustive()
    }
}
