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

use super::super::Error;
use super::host::{CAP_ALL, RegistryHost};
use super::hosts_toml;

#[cfg(test)]
mod tests;

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
        point_at_own_registry(last, domain, api_host);
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
fn point_at_own_registry(host: &mut RegistryHost, domain: &str, api_host: &str) {
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
