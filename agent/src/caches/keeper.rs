//! One pass of the node's compile caches, from what the daemon knows (the selected models, their
//! image digests, the GPU product, which pods use which model) to what it reports: scopes made
//! and pointed at, quiet scopes sealed, inert scopes flagged, the budget kept.
//!
//! Blocking (it walks and hashes trees): the daemon runs it off its async workers and does not
//! wait for it (`cluster/compile.rs`). The rules:
//! - a scope per (model, image digest, GPU product); the model's link points at the scope of
//!   its current image and GPU (a new image makes a new, empty scope: vLLM's keys would miss
//!   anyway, facts A "What each cache depends on");
//! - a scope is sealed once a pod using it has been Ready and its tree has been quiet for the
//!   policy's period (facts A: no completion marker; Inductor writes after load);
//! - in use: a pod of the model runs (every scope of the model counts, since a pod keeps the
//!   scope its link pointed at when it started);
//! - "last used": when a pod of the model became Ready (a pod uid seen Ready for the first
//!   time);
//! - GC under the budget after each pass, never a scope in use or leased.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::layout::{CacheRoot, Owner};
use super::quiet::{self, Observed, TreeStats};
use super::scope::{self, Scope, ScopeKey};
use super::{Error, Leases, UnixNanos, gc, miss, seal, ship, walk};
use crate::api::{CompileCachePolicy, CompileCacheStatus};

/// A model the node keeps compile caches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The ColdModel's name.
    pub model: String,
    /// The digest its image resolved to on this node.
    pub image_digest: String,
    /// Its policy.
    pub policy: CompileCachePolicy,
}

/// The pods of one model on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUse {
    /// One of them runs.
    pub running: bool,
    /// The uids of those that are Ready.
    pub ready: BTreeSet<String>,
}

/// What a pass is given.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The models selected here with their image resolved (and the policy not disabled).
    pub wants: Vec<Want>,
    /// The node's GPU product name (NVML), or a stand-in on a node without one.
    pub gpu_product: String,
    /// Pods per model name.
    pub pods: BTreeMap<String, PodUse>,
    /// Scopes a process on the node holds open: in use too.
    pub held: BTreeSet<String>,
    /// Scan this `/proc` for processes holding scopes (standalone mode), adding to `held`.
    pub proc_root: Option<PathBuf>,
    /// `--compile-cache-budget`, bytes.
    pub budget: Option<u64>,
    /// Now, nanoseconds since the epoch.
    pub now: UnixNanos,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Report {
    /// Every scope on the node.
    pub statuses: Vec<CompileCacheStatus>,
    /// Scopes sealed by this pass, with their new generation.
    pub sealed: Vec<(String, u64)>,
    /// Scopes evicted by GC, with their bytes.
    pub evicted: Vec<(String, u64)>,
    /// Seals of imported scopes, by model: true when the pods compiled nothing new (a hit).
    pub import_uses: Vec<(String, bool)>,
    /// What failed, per scope or model (the rest of the pass went on).
    pub errors: Vec<(String, Error)>,
}

/// The caches keeper: remembers observations between passes.
#[derive(Debug)]
pub struct Keeper {
    root: CacheRoot,
    observed: BTreeMap<String, Observed>,
    /// Stats at the last seal (or last seen unchanged since it), per scope.
    sealed_at: BTreeMap<String, TreeStats>,
    /// Scopes a Ready pod has used since their last seal.
    used: BTreeSet<String>,
    /// Pod uids already seen Ready.
    ready_seen: BTreeSet<String>,
    /// Inert verdict per scope, recomputed when the tree changes.
    inert: BTreeMap<String, (TreeStats, Option<String>)>,
    /// What each model's scope was last made with: no directory, chown or state write while
    /// neither changes (and the tree is still there).
    prepared: BTreeMap<String, (Scope, Owner)>,
}

const DEFAULT_OWNER: Owner = Owner { uid: 0, gid: 0 };

