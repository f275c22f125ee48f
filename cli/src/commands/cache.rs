//! `coldctl cache env|list|gc`: the compile caches (vLLM, Triton, Inductor, FlashInfer, CUDA
//! JIT) the agents keep per model on each node, under `<cache root>/compile/`.
//!
//! - [`env`]: the hostPath volume, its mount and the env a model's pods need (cluster: the
//!   ColdModel's policy; `--node`: the standalone agent's models file; `--here`: defaults).
//! - [`list`]: the scopes, from the ColdNodes (cluster), the standalone agent's status
//!   (`--node`), or this node's cache root read now (`--here`).
//! - [`gc`]: a byte budget over this node's scopes, now (`--here` only: every agent collects
//!   on its own under `--compile-cache-budget`).
//! - [`ship`]: `export` and `import`: a scope to or from a registry, now (`--here`/`--node`:
//!   in the cluster every agent does it on its own for `compileCache.registry`).

pub mod env;
pub mod gc;
pub mod list;
pub mod ship;

use std::path::PathBuf;

use coldstart_agent::caches::CacheRoot;
use coldstart_agent::config::DEFAULT_CACHE_ROOT;

use crate::Cli;
use crate::report::{CliError, Output};

/// Arguments of `coldctl cache`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Print the volume, volumeMount and env to paste into a model's pod spec.
    Env(env::Args),
    /// One row per compile-cache scope (per node in the cluster, this node's with --here).
    List(list::Args),
    /// Evict this node's least recently used scopes down to a byte budget (--here).
    Gc(gc::Args),
    /// Push a model's sealed scope on this node to a registry (--here or --node).
    Export(ship::ExportArgs),
    /// Import a model's scope from a registry into this node, by digest (--here or --node).
    Import(ship::ImportArgs),
}

/// The node's cache root, as the agent's `--cache-root`.
#[derive(Debug, Clone, clap::Args)]
pub struct RootArgs {
    /// The agent's cache root on the node (compile caches live under `<root>/compile`).
    #[arg(long, env = "COLDSTART_CACHE_ROOT", value_name = "DIR",
          default_value = DEFAULT_CACHE_ROOT)]
    pub cache_root: PathBuf,
}

impl RootArgs {
    /// The compile-cache layout under the root.
    pub fn root(&self) -> CacheRoot {
        CacheRoot::new(&self.cache_root)
    }
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    match &args.verb {
        Verb::Env(a) => env::run(cli, a).await,
        Verb::List(a) => list::run(cli, a).await,
        Verb::Gc(a) => gc::run(cli, a).await,
        Verb::Export(a) => ship::export(cli, a).await,
        Verb::Import(a) => ship::import(cli, a).await,
    }
}

/// The short form of a scope's directory name in tables: its last part, the key's hash (12
/// hex digits, unique on a node); documents carry the whole name.
pub fn short_scope(scope: &str) -> &str {
    scope.rsplit('_').next().unwrap_or(scope)
}

/// Now, in nanoseconds since the epoch (the caches API's unit); read once at the edge.
pub fn now_ns() -> i64 {
    let ns = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// A timestamp of the caches API as RFC 3339, for documents.
pub fn rfc3339(ns: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(ns))
        .ok()
        .map(|t| t.to_string())
}

/// `yes` or `no`, for tables.
pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests;
