//! Pushing and pulling OCI artifacts (the compile caches' export and import) with the same host
//! resolution, TLS and token auth as the image manifests: one registry client, one TLS stack.
//!
//! What artifact transfer needs beyond reading manifests: raw manifests with their annotations,
//! blob existence checks (`HEAD`), blob download into a file verified against its digest and
//! size, monolithic blob upload (`POST` an upload session, `PUT` the bytes with `?digest=`) and
//! manifest `PUT`. Pushes go to the first host whose `hosts.toml` capabilities include `push`
//! (the registry itself unless configured otherwise); pulls try the hosts that may resolve, in
//! order, and fetch blobs from the host that served the manifest.
//!
//! Cross-repository mounts are not used: an artifact's blobs are its own (a cache layer is
//! never shared with another repository), so `HEAD` then upload is all a push needs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::host::RegistryHost;
use super::manifest::{OCI_MANIFEST, hex, verify};
use super::{
    Access, Blob, Error, ImageRef, MAX_ERROR_BYTES, MAX_MANIFEST_BYTES, MAX_REDIRECTS,
    RegistryAuth, RegistryClient, Request, RequestBody, Session, hosts, read_limited,
    registry_message,
};

/// A manifest as stored: its bytes, digest and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    /// `sha256:` of `body`.
    pub digest: String,
    /// The bytes the registry served.
    pub body: Vec<u8>,
    /// `artifactType`, when set.
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs.
    pub layers: Vec<Blob>,
    /// `annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// One repository of one registry, opened for pulling or pushing.
pub struct Repository {
    sessions: Vec<Session>,
    /// The session that served the last manifest (blobs come from it).
    current: usize,
    repo: ImageRef,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("repo", &self.repo.name())
            .field("hosts", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// `repo` (`registry/path`, tag or digest ignored) opened for `access`. `auth` goes to the
    /// registry itself, never to a mirror.
    pub fn repository(
        &self,
        repo: &ImageRef,
        auth: Option<&RegistryAuth>,
        access: Access,
    ) -> Result<Repository, Error> {
        let domain = repo.domain();
        let hosts: Vec<RegistryHost> =
            hosts::resolve(self.hosts_dir.as_deref(), domain, repo.registry_api_host())?
                .into_iter()
                .filter(|h| match access {
                    Access::Pull => h.can_resolve(),
                    Access::Push => h.can_push(),
                })
                .collect();
        let hosts: Vec<RegistryHost> = match access {
            Access::Pull => hosts,
            // Pushes go to one place: the first host allowed to take them.
            Access::Push => hosts.into_iter().take(1).collect(),
        };
        if hosts.is_empty() {
            let what = match access {
                Access::Pull => "resolve",
                Access::Push => "push",
            };
            return Err(Error::Registry(format!(
                "no host configured for {domain} may {what}"
            )));
        }
        let mut sessions = Vec::new();
        for host in hosts {
            let http = host.http_client(self.timeout, MAX_REDIRECTS)?;
            let auth = if host.is_mirror(domain) { None } else { auth };
            sessions.push(Session::new(http, host, repo.clone(), auth, access));
        }
        Ok(Repository {
            sessions,
            current: 0,
            repo: repo.clone(),
        })
    }
}

impl Repository {
    /// `registry/path`, for messages.
    pub fn name(&self) -> String {
        self.repo.name()
    }

