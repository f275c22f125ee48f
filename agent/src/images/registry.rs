//! A small OCI distribution client that reads an image's manifest before containerd pulls it,
//! to learn its blob sizes (disk-space check, progress totals), and reads its blobs by byte
//! range for the parallel fetch ([`ranged`]).
//!
//! It reaches the registry the way containerd's CRI plugin does with `config_path`: the hosts of
//! the node's `hosts.toml` for the image's domain in order (mirrors with `?ns=`), TLS per host,
//! then the registry itself. Answers are bounded: a timeout per request, a few redirects, and
//! manifests of at most [`MAX_MANIFEST_BYTES`].

pub mod artifact;
mod host;
mod hosts;
mod hosts_toml;
mod manifest;
pub mod ranged;
#[cfg(test)]
mod tests;
mod token;

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tracing::instrument;

use super::{Error, ImageRef, RegistryAuth};
use host::RegistryHost;
use manifest::{Parsed, Platform, hex, parse, select_manifest, verify};
use token::{Challenge, TokenRequest};

/// Largest manifest or index accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest token response accepted, in bytes.
const MAX_TOKEN_BYTES: usize = 1 << 20;
/// Most error-body bytes quoted in an error.
const MAX_ERROR_BYTES: usize = 16 << 10;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;
/// Indexes followed before a manifest (an index may point at an index).
const MAX_INDEX_DEPTH: usize = 2;
/// Request timeout when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `Accept` of manifest requests: every kind we can read.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// One content-addressed blob of an image (its config or a layer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blob {
    /// `sha256:...` digest.
    pub digest: String,
    /// Size in bytes (compressed, as stored in the registry).
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
}

/// The manifest of an image for this node's platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageManifest {
    /// Digest of the platform manifest (not of an index pointing at it).
    pub digest: String,
    /// The image config blob.
    pub config: Blob,
    /// Layer blobs, base first.
    pub layers: Vec<Blob>,
}

impl ImageManifest {
    /// Bytes of the config and every layer, as transferred.
    pub fn compressed_size(&self) -> u64 {
        self.blobs().iter().map(|b| b.size).sum()
    }

    /// The config blob then the layers.
    pub fn blobs(&self) -> Vec<Blob> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .cloned()
            .collect()
    }
}

/// Fetches manifests from registries configured as containerd's CRI plugin sees them.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    hosts_dir: Option<PathBuf>,
    timeout: Duration,
    platform: Platform,
}

impl RegistryClient {
    /// A client reading registry configuration from `hosts_dir` (containerd's CRI
    /// `config_path`; `None`: every image's own registry, over HTTPS unless on a loopback
    /// address, as containerd does), bounding each request by `timeout` (zero:
    /// [`DEFAULT_TIMEOUT`]).
    pub fn new(hosts_dir: Option<PathBuf>, timeout: Duration) -> Self {
        RegistryClient {
            hosts_dir,
            timeout: if timeout.is_zero() {
                DEFAULT_TIMEOUT
            } else {
                timeout
            },
            platform: Platform::host(),
        }
    }

    /// The image's manifest for this node's platform, from the first configured host that
    /// serves it. `auth` goes to the image's own registry, never to mirrors (as CRI does when the
    /// credentials name the image's domain).
    #[instrument(skip_all, fields(image = %image), err(level = "debug"))]
    pub async fn manifest(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageManifest, Error> {
        let domain = image.domain();
        let hosts: Vec<RegistryHost> =
            hosts::resolve(self.hosts_dir.as_deref(), domain, image.registry_api_host())?
                .into_iter()
                .filter(RegistryHost::can_resolve)
                .collect();
        if hosts.is_empty() {
            return Err(Error::Registry(format!(
                "no host configured for {domain} may resolve images"
            )));
        }
        // Like containerd: every host is tried in turn; the first failure other than "not
        // found" is the one reported, so a mirror lacking the image defers to the next host.
        let mut first_err: Option<Error> = None;
        let mut not_found: Option<Error> = None;
        for host in &hosts {
            let http = host.http_client(self.timeout, MAX_REDIRECTS)?;
            let auth = if host.is_mirror(domain) { None } else { auth };
            let mut session = Session::new(http, host.clone(), image.clone(), auth, Access::Pull);
            match session.resolve(&self.platform).await {
                Ok(manifest) => return Ok(manifest),
                Err(e) => {
                    tracing::debug!(host = %host.origin(), error = %e, "registry host failed");
                    match e {
                        Error::NotFound { .. } => not_found = not_found.or(Some(e)),
                        e => first_err = first_err.or(Some(e)),
                    }
                }
            }
        }
        Err(first_err
            .or(not_found)
            .unwrap_or_else(|| Error::Registry("no registry host answered".to_owned())))
    }
}

/// What a session may do in a repository: the token scope it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read manifests and blobs.
    Pull,
    /// Read and write.
    Push,
}

