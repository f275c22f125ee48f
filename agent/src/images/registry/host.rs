//! One registry endpoint as containerd's `hosts.toml` describes it (`[host."URL"]`, `server`, or
//! the image's own registry), and the HTTP client its TLS settings call for. Both the directory
//! resolution ([`super::hosts`]) and the file parser ([`super::hosts_toml`]) build on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::Error;

/// The host may pull blobs.
pub(super) const CAP_PULL: u8 = 1;
/// The host may resolve tags and serve manifests.
pub(super) const CAP_RESOLVE: u8 = 2;
/// The host may accept pushes.
pub(super) const CAP_PUSH: u8 = 4;
/// Capabilities of a host that names none.
pub(super) const CAP_ALL: u8 = CAP_PULL | CAP_RESOLVE | CAP_PUSH;

/// Host serving Docker Hub's registry API; not a mirror of `docker.io`.
pub(super) const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// System CA bundles, in the order Go's `crypto/x509` (and so containerd) looks for them.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// One registry endpoint, as a `[host."URL"]` table, `server` or the default describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct RegistryHost {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` as written; empty until the default fills it in.
    pub authority: String,
    /// API root path without trailing slash: `/v2`, `/prefix/v2`, or anything with
    /// `override_path` (possibly empty).
    pub path: String,
    /// `CAP_*` bits.
    pub capabilities: u8,
    /// CA certificate files (PEM) trusted besides the system roots.
    pub ca: Vec<PathBuf>,
    /// Client certificate and key files (the key may sit in the certificate file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// `skip_verify`, when set.
    pub skip_verify: Option<bool>,
    /// Extra headers sent to this host.
    pub header: Vec<(String, String)>,
    /// Connect timeout (`dial_timeout`).
    pub dial_timeout: Option<Duration>,
}

impl RegistryHost {
    /// Whether manifests may be fetched from this host.
    pub fn can_resolve(&self) -> bool {
        self.capabilities & CAP_RESOLVE != 0
    }

    /// Whether blobs and manifests may be pushed to this host.
    pub fn can_push(&self) -> bool {
        self.capabilities & CAP_PUSH != 0
    }

    /// Whether this host stands in for `domain` (containerd's `isProxy`): then requests carry
    /// `?ns=<domain>` and the image's credentials are not sent.
    pub fn is_mirror(&self, domain: &str) -> bool {
        self.authority != domain
            && !(domain == "docker.io" && self.authority == DOCKER_HUB_API_HOST)
    }

    /// `scheme://authority`, for messages.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// URL of `repository`'s manifest `reference` on this host, with `ns` for a mirror.
    pub fn manifest_url(
        &self,
        domain: &str,
        repository: &str,
        reference: &str,
    ) -> Result<reqwest::Url, Error> {
        self.api_url(domain, repository, &format!("manifests/{reference}"))
    }

    /// URL of `<repository>/<rest>` under this host's API root (`blobs/<digest>`,
    /// `blobs/uploads/`), with `ns` for a mirror.
    pub fn api_url(
        &self,
        domain: &str,
        repository: &str,
        rest: &str,
    ) -> Result<reqwest::Url, Error> {
        let mut path = clean_path(&format!("{}/{repository}/{rest}", self.path));
        if rest.ends_with('/') {
            path.push('/');
        }
        let raw = format!("{}{path}", self.origin());
        let mut url = reqwest::Url::parse(&raw)
            .map_err(|e| Error::Registry(format!("invalid registry url {raw:?}: {e}")))?;
        if self.is_mirror(domain) {
            url.query_pairs_mut().append_pair("ns", domain);
        }
        Ok(url)
    }

    /// An HTTP client with this host's TLS settings, `timeout` per request and at most
    /// `max_redirects` redirects.
    pub fn http_client(
        &self,
        timeout: Duration,
        max_redirects: usize,
    ) -> Result<reqwest::Client, Error> {
        // The system bundle may hold private CAs the built-in (Mozilla) roots lack; containerd,
        // being Go, trusts it. One certificate rustls refuses fails the whole build, though:
        // then do without the bundle rather than without the registry.
        let system = system_roots();
        let with_system = !system.is_empty();
        match self
            .client_builder(timeout, max_redirects, system, false)?
            .build()
        {
            Ok(client) => return Ok(client),
            Err(e) if with_system => {
                tracing::warn!(error = %e, "system ca bundle unusable, using built-in roots");
            }
            Err(_) => {}
        }
        self.client_builder(timeout, max_redirects, Vec::new(), false)?
            .build()
            .map_err(|e| Error::Registry(format!("http client for {}: {e}", self.origin())))
    }

    /// Like [`RegistryHost::http_client`], but `timeout` bounds each read of a response
    /// rather than the whole request (large blob ranges on a slow link), and connections are
    /// not pooled beyond what parallel readers need.
    pub fn streaming_client(
        &self,
        timeout: Duration,
        max_redirects: usize,
    ) -> Result<reqwest::Client, Error> {
        self.client_builder(timeout, max_redirects, system_roots(), true)?
            .build()
            .map_err(|e| Error::Registry(format!("http client for {}: {e}", self.origin())))
    }

    fn client_builder(
        &self,
        timeout: Duration,
        max_redirects: usize,
        roots: Vec<reqwest::Certificate>,
        streaming: bool,
    ) -> Result<reqwest::ClientBuilder, Error> {
        let builder = reqwest::Client::builder();
        let builder = if streaming {
            builder.read_timeout(timeout).http1_only()
        } else {
            builder.timeout(timeout)
        };
        let mut builder = builder
            .connect_timeout(self.dial_timeout.unwrap_or(timeout).min(timeout))
            .redirect(reqwest::redirect::Policy::limited(max_redirects))
            .user_agent(concat!("coldstart-agent/", env!("CARGO_PKG_VERSION")));
        if self.skip_verify == Some(true) {
            builder = builder.danger_accept_invalid_certs(true);
        }
        for cert in roots {
            builder = builder.add_root_certificate(cert);
        }
        for path in &self.ca {
            let pem = read(path, "read registry ca")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Registry(format!("ca file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(Error::Registry(format!(
                    "ca file {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = self.client.first() {
            if self.client.len() > 1 {
                tracing::warn!(host = %self.authority, "only the first client certificate is used");
            }
            let mut pem = read(cert, "read registry client certificate")?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(read(key, "read registry client key")?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Error::Registry(format!("client certificate {}: {e}", cert.display()))
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}

fn read(path: &Path, op: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// Certificates of the first system CA bundle that exists; none if none parses.
fn system_roots() -> Vec<reqwest::Certificate> {
    for path in SYSTEM_CA_BUNDLES {
        let Ok(pem) = std::fs::read(path) else {
            continue;
        };
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) => return certs,
            Err(e) => tracing::warn!(path, error = %e, "ignoring unreadable system ca bundle"),
        }
    }
    Vec::new()
}

/// Go's `path.Clean`, without a trailing slash and with `/` as the empty string.
pub(super) fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.iter().map(|p| format!("/{p}")).collect()
}
