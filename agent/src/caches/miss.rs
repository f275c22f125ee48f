//! Miss detection: a scope whose pods compile into new hash directories instead of loading
//! the cache is inert, and the operator needs to know what differs between the pods.
//!
//! vLLM 0.33 keys two trees under `torch_compile_cache/` (facts A, "vLLM's own cache tree"):
//! `torch_aot_compile/<sha256, 64 hex>/` and the piecewise `<sha256[:10]>/rank_R_D/<prefix>/`,
//! whose `cache_key_factors.json` holds "the raw factors: useful for diagnosing misses". Within
//! one scope the image and GPU are fixed, so a second directory in a tree means a pod's engine
//! config, `--model` string, revision or `VLLM_*` env differed (facts A, "Config hash", "Env
//! hash", "Model string must match byte for byte", "Per-run values break reuse"). Directories
//! are ordered by when they first appeared (the oldest mtime inside), so a report reads as
//! "pods after the first compiled into these keys".

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use super::layout::VLLM_DIR;
use super::walk::{self, Kind, Walk};

/// Where vLLM's compile cache sits in a scope.
const COMPILE_CACHE: &str = "torch_compile_cache";
/// Largest `cache_key_factors.json` read.
const MAX_FACTORS_BYTES: u64 = 4 << 20;
/// Longest value shown in a [`FactorDiff`].
const MAX_VALUE_CHARS: usize = 200;
/// Most factors reported.
const MAX_DIFFS: usize = 50;

/// Which of vLLM's two trees a hash directory is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashTree {
    /// `torch_compile_cache/<10 hex>/`.
    Piecewise,
    /// `torch_compile_cache/torch_aot_compile/<64 hex>/`.
    Aot,
}

/// One hash directory of vLLM's compile cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HashDir {
    /// Which tree.
    pub tree: HashTree,
    /// The directory name (the key's hash).
    pub hash: String,
    /// Path relative to the scope's tree.
    pub path: String,
    /// Oldest mtime inside (when it first appeared), nanoseconds since the epoch.
    pub first_seen_ns: i64,
    /// Files inside.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A factor of vLLM's key whose value differs between hash directories.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FactorDiff {
    /// JSON pointer into `cache_key_factors.json` (`/config/max_num_batched_tokens`).
    pub factor: String,
    /// Value per piecewise hash directory (`<absent>` when it lacks the factor).
    pub values: BTreeMap<String, String>,
}

/// What miss detection found in a scope.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct MissReport {
    /// Every hash directory, oldest first.
    pub dirs: Vec<HashDir>,
    /// Whether one tree has more than one directory: pods compiled into new keys.
    pub inert: bool,
    /// The differing factors between piecewise directories with a `cache_key_factors.json`.
    pub factors: Vec<FactorDiff>,
}

/// Looks for several hash directories in the scope whose tree is at `tree` and `walk` (a walk
/// of it), and for what differs between their `cache_key_factors.json`.
pub fn detect(tree: &Path, walk: &Walk) -> MissReport {
    let base = format!("{VLLM_DIR}/{COMPILE_CACHE}/");
    let mut dirs: BTreeMap<(HashTree, String), HashDir> = BTreeMap::new();
    let mut factor_files: BTreeMap<String, String> = BTreeMap::new();
    for e in &walk.entries {
        let Some(rest) = e.rel.strip_prefix(&base) else {
            continue;
        };
        let mut parts = rest.split('/');
        let (tree_kind, hash, depth) = match (parts.next(), parts.next()) {
            (Some("torch_aot_compile"), Some(h)) if is_hex(h, 64) => (HashTree::Aot, h, 2),
            (Some(h), _) if is_hex(h, 10) => (HashTree::Piecewise, h, 1),
            _ => continue,
        };
        let path = rest.split('/').take(depth).collect::<Vec<_>>().join("/");
        let dir = dirs
            .entry((tree_kind, hash.to_string()))
            .or_insert(HashDir {
                tree: tree_kind,
                hash: hash.to_string(),
                path: format!("{base}{path}"),
                first_seen_ns: i64::MAX,
                files: 0,
                bytes: 0,
            });
        dir.first_seen_ns = dir.first_seen_ns.min(e.mtime_ns);
        if e.kind == Kind::File {
            dir.files += 1;
            dir.bytes += e.size;
            if tree_kind == HashTree::Piecewise && e.rel.ends_with("/cache_key_factors.json") {
                // The first in path order: rank_0_0 before rank_1_0.
                factor_files
                    .entry(hash.to_string())
                    .or_insert(e.rel.clone());
            }
        }
    }
    let mut dirs: Vec<HashDir> = dirs.into_values().collect();
    dirs.sort_by(|a, b| (a.first_seen_ns, &a.path).cmp(&(b.first_seen_ns, &b.path)));
    let count = |t: HashTree| dirs.iter().filter(|d| d.tree == t).count();
    let inert = count(HashTree::Piecewise) > 1 || count(HashTree::Aot) > 1;
    let factors = if factor_files.len() > 1 {
        diff_factors(tree, &factor_files)
    } else {
        Vec::new()
    };
    MissReport {
        dirs,
        inert,
        factors,
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The factors whose flattened values differ between the files (hash -> relative path).
fn diff_factors(tree: &Path, files: &BTreeMap<String, String>) -> Vec<FactorDiff> {
    let flat: BTreeMap<&String, BTreeMap<String, String>> = files
        .iter()
        .filter_map(|(hash, rel)| read_json(tree, rel).map(|v| (hash, flatten(&v))))
        .collect();
    let keys: BTreeSet<&String> = flat.values().flat_map(|m| m.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let values: BTreeMap<String, String> = flat
            .iter()
            .map(|(hash, m)| {
                let v = m
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "<absent>".to_string());
                ((*hash).clone(), v)
            })
            .collect();
        let distinct: BTreeSet<&String> = values.values().collect();
        if distinct.len() > 1 {
            out.push(FactorDiff {
                factor: key.clone(),
                values,
            });
            if out.len() == MAX_DIFFS {
                break;
            }
        }
    }
    out
}

/// A JSON file of the tree, read without following links; `None` when unreadable or invalid
/// (a cut-short write: the report then simply lacks its factors).
fn read_json(tree: &Path, rel: &str) -> Option<serde_json::Value> {
    let (_parent, file) = walk::open_beneath(tree, rel).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_FACTORS_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Leaf values by JSON pointer, each as compact JSON cut to [`MAX_VALUE_CHARS`].
fn flatten(v: &serde_json::Value) -> BTreeMap<String, String> {
    fn go(v: &serde_json::Value, path: String, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    go(child, format!("{path}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) if !a.is_empty() => {
                for (i, child) in a.iter().enumerate() {
                    go(child, format!("{path}/{i}"), out);
                }
            }
            leaf => {
                out.insert(
                    path,
                    leaf.to_string().chars().take(MAX_VALUE_CHARS).collect(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    go(v, String::new(), &mut out);
    out
}
