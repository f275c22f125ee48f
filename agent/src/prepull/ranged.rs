//! The ranged fetch step of a pre-pull: before the CRI pull, the image's missing blobs are
//! fetched by the agent as parallel byte ranges (see [`crate::images::fetch`]), under a lease
//! that expires, watched by the same stall rule as the pull. When it cannot work (a registry
//! that ignores `Range`, a Content API that refuses) it says why and the CRI pull does
//! everything, as before. A failed fetch is retried like a failed pull and resumes from what
//! containerd committed.

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Event, Options, watched};
use crate::images::{
    Blob, Error, FetchOutcome, FetchProgress, ImageManifest, ImageRef, Images, RegistryAuth,
};

/// What the ranged fetch did, for the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FetchSummary {
    /// Why the CRI pull fetched alone, when it did.
    pub fallback: Option<String>,
    /// Blobs this fetch wrote.
    pub blobs: usize,
    /// Bytes received from the registry, every attempt together.
    pub bytes: u64,
    /// Bytes found in containerd's ingests and not fetched again, every attempt together.
    pub resumed: u64,
    /// Blobs written in place into a staging ingest on the content store's filesystem (the
    /// others were appended through the Content API).
    pub in_place: usize,
    /// Seconds from the first fetch attempt until every blob was in the content store.
    pub seconds: f64,
}

/// The step's state across attempts.
#[derive(Debug, Default)]
pub(super) struct RangedStep {
    lease: Option<String>,
    /// Leases replaced by a renewal, deleted with the current one.
    stale: Vec<String>,
    finished: bool,
    started: Option<Instant>,
    summary: FetchSummary,
}

impl RangedStep {
    /// A step that does nothing when `enabled` is false.
    pub fn new(enabled: bool) -> Self {
        RangedStep {
            finished: !enabled,
            ..RangedStep::default()
        }
    }

    /// What happened, `None` when the step never ran.
    pub fn summary(&self) -> Option<FetchSummary> {
        self.started.map(|_| self.summary.clone())
    }

    /// Runs (or resumes) the fetch unless it finished or fell back already. `Ok` also when
    /// it falls back; an error is one attempt's failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn run<I: Images>(
        &mut self,
        images: &I,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        manifest: Option<&ImageManifest>,
        blobs: &[Blob],
        opts: &Options,
        on_event: &mut impl FnMut(Event),
    ) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        let Some(manifest) = manifest else {
            self.finished = true;
            return Ok(());
        };
        self.started.get_or_insert_with(Instant::now);
        // A fetch still running at 90 % of the lease's life goes on under a new lease: its
        // ingests join the new lease as they are reopened, before the old one expires.
        let renew_after = opts.fetch.lease_ttl.mul_f64(0.9);
        let outcome = loop {
            let Some(lease) = self.lease(images, opts, on_event).await? else {
                return Ok(());
            };
            on_event(Event::Fetching {
                connections: opts.fetch.connections,
            });
            let progress = FetchProgress::default();
            let fetch = images.fetch(image, auth, manifest, &lease, &opts.fetch, &progress);
            let bounded = async {
                match tokio::time::timeout(renew_after, fetch).await {
                    Ok(res) => res.map(Some),
                    Err(_) => Ok(None),
                }
            };
            let res = watched(
                bounded,
                images,
                image,
                blobs,
                opts,
                on_event,
                Some(&progress),
            )
            .await;
            match res {
                Ok(Some(outcome)) => break outcome,
                Ok(None) => {
                    info!(%lease, "fetch outlives its lease; renewing");
                    self.summary.bytes += progress.received();
                    self.stale.extend(self.lease.take());
                }
                Err(e) => {
                    self.summary.bytes += progress.received();
                    return Err(e);
                }
            }
        };
        match outcome {
            FetchOutcome::Fetched {
                blobs,
                bytes,
                resumed,
                in_place,
            } => {
                self.summary.in_place += in_place;
                self.summary.bytes += bytes;
                self.summary.blobs += blobs;
                self.summary.resumed += resumed;
                self.summary.seconds = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                self.finished = true;
                on_event(Event::Fetched(self.summary.clone()));
            }
            FetchOutcome::Fallback(why) => self.fall_back(why, on_event),
        }
        Ok(())
    }

    /// The fetch's lease, created when there is none; `None` when the fetch falls back.
    async fn lease<I: Images>(
        &mut self,
        images: &I,
        opts: &Options,
        on_event: &mut impl FnMut(Event),
    ) -> Result<Option<String>, Error> {
        if let Some(l) = &self.lease {
            return Ok(Some(l.clone()));
        }
        match images.create_lease(opts.fetch.lease_ttl).await {
            Ok(Some(l)) => {
                self.lease = Some(l.clone());
                Ok(Some(l))
            }
            Ok(None) => {
                self.fall_back("this runtime client does not fetch".into(), on_event);
                Ok(None)
            }
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                self.fall_back(format!("containerd refused a lease: {e}"), on_event);
                Ok(None)
            }
        }
    }

    fn fall_back(&mut self, why: String, on_event: &mut impl FnMut(Event)) {
        // A choice, not a fault: the progress output says so; the agent logs it at info.
        info!(reason = %why, "ranged fetch off; containerd's pull fetches alone");
        self.finished = true;
        self.summary.fallback = Some(why.clone());
        on_event(Event::Fallback(why));
    }

    /// Deletes the lease (once the image references the blobs); a failure only costs the
    /// lease's expiry.
    pub async fn release<I: Images>(&mut self, images: &I) {
        for lease in self.stale.drain(..).chain(self.lease.take()) {
            if let Err(e) = images.delete_lease(&lease).await {
                warn!(%lease, error = %e, "fetch lease not deleted; containerd drops it when it expires");
            }
        }
    }
}
