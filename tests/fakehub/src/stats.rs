//! What the fake saw: requests per endpoint, body bytes served, connections, Range headers,
//! and whether the CDN listener ever received an `Authorization` header.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most Range headers kept in the log (older ones are kept, newer dropped past this).
const MAX_RANGES_LOGGED: usize = 100_000;

/// The endpoints the fake counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /api/models/{repo}/revision/{rev}`.
    Revision,
    /// `GET /api/models/{repo}/tree/{rev}`.
    Tree,
    /// `HEAD /{repo}/resolve/{rev}/{path}`.
    ResolveHead,
    /// `GET /{repo}/resolve/{rev}/{path}`.
    ResolveGet,
    /// `HEAD /cdn/{sha256}` on the CDN listener.
    CdnHead,
    /// `GET /cdn/{sha256}` on the CDN listener.
    CdnGet,
    /// Requests refused with 401 for a missing or wrong token.
    Unauthorized,
    /// Anything else (unknown paths, wrong methods).
    Other,
}

const ENDPOINTS: usize = 8;

impl Endpoint {
    fn index(self) -> usize {
        self as usize
    }
}

/// One Range header the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSeen {
    /// The request path (percent-encoded, as received).
    pub path: String,
    /// The header value, e.g. `bytes=0-1023`.
    pub range: String,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Revision lookups.
    pub revision: u64,
    /// Tree pages.
    pub tree: u64,
    /// HEADs on resolve.
    pub resolve_head: u64,
    /// GETs on resolve.
    pub resolve_get: u64,
    /// HEADs on the CDN.
    pub cdn_head: u64,
    /// GETs on the CDN.
    pub cdn_get: u64,
    /// 401 answers.
    pub unauthorized: u64,
    /// Other requests.
    pub other: u64,
    /// File body bytes handed to the connections.
    pub bytes_served: u64,
    /// Connections accepted (both listeners).
    pub connections_total: u64,
    /// Most connections open at once.
    pub connections_max: u64,
}

/// Shared counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: [AtomicU64; ENDPOINTS],
    pub(crate) bytes_served: AtomicU64,
    connections_now: AtomicU64,
    connections_total: AtomicU64,
    connections_max: AtomicU64,
    ranges: Mutex<Vec<RangeSeen>>,
    cdn_saw_auth: AtomicBool,
}

impl Stats {
    pub(crate) fn count(&self, e: Endpoint) {
        self.requests[e.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn requests(&self, e: Endpoint) -> u64 {
        self.requests[e.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn log_range(&self, path: &str, range: &str) {
        let mut log = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() < MAX_RANGES_LOGGED {
            log.push(RangeSeen {
                path: path.to_string(),
                range: range.to_string(),
            });
        }
    }

    pub(crate) fn ranges(&self) -> Vec<RangeSeen> {
        self.ranges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn saw_cdn_auth(&self) {
        self.cdn_saw_auth.store(true, Ordering::Relaxed);
    }

    pub(crate) fn cdn_saw_auth(&self) -> bool {
        self.cdn_saw_auth.load(Ordering::Relaxed)
    }

    /// Counts a new connection; the guard counts it closed when dropped.
    pub(crate) fn connection(self: &std::sync::Arc<Self>) -> ConnectionGuard {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        let now = self.connections_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.connections_max.fetch_max(now, Ordering::SeqCst);
        ConnectionGuard(self.clone())
    }

    pub(crate) fn connections_now(&self) -> u64 {
        self.connections_now.load(Ordering::SeqCst)
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let r = |e| self.requests(e);
        Counters {
            revision: r(Endpoint::Revision),
            tree: r(Endpoint::Tree),
            resolve_head: r(Endpoint::ResolveHead),
            resolve_get: r(Endpoint::ResolveGet),
            cdn_head: r(Endpoint::CdnHead),
            cdn_get: r(Endpoint::CdnGet),
            unauthorized: r(Endpoint::Unauthorized),
            other: r(Endpoint::Other),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_max: self.connections_max.load(Ordering::SeqCst),
        }
    }

    /// Zeroes the counters and the logs (open connections stay counted as open; the maximum
    /// restarts from them).
    pub(crate) fn reset(&self) {
        for r in &self.requests {
            r.store(0, Ordering::Relaxed);
        }
        self.bytes_served.store(0, Ordering::Relaxed);
        self.connections_total.store(0, Ordering::Relaxed);
        self.connections_max
            .store(self.connections_now(), Ordering::SeqCst);
        self.ranges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.cdn_saw_auth.store(false, Ordering::Relaxed);
    }
}

/// Counts one open connection.
pub(crate) struct ConnectionGuard(std::sync::Arc<Stats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_now.fetch_sub(1, Ordering::SeqCst);
    }
}
