//! Compile caches across nodes: a sealed generation pushed to the ColdModel's registry as an OCI
//! artifact ([`super::artifact`]) tagged by the scope's name, and imported by the other nodes of
//! the same scope (same ColdModel, image digest and GPU product; facts A, "What each cache
//! depends on") before their first pod.
//!
//! Push rule: a node pushes when the scope's tag is absent, so that simultaneous seals converge
//! on one artifact (in a cluster a `coordination.k8s.io` Lease per tag makes the check and push
//! one step: see [`Claim`]); it pushes a newer generation only when its scope was imported from
//! the artifact the tag still names and its pods compiled more since (cache misses). A node
//! that compiled on its own while the tag appeared keeps its work and pushes nothing.
//!
//! Import rule: only into a scope with no file yet, only from the configured repository, only an
//! artifact whose digest the caller trusts ([`Trust`]: in a cluster, one a node of the fleet
//! recorded as exported in its ColdNode status), and only if every byte matches the manifest it
//! carries, which must name this node's scope key. Anything else leaves the scope empty: the pod
//! compiles, nothing wrong is ever loaded.
//!
//! Provenance lives in the agent's state directory: `state/<scope>/imported.json` and
//! `exported.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use super::artifact::{self, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, annotations};
use super::layout::{CacheRoot, Owner};
use super::scope::Scope;
use super::seal::{self, Manifest};
use super::{Error, UnixNanos};
use crate::api::CacheArtifact;
use crate::fsx;
use crate::images::registry::artifact::{BlobSource, RawManifest, Repository};
use crate::images::registry::{Access, RegistryClient};
use crate::images::{Blob, ImageRef, RegistryAuth};

/// Where a model's artifacts go: a repository and the credentials for its registry.
#[derive(Debug, Clone)]
pub struct Target {
    repository: ImageRef,
    auth: Option<RegistryAuth>,
}

impl Target {
    /// `repository` (`registry/path`, no tag or digest), with `auth` for its registry.
    pub fn new(repository: &str, auth: Option<RegistryAuth>) -> Result<Target, Error> {
        let last = repository.rsplit('/').next().unwrap_or_default();
        if repository.contains('@') || (repository.contains('/') && last.contains(':')) {
            return Err(Error::InvalidKey {
                field: "compile-cache registry",
                value: repository.chars().take(100).collect(),
                reason: "names a tag or digest; give the repository only (the tag is the \
                         scope's name)"
                    .to_string(),
            });
        }
        Ok(Target {
            repository: ImageRef::parse(repository)?,
            auth,
        })
    }

    /// `registry/path`.
    pub fn name(&self) -> String {
        self.repository.name()
    }

    /// `registry/path:<scope>`.
    pub fn reference(&self, scope: &str) -> String {
        format!("{}:{scope}", self.repository.name())
    }

    fn open(&self, client: &RegistryClient, access: Access) -> Result<Repository, Error> {
        Ok(client.repository(&self.repository, self.auth.as_ref(), access)?)
    }
}

/// Makes "the tag is absent, so push" one step across nodes. [`claim`](Claim::claim) returns
/// false when another node holds the claim for `tag` (it is pushing); the holder calls
/// [`release`](Claim::release) when done.
pub trait Claim: Send + Sync {
    /// Take the claim on `tag` of `repository`.
    fn claim<'a>(&'a self, repository: &'a str, tag: &'a str)
    -> BoxFuture<'a, Result<bool, Error>>;
    /// Give it back.
    fn release<'a>(&'a self, repository: &'a str, tag: &'a str) -> BoxFuture<'a, ()>;
}

/// No coordination (a standalone node, `coldctl cache export --here`): the tag is checked again
/// right before the manifest is put, which narrows the race to the length of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClaim;

impl Claim for NoClaim {
    fn claim<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async { Ok(true) })
    }
    fn release<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    /// Pushed this artifact.
    Pushed(CacheArtifact),
    /// This generation was pushed before.
    AlreadyExported(CacheArtifact),
    /// The tag names an artifact already and this node has no misses to add: nothing pushed.
    Present {
        /// The digest the tag names.
        digest: String,
    },
    /// Another node holds the claim on the tag (it is pushing).
    ClaimedElsewhere,
    /// The scope has no sealed generation.
    NothingSealed,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Imported this artifact into the empty scope.
    Done(CacheArtifact),
    /// The registry has no artifact for the scope yet.
    NoArtifact,
    /// The tag names an artifact whose digest is not trusted (no node recorded it).
    NotTrusted {
        /// The digest the tag names.
        digest: String,
    },
}

/// Which artifacts may be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Exactly this manifest digest (an operator named it).
    Digest(String),
    /// Any digest of this set (the nodes of the fleet recorded them as exported).
    Recorded(BTreeSet<String>),
}

impl Trust {
    fn allows(&self, digest: &str) -> bool {
        match self {
            Trust::Digest(d) => d == digest,
            Trust::Recorded(set) => set.contains(digest),
        }
    }
}

