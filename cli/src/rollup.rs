//! The per-model roll-up computed from the ColdNodes (agents write only their own node), and
//! the pure pieces of the cluster verbs' output: which nodes a model selects, what `--wait`
//! concludes, progress, rate and age texts, and a plain text table. No I/O and no clock: the
//! caller passes `now` (seconds since the epoch).

use std::collections::BTreeMap;

use coldstart_agent::api::{ColdModel, ColdNode, ModelStatus, PartPhase, PartStatus, Phase};
use coldstart_agent::plan::matches;
use serde::Serialize;

#[cfg(test)]
mod tests;

/// A ColdNode whose `updatedAt` is older than this is flagged stale (its agent may be gone).
pub const STALE_AFTER_SECONDS: i64 = 120;

/// One model, rolled up over the nodes it selects.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelView {
    /// The ColdModel's name.
    pub name: String,
    /// Its Hub repo id.
    pub repo: String,
    /// Nodes that match its selector and have an agent (a ColdNode).
    pub selected: usize,
    /// Of those, how many report it Ready.
    pub ready: usize,
    /// Of those, how many report it Failed.
    pub failed: usize,
    /// One entry per selected node, by node name.
    pub nodes: Vec<NodeEntry>,
}

/// One model on one selected node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    /// Node (and ColdNode) name.
    pub node: String,
    /// Whether the node's agent reports the model yet; when not, `phase` is Pending.
    pub reported: bool,
    /// Phase of the model on the node.
    pub phase: Phase,
    /// The image part, as the agent reports it.
    pub image: Option<PartStatus>,
    /// The weights part, as the agent reports it.
    pub weights: Option<PartStatus>,
    /// Why the phase is what it is: the failed part's reason and message, else any reason.
    pub reason: Option<String>,
    /// When the agent last wrote its ColdNode (RFC 3339).
    pub updated_at: Option<String>,
}

/// Rolls up each ColdModel over the nodes it selects: a Node that matches the model's
/// selector and has a ColdNode (an agent). Sorted by model name, then node name.
pub fn rollup(
    models: &[ColdModel],
    nodes: &BTreeMap<String, BTreeMap<String, String>>,
    coldnodes: &[ColdNode],
) -> Vec<ModelView> {
    let mut views: Vec<ModelView> = models.iter().map(|m| view(m, nodes, coldnodes)).collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    views
}

fn view(
    model: &ColdModel,
    nodes: &BTreeMap<String, BTreeMap<String, String>>,
    coldnodes: &[ColdNode],
) -> ModelView {
    let name = model.metadata.name.clone().unwrap_or_default();
    let selector = model.spec.node_selector.as_ref();
    let mut entries: Vec<NodeEntry> = coldnodes
        .iter()
        .filter_map(|cn| {
            let node = cn.metadata.name.as_deref()?;
            let labels = nodes.get(node)?;
            matches(selector, labels).then(|| entry(node, model, cn))
        })
        .collect();
    entries.sort_by(|a, b| a.node.cmp(&b.node));
    ModelView {
        repo: model.spec.repo.clone(),
        selected: entries.len(),
        ready: entries.iter().filter(|e| e.phase == Phase::Ready).count(),
        failed: entries.iter().filter(|e| e.phase == Phase::Failed).count(),
        nodes: entries,
        name,
    }
}

fn entry(node: &str, model: &ColdModel, cn: &ColdNode) -> NodeEntry {
    let name = model.metadata.name.as_deref().unwrap_or_default();
    let status = cn.status.as_ref();
    let reported = status.and_then(|s| s.models.iter().find(|m| m.name == name));
    // An entry for an older spec (the agent has not planned against this generation yet)
    // says nothing about the current one.
    let stale = match (
        reported.and_then(|m| m.observed_generation),
        model.metadata.generation,
    ) {
        (Some(seen), Some(current)) => seen < current,
        _ => false,
    };
    NodeEntry {
        node: node.to_string(),
        reported: reported.is_some() && !stale,
        phase: match reported {
            Some(m) if !stale => m.phase,
            _ => Phase::Pending,
        },
        image: reported.and_then(|m| m.image.clone()),
        weights: reported.and_then(|m| m.weights.clone()),
        reason: if stale {
            Some("the agent has not seen the latest spec yet".to_string())
        } else {
            reported.and_then(reason)
        },
        updated_at: status
            .and_then(|s| s.updated_at.as_ref())
            .map(|t| t.0.to_string()),
    }
}

