//! The desired-state file of standalone mode: `[[model]]` entries in TOML, parsed, validated
//! (repo id, revision, globs, image reference, credential paths, no model twice) and turned
//! into the same [`ColdModel`]s cluster mode reads from the API server, with no node selector
//! (a standalone agent is the only node it knows).
//!
//! ```toml
//! [[model]]
//! repo = "Qwen/Qwen3-0.6B"
//! revision = "main"
//! include = ["*.json", "*.safetensors"]
//! image = "vllm/vllm-openai:v0.11.0"
//! token-file = "/etc/coldstart/hf-token"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::api::{ColdModel, ColdModelSpec, CompileCachePolicy, model_name};
use crate::images::ImageRef;
use crate::weights::RepoId;
use crate::weights::filter::Filter;

/// Longest revision accepted (a branch or tag name, or a commit).
const MAX_REVISION: usize = 256;

/// One `[[model]]` entry: what to keep warm on this node. The same shape is the body of
/// `PUT /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelEntry {
    /// Hub repository id (`org/name`).
    pub repo: String,
    /// Branch, tag or commit; `main` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Globs of repository files to fetch; empty means the default selection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs of repository files to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Image that serves the model, pre-pulled into containerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// File holding the Hub token for this model (else the agent's `--hub-token-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Docker `config.json` with credentials for the image (else the agent's `--pull-secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<PathBuf>,
    /// The serving process's health URL (`http://127.0.0.1:8000/health`): while it answers
    /// 2xx the model's compile cache is in use, and the first answer after none marks it
    /// used (what a pod turning Ready does in a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_url: Option<String>,
    /// Compile-cache policy (`[model.compile-cache]`: `enabled`, `uid`, `gid`,
    /// `quiet-period-seconds`, `mount-path`), as a ColdModel's `compileCache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_cache: Option<CompileCacheEntry>,
}

/// `[model.compile-cache]` of a models file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CompileCacheEntry {
    /// Keep compile caches for this model (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Owner uid of the scope (the serving process's user; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid of the scope (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Seconds of quiet before a seal (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_period_seconds: Option<u32>,
    /// OCI repository the sealed scopes are pushed to (`coldctl cache import --here` brings
    /// them to another node; a standalone node has no fleet to vouch for a digest, so it
    /// imports only the digest an operator names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// An entry with the name the agent knows it by ([`model_name`] of its repo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedModel {
    /// The model's name.
    pub name: String,
    /// The entry as the file holds it.
    pub model: ModelEntry,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    #[serde(default, rename = "model", skip_serializing_if = "Vec::is_empty")]
    pub(crate) models: Vec<ModelEntry>,
}

impl ModelEntry {
    /// An entry for `repo` with nothing else set.
    pub fn new(repo: impl Into<String>) -> ModelEntry {
        ModelEntry {
            repo: repo.into(),
            revision: None,
            include: Vec::new(),
            exclude: Vec::new(),
            image: None,
            token_file: None,
            pull_secret: None,
            health_url: None,
            compile_cache: None,
        }
    }