/// An import's provenance, as `imported.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRecord {
    /// The artifact.
    pub artifact: CacheArtifact,
    /// The local generation its files were recorded as.
    pub local_generation: u64,
}

const IMPORTED: &str = "imported.json";
const EXPORTED: &str = "exported.json";

/// The import `scope` came from, if any.
pub fn imported(root: &CacheRoot, scope: &str) -> Result<Option<ImportRecord>, Error> {
    read_json(&root.scope_state_dir(scope).join(IMPORTED))
}

/// What this node last pushed for `scope`, if anything.
pub fn exported(root: &CacheRoot, scope: &str) -> Result<Option<CacheArtifact>, Error> {
    read_json(&root.scope_state_dir(scope).join(EXPORTED))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match fsx::read_optional(path)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::bad_state(path, e)),
        None => Ok(None),
    }
}

fn write_json<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| Error::bad_state(dir.join(name), e))?;
    fsx::write_atomic(dir, name, &bytes, fsx::FILE_MODE)?;
    Ok(())
}

fn time_of(ns: UnixNanos) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::from_nanosecond(ns.into())
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// Why this node may not push over `remote`, if it may not.
fn may_push(
    remote: Option<&RawManifest>,
    imported: Option<&ImportRecord>,
    local_generation: u64,
) -> Option<String> {
    let remote = remote?;
    match imported {
        Some(i) if i.artifact.digest == remote.digest && local_generation > i.local_generation => {
            None
        }
        _ => Some(remote.digest.clone()),
    }
}

/// Pushes the newest sealed generation of `scope` to `target` by the push rule, as `node`.
pub async fn export(
    root: &CacheRoot,
    scope: &str,
    client: &RegistryClient,
    target: &Target,
    claim: &dyn Claim,
    node: &str,
    now: UnixNanos,
) -> Result<Exported, Error> {
    let Some(manifest) = blocking({
        let (root, scope) = (root.clone(), scope.to_string());
        move || seal::latest_manifest(&root, &scope)
    })
    .await?
    else {
        return Ok(Exported::NothingSealed);
    };
    let reference = target.reference(scope);
    if let Some(done) = exported(root, scope)?
        && done.generation == manifest.generation
        && done.reference == reference
    {
        return Ok(Exported::AlreadyExported(done));
    }
    let imported = imported(root, scope)?;
    let mut repo = target.open(client, Access::Push)?;
    let remote = repo.manifest(scope).await?;
    if let Some(digest) = may_push(remote.as_ref(), imported.as_ref(), manifest.generation) {
        return Ok(Exported::Present { digest });
    }
    let name = target.name();
    if !claim.claim(&name, scope).await? {
        return Ok(Exported::ClaimedElsewhere);
    }
    let res = push(
        root,
        &manifest,
        &mut repo,
        target,
        imported.as_ref(),
        node,
        now,
    )
    .await;
    claim.release(&name, scope).await;
    res
}

async fn push(
    root: &CacheRoot,
    manifest: &Manifest,
    repo: &mut Repository,
    target: &Target,
    imported: Option<&ImportRecord>,
    node: &str,
    now: UnixNanos,
) -> Result<Exported, Error> {
    let scope = manifest.scope.as_str();
    let state = fsx::ensure_dirs(root.compile_dir(), &["state", scope])?;
    let packed = blocking({
        let (root, manifest, state) = (root.clone(), manifest.clone(), state.clone());
        move || artifact::pack(&root, &manifest, &state)
    })
    .await?;
    let layer = packed.layer.clone();
    let res = async {
        repo.push_blob(
            &packed.config_digest,
            packed.config.len() as u64,
            BlobSource::Bytes(packed.config.clone()),
        )
        .await?;
        repo.push_blob(
            &packed.layer_digest,
            packed.layer_size,
            BlobSource::File(packed.layer.clone()),
        )
        .await?;
        // Checked again now that the blobs are up: whoever put the tag meanwhile wins.
        let remote = repo.manifest(scope).await?;
        if let Some(digest) = may_push(remote.as_ref(), imported, manifest.generation) {
            return Ok(Exported::Present { digest });
        }
        let body = artifact_manifest(manifest, &packed, node, now);
        let digest = repo.put_manifest(scope, body).await?;
        let record = CacheArtifact {
            reference: target.reference(scope),
            digest,
            generation: manifest.generation,
            bytes: manifest.bytes,
            transferred_bytes: packed.layer_size + packed.config.len() as u64,
            at: time_of(now),
        };
        write_json(&state, EXPORTED, &record)?;
        Ok(Exported::Pushed(record))
    }
    .await;
    let _ = std::fs::remove_file(&layer);
    res
}