/// The failed part's `reason: message`, else the first reason a part gives.
fn reason(m: &ModelStatus) -> Option<String> {
    let parts = [m.image.as_ref(), m.weights.as_ref()];
    let text = |p: &PartStatus| match (&p.reason, &p.message) {
        (Some(r), Some(msg)) => Some(format!("{r}: {msg}")),
        (Some(r), None) => Some(r.clone()),
        (None, Some(msg)) => Some(msg.clone()),
        (None, None) => None,
    };
    let failed = parts
        .iter()
        .flatten()
        .filter(|p| p.phase == PartPhase::Failed)
        .find_map(|p| text(p));
    failed.or_else(|| parts.iter().flatten().find_map(|p| text(p)))
}

/// What `warm --wait` concludes from a model's roll-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every selected node (at least one) reports the model Ready.
    Ready,
    /// These nodes report it Failed: (node, reason).
    Failed(Vec<(String, String)>),
    /// No node is selected yet.
    NoNodes,
    /// Still warming.
    Waiting,
}

/// The outcome of waiting on `view`: a failure anywhere wins over readiness elsewhere.
pub fn outcome(view: &ModelView) -> Outcome {
    let failed: Vec<(String, String)> = view
        .nodes
        .iter()
        .filter(|e| e.phase == Phase::Failed)
        .map(|e| {
            let why = e.reason.clone().unwrap_or_else(|| "no reason given".into());
            (e.node.clone(), why)
        })
        .collect();
    if !failed.is_empty() {
        Outcome::Failed(failed)
    } else if view.selected == 0 {
        Outcome::NoNodes
    } else if view.ready == view.selected {
        Outcome::Ready
    } else {
        Outcome::Waiting
    }
}

/// `qwen--x (Qwen/X): 1/2 nodes ready, 1 failed`, or why no node is selected.
pub fn rollup_line(v: &ModelView) -> String {
    let mut line = format!(
        "{} ({}): {}/{} nodes ready",
        v.name, v.repo, v.ready, v.selected
    );
    if v.failed > 0 {
        line.push_str(&format!(", {} failed", v.failed));
    }
    if v.selected == 0 {
        line.push_str(" (no node with an agent matches its selector)");
    }
    line
}

