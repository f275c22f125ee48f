//! A stateful fake Kubernetes API server for tests (no kube-apiserver is installable here).
//!
//! It keeps JSON objects per resource type (see [`ResourceType`] and [`default_resources`]),
//! namespace and name, with one global resourceVersion, and serves them on loopback plain
//! HTTP the way kube-rs and kubectl expect: discovery, get, list and watch with label and
//! field selectors, create, replace with resourceVersion preconditions, JSON patch, merge
//! patch, a simplified strategic merge patch, server-side apply with field managers in
//! `metadata.managedFields` (conflicts, `force`, removal of fields a manager stops applying;
//! see `managed.rs`), delete, and `status` subresources. Errors are `Status` objects.
//!
//! Fault knobs (outages, injected conflicts), direct object changes "as another manager",
//! history compaction (410 Gone for old watches) and a request log are on the cloneable
//! [`FakeApi`] handle. [`FakeApi::kubeconfig`] writes a kubeconfig for the real binaries.

mod admission;
mod auth;
mod builtin;
mod cel;
mod crd;
mod discovery;
mod error;
mod faults;
mod field;
mod fieldsel;
mod fieldset;
mod gate;
mod gc;
mod handle;
mod managed;
mod merge;
mod paging;
mod rbac;
mod registry;
mod routes;
mod schema;
mod selector;
mod server;
mod shape;
mod store;
mod time;
mod watch;
mod writes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use auth::{NODE_NAME_CLAIM, UserInfo};
pub use faults::{Outage, RequestRecord};
pub use registry::{ResourceType, StatusMode, default_resources};

use auth::Identities;
use faults::Knobs;
use store::Store;

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listener address (loopback only); port 0 picks one.
    pub addr: SocketAddr,
    /// The resources served.
    pub resources: Vec<ResourceType>,
    /// Changes kept for watches to resume from; older versions get 410 Gone.
    pub history: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            resources: default_resources(),
            history: 1000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// State shared by the handlers and the handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    identities: Mutex<Identities>,
    pub(crate) knobs: Knobs,
    pub(crate) addr: SocketAddr,
    pub(crate) bookmark_interval: Duration,
}

impl Shared {
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_identities(&self) -> MutexGuard<'_, Identities> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's user when security is enforced (None when it is not), or the 401.
    pub(crate) fn authenticate(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<auth::UserInfo>, error::ApiError> {
        let ids = self.lock_identities();
        if !ids.enforcing {
            return Ok(None);
        }
        ids.authenticate(headers).map(Some)
    }
}

/// A listener being served: cancelling `stop` closes it once `task` ends.
struct Listening {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The server's life: the root token stops everything; the listener can be closed and opened
/// again, and `conns` (a child of root, replaced after each cut) ends open connections.
struct Lifetime {
    /// The root token and, with [`FakeApi::start_blocking`], the runtime's thread.
    server: coldstart_fakeserve::ServerThread,
    listening: Mutex<Option<Listening>>,
    conns: Arc<Mutex<CancellationToken>>,
    rt: tokio::runtime::Handle,
    router: axum::Router,
}

/// A running fake API server. Cloning gives another handle to the same server; it stops at
/// [`FakeApi::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
    life: Arc<Lifetime>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}
