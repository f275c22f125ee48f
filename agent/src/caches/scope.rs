//! Scopes: one compile-cache tree per (ColdModel name, image digest, GPU product name).
//!
//! Why those three: "a scope of (image digest, GPU product name) covers every key except the
//! CUDA ComputeCache. Adding the driver version is harmless but splits scopes unnecessarily"
//! (facts A, "What each cache depends on"). The image fixes vLLM, torch, Triton, ptxas and
//! FlashInfer; Inductor keys on the GPU **device name**, compute capability alone is not enough.
//! The model is in the scope so that GC, leases and miss reports speak per model.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::layout::{CacheRoot, Owner, SCOPE_SUBDIRS};
use super::{Error, UnixNanos};
use crate::fsx;

/// Mode of a scope's directories: the owner and its group write (several pods of a model may
/// run with one gid and different uids), others read. Our own directories stay 0755.
pub const SCOPE_DIR_MODE: u32 = 0o775;

/// What a scope is for. Every part is validated: the key names directories.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ScopeKey {
    /// The ColdModel's name (a DNS subdomain: lowercase letters, digits, `-`, `.`).
    pub model: String,
    /// The vLLM image's digest, `sha256:<64 hex>`.
    pub image_digest: String,
    /// The GPU product name as NVML reports it (`NVIDIA H100 80GB HBM3`).
    pub gpu_product: String,
}

/// A scope: its key and the directory name derived from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// What the scope is for.
    pub key: ScopeKey,
    /// Its directory name under `scopes/` and `state/` (see [`ScopeKey::dir_name`]).
    pub name: String,
}

fn invalid(field: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidKey {
        field,
        value: value.chars().take(100).collect(),
        reason: reason.to_string(),
    }
}

impl ScopeKey {
    /// A validated key.
    pub fn new(model: &str, image_digest: &str, gpu_product: &str) -> Result<ScopeKey, Error> {
        validate_model(model)?;
        let hex = image_digest
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid("image digest", image_digest, "not sha256:<64 hex>"))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(
                "image digest",
                image_digest,
                "not sha256:<64 lowercase hex>",
            ));
        }
        let gpu = gpu_product.trim();
        if gpu.is_empty() || gpu.len() > 256 || gpu.chars().any(char::is_control) {
            return Err(invalid(
                "gpu product",
                gpu_product,
                "must be 1 to 256 bytes without control characters",
            ));
        }
        Ok(ScopeKey {
            model: model.to_string(),
            image_digest: image_digest.to_string(),
            gpu_product: gpu.to_string(),
        })
    }

    /// The scope's directory name: `<model>_<gpu>_<digest 12>_<key hash 12>`. The readable
    /// parts are cut short (model 40, GPU slug 32 characters) and may collide once cut; the
    /// last part, the first 12 hex digits of sha256 over the whole key, tells them apart. Only
    /// `[a-z0-9.-_]`: `_` separates, and appears in no part.
    pub fn dir_name(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.model, &self.image_digest, &self.gpu_product] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        let hash = format!("{:x}", h.finalize());
        let digest = self.image_digest.trim_start_matches("sha256:");
        format!(
            "{}_{}_{}_{}",
            cut(&self.model, 40),
            cut(&slug(&self.gpu_product), 32),
            &digest[..12],
            &hash[..12]
        )
    }
}

impl Scope {
    /// The scope of `key`.
    pub fn new(key: ScopeKey) -> Scope {
        let name = key.dir_name();
        Scope { key, name }
    }
}

/// Checks that `model` can name a scope's model: ColdModel names are DNS subdomains (the API
/// server enforces it); we check again because the name becomes a path component.
pub fn validate_model(model: &str) -> Result<(), Error> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    let bytes = model.as_bytes();
    if bytes.is_empty() || bytes.len() > 253 || !bytes.iter().all(|&b| ok_char(b)) {
        return Err(invalid("model", model, "not a DNS subdomain name"));
    }
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(invalid(
            "model",
            model,
            "must start and end with a letter or digit",
        ));
    }
    Ok(())
}

/// Lowercase ASCII letters and digits; every other run of characters becomes one `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn cut(s: &str, max: usize) -> &str {
    // ASCII only (validated or slugged), so any byte index is a char boundary.
    s.get(..max.min(s.len()))
        .unwrap_or(s)
        .trim_end_matches(['-', '.'])
}

