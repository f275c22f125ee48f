//! Which files of a repository to sync.
//!
//! The default is what vLLM loads: safetensors weights (the shards an `*.safetensors.index.json`
//! names, or a single `model.safetensors`; `consolidated*.safetensors` only when there are no
//! other safetensors), no other weight formats when safetensors exist, and always the configs,
//! tokenizer, chat templates and remote code. `--include` replaces the default; `--exclude`
//! narrows whatever is selected. Patterns are fnmatch-style as in `huggingface_hub`: `*`
//! matches `/` too, and a pattern ending in `/` matches everything below it.

use std::collections::BTreeSet;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{Error, TreeEntry};

/// Files vLLM (and transformers) read besides weights.
const ALWAYS: &[&str] = &[
    "*.json",
    "tokenizer*",
    "*.model",
    "*.tiktoken",
    "vocab*",
    "merges.txt",
    "*.py",
    "*.jinja",
];
/// Weight formats vLLM does not load when safetensors exist.
const OTHER_WEIGHTS: &[&str] = &[
    "*.bin",
    "*.pt",
    "*.pth",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.gguf",
    "*.ot",
];

/// The selection rules for one sync.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    include_patterns: Vec<String>,
}

impl Filter {
    /// `include` empty: the vLLM default; otherwise exactly what `include` matches.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, Error> {
        Ok(Filter {
            include: (!include.is_empty()).then(|| globs(include)).transpose()?,
            exclude: (!exclude.is_empty()).then(|| globs(exclude)).transpose()?,
            include_patterns: include.to_vec(),
        })
    }

    /// Index files (`*.safetensors.index.json`) the default selection must read before it can
    /// pick shards. Empty when `--include` replaces the default.
    pub fn index_files<'a>(&self, tree: &'a [TreeEntry]) -> Vec<&'a TreeEntry> {
        if self.include.is_some() {
            return Vec::new();
        }
        tree.iter()
            .filter(|e| e.path.ends_with(".safetensors.index.json") && !in_original(&e.path))
            .collect()
    }

    /// The selected entries. `shards` are the file names the index files' `weight_map`s name
    /// (relative to each index file's directory, already joined).
    pub fn select(&self, tree: &[TreeEntry], shards: &BTreeSet<String>) -> Vec<TreeEntry> {
        let chosen: Vec<&TreeEntry> = match &self.include {
            Some(set) => tree.iter().filter(|e| set.is_match(&e.path)).collect(),
            None => default_selection(tree, shards),
        };
        chosen
            .into_iter()
            .filter(|e| !self.exclude.as_ref().is_some_and(|x| x.is_match(&e.path)))
            .cloned()
            .collect()
    }

    /// Patterns a reader passes to `snapshot_download(allow_patterns=...)` to load what this
    /// filter selected from `tree`: the include patterns, or the selected paths themselves.
    pub fn allow_patterns(&self, selected: &[TreeEntry]) -> Vec<String> {
        if self.include.is_some() && self.exclude.is_none() {
            return self.include_patterns.clone();
        }
        selected.iter().map(|e| e.path.clone()).collect()
    }
}

fn default_selection<'a>(tree: &'a [TreeEntry], shards: &BTreeSet<String>) -> Vec<&'a TreeEntry> {
    let always = globs_static(ALWAYS);
    let other = globs_static(OTHER_WEIGHTS);
    let safetensors: Vec<&TreeEntry> = tree
        .iter()
        .filter(|e| e.path.ends_with(".safetensors") && !in_original(&e.path))
        .collect();
    let has_safetensors = !safetensors.is_empty();
    let non_consolidated = safetensors
        .iter()
        .any(|e| !basename(&e.path).starts_with("consolidated"));
    let weight_ok = |e: &TreeEntry| -> bool {
        if !e.path.ends_with(".safetensors") || in_original(&e.path) {
            return false;
        }
        if !shards.is_empty() {
            return shards.contains(&e.path);
        }
        !(non_consolidated && basename(&e.path).starts_with("consolidated"))
    };
    tree.iter()
        .filter(|e| {
            if in_original(&e.path) {
                return false;
            }
            if weight_ok(e) {
                return true;
            }
            if other.as_ref().is_some_and(|o| o.is_match(&e.path)) {
                // Without safetensors vLLM falls back to PyTorch weights.
                return !has_safetensors && (e.path.ends_with(".bin") || e.path.ends_with(".pt"));
            }
            always.as_ref().is_some_and(|a| a.is_match(&e.path))
        })
        .collect()
}

fn in_original(path: &str) -> bool {
    path.starts_with("original/")
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// fnmatch-like globs: `*` crosses `/`; `dir/` means `dir/*`.
fn globs(patterns: &[String]) -> Result<GlobSet, Error> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let pat = if p.ends_with('/') {
            format!("{p}*")
        } else {
            p.clone()
        };
        let glob = globset::GlobBuilder::new(&pat)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::Pattern {
                pattern: p.clone(),
                reason: e.kind().to_string(),
            })?;
        b.add(glob);
    }
    b.build().map_err(|e| Error::Pattern {
        pattern: patterns.join(","),
        reason: e.to_string(),
    })
}

fn globs_static(patterns: &[&str]) -> Option<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).ok()?);
    }
    b.build().ok()
}

/// Shard names an index file's JSON lists in `weight_map`, joined to the index's directory.
pub fn shards_of_index(index_path: &str, json: &[u8]) -> Result<BTreeSet<String>, Error> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::HashMap<String, String>,
    }
    let idx: Index = serde_json::from_slice(json).map_err(|e| Error::Protocol {
        url: index_path.to_string(),
        reason: format!("not a safetensors index: {e}"),
    })?;
    let dir = index_path.rsplit_once('/').map(|(d, _)| d);
    let mut out = BTreeSet::new();
    for shard in idx.weight_map.into_values() {
        super::safe_relative_path(&shard)?;
        out.insert(match dir {
            Some(d) => format!("{d}/{shard}"),
            None => shard,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
