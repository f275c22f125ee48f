//! Registry credentials from a docker `config.json`, a `kubernetes.io/dockerconfigjson`
//! secret's `.dockerconfigjson` payload (the same JSON), or the legacy `.dockercfg` shape (the
//! `auths` map at top level).
//!
//! Keys are matched against an image the way the kubelet's credential keyring does: a key may be
//! a bare host, `host:port`, a URL (`https://index.docker.io/v1/` means Docker Hub), a host with a
//! path prefix, or a host with `*` globs per dot-separated label. The most specific match wins.
//! Secrets never appear in `Debug` output or in error messages.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::{Error, ImageRef};

/// Host names that all mean Docker Hub; keys and images using any of them are compared as
/// `docker.io`. Ranked in the kubelet's order of preference.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// How much of a key an error repeats.
const MAX_KEY_ECHO: usize = 128;
/// Standard base64 alphabet, padding optional (docker writes it; hand-made secrets may not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Credentials for one registry, as CRI's `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name for basic auth.
    pub username: String,
    /// Password for basic auth.
    pub password: String,
    /// OAuth2 refresh token exchanged for a registry token.
    pub identity_token: String,
    /// Bearer token sent to the registry as is.
    pub registry_token: String,
}

impl RegistryAuth {
    /// `(username, password)` for HTTP basic auth, when either is set.
    pub fn basic(&self) -> Option<(String, String)> {
        if self.username.is_empty() && self.password.is_empty() {
            None
        } else {
            Some((self.username.clone(), self.password.clone()))
        }
    }

    /// Whether no credential at all is set.
    fn is_empty(&self) -> bool {
        self.basic().is_none() && self.identity_token.is_empty() && self.registry_token.is_empty()
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only whether a secret is set, never its value or length.
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}

/// Parsed registry credentials, ready to be matched against images.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    entries: Vec<Entry>,
}

/// One credential and the normalised key it applies to.
#[derive(Debug, Clone)]
struct Entry {
    /// The key as written, for tie-breaking.
    key: String,
    /// Lowercased host (Docker Hub aliases folded to `docker.io`), possibly with `*` globs.
    host: String,
    /// Port, when the key names one.
    port: Option<String>,
    /// Path prefix without surrounding slashes, empty for the whole registry.
    path: String,
    /// How well this key fits when it matches: longer path, no glob, preferred hub alias.
    rank: (usize, bool, usize),
    auth: RegistryAuth,
}