    /// Manifest `reference` (a tag or a digest), from the first host that has it; `None` when
    /// no host does. A digest reference is verified against the body.
    pub async fn manifest(&mut self, reference: &str) -> Result<Option<RawManifest>, Error> {
        let mut first_err = None;
        for i in 0..self.sessions.len() {
            match self.sessions[i].raw_manifest(reference).await {
                Ok(Some(m)) => {
                    self.current = i;
                    return Ok(Some(m));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "registry host failed");
                    first_err = first_err.or(Some(e));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// The session of the host that served the last manifest.
    pub(super) fn into_current(mut self) -> Session {
        self.sessions.swap_remove(self.current)
    }

    /// Whether the push host (or the host of the last manifest) holds blob `digest`.
    pub async fn blob_exists(&mut self, digest: &str) -> Result<bool, Error> {
        let s = &mut self.sessions[self.current];
        let url = s
            .host
            .api_url(s.image.domain(), s.image.repository(), &blob_path(digest)?)?;
        let resp = s
            .send(Request {
                method: reqwest::Method::HEAD,
                ..Request::get(url.clone())
            })
            .await?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(s.status_error(resp.status(), &url, &[])),
        }
    }

    /// Downloads `blob` into `dest` (created, must not exist), checking its size and digest as
    /// it arrives: a blob longer than its descriptor is cut off and refused, one whose bytes do
    /// not hash to its digest is refused and the file removed.
    pub async fn fetch_blob(&mut self, blob: &Blob, dest: &Path) -> Result<(), Error> {
        let res = self.fetch_blob_inner(blob, dest).await;
        if res.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        res
    }

    async fn fetch_blob_inner(&mut self, blob: &Blob, dest: &Path) -> Result<(), Error> {
        let expected = blob
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::Registry(format!("unsupported blob digest {}", blob.digest)))?
            .to_ascii_lowercase();
        let s = &mut self.sessions[self.current];
        let url = s.host.api_url(
            s.image.domain(),
            s.image.repository(),
            &blob_path(&blob.digest)?,
        )?;
        let mut resp = s.send(Request::get(url.clone())).await?;
        if !resp.status().is_success() {
            return Err(s.answer_error(&url, resp).await);
        }
        let io = |op, e| Error::Io {
            op,
            path: dest.to_path_buf(),
            source: e,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| io("create", e))?;
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        let origin = s.host.origin();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| super::transport_error(&s.image.to_string(), &origin, &e))?
        {
            got += chunk.len() as u64;
            if got > blob.size {
                return Err(Error::Registry(format!(
                    "blob {} from {origin} is longer than its {} bytes, refused",
                    blob.digest, blob.size
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(|e| io("write", e))?;
        }
        if got != blob.size {
            return Err(Error::Registry(format!(
                "blob {} from {origin} ended after {got} of {} bytes",
                blob.digest, blob.size
            )));
        }
        let actual = hex(&hasher.finalize());
        if actual != expected {
            return Err(Error::Registry(format!(
                "blob {} from {origin} does not match its digest (its bytes hash to \
                 sha256:{actual}), refused",
                blob.digest
            )));
        }
        file.sync_all().map_err(|e| io("fsync", e))?;
        Ok(())
    }

    /// Uploads the `size` bytes of `source` as blob `digest` unless the registry has it.
    /// Returns whether it uploaded. The registry verifies the digest on commit.
    pub async fn push_blob(
        &mut self,
        digest: &str,
        size: u64,
        source: BlobSource,
    ) -> Result<bool, Error> {
        if self.blob_exists(digest).await? {
            return Ok(false);
        }
        let s = &mut self.sessions[self.current];
        let start = s
            .host
            .api_url(s.image.domain(), s.image.repository(), "blobs/uploads/")?;
        let resp = s
            .send(Request {
                method: reqwest::Method::POST,
                body: RequestBody::Bytes(Vec::new()),
                ..Request::get(start.clone())
            })
            .await?;
        if resp.status() != reqwest::StatusCode::ACCEPTED {
            return Err(s.answer_error(&start, resp).await);
        }
        let mut put = location(&resp, &start)?;
        put.query_pairs_mut().append_pair("digest", digest);
        let body = match source {
            BlobSource::Bytes(b) => RequestBody::Bytes(b),
            BlobSource::File(p) => RequestBody::File(p, size),
        };
        let resp = s
            .send(Request {
                method: reqwest::Method::PUT,
                headers: vec![(
                    reqwest::header::CONTENT_TYPE,
                    "application/octet-stream".to_owned(),
                )],
                body,
                ..Request::get(put.clone())
            })
            .await?;
        if resp.status() != reqwest::StatusCode::CREATED {
            let what = format!("upload of blob {digest} to {}", self.repo.name());
            return Err(write_error(&what, resp).await);
        }
        Ok(true)
    }

    /// Puts `body` (an OCI image manifest) as `reference` (a tag); returns its digest.
    pub async fn put_manifest(&mut self, reference: &str, body: Vec<u8>) -> Result<String, Error> {
        let digest = format!("sha256:{}", hex(&Sha256::digest(&body)));
        let s = &mut self.sessions[self.current];
        let url = s
            .host
            .manifest_url(s.image.domain(), s.image.repository(), reference)?;
        let resp = s
            .send(Request {
                method: reqwest::Method::PUT,
                headers: vec![(reqwest::header::CONTENT_TYPE, OCI_MANIFEST.to_owned())],
                body: RequestBody::Bytes(body),
                ..Request::get(url.clone())
            })
            .await?;
        if resp.status() != reqwest::StatusCode::CREATED {
            let what = format!("put of manifest {reference} to {}", self.repo.name());
            return Err(write_error(&what, resp).await);
        }
        Ok(digest)
    }
}

/// Where a pushed blob's bytes come from.
#[derive(Debug)]
pub enum BlobSource {
    /// Held in memory (configs).
    Bytes(Vec<u8>),
    /// A file (layers), streamed.
    File(PathBuf),
}

/// The error for a write the registry did not accept: `what` and its answer.
async fn write_error(what: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = read_limited(resp, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    Error::Registry(format!(
        "{what} answered {status}{}",
        registry_message(&body)
    ))
}

impl Session {
    /// The error for a request to `url` answered with a failure status (its body quoted).
    async fn answer_error(&self, url: &reqwest::Url, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let body = read_limited(resp, MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        self.status_error(status, url, &body)
    }

    /// Manifest `reference` as stored, or `None` when this host answers 404.
    async fn raw_manifest(&mut self, reference: &str) -> Result<Option<RawManifest>, Error> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(rename = "artifactType", default)]
            artifact_type: Option<String>,
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        let (body, content_type) = match self.get_manifest(reference).await {
            Ok(found) => found,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let digest = if reference.contains(':') {
            verify(reference, None, &body)?;
            reference.to_owned()
        } else {
            format!("sha256:{}", hex(&Sha256::digest(&body)))
        };
        let (config, layers) = match super::manifest::parse(&body, content_type.as_deref())? {
            super::manifest::Parsed::Manifest { config, layers } => (config, layers),
            super::manifest::Parsed::Index(_) => {
                return Err(Error::Registry(format!(
                    "{}:{reference} is an index, not an artifact manifest",
                    self.image.name()
                )));
            }
        };
        let raw: Raw = serde_json::from_slice(&body)
            .map_err(|e| Error::Registry(format!("manifest is not valid json: {e}")))?;
        debug_assert!(body.len() <= MAX_MANIFEST_BYTES);
        Ok(Some(RawManifest {
            digest,
            body,
            artifact_type: raw.artifact_type,
            config: config.into(),
            layers: layers.into_iter().map(Blob::from).collect(),
            annotations: raw.annotations,
        }))
    }
}

/// `blobs/<digest>`, refusing a digest that is not safe in a URL path.
fn blob_path(digest: &str) -> Result<String, Error> {
    let ok = digest.split_once(':').is_some_and(|(alg, enc)| {
        !alg.is_empty()
            && !enc.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && enc.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !ok {
        return Err(Error::Registry(format!("invalid blob digest {digest:?}")));
    }
    Ok(format!("blobs/{digest}"))
}

/// The upload URL of a `202 Accepted`: its `Location`, relative to the request.
fn location(resp: &reqwest::Response, base: &reqwest::Url) -> Result<reqwest::Url, Error> {
    let value = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Registry("blob upload started without a Location".to_owned()))?;
    let url = base
        .join(value)
        .map_err(|e| Error::Registry(format!("blob upload Location {value:?}: {e}")))?;
    if url.origin() != base.origin() {
        // Uploads carry our credentials: they stay on the host we authenticated to.
        return Err(Error::Registry(format!(
            "blob upload Location {value:?} points at another host, refused"
        )));
    }
    Ok(url)
}

/// A request body streaming `path` from its start.
pub(super) async fn file_body(path: &Path) -> Result<reqwest::Body, Error> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path).await.map_err(|e| Error::Io {
        op: "open",
        path: path.to_path_buf(),
        source: e,
    })?;
    let stream = futures::stream::try_unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((buf, f)))
    });
    Ok(reqwest::Body::wrap_stream(stream))
}