/// Requests to one host for one repository, keeping the authorization it earned.
struct Session {
    http: reqwest::Client,
    host: RegistryHost,
    image: ImageRef,
    auth: Option<RegistryAuth>,
    authorization: Option<String>,
    access: Access,
}

/// A request that can be built again (after a 401 earned a token).
struct Request {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: Vec<(reqwest::header::HeaderName, String)>,
    body: RequestBody,
}

/// The body of a [`Request`].
enum RequestBody {
    None,
    Bytes(Vec<u8>),
    /// A file streamed from its start, `len` bytes.
    File(PathBuf, u64),
}

impl Request {
    fn get(url: reqwest::Url) -> Request {
        Request {
            method: reqwest::Method::GET,
            url,
            headers: Vec::new(),
            body: RequestBody::None,
        }
    }

    fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Request {
        self.headers.push((name, value.to_owned()));
        self
    }
}

impl Session {
    fn new(
        http: reqwest::Client,
        host: RegistryHost,
        image: ImageRef,
        auth: Option<&RegistryAuth>,
        access: Access,
    ) -> Session {
        Session {
            http,
            host,
            image,
            authorization: auth
                .map(|a| a.registry_token.as_str())
                .filter(|t| !t.is_empty())
                .map(|t| format!("Bearer {t}")),
            auth: auth.cloned(),
            access,
        }
    }

    /// Fetch the image's manifest, following an index to this platform's manifest.
    async fn resolve(&mut self, platform: &Platform) -> Result<ImageManifest, Error> {
        let mut reference = self.image.manifest_reference().to_owned();
        let mut expected = self.image.digest().map(|d| (d.to_owned(), None));
        for _ in 0..=MAX_INDEX_DEPTH {
            let (body, content_type) = self.get_manifest(&reference).await?;
            let digest = match &expected {
                Some((digest, size)) => {
                    verify(digest, *size, &body)?;
                    digest.clone()
                }
                None => format!("sha256:{}", hex(&Sha256::digest(&body))),
            };
            match parse(&body, content_type.as_deref())? {
                Parsed::Index(manifests) => {
                    let chosen =
                        select_manifest(&manifests, platform).ok_or_else(|| Error::NotFound {
                            image: self.image.to_string(),
                            reason: format!(
                                "no manifest for {}/{} in the image index",
                                platform.os, platform.architecture
                            ),
                        })?;
                    reference = chosen.digest.clone();
                    expected = Some((chosen.digest.clone(), Some(chosen.size)));
                }
                Parsed::Manifest { config, layers } => {
                    return Ok(ImageManifest {
                        digest,
                        config: config.into(),
                        layers: layers.into_iter().map(Blob::from).collect(),
                    });
                }
            }
        }
        Err(Error::Registry(format!(
            "image index of {} nests deeper than {MAX_INDEX_DEPTH} levels",
            self.image
        )))
    }

