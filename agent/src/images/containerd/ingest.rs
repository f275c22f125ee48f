//! Writing one blob into containerd's content store through its Content API, under a lease.
//!
//! `Content.Write` is a bidirectional stream holding the ingest's lock (one writer per ref);
//! every write lands at the ingest's current offset (containerd appends only). An [`Ingest`]
//! opens the stream with a `Stat` to learn the committed offset (what a restarted fetch
//! resumes from), then pipelines writes: requests go through a small channel while a task
//! reads containerd's acknowledgements, so the socket is never idle waiting for a round trip.
//! `Commit` carries the expected size and digest; containerd verifies both and refuses the
//! commit otherwise. Every request carries the `k8s.io` namespace and the fetch's lease, so
//! the ingest and the committed blob belong to the lease until CRI's image references them.

use std::time::Duration;

use containerd_client::services::v1 as ctd;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;
use tonic::Request;
use tonic::transport::Channel;

use super::{K8S_NAMESPACE, in_k8s_namespace};
use crate::images::Blob;

/// Label that makes containerd's garbage collector drop a lease after the given time.
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// Most bytes in one Write message (containerd accepts 16 MiB).
const MAX_MESSAGE: usize = 4 << 20;
/// Write messages queued ahead of containerd's acknowledgements.
const PIPELINE: usize = 4;

/// `msg` in namespace `k8s.io` under `lease`, with no deadline (a long write stream; the
/// caller's stall rule watches it).
fn request<T>(msg: T, lease: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(K8S_NAMESPACE),
    );
    if let Ok(v) = lease.parse() {
        req.metadata_mut().insert("containerd-lease", v);
    }
    req
}

/// A removal's answer: what is already gone counts as removed.
fn gone_is_fine<T>(res: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
    match res {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(s),
    }
}

/// Creates a lease in `k8s.io` that containerd collects `ttl` from now; returns its id.
pub(super) async fn create_lease(
    channel: &Channel,
    ttl: Duration,
    timeout: Duration,
) -> Result<String, tonic::Status> {
    let now = Timestamp::now();
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::from_hours(24));
    let expire = now.saturating_add(ttl).unwrap_or(now);
    let id = format!("coldstart.dev/fetch-{}", now.as_nanosecond());
    let req = in_k8s_namespace(
        ctd::CreateRequest {
            id,
            labels: [(EXPIRE_LABEL.to_owned(), expire.to_string())].into(),
        },
        timeout,
    );
    let resp = ctd::leases_client::LeasesClient::new(channel.clone())
        .create(req)
        .await?;
    resp.into_inner()
        .lease
        .map(|l| l.id)
        .ok_or_else(|| tonic::Status::internal("lease created without an id"))
}

/// Deletes lease `id` (its blobs stay while an image references them).
pub(super) async fn delete_lease(
    channel: &Channel,
    id: &str,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let req = in_k8s_namespace(
        ctd::DeleteRequest {
            id: id.to_owned(),
            sync: false,
        },
        timeout,
    );
    gone_is_fine(
        ctd::leases_client::LeasesClient::new(channel.clone())
            .delete(req)
            .await,
    )
}

/// Whether blob `digest` is committed in `k8s.io`; when it is, adds it to `lease` so that it
/// stays until the CRI pull references it.
pub(super) async fn present(
    channel: &Channel,
    lease: &str,
    digest: &str,
    timeout: Duration,
) -> Result<bool, tonic::Status> {
    let req = in_k8s_namespace(
        ctd::InfoRequest {
            digest: digest.to_owned(),
        },
        timeout,
    );
    match ctd::content_client::ContentClient::new(channel.clone())
        .info(req)
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(false),
        Err(s) => return Err(s),
    }
    let req = in_k8s_namespace(
        ctd::AddResourceRequest {
            id: lease.to_owned(),
            resource: Some(ctd::Resource {
                id: digest.to_owned(),
                r#type: "content".to_owned(),
            }),
        },
        timeout,
    );
    ctd::leases_client::LeasesClient::new(channel.clone())
        .add_resource(req)
        .await?;
    Ok(true)
}