impl Keeper {
    /// A keeper of the compile caches under `cache_root`.
    pub fn new(cache_root: &std::path::Path) -> Keeper {
        Keeper {
            root: CacheRoot::new(cache_root),
            observed: BTreeMap::new(),
            sealed_at: BTreeMap::new(),
            used: BTreeSet::new(),
            ready_seen: BTreeSet::new(),
            inert: BTreeMap::new(),
            prepared: BTreeMap::new(),
        }
    }

    /// The layout it keeps.
    pub fn root(&self) -> &CacheRoot {
        &self.root
    }

    /// One pass.
    pub fn pass(&mut self, inp: &Inputs) -> Report {
        let mut report = Report::default();
        let mut current: BTreeMap<String, (Scope, Duration)> = BTreeMap::new();
        for w in &inp.wants {
            match self.prepare(w, &inp.gpu_product) {
                Ok(s) => {
                    let period = w
                        .policy
                        .quiet_period_seconds
                        .map_or(quiet::DEFAULT_QUIET_PERIOD, |s| {
                            Duration::from_secs(s.into())
                        });
                    current.insert(w.model.clone(), (s, period));
                }
                Err(e) => report.errors.push((w.model.clone(), e)),
            }
        }
        // A pod seen Ready for the first time marks its model's current scope used.
        for (model, pods) in &inp.pods {
            let fresh: Vec<&String> = pods
                .ready
                .iter()
                .filter(|u| !self.ready_seen.contains(*u))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            if let Some((s, _)) = current.get(model) {
                if let Err(e) = scope::record_used(&self.root, &s.name, inp.now) {
                    report.errors.push((s.name.clone(), e));
                }
                self.used.insert(s.name.clone());
            }
            self.ready_seen.extend(fresh.into_iter().cloned());
        }
        let live: BTreeSet<&String> = inp.pods.values().flat_map(|p| p.ready.iter()).collect();
        self.ready_seen.retain(|u| live.contains(u));

        let scopes = match scope::list_scopes(&self.root) {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(("scopes".into(), e));
                return report;
            }
        };
        let mut held = inp.held.clone();
        if let Some(proc_root) = &inp.proc_root {
            match super::inuse::scan(proc_root, &self.root) {
                Ok(found) => held.extend(found.into_keys()),
                Err(e) => report.errors.push(("in-use scan".into(), e)),
            }
        }
        let running: BTreeSet<&str> = inp
            .pods
            .iter()
            .filter(|(_, p)| p.running)
            .map(|(m, _)| m.as_str())
            .collect();
        let in_use: BTreeSet<String> = scopes
            .iter()
            .filter(|s| running.contains(s.key.model.as_str()) || held.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        for s in &scopes {
            let period = current
                .get(&s.key.model)
                .filter(|(c, _)| c.name == s.name)
                .map(|(_, p)| *p);
            match self.observe(s, period, inp.now, &mut report) {
                Ok(status) => report.statuses.push(CompileCacheStatus {
                    current: period.is_some(),
                    in_use: in_use.contains(&s.name),
                    ..status
                }),
                Err(e) => report.errors.push((s.name.clone(), e)),
            }
        }
        if let Some(budget) = inp.budget {
            let leases = Leases::new(&self.root);
            match gc::collect(&self.root, budget, &in_use, &leases, inp.now) {
                Ok(out) => {
                    for (name, bytes) in out.plan.evict.iter().map(|u| (&u.scope, u.bytes)) {
                        report.evicted.push((name.clone(), bytes));
                        self.forget(name);
                    }
                    report
                        .statuses
                        .retain(|st| !report.evicted.iter().any(|(n, _)| *n == st.scope));
                }
                Err(e) => report.errors.push(("gc".into(), e)),
            }
        }
        report
    }

    fn forget(&mut self, scope: &str) {
        self.prepared.retain(|_, (s, _)| s.name != scope);
        self.observed.remove(scope);
        self.sealed_at.remove(scope);
        self.used.remove(scope);
        self.inert.remove(scope);
    }