/// The OCI manifest of a packed generation.
fn artifact_manifest(
    manifest: &Manifest,
    packed: &artifact::Packed,
    node: &str,
    now: UnixNanos,
) -> Vec<u8> {
    let created = time_of(now).map(|t| t.0.to_string()).unwrap_or_default();
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": packed.config_digest,
            "size": packed.config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": packed.layer_digest,
            "size": packed.layer_size,
        }],
        "annotations": {
            annotations::SCOPE: manifest.scope,
            annotations::MODEL: manifest.key.model,
            annotations::IMAGE_DIGEST: manifest.key.image_digest,
            annotations::GPU_PRODUCT: manifest.key.gpu_product,
            annotations::GENERATION: manifest.generation.to_string(),
            annotations::BYTES: manifest.bytes.to_string(),
            annotations::NODE: node,
            annotations::CREATED: created,
        },
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Imports the artifact of `scope` from `target` into the scope's empty tree, owned by
/// `owner`, if `trust` allows its digest.
pub async fn import(
    root: &CacheRoot,
    scope: &Scope,
    owner: Owner,
    client: &RegistryClient,
    target: &Target,
    trust: &Trust,
    now: UnixNanos,
) -> Result<Imported, Error> {
    let mut repo = target.open(client, Access::Pull)?;
    let Some(remote) = repo.manifest(&scope.name).await? else {
        return Ok(Imported::NoArtifact);
    };
    if !trust.allows(&remote.digest) {
        return Ok(Imported::NotTrusted {
            digest: remote.digest,
        });
    }
    let reference = target.reference(&scope.name);
    let bad = |reason: String| Error::BadArtifact {
        reason: format!("{reference}@{}: {reason}", remote.digest),
    };
    if remote.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(bad(format!(
            "artifact type {:?}, not {ARTIFACT_TYPE}",
            remote.artifact_type.as_deref().unwrap_or("")
        )));
    }
    let layer = match remote.layers.as_slice() {
        [l] if l.media_type == LAYER_MEDIA_TYPE => l.clone(),
        _ => {
            return Err(bad(format!(
                "expected one layer of type {LAYER_MEDIA_TYPE}, found {}",
                remote.layers.len()
            )));
        }
    };
    if remote.config.media_type != CONFIG_MEDIA_TYPE
        || remote.config.size > artifact::MAX_CONFIG_BYTES
    {
        return Err(bad(format!(
            "config of type {:?} and {} bytes (expected {CONFIG_MEDIA_TYPE}, at most {})",
            remote.config.media_type,
            remote.config.size,
            artifact::MAX_CONFIG_BYTES
        )));
    }
    let state = fsx::ensure_dirs(root.compile_dir(), &["state", scope.name.as_str()])?;
    let temps = Temps(vec![
        state.join(fsx::temp_name("config")),
        state.join(fsx::temp_name("layer")),
    ]);
    let manifest: Manifest = {
        repo.fetch_blob(&remote.config, &temps.0[0]).await?;
        let bytes = std::fs::read(&temps.0[0]).map_err(|e| Error::io("read", &temps.0[0], e))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("config is not a manifest: {e}")))?
    };
    artifact::check_manifest(&manifest, scope).map_err(|e| match e {
        Error::BadArtifact { reason } => bad(reason),
        e => e,
    })?;
    check_space(root.compile_dir(), &layer, manifest.bytes)?;
    repo.fetch_blob(&layer, &temps.0[1]).await?;
    let staging = state.join(fsx::temp_name("import"));
    let local_generation = blocking({
        let (root, manifest, scope) = (root.clone(), manifest.clone(), scope.name.clone());
        let layer_path = temps.0[1].clone();
        move || {
            artifact::unpack(&layer_path, &manifest, &staging, owner)?;
            artifact::install(&root, &scope, &staging)?;
            seal::record_imported(&root, &manifest)
        }
    })
    .await
    .map_err(|e| match e {
        Error::BadArtifact { reason } => bad(reason),
        e => e,
    })?;
    let record = ImportRecord {
        artifact: CacheArtifact {
            reference,
            digest: remote.digest.clone(),
            generation: manifest.generation,
            bytes: manifest.bytes,
            transferred_bytes: layer.size + remote.config.size,
            at: time_of(now),
        },
        local_generation,
    };
    write_json(&state, IMPORTED, &record)?;
    Ok(Imported::Done(record.artifact))
}

/// Temporary files removed on drop.
struct Temps(Vec<PathBuf>);

impl Drop for Temps {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Refuses an import the cache filesystem has no room for (the layer plus its files).
fn check_space(dir: &Path, layer: &Blob, bytes: u64) -> Result<(), Error> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| Error::io("statvfs", dir, e.into()))?;
    let available = st.blocks_available().saturating_mul(st.fragment_size());
    let needed = layer.size.saturating_add(bytes);
    if needed > available {
        return Err(Error::io(
            "import",
            dir,
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "needs {needed} bytes (layer {} + files {bytes}), {available} available",
                    layer.size
                ),
            ),
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task {
            reason: e.to_string(),
        })?
}
