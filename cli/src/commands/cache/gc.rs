//! `coldctl cache gc --here --budget SIZE [--dry-run]`: evicts this node's compile-cache scopes,
//! least recently used first, until the rest fits SIZE; never a scope a process holds (a scan
//! of `/proc`), never one a live retention lease holds. `--dry-run` plans only. In the cluster
//! each agent collects on its own under its `--compile-cache-budget`, so this runs on the node.
//!
//! Text: one row per scope (ACTION, MODEL, SCOPE, SIZE, LAST USED, WHY) and a summary line.
//! `-o json|yaml`: `{"dryRun", "budget", "usedBytes", "freedBytes", "remainingBytes",
//! "overBudget", "evicted": [{"model", "scope", "bytes", "lastUsed"}], "kept": [{"model",
//! "scope", "bytes", "lastUsed", "reason" (in_use|leased|within_budget), "inUseBy" ({"pid",
//! "via", "path"}), "leases" ([ids])}]}`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use coldstart_agent::caches::inuse::{self, Holder, PROC_ROOT};
use coldstart_agent::caches::{CacheRoot, Error, GcPlan, KeptReason, Leases, gc, scope};
use serde::Serialize;

use super::{RootArgs, rfc3339, short_scope};
use crate::report::{CliError, Output};
use crate::{Backend, Cli, output, rollup};

/// Arguments of `coldctl cache gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Most bytes the compile caches may hold, all scopes together (`50GiB`, `20G`, `1048576`).
    #[arg(long, value_name = "SIZE", value_parser = crate::args::parse_size)]
    pub budget: u64,
    /// Say what would be evicted, and evict nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

/// What GC did (or would do), for the document and the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Planned only.
    pub dry_run: bool,
    /// The budget in bytes.
    pub budget: u64,
    /// Bytes of every scope before.
    pub used_bytes: u64,
    /// Bytes removed (0 on a dry run).
    pub freed_bytes: u64,
    /// Bytes left once the evicted scopes are gone.
    pub remaining_bytes: u64,
    /// What is left is still over the budget (all of it in use or leased).
    pub over_budget: bool,
    /// Scopes evicted (or to evict), in order.
    pub evicted: Vec<Entry>,
    /// Scopes kept, and why.
    pub kept: Vec<Entry>,
}

/// One scope in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its model (empty when its state is gone).
    pub model: String,
    /// Its directory name.
    pub scope: String,
    /// Its bytes.
    pub bytes: u64,
    /// When a pod using it last became Ready (RFC 3339).
    pub last_used: Option<String>,
    /// Why it was kept: `in_use`, `leased` or `within_budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The process that holds it (`in_use`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use_by: Option<Holder>,
    /// The leases that hold it (`leased`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<String>,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    if cli.backend() != Backend::Here {
        return Err(CliError::usage(
            "in the cluster each agent collects its node's compile caches under its \
             --compile-cache-budget: to collect now, run `coldctl cache gc --here --budget \
             SIZE` on the node",
        ));
    }
    let report = collect(
        &args.root.root(),
        args.budget,
        args.dry_run,
        Path::new(PROC_ROOT),
    )
    .map_err(anyhow::Error::from)?;
    let text = render(&report, crate::commands::now());
    Ok(Output::text(
        serde_json::to_value(&report).unwrap_or_default(),
        text,
    ))
}

/// Scans `proc_root` for the scopes in use, then plans (`dry_run`) or collects under `budget`.
pub fn collect(
    root: &CacheRoot,
    budget: u64,
    dry_run: bool,
    proc_root: &Path,
) -> Result<Report, Error> {
    let now = super::now_ns();
    // Read before GC: the state of an evicted scope goes with it.
    let mut info: BTreeMap<String, (String, Option<i64>)> = BTreeMap::new();
    for s in scope::list_scopes(root)? {
        let used = scope::last_used(root, &s.name)?;
        info.insert(s.name, (s.key.model, used));
    }
    let held = inuse::scan(proc_root, root)?;
    let in_use: BTreeSet<String> = held.keys().cloned().collect();
    let leases = Leases::new(root);
    let (plan, freed) = if dry_run {
        let usage = gc::usage(root)?;
        let plan = gc::plan(&usage, budget, &in_use, &leases.list(now)?, now);
        (plan, 0)
    } else {
        let out = gc::collect(root, budget, &in_use, &leases, now)?;
        (out.plan, out.freed_bytes)
    };
    Ok(report(&plan, freed, dry_run, &info, &held))
}