    /// Makes the scope of `w` and points the model's link at it (again only when the key or
    /// the owner changed, or the tree or the link went).
    fn prepare(&mut self, w: &Want, gpu: &str) -> Result<Scope, Error> {
        let key = ScopeKey::new(&w.model, &w.image_digest, gpu)?;
        let owner = Owner {
            uid: w.policy.uid.unwrap_or(DEFAULT_OWNER.uid),
            gid: w.policy.gid.unwrap_or(DEFAULT_OWNER.gid),
        };
        let linked = scope::current_scope(&self.root, &w.model)?;
        if let Some((s, o)) = self.prepared.get(&w.model)
            && s.key == key
            && *o == owner
            && linked.as_deref() == Some(s.name.as_str())
            && crate::fsx::is_real_dir(&self.root.scope_dir(&s.name))?
        {
            return Ok(s.clone());
        }
        let s = scope::ensure_scope(&self.root, &key, owner)?;
        if linked.as_deref() != Some(s.name.as_str()) {
            scope::point_model(&self.root, &s)?;
        }
        self.prepared.insert(w.model.clone(), (s.clone(), owner));
        Ok(s)
    }

    /// Scans one scope, seals it when due (`period`: it is a model's current scope), and
    /// says what it holds.
    fn observe(
        &mut self,
        s: &Scope,
        period: Option<Duration>,
        now: UnixNanos,
        report: &mut Report,
    ) -> Result<CompileCacheStatus, Error> {
        let tree: PathBuf = self.root.scope_dir(&s.name);
        let found = walk::walk(&tree)?;
        let stats = TreeStats::of(&found);
        let prev = self.observed.get(&s.name).copied();
        let obs = Observed::next(prev.as_ref(), stats, now);
        self.observed.insert(s.name.clone(), obs);
        let mut generation = seal::generations(&self.root, &s.name)?.last().copied();
        let sealed_now = self.sealed_at.get(&s.name) == Some(&stats);
        if let Some(p) = period
            && !sealed_now
            && self.used.contains(&s.name)
            && quiet::quiet(prev.as_ref(), &obs, p)
        {
            let from_import = ship::imported(&self.root, &s.name)?
                .is_some_and(|i| Some(i.local_generation) == generation);
            let out = seal::seal(&self.root, s, now)?;
            if out.new {
                report.sealed.push((s.name.clone(), out.generation));
            }
            if from_import {
                report.import_uses.push((s.key.model.clone(), !out.new));
            }
            generation = Some(out.generation);
            self.sealed_at.insert(s.name.clone(), stats);
            self.used.remove(&s.name);
        }
        let inert = match self.inert.get(&s.name) {
            Some((at, verdict)) if *at == stats => verdict.clone(),
            _ => {
                let verdict = inert_summary(&miss::detect(&tree, &found));
                self.inert.insert(s.name.clone(), (stats, verdict.clone()));
                verdict
            }
        };
        let last_used = scope::last_used(&self.root, &s.name)?.and_then(time_of);
        Ok(CompileCacheStatus {
            scope: s.name.clone(),
            model: s.key.model.clone(),
            image_digest: s.key.image_digest.clone(),
            gpu_product: s.key.gpu_product.clone(),
            current: false,
            in_use: false,
            generation,
            bytes: stats.bytes,
            files: stats.files,
            sealed: self.sealed_at.get(&s.name) == Some(&stats),
            last_used,
            inert,
            imported: ship::imported(&self.root, &s.name)?.map(|i| i.artifact),
            exported: ship::exported(&self.root, &s.name)?,
            transfer: None,
        })
    }
}

fn time_of(ns: UnixNanos) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_nanosecond(ns.into())
        .ok()
        .map(Time)
}

/// One line for the status when pods compile into several hash directories.
fn inert_summary(r: &miss::MissReport) -> Option<String> {
    if !r.inert {
        return None;
    }
    let dirs: Vec<String> = r.dirs.iter().map(|d| d.path.clone()).collect();
    let mut line = format!(
        "pods compiled into {} hash directories ({}): their arguments or environment differ",
        dirs.len(),
        dirs.join(", ")
    );
    if !r.factors.is_empty() {
        let f: Vec<&str> = r.factors.iter().map(|f| f.factor.as_str()).collect();
        line.push_str(&format!("; differing factors: {}", f.join(", ")));
    }
    Some(line)
}

#[cfg(test)]
mod tests;
