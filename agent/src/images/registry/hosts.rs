//! Which registry hosts to ask for an image, read from the node's containerd `config_path`
//! directory (`hosts.toml`) exactly as containerd's CRI plugin resolves them, and the HTTP client
//! each host's TLS settings call for.
//!
//! Mirrors `core/remotes/docker/config/hosts.go`: the directory is `<dir>/<host>_<port>_`,
//! `<dir>/<host:port>` or `<dir>/_default`, the first that exists; its `hosts.toml` lists
//! `[host."URL"]` entries tried in file order, then `server`; without a `hosts.toml` the `.crt`,
//! `.cert` and `.key` files of the directory configure TLS of the default host; with no directory
//! the default host is the image's own registry.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::Error;
use super::hosts_toml;

#[cfg(test)]
mod tests;

/// The host may pull blobs.
pub(super) const CAP_PULL: u8 = 1;
/// The host may resolve tags and serve manifests.
pub(super) const CAP_RESOLVE: u8 = 2;
/// The host may accept pushes.
pub(super) const CAP_PUSH: u8 = 4;
/// Capabilities of a host that names none.
pub(super) const CAP_ALL: u8 = CAP_PULL | CAP_RESOLVE | CAP_PUSH;

/// Host serving Docker Hub's registry API; not a mirror of `docker.io`.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
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
        let path = clean_path(&format!("{}/{repository}/manifests/{reference}", self.path));
        let raw = format!("{}{path}", self.origin());
        let mut url = reqwest::Url::parse(&raw)
            .map_err(|e| Error::Registry(format!("invalid manifest url {raw:?}: {e}")))?;
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
        match self.client_builder(timeout, max_redirects, system)?.build() {
            Ok(client) => return Ok(client),
            Err(e) if with_system => {
                tracing::warn!(error = %e, "system ca bundle unusable, using built-in roots");
            }
            Err(_) => {}
        }
        self.client_builder(timeout, max_redirects, Vec::new())?
            .build()
            .map_err(|e| Error::Registry(format!("http client for {}: {e}", self.origin())))
    }

    fn client_builder(
        &self,
        timeout: Duration,
        max_redirects: usize,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<reqwest::ClientBuilder, Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
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

/// The hosts to try for `domain`, in order. `api_host` is the image's own registry API host
/// (`registry-1.docker.io` for `docker.io`).
pub(super) fn resolve(
    hosts_dir: Option<&Path>,
    domain: &str,
    api_host: &str,
) -> Result<Vec<RegistryHost>, Error> {
    let mut hosts = match hosts_dir.map(|root| find_dir(root, domain)).transpose()? {
        Some(Some(dir)) => load_dir(&dir)?,
        _ => vec![RegistryHost::default()],
    };
    if let Some(last) = hosts.last_mut().filter(|h| h.authority.is_empty()) {
        fill_default(last, domain, api_host);
    }
    Ok(hosts)
}

/// Directories looked at for `domain`, in order (containerd's `hostPaths`).
pub(super) fn candidate_dirs(root: &Path, domain: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(idx) = domain.rfind(':').filter(|&i| i > 0) {
        dirs.push(root.join(format!("{}_{}_", &domain[..idx], &domain[idx + 1..])));
    }
    dirs.push(root.join(domain));
    dirs.push(root.join("_default"));
    dirs
}

fn find_dir(root: &Path, domain: &str) -> Result<Option<PathBuf>, Error> {
    for dir in candidate_dirs(root, domain) {
        match std::fs::metadata(&dir) {
            Ok(_) => return Ok(Some(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    op: "stat registry hosts directory",
                    path: dir,
                    source,
                });
            }
        }
    }
    Ok(None)
}

/// Hosts configured by one directory: its `hosts.toml`, else its certificate files.
fn load_dir(dir: &Path) -> Result<Vec<RegistryHost>, Error> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(Error::Io {
                op: "read",
                path: file,
                source,
            });
        }
    };
    if text.is_empty() {
        return load_cert_files(dir);
    }
    match hosts_toml::parse(&text, dir) {
        Ok(hosts) => Ok(hosts),
        Err(reason) => {
            // containerd logs the error and falls back to the certificate files; so do we, to
            // reach the registry it will reach.
            tracing::warn!(file = %file.display(), %reason, "ignoring malformed hosts.toml");
            load_cert_files(dir)
        }
    }
}

/// Docker's `certs.d` layout: `*.crt` CA files, `*.cert` client certificates with their `*.key`.
fn load_cert_files(dir: &Path) -> Result<Vec<RegistryHost>, Error> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::Io {
                op: "list registry hosts directory",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    names.sort();
    let mut host = RegistryHost::default();
    for name in &names {
        if name.ends_with(".crt") {
            host.ca.push(dir.join(name));
        }
        if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            host.client
                .push((dir.join(name), key.exists().then_some(key)));
        }
    }
    Ok(vec![host])
}

/// The image's own registry, as containerd builds it when no `server` is configured.
fn fill_default(host: &mut RegistryHost, domain: &str, api_host: &str) {
    host.scheme = "https".to_owned();
    host.authority = api_host.to_owned();
    if domain != "docker.io" && is_localhost(domain) {
        // Loopback registries: plain HTTP unless the port says TLS, and never verified.
        let port = split_port(domain).1;
        if !matches!(port, None | Some("443")) {
            host.scheme = "http".to_owned();
        }
        if port != Some("80") {
            host.skip_verify = Some(true);
        }
    }
    host.path = "/v2".to_owned();
    host.capabilities = CAP_ALL;
}

/// `(host, port)` of `host[:port]`, brackets of an IPv6 literal removed.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some((host, after)) = authority
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
    {
        return (host, after.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

/// containerd's `docker.IsLocalhost`.
pub(super) fn is_localhost(authority: &str) -> bool {
    let host = split_port(authority).0;
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