/// Drops the ingest `reference` (its bytes are discarded).
pub(super) async fn abort(
    channel: &Channel,
    reference: &str,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let req = in_k8s_namespace(
        ctd::AbortRequest {
            r#ref: reference.to_owned(),
        },
        timeout,
    );
    gone_is_fine(
        ctd::content_client::ContentClient::new(channel.clone())
            .abort(req)
            .await,
    )
}

/// An open write of one blob: holds containerd's lock on the ingest until dropped.
pub(super) struct Ingest {
    reference: String,
    blob: Blob,
    tx: mpsc::Sender<ctd::WriteContentRequest>,
    acks: tokio::task::JoinHandle<Result<(), tonic::Status>>,
    offset: u64,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.acks.abort();
    }
}

impl Ingest {
    /// Opens (or resumes) the ingest `reference` of `blob` under `lease`. Returns it with the
    /// bytes containerd already holds. A blob already committed fails with `AlreadyExists`.
    pub async fn open(
        channel: &Channel,
        lease: &str,
        reference: String,
        blob: &Blob,
    ) -> Result<Ingest, tonic::Status> {
        let (tx, mut rx) = mpsc::channel::<ctd::WriteContentRequest>(PIPELINE);
        let total = i64::try_from(blob.size).unwrap_or(i64::MAX);
        tx.send(ctd::WriteContentRequest {
            action: ctd::WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total,
            expected: blob.digest.clone(),
            ..Default::default()
        })
        .await
        .map_err(|_| tonic::Status::internal("write stream closed"))?;
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut responses = ctd::content_client::ContentClient::new(channel.clone())
            .max_decoding_message_size(1 << 20)
            .write(request(stream, lease))
            .await?
            .into_inner();
        let stat = responses
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("write stream ended before its status"))?;
        let offset = u64::try_from(stat.offset).unwrap_or(0);
        // Acknowledgements of writes are read as they come; the commit's is the last.
        let acks = tokio::spawn(async move {
            while let Some(r) = responses.message().await? {
                if r.action == ctd::WriteAction::Commit as i32 {
                    return Ok(());
                }
            }
            Err(tonic::Status::unavailable(
                "containerd closed the write stream before the commit",
            ))
        });
        Ok(Ingest {
            reference,
            blob: blob.clone(),
            tx,
            acks,
            offset,
        })
    }

    /// Bytes containerd holds (or has been sent) of the blob.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends `data` at the current offset.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), tonic::Status> {
        let messages: Vec<Vec<u8>> = if data.len() <= MAX_MESSAGE {
            vec![data]
        } else {
            data.chunks(MAX_MESSAGE).map(<[u8]>::to_vec).collect()
        };
        for data in messages {
            let len = data.len() as u64;
            let req = ctd::WriteContentRequest {
                action: ctd::WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
                data,
                ..Default::default()
            };
            if self.tx.send(req).await.is_err() {
                return Err(self.failure().await);
            }
            self.offset += len;
        }
        Ok(())
    }

    /// Commits the blob: containerd checks its size and digest.
    pub async fn commit(mut self) -> Result<(), tonic::Status> {
        let req = ctd::WriteContentRequest {
            action: ctd::WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
            total: i64::try_from(self.blob.size).unwrap_or(i64::MAX),
            expected: self.blob.digest.clone(),
            ..Default::default()
        };
        if self.tx.send(req).await.is_err() {
            return Err(self.failure().await);
        }
        (&mut self.acks)
            .await
            .unwrap_or_else(|e| Err(tonic::Status::cancelled(e.to_string())))
    }

    /// Why the stream ended.
    async fn failure(&mut self) -> tonic::Status {
        match (&mut self.acks).await {
            Ok(Err(s)) => s,
            Ok(Ok(())) => tonic::Status::internal("write stream ended after a commit"),
            Err(e) => tonic::Status::cancelled(e.to_string()),
        }
    }
}
