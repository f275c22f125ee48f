//! Which scopes a process on this node holds open: a scan of `/proc/<pid>/{cwd,root,fd/*,maps}`
//! for paths inside a scope's tree (or inside a model's link, resolved to its scope).
//!
//! This is how standalone mode and `coldctl cache gc --here` know a scope is in use; in
//! cluster mode the agent knows it from the pods on its node. The paths `/proc` shows are the
//! ones the process sees: a process in another mount namespace (a container that mounts a
//! scope somewhere else) shows its own paths and is not found here.
//!
//! A process that exits during the scan, or whose entries this user may not read (another
//! user's process without `CAP_SYS_PTRACE`), is skipped: the scan reports what it could see.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use super::Error;
use super::layout::CacheRoot;
use super::scope::current_scope;

/// Where the kernel's process table is mounted.
pub const PROC_ROOT: &str = "/proc";

/// The evidence that a scope is in use: one process and the path it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// The process id (the lowest of the processes that hold the scope).
    pub pid: u32,
    /// What it holds: `cwd`, `root`, `fd/N` or `maps`.
    pub via: String,
    /// The path it holds, as `/proc` shows it.
    pub path: PathBuf,
}

/// Every scope a process holds, by scope directory name, with one holder each. `proc_root` is
/// `/proc` on a node ([`PROC_ROOT`]); tests pass a tree of their own.
pub fn scan(proc_root: &Path, root: &CacheRoot) -> Result<BTreeMap<String, Holder>, Error> {
    let mut matcher = Matcher::new(root)?;
    let entries = std::fs::read_dir(proc_root).map_err(|e| Error::io("list", proc_root, e))?;
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    pids.sort_unstable();
    let mut found: BTreeMap<String, Holder> = BTreeMap::new();
    for pid in pids {
        for (via, path) in held_paths(&proc_root.join(pid.to_string())) {
            let Some(scope) = matcher.scope_of(&path) else {
                continue;
            };
            found
                .entry(scope)
                .or_insert_with(|| Holder { pid, via, path });
        }
    }
    Ok(found)
}

/// Every path a process holds: its cwd and root, its open files and its mapped files. What
/// cannot be read (the process is gone, or not ours to look at) is left out.
fn held_paths(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for via in ["cwd", "root"] {
        if let Ok(p) = std::fs::read_link(dir.join(via)) {
            out.push((via.to_string(), p));
        }
    }
    if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
        for fd in fds.flatten() {
            if let Ok(p) = std::fs::read_link(fd.path()) {
                let name = fd.file_name().to_string_lossy().into_owned();
                out.push((format!("fd/{name}"), p));
            }
        }
    }
    if let Ok(maps) = std::fs::read_to_string(dir.join("maps")) {
        out.extend(
            maps.lines()
                .filter_map(map_path)
                .map(|p| ("maps".into(), p)),
        );
    }
    out
}

/// The file of one `/proc/<pid>/maps` line (`addr perms offset dev inode path`), if it maps
/// one: anonymous and pseudo mappings (`[heap]`) have none; a removed file ends ` (deleted)`.
fn map_path(line: &str) -> Option<PathBuf> {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace)?..];
    }
    let path = rest.trim_start();
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.starts_with('/').then(|| PathBuf::from(path))
}

/// Tells which scope a path is in.
struct Matcher {
    /// The scopes directory, as given and resolved (the cache root may sit behind a link).
    scopes: Vec<PathBuf>,
    /// The models directory, as given and resolved.
    models: Vec<PathBuf>,
    /// Each model's current scope, read once.
    links: BTreeMap<String, Option<String>>,
    root: CacheRoot,
}

impl Matcher {
    fn new(root: &CacheRoot) -> Result<Matcher, Error> {
        let both = |p: PathBuf| -> Result<Vec<PathBuf>, Error> {
            match std::fs::canonicalize(&p) {
                Ok(c) if c != p => Ok(vec![p, c]),
                Ok(_) => Ok(vec![p]),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(vec![p]),
                Err(e) => Err(Error::io("resolve", &p, e)),
            }
        };
        Ok(Matcher {
            scopes: both(root.scopes_dir())?,
            models: both(root.models_dir())?,
            links: BTreeMap::new(),
            root: root.clone(),
        })
    }

    /// The scope `path` is inside (the scope's directory itself included).
    fn scope_of(&mut self, path: &Path) -> Option<String> {
        if let Some(name) = first_below(&self.scopes, path) {
            return Some(name);
        }
        let model = first_below(&self.models, path)?;
        let root = &self.root;
        self.links
            .entry(model.clone())
            .or_insert_with(|| current_scope(root, &model).ok().flatten())
            .clone()
    }
}

/// The first component of `path` below one of `dirs`, if it is a plain name.
fn first_below(dirs: &[PathBuf], path: &Path) -> Option<String> {
    dirs.iter()
        .find_map(|d| match path.strip_prefix(d).ok()?.components().next()? {
            Component::Normal(n) => n.to_str().map(str::to_string),
            _ => None,
        })
}
