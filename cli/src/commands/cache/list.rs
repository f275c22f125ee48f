//! `coldctl cache list [MODEL]`: one row per compile-cache scope. Cluster: per (node, scope)
//! from the ColdNodes' `status.compileCaches`, as the agents last wrote them. `--here`: this
//! node's cache root read now (scopes, sizes, newest seal, last use, the model links, and a
//! scan of `/proc` for the processes that hold a scope).
//!
//! Text columns: [NODE] MODEL SCOPE (the key's hash: the last part of the scope's directory
//! name) GEN SIZE FILES SEALED IN-USE LAST-USED INERT, then one line per inert scope saying
//! why. `-o json|yaml`: `{"caches": [{"node" (cluster only), "model", "scope", "imageDigest",
//! "gpuProduct", "current", "inUse", "inUseBy" (--here: {"pid", "via", "path"}),
//! "generation", "bytes", "files", "sealed", "lastUsed", "inert", "imported", "exported"
//! ({"reference", "digest", "generation", "bytes", "transferredBytes", "at"}), "transfer"}]}`;
//! after the table, a line per scope the registry touched (the transfer, or its import).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use coldstart_agent::api::{CacheArtifact, ColdNode};
use coldstart_agent::caches::inuse::{self, Holder, PROC_ROOT};
use coldstart_agent::caches::{CacheRoot, Error, TreeStats, miss, scope, seal, ship, walk};
use kube::api::{Api, ListParams};
use serde::Serialize;
use serde_json::json;

use super::{RootArgs, rfc3339, short_scope, yes_no};
use crate::cluster::{self, resolve_model};
use crate::report::{CliError, Output};
use crate::{Backend, Cli, output, rollup};

/// Arguments of `coldctl cache list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this model: a Hub repo id (`org/name`) or a ColdModel name.
    pub model: Option<String>,
    #[command(flatten)]
    pub root: RootArgs,
}

/// One scope (on one node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The node (cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The ColdModel.
    pub model: String,
    /// The scope's directory name.
    pub scope: String,
    /// The image digest of its key.
    pub image_digest: String,
    /// The GPU product of its key.
    pub gpu_product: String,
    /// The model's link points at it.
    pub current: bool,
    /// A pod (cluster) or process (`--here`) uses it.
    pub in_use: bool,
    /// `--here`: the process that holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_by: Option<Holder>,
    /// Newest sealed generation.
    pub generation: Option<u64>,
    /// Bytes of its tree.
    pub bytes: u64,
    /// Files in its tree.
    pub files: u64,
    /// Nothing written since the newest seal.
    pub sealed: bool,
    /// When a pod using it last became Ready (RFC 3339).
    pub last_used: Option<String>,
    /// Why the cache is inert, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inert: Option<String>,
    /// The registry artifact the scope was imported from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported: Option<CacheArtifact>,
    /// The artifact this node pushed for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported: Option<CacheArtifact>,
    /// The agent's registry transfer: running, or why the last did not happen (cluster,
    /// `--node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    let model = match &args.model {
        Some(m) => Some(resolve_model(m)?.0),
        None => None,
    };
    let now = crate::commands::now();
    match cli.backend() {
        Backend::Node(sock) => {
            // The standalone agent reports its scopes in its status, as a ColdNode would.
            let status = crate::node::client(&sock)
                .status()
                .await
                .map_err(anyhow::Error::from)?;
            let mut coldnode = ColdNode::new(&status.node, Default::default());
            coldnode.status = Some(status.status);
            let rows = from_coldnodes(&[coldnode], model.as_deref());
            Ok(output(
                &rows,
                now,
                "no compile-cache scopes reported by the agent",
            ))
        }
        Backend::Cluster => {
            let client = cluster::connect(&cli.cluster).await?;
            let coldnodes = Api::<ColdNode>::all(client)
                .list(&ListParams::default())
                .await
                .context("listing ColdNodes")?
                .items;
            let rows = from_coldnodes(&coldnodes, model.as_deref());
            Ok(output(
                &rows,
                now,
                "no compile-cache scopes reported by any node",
            ))
        }
        Backend::Here => {
            let root = args.root.root();
            let held = inuse::scan(Path::new(PROC_ROOT), &root).map_err(anyhow::Error::from)?;
            let rows = here(&root, model.as_deref(), &held).map_err(anyhow::Error::from)?;
            let empty = format!(
                "no compile-cache scopes under {}",
                root.compile_dir().display()
            );
            Ok(output(&rows, now, &empty))
        }
    }
}

/// The rows the ColdNodes report, for `model` only when given, by node then model and scope.
pub fn from_coldnodes(coldnodes: &[ColdNode], model: Option<&str>) -> Vec<Row> {
    let mut rows: Vec<Row> = coldnodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n.status.as_ref()?)))
        .flat_map(|(node, status)| {
            status.compile_caches.iter().map(move |c| Row {
                node: Some(node.clone()),
                model: c.model.clone(),
                scope: c.scope.clone(),
                image_digest: c.image_digest.clone(),
                gpu_product: c.gpu_product.clone(),
                current: c.current,
                in_use: c.in_use,
                in_use_by: None,
                generation: c.generation,
                bytes: c.bytes,
                files: c.files,
                sealed: c.sealed,
                last_used: c.last_used.as_ref().map(|t| t.0.to_string()),
                inert: c.inert.clone(),
                imported: c.imported.clone(),
                exported: c.exported.clone(),
                transfer: c.transfer.clone(),
            })
        })
        .filter(|r| model.is_none_or(|m| r.model == m))
        .collect();
    rows.sort_by(|a, b| (&a.node, &a.model, &a.scope).cmp(&(&b.node, &b.model, &b.scope)));
    rows
}

