//! GC of compile caches under one byte budget over all scopes of the node: least recently used
//! scope first ("used" = the last time a pod using it became Ready, recorded by the caller with
//! [`super::scope::record_used`]), never a scope in use (the caller's set), never a scope that
//! a live retention lease holds, whole or in part ([`super::leases`]). Scopes go whole: a
//! compile cache with files missing is worse than none (vLLM's index would name artifacts that
//! are gone). The planner is pure; [`collect`] measures, plans and removes.
//!
//! Bytes are apparent sizes of every regular file in the scope's tree (scratch and temporary
//! files included: they take the disk all the same).

use std::collections::{BTreeMap, BTreeSet};

use super::layout::CacheRoot;
use super::leases::{Lease, Leases};
use super::scope::{self, current_scope};
use super::walk::{self, Kind};
use super::{Error, UnixNanos};
use crate::fsx;

/// One scope as GC sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeUsage {
    /// The scope's directory name.
    pub scope: String,
    /// Its model, from its state (empty when the state is gone).
    pub model: String,
    /// Bytes of its tree.
    pub bytes: u64,
    /// When a pod using it last became Ready; `None`: never recorded (evicted first).
    pub last_used_ns: Option<UnixNanos>,
}

/// Why GC kept a scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeptReason {
    /// A pod using it runs.
    InUse,
    /// Live retention leases hold it (their ids).
    Leased(Vec<String>),
    /// The budget was met before its turn.
    WithinBudget,
}

/// A scope GC kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kept {
    /// The scope's directory name.
    pub scope: String,
    /// Its bytes.
    pub bytes: u64,
    /// Why it stays.
    pub reason: KeptReason,
}

/// What GC will do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcPlan {
    /// The budget in bytes.
    pub budget: u64,
    /// Bytes of every scope now.
    pub used_bytes: u64,
    /// Scopes to remove, in order.
    pub evict: Vec<ScopeUsage>,
    /// Every other scope, and why it stays.
    pub kept: Vec<Kept>,
    /// Bytes left once `evict` is gone.
    pub remaining_bytes: u64,
}

impl GcPlan {
    /// Whether the plan leaves the caches over budget (everything left is in use or leased).
    pub fn over_budget(&self) -> bool {
        self.remaining_bytes > self.budget
    }
}

/// What GC did: the plan as carried out, and the bytes it freed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcOutcome {
    /// The plan.
    pub plan: GcPlan,
    /// Bytes of the scopes removed.
    pub freed_bytes: u64,
}

/// Picks the scopes to evict so that the rest fits `budget`: least recently used first, never
/// one in `in_use`, never one a lease live at `now` holds. Evicts nothing when it fits.
pub fn plan(
    usage: &[ScopeUsage],
    budget: u64,
    in_use: &BTreeSet<String>,
    leases: &[Lease],
    now: UnixNanos,
) -> GcPlan {
    let mut held: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for l in leases.iter().filter(|l| l.live(now)) {
        held.entry(l.scope.as_str()).or_default().push(l.id.clone());
    }
    let used_bytes: u64 = usage.iter().map(|u| u.bytes).sum();
    let mut remaining = used_bytes;
    let mut order: Vec<&ScopeUsage> = usage.iter().collect();
    order.sort_by(|a, b| (a.last_used_ns, &a.scope).cmp(&(b.last_used_ns, &b.scope)));
    let (mut evict, mut kept) = (Vec::new(), Vec::new());
    for u in order {
        let reason = if in_use.contains(&u.scope) {
            Some(KeptReason::InUse)
        } else if let Some(ids) = held.get(u.scope.as_str()) {
            Some(KeptReason::Leased(ids.clone()))
        } else if remaining <= budget {
            Some(KeptReason::WithinBudget)
        } else {
            None
        };
        match reason {
            Some(reason) => kept.push(Kept {
                scope: u.scope.clone(),
                bytes: u.bytes,
                reason,
            }),
            None => {
                remaining = remaining.saturating_sub(u.bytes);
                evict.push(u.clone());
            }
        }
    }
    GcPlan {
        budget,
        used_bytes,
        evict,
        kept,
        remaining_bytes: remaining,
    }
}

/// Every scope tree under `scopes/` with its bytes and last use.
pub fn usage(root: &CacheRoot) -> Result<Vec<ScopeUsage>, Error> {
    let dir = root.scopes_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let models: BTreeMap<String, String> = scope::list_scopes(root)?
        .into_iter()
        .map(|s| (s.name, s.key.model))
        .collect();
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with(fsx::TEMP_PREFIX) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let tree = walk::walk(&entry.path())?;
        let bytes = tree
            .entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum();
        out.push(ScopeUsage {
            model: models.get(&name).cloned().unwrap_or_default(),
            last_used_ns: scope::last_used(root, &name)?,
            scope: name,
            bytes,
        });
    }
    out.sort_by(|a, b| a.scope.cmp(&b.scope));
    Ok(out)
}

/// Measures, plans and evicts: each evicted scope's model link is removed when it points at
/// it, the tree is renamed out of the way (pods can no longer find it under its name) and
/// removed, then its state (manifests included).
pub fn collect(
    root: &CacheRoot,
    budget: u64,
    in_use: &BTreeSet<String>,
    leases: &Leases,
    now: UnixNanos,
) -> Result<GcOutcome, Error> {
    sweep_leftovers(root)?;
    let usage = usage(root)?;
    let live = leases.list(now)?;
    let plan = plan(&usage, budget, in_use, &live, now);
    let mut freed = 0;
    for u in &plan.evict {
        evict(root, u)?;
        freed += u.bytes;
    }
    Ok(GcOutcome {
        plan,
        freed_bytes: freed,
    })
}

/// Removes what an interrupted eviction or link swap left: our temporary names in `scopes/`
/// and `models/`.
fn sweep_leftovers(root: &CacheRoot) -> Result<(), Error> {
    for dir in [root.scopes_dir(), root.models_dir()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let ours = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(fsx::TEMP_PREFIX));
            if !ours {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fsx::remove_tree(&entry.path())?;
            } else {
                fsx::remove_file(&entry.path())?;
            }
        }
    }
    Ok(())
}

fn evict(root: &CacheRoot, u: &ScopeUsage) -> Result<(), Error> {
    if !u.model.is_empty() && current_scope(root, &u.model)?.as_deref() == Some(u.scope.as_str()) {
        fsx::remove_file(&root.model_link(&u.model))?;
    }
    let tree = root.scope_dir(&u.scope);
    let doomed = root.scopes_dir().join(fsx::temp_name("evict"));
    std::fs::rename(&tree, &doomed).map_err(|e| Error::io("rename", &tree, e))?;
    // remove_dir_all never follows a symlink out of the tree.
    fsx::remove_tree(&doomed)?;
    fsx::remove_tree(&root.scope_state_dir(&u.scope))?;
    Ok(())
}
