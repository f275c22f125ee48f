//! Manifest and index documents: parsing, digest checks and the choice of this node's platform
//! in an index.

use sha2::{Digest as _, Sha256, Sha512};

use super::super::Error;
use super::Blob;

#[cfg(test)]
mod tests;

/// OCI image index.
pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub(super) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// An OS and architecture with Go's names, as image indexes spell them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
}

impl Platform {
    /// Linux on this machine's architecture.
    pub(super) fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
        }
    }
}

/// Check `body` against `digest` (`sha256:` or `sha512:`) and, when known, `size`.
pub(super) fn verify(digest: &str, size: Option<u64>, body: &[u8]) -> Result<(), Error> {
    if let Some(size) = size.filter(|&s| s != body.len() as u64) {
        return Err(Error::Registry(format!(
            "manifest {digest} is {} bytes, its descriptor says {size}",
            body.len()
        )));
    }
    let actual = match digest.split_once(':') {
        Some(("sha256", _)) => format!("sha256:{}", hex(&Sha256::digest(body))),
        Some(("sha512", _)) => format!("sha512:{}", hex(&Sha512::digest(body))),
        _ => {
            return Err(Error::Registry(format!(
                "unsupported digest algorithm in {digest:?}"
            )));
        }
    };
    if !actual.eq_ignore_ascii_case(digest) {
        return Err(Error::Registry(format!(
            "manifest digest mismatch: expected {digest}, got {actual}"
        )));
    }
    Ok(())
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A descriptor as manifests and indexes carry it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub(super) struct Descriptor {
    /// Media type of the target.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Digest of the target.
    pub digest: String,
    /// Size of the target in bytes.
    pub size: u64,
    /// Platform of an index entry.
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub(super) struct DescriptorPlatform {
    /// CPU architecture, Go's name.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant (`v8`, `v7`...).
    #[serde(default)]
    pub variant: Option<String>,
}

impl From<Descriptor> for Blob {
    fn from(d: Descriptor) -> Blob {
        Blob {
            digest: d.digest,
            size: d.size,
            media_type: d.media_type,
        }
    }
}

/// What a manifest endpoint answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// An OCI index or Docker manifest list.
    Index(Vec<Descriptor>),
    /// An image manifest.
    Manifest {
        /// The config blob.
        config: Descriptor,
        /// The layer blobs.
        layers: Vec<Descriptor>,
    },
}

/// Parse a manifest body; the kind comes from `content_type`, else the body's `mediaType`, else
/// its shape.
pub(super) fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, Error> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u64>,
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<Vec<Descriptor>>,
        #[serde(default)]
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Option<Vec<Descriptor>>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| Error::Registry(format!("manifest is not valid json: {e}")))?;
    let known = |t: &&str| [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].contains(t);
    let kind = content_type
        .filter(known)
        .or(raw.media_type.as_deref().filter(known));
    if raw.schema_version == Some(1) || (kind.is_none() && content_type.is_some_and(is_schema1)) {
        return Err(Error::Registry(
            "docker schema 1 manifests are not supported".to_owned(),
        ));
    }
    let is_index = match kind {
        Some(k) => k == OCI_INDEX || k == DOCKER_LIST,
        None => raw.manifests.is_some(),
    };
    let check = |d: &Descriptor| {
        if valid_digest(&d.digest) {
            Ok(())
        } else {
            Err(Error::Registry(format!(
                "invalid digest {:?} in manifest",
                d.digest
            )))
        }
    };
    if is_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| Error::Registry("image index without manifests".to_owned()))?;
        manifests.iter().try_for_each(check)?;
        return Ok(Parsed::Index(manifests));
    }
    let config = raw
        .config
        .ok_or_else(|| Error::Registry("image manifest without config".to_owned()))?;
    let layers = raw.layers.unwrap_or_default();
    std::iter::once(&config)
        .chain(&layers)
        .try_for_each(check)?;
    Ok(Parsed::Manifest { config, layers })
}

fn is_schema1(content_type: &str) -> bool {
    content_type.starts_with("application/vnd.docker.distribution.manifest.v1")
}

/// `algorithm:encoded` with the characters the OCI spec allows (safe in a URL path).
fn valid_digest(digest: &str) -> bool {
    let Some((alg, encoded)) = digest.split_once(':') else {
        return false;
    };
    !alg.is_empty()
        && !encoded.is_empty()
        && alg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
}

/// The index entry for `platform`: matching OS and architecture, preferring an entry without
/// variant (`arm64/v8` counts as none), else the first match.
pub(super) fn select_manifest<'a>(
    manifests: &'a [Descriptor],
    platform: &Platform,
) -> Option<&'a Descriptor> {
    let matching: Vec<(&Descriptor, Option<&str>)> = manifests
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            let arch = normalize_arch(&p.architecture);
            (p.os == platform.os && arch == platform.architecture).then(|| {
                let variant = p.variant.as_deref().filter(|v| !v.is_empty());
                let variant = variant.filter(|v| !(arch == "arm64" && *v == "v8"));
                (d, variant)
            })
        })
        .collect();
    matching
        .iter()
        .find(|(_, variant)| variant.is_none())
        .or(matching.first())
        .map(|(d, _)| *d)
}

/// Architecture aliases found in the wild, mapped to Go's names.
fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" => "386",
        other => other,
    }
}