/// Bytes done and, when every part reporting knows it, bytes in all (image + weights).
pub fn bytes(e: &NodeEntry) -> (u64, Option<u64>) {
    let parts: Vec<&PartStatus> = [e.image.as_ref(), e.weights.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let done = parts.iter().map(|p| p.bytes_done).sum();
    let total = parts
        .iter()
        .map(|p| p.bytes_total)
        .sum::<Option<u64>>()
        .filter(|_| !parts.is_empty());
    (done, total)
}

/// `3.2/16.0 GiB 20%`, `1.0 GiB` when the total is unknown, `-` when nothing is reported.
pub fn progress_text(e: &NodeEntry) -> String {
    if e.image.is_none() && e.weights.is_none() {
        return "-".into();
    }
    match bytes(e) {
        (done, Some(total)) if total > 0 => {
            let (scale, unit) = unit_of(total);
            let pct = (done.min(total) as f64 * 100.0 / total as f64).floor();
            format!(
                "{:.1}/{:.1} {unit} {pct:.0}%",
                done as f64 / scale,
                total as f64 / scale
            )
        }
        (done, _) => crate::output::bytes(done),
    }
}

fn unit_of(n: u64) -> (f64, &'static str) {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut scale = 1.0;
    let mut unit = 0;
    while n as f64 >= scale * 1024.0 && unit + 1 < UNITS.len() {
        scale *= 1024.0;
        unit += 1;
    }
    (scale, UNITS[unit])
}

/// The parts' summed transfer rate (`12.5 MiB/s`), `-` when none is reported.
pub fn rate_text(e: &NodeEntry) -> String {
    let rates: Vec<u64> = [e.image.as_ref(), e.weights.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.bytes_per_second)
        .collect();
    if rates.is_empty() {
        "-".into()
    } else {
        format!("{}/s", crate::output::bytes(rates.iter().sum()))
    }
}

/// Seconds since the entry last changed: the latest part transition, else the ColdNode's
/// update time.
pub fn age_seconds(e: &NodeEntry, now: i64) -> Option<i64> {
    let parsed = |s: &str| s.parse::<k8s_openapi::jiff::Timestamp>().ok();
    [e.image.as_ref(), e.weights.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.last_transition_time.as_ref().map(|t| t.0))
        .max()
        .or_else(|| e.updated_at.as_deref().and_then(parsed))
        .map(|t| (now - t.as_second()).max(0))
}

/// `45s`, `3m`, `2h`, `4d` (kubectl's coarse style); `-` when unknown.
pub fn age_text(seconds: Option<i64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 2 * 3600 => format!("{}m", s / 60),
        Some(s) if s < 2 * 86400 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86400),
    }
}

/// One row of `coldctl nodes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// Node (and ColdNode) name.
    pub node: String,
    /// The agent's overall phase (absent before its first status).
    pub phase: Option<Phase>,
    /// Models the agent reports Ready.
    pub models_ready: usize,
    /// Models the agent reports.
    pub models_total: usize,
    /// `healthy`, `unhealthy` or `unknown` (no GPU report).
    pub gpu: &'static str,
    /// Why the GPU is unhealthy, when it is.
    pub gpu_reason: Option<String>,
    /// When the agent last wrote its ColdNode (RFC 3339).
    pub updated_at: Option<String>,
    /// Seconds since then.
    pub age_seconds: Option<i64>,
    /// No update for [`STALE_AFTER_SECONDS`], or never: the agent may be gone.
    pub stale: bool,
}

/// One row per ColdNode, sorted by name.
pub fn node_rows(coldnodes: &[ColdNode], now: i64) -> Vec<NodeRow> {
    let mut rows: Vec<NodeRow> = coldnodes
        .iter()
        .map(|cn| {
            let status = cn.status.as_ref();
            let models = status.map(|s| s.models.as_slice()).unwrap_or_default();
            let gpu = status.and_then(|s| s.gpu.as_ref());
            let updated = status.and_then(|s| s.updated_at.as_ref()).map(|t| t.0);
            let age = updated.map(|t| (now - t.as_second()).max(0));
            NodeRow {
                node: cn.metadata.name.clone().unwrap_or_default(),
                phase: status.map(|s| s.phase),
                models_ready: models.iter().filter(|m| m.phase == Phase::Ready).count(),
                models_total: models.len(),
                gpu: match gpu {
                    Some(g) if g.healthy => "healthy",
                    Some(_) => "unhealthy",
                    None => "unknown",
                },
                gpu_reason: gpu.filter(|g| !g.healthy).and_then(|g| g.reason.clone()),
                updated_at: updated.map(|t| t.to_string()),
                age_seconds: age,
                stale: age.is_none_or(|a| a > STALE_AFTER_SECONDS),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    rows
}

/// A phase as text (`Ready`), `-` when absent.
pub fn phase_text(p: Option<Phase>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:?}"))
}

/// A plain table: columns padded to their widest cell, two spaces apart, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push('\n');
    out
}
