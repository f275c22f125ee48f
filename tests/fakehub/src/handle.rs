//! [`FakeHub`]'s methods: start and stop, repositories, knobs, counters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::stats::{Counters, Endpoint, RangeSeen, Stats};
use crate::store::{self, Commit, Store};
use crate::{FakeHub, Lifetime, Options, Shared, routes, server};

impl FakeHub {
    /// Binds the listeners and serves on the current tokio runtime.
    pub async fn start(opts: Options) -> anyhow::Result<FakeHub> {
        let (shared, shutdown) = start_servers(opts, CancellationToken::new()).await?;
        Ok(FakeHub {
            shared,
            life: Arc::new(Lifetime::new(shutdown)),
        })
    }

    /// Starts the fake on a runtime of its own, on its own thread (for synchronous tests and
    /// programs). The thread ends at [`FakeHub::shutdown`] or when the last handle is dropped.
    pub fn start_blocking(opts: Options) -> anyhow::Result<FakeHub> {
        let stop = CancellationToken::new();
        let (rt, thread) = coldstart_fakeserve::runtime_thread("fake-hub", stop.clone())?;
        let life = Lifetime::new(stop.clone());
        life.own_thread(thread);
        // One token stops the servers and the runtime. They start on the runtime (the caller
        // may itself be inside another runtime, where blocking on a future panics). On failure
        // `life` drops: the runtime stops and its thread is joined.
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(start_servers(opts, stop).await);
        });
        let (shared, _) = rx.recv().context("the fake hub's runtime stopped")??;
        Ok(FakeHub {
            shared,
            life: Arc::new(life),
        })
    }

    /// Stops both listeners and drops every open connection (idempotent). With
    /// [`FakeHub::start_blocking`] it also waits for the server thread.
    pub fn shutdown(&self) {
        self.life.stop_and_join();
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give clients (`HF_ENDPOINT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.main_addr)
    }

    /// The main listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.main_addr
    }

    /// `http://127.0.0.2:PORT` of the CDN listener, when there is one.
    pub fn cdn_url(&self) -> Option<String> {
        self.shared.cdn_addr.map(|a| format!("http://{a}"))
    }

    /// The CDN listener's address, when there is one.
    pub fn cdn_addr(&self) -> Option<SocketAddr> {
        self.shared.cdn_addr
    }

    // --- repositories ---

    /// Adds a commit made of every file under `dir` (symlinks followed, `.git` skipped) to
    /// `repo_id` and points `revision` at it. Hashes every file (blocking, in parallel): from
    /// async code, call it before starting heavy traffic or inside `spawn_blocking`.
    pub fn add_repo_from_dir(
        &self,
        repo_id: &str,
        dir: &Path,
        revision: &str,
    ) -> anyhow::Result<Commit> {
        let commit = store::commit_from_dir(repo_id, dir)?;
        self.write_store().insert(revision, commit.clone());
        Ok(commit)
    }

    /// Adds a commit made of in-memory `(path, content)` files to `repo_id` and points
    /// `revision` at it. Paths are served verbatim, hostile ones (`../x`, `/abs`, `a\b`)
    /// included; a repeated path keeps its last content.
    pub fn add_repo_files(
        &self,
        repo_id: &str,
        revision: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> Commit {
        let commit = store::commit_from_files(repo_id, files);
        self.write_store().insert(revision, commit.clone());
        commit
    }

    /// Points `revision` (a branch or tag name) of `repo_id` at an existing commit.
    pub fn set_ref(&self, repo_id: &str, revision: &str, commit_id: &str) -> anyhow::Result<()> {
        let mut store = self.write_store();
        let commit = store
            .resolve(repo_id, commit_id)
            .map_err(|m| anyhow::anyhow!("{repo_id}@{commit_id}: {m:?} not found"))?;
        store.insert(revision, commit);
        Ok(())
    }

    /// The commit `rev` (name or commit id) of `repo_id` points at.
    pub fn commit(&self, repo_id: &str, rev: &str) -> Option<Commit> {
        self.shared.read_store().resolve(repo_id, rev).ok()
    }

    fn write_store(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.shared.store.write().unwrap_or_else(|p| p.into_inner())
    }

    // --- knobs ---

    /// Requires `Authorization: Bearer <token>` on the main listener (`None`: no auth).
    pub fn set_token(&self, token: Option<&str>) {
        *self.shared.token.write().unwrap_or_else(|p| p.into_inner()) = token.map(str::to_string);
    }

    /// Turns the 302-to-CDN answer for LFS files on or off (on by default when the fake has
    /// a CDN listener; off, LFS files are served directly with 200).
    pub fn set_redirect_lfs(&self, on: bool) {
        self.shared.redirect_lfs.store(on, Ordering::Relaxed);
    }

    /// Answer Range requests with 200 and the whole body.
    pub fn set_ignore_range(&self, on: bool) {
        self.shared.knobs.set_ignore_range(on);
    }

    /// Cuts the next file body after `n_bytes` (at most one byte short of its end) and closes
    /// the connection. Calls queue up: one per body.
    pub fn truncate_next(&self, n_bytes: u64) {
        self.shared.knobs.truncate_next(n_bytes);
    }

    /// Cuts every `nth` file body after `n_bytes` (at most one byte short of its end);
    /// `nth == 0` turns it off.
    pub fn truncate_every(&self, nth: u64, n_bytes: u64) {
        self.shared.knobs.truncate_every(nth, n_bytes);
    }

    /// Flips the first byte of the next non-empty file body.
    pub fn corrupt_next(&self) {
        self.shared.knobs.corrupt_next(1);
    }

    /// Answers the next `count` resolve and CDN requests (HEAD or GET) with `code`, plus
    /// `Retry-After: <secs>` when given. Replaces an earlier setting; `count == 0` clears.
    pub fn status_next(&self, code: u16, retry_after: Option<u32>, count: u32) {
        self.shared
            .knobs
            .status_next(code, retry_after, count, false);
    }

    /// Like [`FakeHub::status_next`], for the API (revision and tree) requests.
    pub fn status_next_api(&self, code: u16, retry_after: Option<u32>, count: u32) {
        self.shared
            .knobs
            .status_next(code, retry_after, count, true);
    }

    /// The next file body sends half its bytes (at most 64 KiB) and then stalls, connection
    /// open, until [`FakeHub::release_stalls`] or the stall timeout; then it goes on.
    pub fn stall_next(&self) {
        self.shared.knobs.stall_next(1);
    }

    /// Resumes every stalled body and drops pending stalls.
    pub fn release_stalls(&self) {
        self.shared.knobs.clear_stalls();
        self.shared.release.send_modify(|g| *g += 1);
    }

    /// Paces every new body at `bytes_per_sec` (`None`: full speed).
    pub fn set_rate_limit_per_connection(&self, bytes_per_sec: Option<u64>) {
        self.shared.knobs.set_rate(bytes_per_sec);
    }

    /// Every new file body sends `bytes` bytes every `every` (the wait first), until
    /// [`FakeHub::clear_faults`]: a server that keeps a connection alive without serving it.
    /// `None` (or 0 bytes) stops it for new bodies.
    pub fn drip(&self, drip: Option<(u64, Duration)>) {
        self.shared.knobs.set_drip(drip);
    }

    /// The revision API answers `sha` as the commit of any revision (a server that answers
    /// for something else than was asked); `None` answers truthfully again.
    pub fn answer_revision_with(&self, sha: Option<&str>) {
        self.shared
            .knobs
            .set_revision_answer(sha.map(str::to_string));
    }

    /// Appends `n` made-up files (`pad/0000000.dat`, ..., 1 byte each, never downloadable) to
    /// every tree listing, all on its last page, generated as the body streams (the fake holds
    /// none of them): a huge listing for memory and cap tests. 0 turns it off.
    pub fn pad_tree(&self, n: u64) {
        self.shared.knobs.set_tree_padding(n);
    }

    /// Entries per tree page (at least 1).
    pub fn set_tree_page_size(&self, n: usize) {
        self.shared
            .tree_page_size
            .store(n.max(1), Ordering::Relaxed);
    }

    /// Clears every fault knob (ignore-range and the rate limit too) and releases stalls.
    pub fn clear_faults(&self) {
        self.shared.knobs.clear();
        self.release_stalls();
    }

    // --- what it saw ---

    /// All counters at once.
    pub fn counters(&self) -> Counters {
        self.shared.stats.snapshot()
    }

    /// Requests seen by one endpoint.
    pub fn requests(&self, e: Endpoint) -> u64 {
        self.shared.stats.requests(e)
    }

    /// File body bytes handed to connections.
    pub fn bytes_served(&self) -> u64 {
        self.shared.stats.bytes_served.load(Ordering::Relaxed)
    }

    /// Most connections open at once (both listeners).
    pub fn max_connections(&self) -> u64 {
        self.shared.stats.snapshot().connections_max
    }

    /// Connections open now.
    pub fn open_connections(&self) -> u64 {
        self.shared.stats.connections_now()
    }

    /// Every Range header received, in order (the first 100 000).
    pub fn ranges_seen(&self) -> Vec<RangeSeen> {
        self.shared.stats.ranges()
    }

    /// Whether any request to the CDN listener carried an `Authorization` header.
    pub fn cdn_saw_auth(&self) -> bool {
        self.shared.stats.cdn_saw_auth()
    }

    /// Zeroes the counters, the Range log and the CDN auth flag.
    pub fn reset_counters(&self) {
        self.shared.stats.reset();
    }
}

/// Binds and serves on the current runtime until `shutdown` is cancelled.
async fn start_servers(
    opts: Options,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Shared>, CancellationToken)> {
    let main = server::bind(opts.addr).await?;
    let cdn = match opts.redirect_lfs_to {
        Some(a) => Some(server::bind(a).await?),
        None => None,
    };
    let main_addr = main.local_addr()?;
    let cdn_addr = cdn.as_ref().map(|l| l.local_addr()).transpose()?;
    let shared = Arc::new(Shared {
        store: RwLock::new(Store::default()),
        knobs: Default::default(),
        stats: Arc::new(Stats::default()),
        token: RwLock::new(opts.token),
        tree_page_size: AtomicUsize::new(opts.tree_page_size.max(1)),
        redirect_lfs: AtomicBool::new(cdn_addr.is_some()),
        main_addr,
        cdn_addr,
        release: watch::channel(0).0,
        stall_timeout: opts.stall_timeout,
    });
    shared.knobs.set_ignore_range(opts.ignore_range);
    shared.knobs.set_rate(opts.rate_limit_per_connection);
    server::spawn(
        main,
        routes::main_router(shared.clone()),
        shared.stats.clone(),
        shutdown.clone(),
    );
    if let Some(l) = cdn {
        server::spawn(
            l,
            routes::cdn_router(shared.clone()),
            shared.stats.clone(),
            shutdown.clone(),
        );
    }
    Ok((shared, shutdown))
}