/// Creates (or completes) the scope of `key`: its tree with every subdirectory the env points
/// at, owned by `owner` with mode 0775, and its state directory with `key.json`. Existing
/// directories are re-owned (the policy may have changed) but nothing below them: a pod's tree
/// is never walked by chown. Refuses a symlink anywhere on the way.
pub fn ensure_scope(root: &CacheRoot, key: &ScopeKey, owner: Owner) -> Result<Scope, Error> {
    let scope = Scope::new(key.clone());
    std::fs::create_dir_all(root.compile_dir())
        .map_err(|e| Error::io("create", root.compile_dir(), e))?;
    let scopes = fsx::ensure_dirs(root.compile_dir(), &["scopes"])?;
    let tree = scopes.join(&scope.name);
    owned_dir(&tree, owner)?;
    for sub in SCOPE_SUBDIRS {
        owned_dir(&tree.join(sub), owner)?;
    }
    let state = fsx::ensure_dirs(root.compile_dir(), &["state", scope.name.as_str()])?;
    let json = serde_json::to_vec_pretty(&scope).map_err(|e| Error::bad_state(&state, e))?;
    fsx::write_atomic(&state, "key.json", &json, fsx::FILE_MODE)?;
    Ok(scope)
}

/// A real directory at `path` (created when missing), owned by `owner`, mode [`SCOPE_DIR_MODE`].
fn owned_dir(path: &Path, owner: Owner) -> Result<(), Error> {
    if !fsx::is_real_dir(path)? {
        match std::fs::DirBuilder::new().mode(SCOPE_DIR_MODE).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                fsx::is_real_dir(path)?;
            }
            Err(e) => return Err(Error::io("create", path, e)),
        }
    }
    // lchown: never follows a symlink swapped in since the check.
    std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
        .map_err(|e| Error::io("chown", path, e))?;
    fsx::set_mode(path, SCOPE_DIR_MODE)?;
    Ok(())
}

/// Points `models/<model>` at `scope` (a relative link, `../scopes/<name>`), replacing any
/// earlier link atomically (a new link under a temporary name, renamed over the old one). Pods
/// that mount the link later get the new scope; running pods keep the tree they mounted.
pub fn point_model(root: &CacheRoot, scope: &Scope) -> Result<(), Error> {
    let models = fsx::ensure_dirs(root.compile_dir(), &["models"])?;
    let target = Path::new("..").join("scopes").join(&scope.name);
    let tmp = models.join(fsx::temp_name("link"));
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::io("symlink", &tmp, e))?;
    fsx::commit_staged(&tmp, &models, &scope.key.model)?;
    Ok(())
}

/// The scope name `models/<model>` points at, if the link exists and has our shape.
pub fn current_scope(root: &CacheRoot, model: &str) -> Result<Option<String>, Error> {
    let link = root.model_link(model);
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("readlink", &link, e)),
    };
    let name = target
        .strip_prefix("../scopes")
        .ok()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .map(str::to_string);
    Ok(name)
}

/// Every scope with a state directory on this node, from `state/<scope>/key.json`.
pub fn list_scopes(root: &CacheRoot) -> Result<Vec<Scope>, Error> {
    let state = root.state_dir();
    let entries = match std::fs::read_dir(&state) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &state, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &state, e))?;
        let path = entry.path().join("key.json");
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(bytes) = fsx::read_optional(&path)? {
            let scope: Scope =
                serde_json::from_slice(&bytes).map_err(|e| Error::bad_state(&path, e))?;
            out.push(scope);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// When a pod using the scope last became Ready, as the caller recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Used {
    last_used_ns: UnixNanos,
}

/// Records that a pod using `scope` became Ready at `now` (GC evicts the least recently used).
pub fn record_used(root: &CacheRoot, scope: &str, now: UnixNanos) -> Result<(), Error> {
    let dir = fsx::ensure_dirs(root.compile_dir(), &["state", scope])?;
    let json =
        serde_json::to_vec(&Used { last_used_ns: now }).map_err(|e| Error::bad_state(&dir, e))?;
    fsx::write_atomic(&dir, "used.json", &json, fsx::FILE_MODE)?;
    Ok(())
}

/// When `scope` was last used, `None` if never recorded.
pub fn last_used(root: &CacheRoot, scope: &str) -> Result<Option<UnixNanos>, Error> {
    let path = root.scope_state_dir(scope).join("used.json");
    let Some(bytes) = fsx::read_optional(&path)? else {
        return Ok(None);
    };
    let used: Used = serde_json::from_slice(&bytes).map_err(|e| Error::bad_state(&path, e))?;
    Ok(Some(used.last_used_ns))
}
