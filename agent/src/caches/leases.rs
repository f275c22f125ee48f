//! Retention leases: files of a scope (or a whole scope) that GC must keep, because something
//! outside the scope depends on them. Dynamo Snapshot's rule, which the snapshots work will
//! follow: "Compiler files on the PVC are external checkpoint dependencies. Retain them until
//! every checkpoint referencing them is retired" (facts A, "Prior art").
//!
//! Leases persist in `state/leases.json` (atomic replacement, under `state/leases.lock`, so
//! two holders of [`Leases`] in one or several processes never lose each other's updates). A
//! lease past its expiry no longer holds anything; it is dropped at the next change.

use std::path::PathBuf;

use super::layout::CacheRoot;
use super::{Error, UnixNanos};
use crate::fsx;

/// What a lease holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseTarget {
    /// The whole scope.
    Scope,
    /// These files, relative to the scope's tree.
    Files(Vec<String>),
}

/// One retention lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The holder's id (e.g. a checkpoint's name); taking it again replaces it.
    pub id: String,
    /// The scope's directory name.
    pub scope: String,
    /// What it holds.
    pub target: LeaseTarget,
    /// When it stops holding, nanoseconds since the epoch.
    pub expires_ns: UnixNanos,
}

impl Lease {
    /// Whether the lease still holds at `now`.
    pub fn live(&self, now: UnixNanos) -> bool {
        now < self.expires_ns
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct LeaseFile {
    leases: Vec<Lease>,
}

/// The node's retention leases.
#[derive(Debug, Clone)]
pub struct Leases {
    dir: PathBuf,
}

const FILE: &str = "leases.json";

impl Leases {
    /// The leases of the caches under `root` (the file is created on the first lease).
    pub fn new(root: &CacheRoot) -> Leases {
        Leases {
            dir: root.state_dir(),
        }
    }

    /// Takes (or renews, or replaces) lease `id` on `target` of `scope` until `expires_ns`.
    pub fn take(
        &self,
        id: &str,
        scope: &str,
        target: LeaseTarget,
        expires_ns: UnixNanos,
        now: UnixNanos,
    ) -> Result<Lease, Error> {
        validate(id, scope, &target)?;
        let lease = Lease {
            id: id.to_string(),
            scope: scope.to_string(),
            target,
            expires_ns,
        };
        let taken = lease.clone();
        self.update(now, move |leases| {
            leases.retain(|l| l.id != lease.id);
            leases.push(lease);
        })?;
        Ok(taken)
    }

    /// Releases lease `id`; returns whether it existed (live or not).
    pub fn release(&self, id: &str, now: UnixNanos) -> Result<bool, Error> {
        let mut found = false;
        self.update(now, |leases| {
            let before = leases.len();
            leases.retain(|l| l.id != id);
            found = leases.len() != before;
        })?;
        Ok(found)
    }

    /// Every lease live at `now`, sorted by id.
    pub fn list(&self, now: UnixNanos) -> Result<Vec<Lease>, Error> {
        let mut leases = self.read()?.leases;
        leases.retain(|l| l.live(now));
        leases.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(leases)
    }

    fn read(&self) -> Result<LeaseFile, Error> {
        let path = self.dir.join(FILE);
        match fsx::read_optional(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::bad_state(&path, e)),
            None => Ok(LeaseFile::default()),
        }
    }

    /// Read, change, write back atomically, under the lock; expired leases are dropped.
    fn update(&self, now: UnixNanos, change: impl FnOnce(&mut Vec<Lease>)) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        let lock_path = self.dir.join("leases.lock");
        let _lock =
            fsx::lock_exclusive(&lock_path).map_err(|e| Error::io("lock", &lock_path, e))?;
        let mut file = self.read()?;
        change(&mut file.leases);
        file.leases.retain(|l| l.live(now));
        file.leases.sort_by(|a, b| a.id.cmp(&b.id));
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::bad_state(&self.dir, e))?;
        fsx::write_atomic(&self.dir, FILE, &bytes, fsx::FILE_MODE)?;
        Ok(())
    }
}

fn validate(id: &str, scope: &str, target: &LeaseTarget) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidLease {
        id: id.chars().take(100).collect(),
        reason: reason.to_string(),
    };
    if id.is_empty() || id.len() > 253 || id.chars().any(char::is_control) {
        return Err(bad(
            "the id must be 1 to 253 bytes without control characters",
        ));
    }
    if scope.is_empty() || scope.contains('/') || scope == "." || scope == ".." {
        return Err(bad("not a scope name"));
    }
    if let LeaseTarget::Files(files) = target {
        if files.is_empty() {
            return Err(bad("no files named"));
        }
        for f in files {
            let ok = !f.is_empty()
                && !f.starts_with('/')
                && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
            if !ok {
                return Err(bad(&format!("{f:?} is not a path inside the scope")));
            }
        }
    }
    Ok(())
}