    /// Body and content type of manifest `reference`.
    async fn get_manifest(&mut self, reference: &str) -> Result<(Vec<u8>, Option<String>), Error> {
        let url =
            self.host
                .manifest_url(self.image.domain(), self.image.repository(), reference)?;
        let resp = self
            .send(Request::get(url.clone()).header(reqwest::header::ACCEPT, ACCEPT_MANIFESTS))
            .await?;
        let status = resp.status();
        let origin = self.host.origin();
        if !status.is_success() {
            let body = read_limited(resp, MAX_ERROR_BYTES)
                .await
                .unwrap_or_default();
            return Err(self.status_error(status, &url, &body));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        let body = read_limited(resp, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| e.into_error(&self.image.to_string(), &origin))?;
        Ok((body, content_type))
    }

    /// Send `req`, answering one authentication challenge.
    async fn send(&mut self, req: Request) -> Result<reqwest::Response, Error> {
        let mut challenged = false;
        loop {
            let mut builder = self.http.request(req.method.clone(), req.url.clone());
            for (name, value) in &self.host.header {
                builder = builder.header(name.as_str(), value.as_str());
            }
            for (name, value) in &req.headers {
                builder = builder.header(name, value.as_str());
            }
            if let Some(authorization) = &self.authorization {
                builder = builder.header(reqwest::header::AUTHORIZATION, authorization.as_str());
            }
            builder = match &req.body {
                RequestBody::None => builder,
                RequestBody::Bytes(b) => builder.body(b.clone()),
                RequestBody::File(path, len) => builder
                    .header(reqwest::header::CONTENT_LENGTH, *len)
                    .body(artifact::file_body(path).await?),
            };
            let resp = builder
                .send()
                .await
                .map_err(|e| transport_error(&self.image.to_string(), &self.host.origin(), &e))?;
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED || challenged {
                return Ok(resp);
            }
            challenged = true;
            self.authorization = Some(self.authorize(&resp).await?);
        }
    }

    /// An `Authorization` value answering the challenges of a 401.
    async fn authorize(&self, resp: &reqwest::Response) -> Result<String, Error> {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(token::parse_challenges)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let req = TokenRequest {
                http: &self.http,
                headers: &self.host.header,
                auth: self.auth.as_ref(),
                default_scope: format!(
                    "repository:{}:{}",
                    self.image.repository(),
                    match self.access {
                        Access::Pull => "pull",
                        Access::Push => "pull,push",
                    }
                ),
                image: &self.image.to_string(),
            };
            let token = token::fetch_token(&req, bearer).await?;
            return Ok(format!("Bearer {token}"));
        }
        let unauthorized = |reason: &str| Error::Unauthorized {
            image: self.image.to_string(),
            reason: format!("{}: {reason}", self.host.origin()),
        };
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match self.auth.as_ref().and_then(RegistryAuth::basic) {
                Some((user, password)) => Ok(token::basic_header(&user, &password)),
                None => Err(unauthorized("basic credentials required, none given")),
            };
        }
        Err(unauthorized(
            "401 without a supported authentication challenge",
        ))
    }

    /// The error for a non-success answer.
    fn status_error(&self, status: reqwest::StatusCode, url: &reqwest::Url, body: &[u8]) -> Error {
        let image = self.image.to_string();
        let detail = registry_message(body);
        let reason = format!("{} answered {status}{detail}", self.host.origin());
        match status.as_u16() {
            401 | 403 => Error::Unauthorized { image, reason },
            404 => Error::NotFound { image, reason },
            429 | 500..=599 => Error::RegistryUnreachable { image, reason },
            _ => Error::Registry(format!("{image}: GET {url}: {reason}")),
        }
    }
}

/// `: CODE: message; ...` from a distribution error body, or nothing.
fn registry_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<RegistryError>,
    }
    #[derive(serde::Deserialize)]
    struct RegistryError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(parsed) = serde_json::from_slice::<Errors>(body) else {
        return String::new();
    };
    let parts: Vec<String> = parsed
        .errors
        .iter()
        .take(3)
        .map(|e| format!("{}: {}", e.code.to_lowercase(), e.message))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// Why a body could not be read.
enum ReadError {
    /// Longer than allowed.
    TooLarge(usize),
    /// The transfer failed.
    Transport(reqwest::Error),
}

impl ReadError {
    fn into_error(self, image: &str, origin: &str) -> Error {
        match self {
            ReadError::TooLarge(limit) => Error::Registry(format!(
                "answer from {origin} for {image} exceeds {limit} bytes, refused"
            )),
            ReadError::Transport(e) => transport_error(image, origin, &e),
        }
    }
}

/// The body of `resp`, refusing more than `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Map a failed request: no answer is [`Error::RegistryUnreachable`]; a refused TLS handshake,
/// too many redirects or a malformed request are [`Error::Registry`].
fn transport_error(image: &str, origin: &str, e: &reqwest::Error) -> Error {
    let reason = format!("{origin}: {}", crate::errors::chain(e));
    let tls = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
    });
    if e.is_builder() || e.is_redirect() || (tls && !e.is_timeout()) {
        Error::Registry(format!("{image}: {reason}"))
    } else {
        Error::RegistryUnreachable {
            image: image.to_owned(),
            reason,
        }
    }
}