    /// Checks every field; returns the model's name, or why the entry is refused (one line).
    pub fn validate(&self) -> Result<String, String> {
        let repo = RepoId::parse(&self.repo).map_err(|e| e.to_string())?;
        if let Some(rev) = &self.revision
            && (rev.is_empty()
                || rev.len() > MAX_REVISION
                || rev.chars().any(|c| c.is_whitespace() || c.is_control())
                || rev.contains(".."))
        {
            return Err(format!("model {}: invalid revision {rev:?}", self.repo));
        }
        Filter::new(&self.include, &self.exclude)
            .map_err(|e| format!("model {}: {e}", self.repo))?;
        if let Some(image) = &self.image {
            ImageRef::parse(image).map_err(|e| format!("model {}: {e}", self.repo))?;
        }
        for (key, path) in [
            ("token-file", &self.token_file),
            ("pull-secret", &self.pull_secret),
        ] {
            if let Some(p) = path
                && !p.is_absolute()
            {
                return Err(format!(
                    "model {}: {key} {} is not absolute",
                    self.repo,
                    p.display()
                ));
            }
        }
        if let Some(url) = &self.health_url {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(format!(
                    "model {}: health-url {url:?} is not an http(s) URL",
                    self.repo
                ));
            }
        }
        Ok(model_name(&repo))
    }

    /// The ColdModel this entry stands for (selected on every node). Call after
    /// [`ModelEntry::validate`] returned `name`.
    pub fn to_cold_model(&self, name: &str) -> ColdModel {
        ColdModel::new(
            name,
            ColdModelSpec {
                repo: self.repo.clone(),
                revision: self.revision.clone(),
                include: self.include.clone(),
                exclude: self.exclude.clone(),
                token_secret_ref: None,
                image: self.image.clone(),
                image_pull_secret_ref: None,
                node_selector: None,
                compile_cache: self.compile_cache.as_ref().map(|c| CompileCachePolicy {
                    enabled: c.enabled,
                    uid: c.uid,
                    gid: c.gid,
                    quiet_period_seconds: c.quiet_period_seconds,
                    mount_path: None,
                    registry: c.registry.clone(),
                }),
                snapshot: None,
            },
        )
    }

    /// Whether `key` names this entry: its name or its repo id (exactly, or ignoring case).
    pub fn matches(&self, name: &str, key: &str) -> bool {
        name == key || self.repo.eq_ignore_ascii_case(key)
    }
}

/// The validated content of the file: entries in file order, with their names and ColdModels.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The entries with their names.
    pub entries: Vec<NamedModel>,
    /// The same as ColdModels, for the planner.
    pub models: Vec<ColdModel>,
}

impl PartialEq for Desired {
    /// The ColdModels follow from the entries: comparing those is enough.
    fn eq(&self, other: &Desired) -> bool {
        self.entries == other.entries
    }
}

impl Desired {
    /// Validates a parsed document read from `path` (named in every error).
    pub(crate) fn from_document(path: &Path, doc: Document) -> Result<Desired, Error> {
        let invalid = |reason: String| Error::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut seen = BTreeSet::new();
        let mut desired = Desired::default();
        for entry in doc.models {
            let name = entry.validate().map_err(invalid)?;
            if !seen.insert(name.clone()) {
                return Err(invalid(format!(
                    "model {} is listed twice (name {name})",
                    entry.repo
                )));
            }
            desired.models.push(entry.to_cold_model(&name));
            desired.entries.push(NamedModel { name, model: entry });
        }
        Ok(desired)
    }
}

/// Parses the text of the file at `path`.
pub(crate) fn parse_document(path: &Path, text: &str) -> Result<Document, Error> {
    toml::from_str(text).map_err(|e| Error::Invalid {
        path: path.to_path_buf(),
        // toml's messages span lines (a source excerpt); keep the first, and the place.
        reason: e.message().lines().next().unwrap_or("invalid").to_string()
            + &e.span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default(),
    })
}

/// Parses and validates the text of the file at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Desired, Error> {
    Desired::from_document(path, parse_document(path, text)?)
}

/// The file's text for `doc`, with a header saying who writes it.
pub(crate) fn render(doc: &Document) -> Result<String, String> {
    let body = toml::to_string(doc).map_err(|e| e.to_string())?;
    // A text file ends with a newline (editors, `cat`, `diff` and POSIX tools expect one).
    let newline = if body.ends_with('\n') { "" } else { "\n" };
    Ok(format!("{HEADER}{body}{newline}"))
}

const HEADER: &str = "\
# Models this node keeps warm (coldstart-agent --standalone). Edit by hand or with
# `coldctl --node`; the agent reloads the file when it changes. Edits made through the
# agent rewrite the file and do not keep comments.

";
