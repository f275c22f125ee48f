//! Where one blob's ranges go: written in place into a staging ingest when containerd's content
//! store is on this filesystem ([`super::staging`]), else appended in order through the Content
//! API ([`Ingest`]).

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::Channel;
use tracing::{debug, warn};

use super::K8S_NAMESPACE;
use super::ingest::{Ingest, abort};
use super::staging::{Staged, find_ingest, staging_ref};
use crate::images::Blob;
use crate::images::fetch::ingest_ref;

/// Bound on waiting for containerd to release a staging ingest's lock before the commit (its
/// writer syncs `data` as it closes: seconds for gigabytes on a slow disk).
const RELOCK_WAIT: Duration = Duration::from_secs(600);

/// What the sinks of one fetch share.
#[derive(Clone)]
pub(super) struct Target {
    pub channel: Channel,
    pub lease: String,
    /// containerd's content store root as this process sees it (`None`: stream only).
    pub content: Option<PathBuf>,
}

/// One blob's destination.
pub(super) enum Sink {
    /// Appended through the Content API at the ingest's offset: ranges must come in order.
    Stream(Ingest),
    /// Written in place, in any order; `held` is containerd's writer on the staging ingest,
    /// kept open (its lock) while ranges land.
    Staged { file: Staged, held: Ingest },
}

/// Bound on one abort.
const ABORT_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes the blob's staging ingest, if there is one (a fetch that falls back: containerd's
/// pull never resumes it). The ingest is aborted while this process holds its writer: a writer
/// being closed as the abort runs (one dropped a moment ago) would otherwise write its
/// `updatedat` into the directory the abort is removing, and leave it behind.
pub(super) async fn discard_staged(target: &Target, blob: &Blob) {
    let Some(content) = &target.content else {
        return;
    };
    let reference = staging_ref(blob);
    let found = {
        let (content, r) = (content.clone(), reference.clone());
        tokio::task::spawn_blocking(move || find_ingest(&content, K8S_NAMESPACE, &r))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    };
    if found.is_none() {
        return;
    }
    let held = match open_waiting(target, &reference, blob, RELOCK_BRIEF).await {
        // Another fetch of the same blob is writing it: it stays theirs.
        Err(s) if is_locked(&s) => return,
        held => held,
    };
    if let Err(e) = abort(&target.channel, &reference, ABORT_TIMEOUT).await {
        debug!(%reference, error = %e, "staging ingest not aborted; its lease's expiry collects it");
    }
    drop(held);
}

/// How long a staging ingest's lock is waited for before the blob is left to its holder.
const RELOCK_BRIEF: Duration = Duration::from_secs(10);

/// Opens the ingest `reference`, waiting up to `wait` while another writer holds its lock.
async fn open_waiting(
    target: &Target,
    reference: &str,
    blob: &Blob,
    wait: Duration,
) -> Result<Ingest, tonic::Status> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match Ingest::open(&target.channel, &target.lease, reference.to_owned(), blob).await {
            Err(s) if is_locked(&s) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            res => return res,
        }
    }
}

/// Whether containerd refused an open because another writer holds the ingest.
pub(super) fn is_locked(s: &tonic::Status) -> bool {
    s.message().contains("locked")
}

impl Sink {
    /// Opens the blob's sink: staged when the staging ingest's directory is visible under
    /// `target.content`, streamed under containerd's own ref otherwise. `AlreadyExists` (the
    /// blob is committed) and a held lock come back as the status.
    pub async fn open(target: &Target, blob: &Blob) -> Result<Sink, tonic::Status> {
        if let Some(content) = &target.content {
            let reference = staging_ref(blob);
            // A lock held briefly is most likely this agent's previous attempt, whose writer
            // containerd is still closing (it syncs `data` first); one held longer is another
            // fetch of the same blob, which the caller leaves to it.
            let held = open_waiting(target, &reference, blob, RELOCK_BRIEF).await?;
            let found = {
                let (content, r) = (content.to_path_buf(), reference.clone());
                tokio::task::spawn_blocking(move || find_ingest(&content, K8S_NAMESPACE, &r))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            };
            let staged = match found {
                Ok(Some(dir)) => Staged::open(dir, blob.size).map_err(Some),
                Ok(None) => {
                    debug!(%reference, content = %content.display(), "content store not visible here; through the Content API");
                    Err(None)
                }
                Err(e) => Err(Some(e)),
            };
            match staged {
                Ok(file) => return Ok(Sink::Staged { file, held }),
                Err(e) => {
                    if let Some(e) = e {
                        warn!(%reference, content = %content.display(), error = %e, "staging ingest not writable; through the Content API");
                    }
                    // Aborted while held (see `discard_staged`).
                    let _ = abort(&target.channel, &reference, ABORT_TIMEOUT).await;
                    drop(held);
                }
            }
        }
        let ingest = Ingest::open(&target.channel, &target.lease, ingest_ref(blob), blob).await?;
        Ok(Sink::Stream(ingest))
    }

    /// Bytes from the start already whole (a resumed ingest's).
    pub fn offset(&self) -> u64 {
        match self {
            Sink::Stream(i) => i.offset(),
            Sink::Staged { file, .. } => file.prefix(),
        }
    }

    /// Whether ranges must come in order (the Content API appends only).
    pub fn in_order(&self) -> bool {
        matches!(self, Sink::Stream(_))
    }

    /// The ingest ref this sink writes (what an abort names).
    pub fn reference(blob: &Blob, staged: bool) -> String {
        if staged {
            staging_ref(blob)
        } else {
            ingest_ref(blob)
        }
    }

    /// Whether the sink writes in place.
    pub fn staged(&self) -> bool {
        !self.in_order()
    }

    /// Writes bytes `start..` of the blob (in order for a stream).
    pub async fn put(&mut self, start: u64, data: Vec<u8>) -> Result<(), tonic::Status> {
        match self {
            Sink::Stream(i) => {
                debug_assert_eq!(start, i.offset());
                i.write(data).await
            }
            Sink::Staged { file, .. } => file
                .write(start, data)
                .await
                .map_err(|e| tonic::Status::internal(format!("writing the staging ingest: {e}"))),
        }
    }

    /// Commits the blob with its expected size and digest, which containerd verifies. A staged
    /// blob's writer is closed and opened again first: containerd re-reads `data` (its digest)
    /// and must then hold every byte.
    pub async fn commit(self, target: &Target, blob: &Blob) -> Result<(), tonic::Status> {
        match self {
            Sink::Stream(i) => i.commit().await,
            Sink::Staged { file, held } => {
                drop(held);
                drop(file);
                let ingest = open_waiting(target, &staging_ref(blob), blob, RELOCK_WAIT).await?;
                if ingest.offset() != blob.size {
                    let why = format!(
                        "containerd holds {} of the staging ingest's {} bytes",
                        ingest.offset(),
                        blob.size
                    );
                    // Aborted while this writer holds it (see `discard_staged`).
                    let _ = abort(&target.channel, &staging_ref(blob), ABORT_TIMEOUT).await;
                    drop(ingest);
                    return Err(tonic::Status::data_loss(why));
                }
                ingest.commit().await
            }
        }
    }
}