fn report(
    plan: &GcPlan,
    freed: u64,
    dry_run: bool,
    info: &BTreeMap<String, (String, Option<i64>)>,
    held: &BTreeMap<String, Holder>,
) -> Report {
    let entry = |scope: &str, bytes: u64| {
        let (model, used) = info.get(scope).cloned().unwrap_or_default();
        Entry {
            model,
            scope: scope.to_string(),
            bytes,
            last_used: used.and_then(rfc3339),
            reason: None,
            in_use_by: None,
            leases: Vec::new(),
        }
    };
    let kept = plan
        .kept
        .iter()
        .map(|k| {
            let mut e = entry(&k.scope, k.bytes);
            match &k.reason {
                KeptReason::InUse => {
                    e.reason = Some("in_use");
                    e.in_use_by = held.get(&k.scope).cloned();
                }
                KeptReason::Leased(ids) => {
                    e.reason = Some("leased");
                    e.leases = ids.clone();
                }
                KeptReason::WithinBudget => e.reason = Some("within_budget"),
            }
            e
        })
        .collect();
    Report {
        dry_run,
        budget: plan.budget,
        used_bytes: plan.used_bytes,
        freed_bytes: freed,
        remaining_bytes: plan.remaining_bytes,
        over_budget: plan.over_budget(),
        evicted: plan
            .evict
            .iter()
            .map(|u| entry(&u.scope, u.bytes))
            .collect(),
        kept,
    }
}

/// The table and the summary line (and a warning when still over budget).
pub fn render(r: &Report, now: i64) -> String {
    let evict = if r.dry_run { "would evict" } else { "evicted" };
    let row = |action: &str, e: &Entry, why: String| {
        let age = e
            .last_used
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| (now - t.as_second()).max(0));
        vec![
            action.to_string(),
            e.model.clone(),
            short_scope(&e.scope).to_string(),
            output::bytes(e.bytes),
            rollup::age_text(age),
            why,
        ]
    };
    let mut rows: Vec<Vec<String>> = r
        .evicted
        .iter()
        .map(|e| row(evict, e, "least recently used".into()))
        .collect();
    rows.extend(r.kept.iter().map(|e| row("kept", e, why_kept(e))));
    let mut out = String::new();
    if !rows.is_empty() {
        let headers = ["ACTION", "MODEL", "SCOPE", "SIZE", "LAST USED", "WHY"];
        out.push_str(&rollup::table(&headers, &rows));
    }
    let freed = if r.dry_run {
        format!(
            "would free {}",
            output::bytes(r.used_bytes.saturating_sub(r.remaining_bytes))
        )
    } else {
        format!("freed {}", output::bytes(r.freed_bytes))
    };
    out.push_str(&format!(
        "budget {}: {} used, {freed}, {} left\n",
        output::bytes(r.budget),
        output::bytes(r.used_bytes),
        output::bytes(r.remaining_bytes),
    ));
    if r.over_budget {
        out.push_str("warning: still over budget: every scope left is in use or leased\n");
    }
    out
}

fn why_kept(e: &Entry) -> String {
    match e.reason {
        Some("in_use") => match &e.in_use_by {
            Some(h) => format!("in use (pid {}, {})", h.pid, h.via),
            None => "in use".into(),
        },
        Some("leased") => format!("leased ({})", e.leases.join(", ")),
        _ => "within budget".into(),
    }
}
