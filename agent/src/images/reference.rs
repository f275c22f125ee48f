//! Container image references, normalised the way the kubelet and containerd's CRI plugin do
//! (the docker distribution reference grammar, `github.com/distribution/reference`).
//!
//! `nginx` becomes `docker.io/library/nginx:latest`, `user/app` becomes
//! `docker.io/user/app:latest`, and `localhost:5000/a/b` keeps its registry. The parser is
//! hand-written (no regex) and linear in the input, so hostile input costs nothing.

use std::fmt;
use std::str::FromStr;

use super::Error;

/// Registry domain of Docker Hub images.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Legacy Docker Hub domain, normalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Host serving Docker Hub's registry API.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// Namespace of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Tag given to references with neither tag nor digest.
const DEFAULT_TAG: &str = "latest";
/// Longest repository path accepted (`RepositoryNameTotalLengthMax` upstream).
const MAX_PATH_LEN: usize = 255;
/// Longest tag accepted.
const MAX_TAG_LEN: usize = 128;
/// How much of a rejected reference an error repeats; the rest is cut off.
const MAX_ECHO_LEN: usize = 256;

/// A container image reference in its normalised form: domain, repository path, and a tag, a
/// digest, or both (a reference with neither gets the tag `latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    domain: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parse and normalise an image reference as written in a pod spec.
    pub fn parse(s: &str) -> Result<ImageRef, Error> {
        parse_ref(s).map_err(|reason| Error::InvalidReference {
            reference: echo(s),
            reason: reason.to_owned(),
        })
    }

    /// Registry domain, e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path without the domain, e.g. `library/nginx`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (always present when there is no digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:...`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// Host serving the registry API: `registry-1.docker.io` for Docker Hub, else the domain.
    pub fn registry_api_host(&self) -> &str {
        if self.domain == DEFAULT_DOMAIN {
            DOCKER_HUB_API_HOST
        } else {
            &self.domain
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest if any, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest,
            (None, Some(tag)) => tag,
            // parse() never builds this; answer as the registry would resolve it.
            (None, None) => DEFAULT_TAG,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The parse itself; the error is the reason only.
fn parse_ref(s: &str) -> Result<ImageRef, &'static str> {
    if s.is_empty() {
        return Err("empty reference");
    }
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("a 64-character hex identifier is not an image name");
    }
    let (domain, remainder) = split_domain(s);
    // Neither tag nor digest may contain `/` or `@`, so the digest starts at the first `@` and
    // the tag at the first `:` before it (the path cannot hold `:`).
    let (named, digest) = match remainder.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (remainder.as_str(), None),
    };
    let (path, tag) = match named.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (named, None),
    };
    if path.chars().any(char::is_uppercase) {
        return Err("repository name must be lowercase");
    }
    if !valid_domain(domain) {
        return Err("invalid registry domain");
    }
    if !valid_path(path) {
        return Err("invalid repository name");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("repository name must not be more than 255 characters");
    }
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err("invalid tag");
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    Ok(ImageRef {
        domain: domain.to_owned(),
        repository: path.to_owned(),
        tag: match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag.map(str::to_owned),
        },
        digest: digest.map(str::to_owned),
    })
}

/// Split off the registry domain as `splitDockerDomain` does: the first component is a domain
/// when it is `localhost`, contains `.` or `:`, or holds uppercase (paths cannot). Docker Hub
/// names get `library/` when they have a single component.
fn split_domain(s: &str) -> (&str, String) {
    let (domain, remainder) = match s.split_once('/') {
        None => (DEFAULT_DOMAIN, s),
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.chars().any(char::is_uppercase) =>
        {
            if first == LEGACY_DEFAULT_DOMAIN {
                (DEFAULT_DOMAIN, rest)
            } else {
                (first, rest)
            }
        }
        Some(_) => (DEFAULT_DOMAIN, s),
    };
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        (domain, format!("{OFFICIAL_REPO_PREFIX}{remainder}"))
    } else {
        (domain, remainder.to_owned())
    }
}

/// `host [":" port]`, host a DNS-like name, a dotted IPv4 address, or `[ipv6]`.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = split_host_port(domain);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(addr) => !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => host.split('.').all(valid_domain_component),
    };
    port_ok && host_ok
}

/// Split `host[:port]`, minding the colons of a bracketed IPv6 address. Junk after `]` stays
/// in the host, which then fails validation.
fn split_host_port(domain: &str) -> (&str, Option<&str>) {
    if domain.starts_with('[') {
        let Some(close) = domain.find(']') else {
            return (domain, None);
        };
        let (host, after) = domain.split_at(close + 1);
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => (domain, None),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        }
        _ => false,
    }
}

/// One or more `/`-separated path components.
fn valid_path(path: &str) -> bool {
    path.split('/').all(valid_path_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // A run of alphanumerics ...
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // ... then one separator: `.`, `_`, `__` or any number of `-`.
        let sep_start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
}

/// `[\w][\w.-]{0,127}`, `\w` being ASCII `[A-Za-z0-9_]`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    match b.first() {
        Some(&first) if word(first) && b.len() <= MAX_TAG_LEN => {
            b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
        }
        _ => false,
    }
}

/// `algorithm:hex` as go-digest validates it: the grammar, then a registered algorithm with an
/// encoded part of exactly its length in lowercase hex.
fn check_digest(digest: &str) -> Result<(), &'static str> {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err("invalid digest: expected algorithm:hex");
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && part.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if !algorithm_ok || encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid digest: expected algorithm:hex");
    }
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("invalid digest: unsupported algorithm"),
    };
    if encoded.len() != hex_len || encoded.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("invalid digest: wrong length or not lowercase hex for its algorithm");
    }
    Ok(())
}

/// The reference as an error repeats it: cut to [`MAX_ECHO_LEN`] bytes so hostile input cannot
/// flood logs.
fn echo(s: &str) -> String {
    if s.len() <= MAX_ECHO_LEN {
        return s.to_owned();
    }
    let mut end = MAX_ECHO_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests;
