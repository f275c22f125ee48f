//! The cache's byte budget: sizes as operators write them (`500GiB`, `200G`, `1048576`) and
//! the pure planner that picks which snapshots to evict, least recently used first.
//!
//! The planner never evicts a wanted snapshot (one the node serves, or the one being synced)
//! and never counts on freeing a blob that a wanted snapshot links or that the sync in
//! progress counts on finding; it evicts no more than it must, and when evicting everything it
//! may still leaves too little room it evicts nothing and says what it kept.

use std::collections::{BTreeMap, BTreeSet};

use super::cache::{CacheUsage, SnapshotBlobs};
use super::{Error, RepoId};

/// A (repo, revision) the node wants to keep: a branch or tag (matched through the snapshot's
/// refs) or a commit sha.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Wanted {
    /// The Hub model id (`org/name`).
    pub repo: RepoId,
    /// Branch, tag or commit.
    pub revision: String,
}

impl Wanted {
    /// Whether `snap` is (one of) what this names.
    fn matches(&self, snap: &SnapshotBlobs) -> bool {
        snap.repo == self.repo
            && (snap.commit.eq_ignore_ascii_case(&self.revision)
                || snap.refs.contains(&self.revision))
    }
}

/// One snapshot the planner chose to evict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Evicted {
    /// The Hub model id (`org/name`).
    pub repo: RepoId,
    /// Commit of the snapshot.
    pub commit: String,
    /// Bytes its eviction frees (as planned; the cache reports what it removed).
    pub bytes: u64,
}

/// What a sync asks of the budget.
#[derive(Debug, Clone)]
pub struct Demand<'a> {
    /// The budget in bytes.
    pub budget: u64,
    /// Bytes still to download.
    pub need: u64,
    /// Snapshots never to evict (the one being synced included).
    pub wanted: &'a [Wanted],
    /// Blobs never to remove: those the sync in progress found present and will link.
    pub protect: &'a BTreeSet<(RepoId, String)>,
}

/// The snapshots to evict, least recently used first, so that `usage.used_bytes` less what
/// they free plus `demand.need` fits `demand.budget`; empty when it fits already.
/// [`Error::OverBudget`] when even evicting every unwanted snapshot would not do.
pub fn plan_eviction(usage: &CacheUsage, demand: &Demand<'_>) -> Result<Vec<Evicted>, Error> {
    let fits = |used: u64| used.saturating_add(demand.need) <= demand.budget;
    let mut used = usage.used_bytes;
    if fits(used) {
        return Ok(Vec::new());
    }
    // How many remaining snapshots link each blob: a blob is freed when that drops to zero.
    let mut links: BTreeMap<(&RepoId, &str), usize> = BTreeMap::new();
    for snap in &usage.snapshots {
        for etag in snap.blobs.keys() {
            *links.entry((&snap.repo, etag.as_str())).or_default() += 1;
        }
    }
    let wanted = |s: &SnapshotBlobs| demand.wanted.iter().any(|w| w.matches(s));
    let mut candidates: Vec<&SnapshotBlobs> =
        usage.snapshots.iter().filter(|s| !wanted(s)).collect();
    candidates
        .sort_by(|a, b| (a.last_used, &a.repo, &a.commit).cmp(&(b.last_used, &b.repo, &b.commit)));
    let mut plan = Vec::new();
    for snap in candidates {
        let mut freed = 0;
        for (etag, size) in &snap.blobs {
            let n = links.entry((&snap.repo, etag.as_str())).or_default();
            *n = n.saturating_sub(1);
            let protected = demand.protect.contains(&(snap.repo.clone(), etag.clone()));
            if *n == 0 && !protected {
                freed += size;
            }
        }
        used = used.saturating_sub(freed);
        plan.push(Evicted {
            repo: snap.repo.clone(),
            commit: snap.commit.clone(),
            bytes: freed,
        });
        if fits(used) {
            return Ok(plan);
        }
    }
    let kept = usage
        .snapshots
        .iter()
        .filter(|s| wanted(s))
        .map(|s| format!("{}@{}", s.repo, short(&s.commit)))
        .collect::<Vec<_>>();
    Err(Error::OverBudget {
        budget: demand.budget,
        need: demand.need,
        remaining: used,
        kept: if kept.is_empty() {
            "nothing".to_string()
        } else {
            kept.join(", ")
        },
    })
}

fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}

/// Parses a byte size: a number (fractions allowed) and an optional unit, case-insensitive,
/// spaces allowed between: `B`; decimal `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB`, `P`/`PB`;
/// binary `Ki`/`KiB`, `Mi`/`MiB`, `Gi`/`GiB`, `Ti`/`TiB`, `Pi`/`PiB` (as Kubernetes writes
/// quantities). `500GiB`, `200G`, `1.5TiB` and `1048576` are sizes; anything else is
/// [`Error::InvalidSize`].
pub fn parse_size(text: &str) -> Result<u64, Error> {
    let bad = |reason: &str| Error::InvalidSize {
        value: text.chars().take(64).collect(),
        reason: reason.to_string(),
    };
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        _ => {
            return Err(bad(
                "unknown unit (use B, K, M, G, T, KiB, MiB, GiB, TiB, ...)",
            ));
        }
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad("expected a number, e.g. 500GiB, 200G or 1048576"));
    }
    if frac.contains('.') || frac.len() > 9 {
        return Err(bad("not a number"));
    }
    let parse = |d: &str| -> Result<u128, Error> {
        if d.is_empty() {
            return Ok(0);
        }
        d.parse::<u128>().map_err(|_| bad("number too large"))
    };
    let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(9));
    let fraction = parse(frac)? * multiplier / scale;
    let value = parse(whole)?
        .checked_mul(multiplier)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(|| bad("too large"))?;
    u64::try_from(value).map_err(|_| bad("larger than 16 EiB"))
}

/// A size for people: binary units with one decimal (`1.5 GiB`), exact below 1 KiB.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests;