/// This node's scopes (for `model` only when given), read now; `held`: the /proc scan.
pub fn here(
    root: &CacheRoot,
    model: Option<&str>,
    held: &BTreeMap<String, Holder>,
) -> Result<Vec<Row>, Error> {
    let mut rows = Vec::new();
    for s in scope::list_scopes(root)? {
        if model.is_some_and(|m| s.key.model != m) {
            continue;
        }
        let tree = root.scope_dir(&s.name);
        if !tree.is_dir() {
            // State without a tree: an eviction was interrupted; the next GC finishes it.
            continue;
        }
        let w = walk::walk(&tree)?;
        let stats = TreeStats::of(&w);
        let manifest = seal::latest_manifest(root, &s.name)?;
        let report = miss::detect(&tree, &w);
        let current = scope::current_scope(root, &s.key.model)?.as_deref() == Some(&s.name);
        rows.push(Row {
            node: None,
            model: s.key.model.clone(),
            image_digest: s.key.image_digest.clone(),
            gpu_product: s.key.gpu_product.clone(),
            current,
            in_use: held.contains_key(&s.name),
            in_use_by: held.get(&s.name).cloned(),
            generation: manifest.as_ref().map(|m| m.generation),
            // As GC counts them: every file, scratch and temporary ones too.
            bytes: w
                .entries
                .iter()
                .filter(|e| e.kind == walk::Kind::File)
                .map(|e| e.size)
                .sum(),
            files: stats.files,
            sealed: manifest.is_some_and(|m| stats.newest_mtime_ns <= m.sealed_at_ns),
            last_used: scope::last_used(root, &s.name)?.and_then(rfc3339),
            inert: report.inert.then(|| inert_text(&report)),
            imported: ship::imported(root, &s.name)?.map(|i| i.artifact),
            exported: ship::exported(root, &s.name)?,
            transfer: None,
            scope: s.name,
        });
    }
    Ok(rows)
}

/// Why a scope is inert, on one line: its hash directories and the factors that differ.
fn inert_text(report: &miss::MissReport) -> String {
    let dirs: Vec<&str> = report.dirs.iter().map(|d| d.path.as_str()).collect();
    let mut text = format!("{} keys: {}", dirs.len(), dirs.join(", "));
    if !report.factors.is_empty() {
        let f: Vec<&str> = report.factors.iter().map(|f| f.factor.as_str()).collect();
        text.push_str(&format!("; differing: {}", f.join(", ")));
    }
    text
}

fn output(rows: &[Row], now: i64, empty: &str) -> Output {
    Output::text(json!({ "caches": rows }), render(rows, now, empty))
}

/// The table (a NODE column when the rows have nodes), then a line per inert scope.
pub fn render(rows: &[Row], now: i64, empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let with_node = rows.iter().any(|r| r.node.is_some());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = Vec::new();
            if with_node {
                row.push(r.node.clone().unwrap_or_default());
            }
            let in_use = match &r.in_use_by {
                Some(h) => format!("yes (pid {})", h.pid),
                None => yes_no(r.in_use).into(),
            };
            row.extend([
                r.model.clone(),
                short_scope(&r.scope).to_string(),
                r.generation.map_or_else(|| "-".into(), |g| g.to_string()),
                output::bytes(r.bytes),
                r.files.to_string(),
                yes_no(r.sealed).into(),
                in_use,
                rollup::age_text(age(r.last_used.as_deref(), now)),
                yes_no(r.inert.is_some()).into(),
            ]);
            row
        })
        .collect();
    let mut headers = vec![
        "MODEL",
        "SCOPE",
        "GEN",
        "SIZE",
        "FILES",
        "SEALED",
        "IN USE",
        "LAST USED",
        "INERT",
    ];
    if with_node {
        headers.insert(0, "NODE");
    }
    let mut out = rollup::table(&headers, &cells);
    for r in rows {
        let on = r
            .node
            .as_deref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        let line = match (&r.transfer, &r.imported) {
            (Some(t), _) => t.clone(),
            (None, Some(i)) => format!("imported {}@{}", i.reference, i.digest),
            (None, None) => continue,
        };
        out.push_str(&format!(
            "{} scope {}{on}: {line}\n",
            r.model,
            short_scope(&r.scope)
        ));
    }
    for r in rows.iter().filter(|r| r.inert.is_some()) {
        let on = r
            .node
            .as_deref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "warning: {} scope {}{on} is inert (pods compile into new keys): {}\n",
            r.model,
            short_scope(&r.scope),
            r.inert.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// Seconds since an RFC 3339 time, `None` when absent or unreadable.
fn age(time: Option<&str>, now: i64) -> Option<i64> {
    let t: k8s_openapi::jiff::Timestamp = time?.parse().ok()?;
    Some((now - t.as_second()).max(0))
}
