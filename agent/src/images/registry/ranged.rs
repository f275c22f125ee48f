//! Reading blobs by byte range, many requests at once, for the parallel layer fetch.
//!
//! A [`BlobReader`] is opened from a [`Repository`] after it served the image's manifest: the
//! same host (mirror or registry), TLS settings and earned authorization, so registry resolution
//! is exactly the manifest's. Redirects (to blob storage) are followed by reqwest, which drops
//! the `Authorization` header when the redirect changes host; the `Range` header goes along.
//! The reader is cheap to clone and shared by every connection of the fetch; a `401` mid-way
//! (a short-lived token expiring) earns a new token once, for all of them.
//!
//! Requests are bounded by a read timeout (no byte for the registry timeout fails the request),
//! not by a total one: a large range on a slow link is legitimate, and the caller's stall rule
//! watches the bytes.

use std::sync::Arc;

use super::artifact::Repository;
use super::{Blob, Error, MAX_ERROR_BYTES, MAX_REDIRECTS, Request, Session, read_limited};

/// Why a ranged read did not return the bytes asked for.
#[derive(Debug)]
pub enum RangeError {
    /// The registry answered `200` with the whole blob to a ranged request: it ignores `Range`.
    Ignored {
        /// The host that answered.
        origin: String,
    },
    /// Any other failure.
    Failed(Error),
}

impl From<Error> for RangeError {
    fn from(e: Error) -> Self {
        RangeError::Failed(e)
    }
}

/// Concurrent ranged reads of one repository's blobs from one host.
#[derive(Clone)]
pub struct BlobReader {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The session that served the manifest; locked only to earn a new token.
    session: tokio::sync::Mutex<Session>,
    /// The `Authorization` value every request sends (refreshed after a 401).
    authorization: std::sync::RwLock<Option<String>>,
    origin: String,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// A reader of blobs from the host that served the last manifest (call
    /// [`Repository::manifest`] first), with its authorization and TLS settings and a read
    /// timeout of `timeout` per request.
    pub fn blob_reader(self, timeout: std::time::Duration) -> Result<BlobReader, Error> {
        let session = self.into_current();
        let http = session.host.streaming_client(timeout, MAX_REDIRECTS)?;
        let origin = session.host.origin();
        Ok(BlobReader {
            inner: Arc::new(Inner {
                http,
                authorization: std::sync::RwLock::new(session.authorization.clone()),
                session: tokio::sync::Mutex::new(session),
                origin,
            }),
        })
    }
}

/// The first byte a `206` answer says it holds (`Content-Range: bytes START-END/TOTAL`).
fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let value = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

impl BlobReader {
    /// `scheme://host` of the registry or mirror read from, for messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Bytes `start..end` of `blob` (the whole blob, without a `Range` header, when that is
    /// `0..size`), each network chunk reported to `on_bytes` as it arrives. Fails with
    /// [`RangeError::Ignored`] when a ranged request is answered with the whole blob.
    pub async fn read(
        &self,
        blob: &Blob,
        start: u64,
        end: u64,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Vec<u8>, RangeError> {
        let whole = start == 0 && end == blob.size;
        let mut resp = self.send(blob, start, end, whole).await?;
        let status = resp.status();
        if !whole && status == reqwest::StatusCode::OK {
            return Err(RangeError::Ignored {
                origin: self.inner.origin.clone(),
            });
        }
        let expected = if whole {
            reqwest::StatusCode::OK
        } else {
            reqwest::StatusCode::PARTIAL_CONTENT
        };
        if status != expected {
            let body = read_limited(resp, MAX_ERROR_BYTES)
                .await
                .unwrap_or_default();
            let session = self.inner.session.lock().await;
            let url = session.host.api_url(
                session.image.domain(),
                session.image.repository(),
                &format!("blobs/{}", blob.digest),
            )?;
            return Err(session.status_error(status, &url, &body).into());
        }
        if !whole && content_range_start(&resp) != Some(start) {
            return Err(Error::Registry(format!(
                "blob {} from {}: a ranged answer not starting at offset {start}, refused",
                blob.digest, self.inner.origin
            ))
            .into());
        }
        let len = end - start;
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(&e))? {
            if data.len() as u64 + chunk.len() as u64 > len {
                return Err(Error::Registry(format!(
                    "blob {} from {}: more than the {len} bytes asked for at offset {start}, refused",
                    blob.digest, self.inner.origin
                ))
                .into());
            }
            data.extend_from_slice(&chunk);
            on_bytes(chunk.len() as u64);
        }
        if data.len() as u64 != len {
            return Err(Error::RegistryUnreachable {
                image: self.image().await,
                reason: format!(
                    "{}: blob {} ended after {} of {len} bytes at offset {start}",
                    self.inner.origin,
                    blob.digest,
                    data.len()
                ),
            }
            .into());
        }
        Ok(data)
    }

    /// The `Authorization` value requests carry now.
    fn authorization(&self) -> Option<String> {
        self.inner
            .authorization
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    async fn image(&self) -> String {
        self.inner.session.lock().await.image.to_string()
    }

    fn transport(&self, e: &reqwest::Error) -> RangeError {
        // The image name is only for the message; the origin says where.
        super::transport_error("blob", &self.inner.origin, e).into()
    }

    /// Sends the GET, answering one authentication challenge (for every reader at once).
    async fn send(
        &self,
        blob: &Blob,
        start: u64,
        end: u64,
        whole: bool,
    ) -> Result<reqwest::Response, RangeError> {
        let url = {
            let s = self.inner.session.lock().await;
            s.host.api_url(
                s.image.domain(),
                s.image.repository(),
                &format!("blobs/{}", blob.digest),
            )?
        };
        let mut challenged = false;
        loop {
            let mut req = Request::get(url.clone());
            if !whole {
                req = req.header(
                    reqwest::header::RANGE,
                    &format!("bytes={start}-{}", end - 1),
                );
            }
            let authorization = self.authorization();
            let resp = {
                let s = self.inner.session.lock().await;
                let mut b = self.inner.http.request(req.method.clone(), req.url.clone());
                for (name, value) in &s.host.header {
                    b = b.header(name.as_str(), value.as_str());
                }
                for (name, value) in &req.headers {
                    b = b.header(name, value.as_str());
                }
                if let Some(a) = &authorization {
                    b = b.header(reqwest::header::AUTHORIZATION, a.as_str());
                }
                b
            }
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED || challenged {
                return Ok(resp);
            }
            challenged = true;
            let mut s = self.inner.session.lock().await;
            // Another reader may have earned a token meanwhile: use it rather than ask again.
            let current = self.authorization();
            if current == authorization {
                let fresh = s.authorize(&resp).await?;
                s.authorization = Some(fresh.clone());
                if let Ok(mut a) = self.inner.authorization.write() {
                    *a = Some(fresh);
                }
            }
        }
    }
}