impl DockerConfig {
    /// Parse a `config.json` / `.dockerconfigjson` (with `auths`) or legacy `.dockercfg`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's messages may quote the offending value; give the place only.
            Error::Credentials(format!(
                "malformed json: {} at line {} column {}",
                category(&e),
                e.line(),
                e.column()
            ))
        })?;
        let Value::Object(top) = value else {
            return Err(Error::Credentials("top level is not a json object".into()));
        };
        let (auths, legacy) = match top.get("auths") {
            Some(Value::Object(auths)) => (auths, false),
            Some(_) => return Err(Error::Credentials("\"auths\" is not a json object".into())),
            None => (&top, true),
        };
        let mut entries = Vec::new();
        for (key, value) in auths {
            let Value::Object(fields) = value else {
                // A legacy file's top level also holds settings such as `credsStore`.
                if legacy {
                    continue;
                }
                return Err(Error::Credentials(format!(
                    "entry {} is not a json object",
                    echo(key)
                )));
            };
            let auth = parse_entry(key, fields)?;
            // The kubelet skips keys it cannot parse; an entry without credentials would only
            // shadow a less specific one.
            if let (false, Some(entry)) = (auth.is_empty(), Entry::new(key, auth)) {
                entries.push(entry);
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(DockerConfig { entries })
    }

    /// Read and parse a credentials file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            op: "read credentials",
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&bytes).map_err(|e| match e {
            Error::Credentials(msg) => Error::Credentials(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// The credentials that apply to `image`: the most specific matching key (longest path
    /// prefix, then exact host over glob), `None` when no key matches.
    pub fn lookup(&self, image: &ImageRef) -> Option<RegistryAuth> {
        let (host, port) = split_host_port(image.domain());
        let host = fold_host(&host.to_ascii_lowercase()).0;
        self.entries
            .iter()
            .filter(|e| e.matches(&host, port, image.repository()))
            .max_by_key(|e| e.rank)
            .map(|e| e.auth.clone())
    }
}

impl Entry {
    /// Normalise a key as the kubelet's keyring does; `None` for a key naming no host.
    fn new(key: &str, auth: RegistryAuth) -> Option<Entry> {
        let trimmed = key.trim();
        let lower = trimmed.to_ascii_lowercase();
        let rest = ["https://", "http://"]
            .iter()
            .find_map(|scheme| lower.starts_with(scheme).then(|| &trimmed[scheme.len()..]))
            .unwrap_or(trimmed);
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // `/v1/` and `/v2/` name the API, not a repository path.
        let path = ["/v1", "/v2"]
            .iter()
            .find_map(|api| {
                let after = path.strip_prefix(api)?;
                (after.is_empty() || after.starts_with('/')).then_some(after)
            })
            .unwrap_or(path);
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = split_host_port(authority);
        if host.is_empty() {
            return None;
        }
        let (host, hub_rank) = fold_host(&host.to_ascii_lowercase());
        let path = path.trim_matches('/').to_owned();
        let rank = (path.len(), !host.contains('*'), hub_rank);
        Some(Entry {
            key: key.to_owned(),
            host,
            port: port.map(str::to_owned),
            path,
            rank,
            auth,
        })
    }

    /// Same port, same number of host labels each matching its glob, and the key's path a
    /// prefix of the repository at a `/` boundary.
    fn matches(&self, host: &str, port: Option<&str>, repository: &str) -> bool {
        if self.port.as_deref() != port || self.host.split('.').count() != host.split('.').count() {
            return false;
        }
        let path_ok = self.path.is_empty()
            || repository
                .strip_prefix(self.path.as_str())
                .is_some_and(|after| after.is_empty() || after.starts_with('/'));
        path_ok
            && self
                .host
                .split('.')
                .zip(host.split('.'))
                .all(|(pattern, label)| glob_match(pattern, label))
    }
}

/// Read one entry's credentials. `auth` is base64 of `user:password`; explicit `username` and
/// `password` fields win over it where set.
fn parse_entry(key: &str, fields: &Map<String, Value>) -> Result<RegistryAuth, Error> {
    let get = |name: &str| string_field(key, fields, name);
    let (mut username, mut password) = (String::new(), String::new());
    if let Some(encoded) = get("auth")?.map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |what: &str| Error::Credentials(format!("entry {}: {what}", echo(key)));
        let decoded = BASE64
            .decode(encoded)
            .map_err(|_| bad("field \"auth\" is not valid base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad("field \"auth\" does not decode to utf-8 text"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad("field \"auth\" must be base64 of username:password"))?;
        (username, password) = (user.to_owned(), pass.to_owned());
    }
    if let Some(user) = get("username")?.filter(|s| !s.is_empty()) {
        username = user.to_owned();
    }
    if let Some(pass) = get("password")?.filter(|s| !s.is_empty()) {
        password = pass.to_owned();
    }
    Ok(RegistryAuth {
        username,
        password,
        identity_token: get("identitytoken")?.unwrap_or_default().to_owned(),
        registry_token: get("registrytoken")?.unwrap_or_default().to_owned(),
    })
}

/// A string field, matched case-insensitively as Go's `encoding/json` does; absent or `null`
/// is `None`, any other type an error that names the field but not its value.
fn string_field<'a>(
    key: &str,
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, Error> {
    let value = fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    });
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::Credentials(format!(
            "entry {}: field {name:?} is not a string",
            echo(key)
        ))),
    }
}

/// Fold Docker Hub's aliases to `docker.io`; the second value ranks the alias (higher is
/// preferred, as the kubelet prefers `docker.io` keys over `index.docker.io`).
fn fold_host(host: &str) -> (String, usize) {
    match DOCKER_HUB_HOSTS.iter().position(|h| *h == host) {
        Some(i) => (DOCKER_HUB_HOSTS[0].to_owned(), DOCKER_HUB_HOSTS.len() - i),
        None => (host.to_owned(), DOCKER_HUB_HOSTS.len()),
    }
}

/// Split `host[:port]`, minding a bracketed IPv6 address.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let colon = match authority.rfind(']') {
        Some(close) => authority[close..].find(':').map(|i| close + i),
        None => authority.rfind(':'),
    };
    match colon {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    }
}

/// Whether `label` matches `pattern`, where `*` is any run of characters. (`?` cannot occur:
/// in a key it starts a URL query, as in the kubelet.) Iterative with single backtracking, so
/// hostile patterns cost O(pattern * label) at worst.
fn glob_match(pattern: &str, label: &str) -> bool {
    let (p, l) = (pattern.as_bytes(), label.as_bytes());
    let (mut pi, mut li) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while li < l.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, li));
                pi += 1;
            }
            Some(&c) if c == l[li] => {
                pi += 1;
                li += 1;
            }
            _ => match star {
                Some((sp, sl)) => {
                    pi = sp + 1;
                    li = sl + 1;
                    star = Some((sp, sl + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Name a serde_json error's kind without its message (which may quote secrets).
fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "data error",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

/// A key as errors repeat it: quoted, escaped and cut short.
fn echo(key: &str) -> String {
    let cut: String = key.chars().take(MAX_KEY_ECHO).collect();
    let more = if cut.len() < key.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

#[cfg(test)]
mod tests;
