//! CRIU's version on the node, for "can this node restore". containerd runs `criu` from its own
//! PATH, which is not ours to read, so the agent looks in the configured directories. In the
//! DaemonSet the agent's image is `FROM scratch` and the host's root is mounted (`/host`): the
//! directories are looked up under that root, and a dynamically linked host CRIU, which cannot
//! run against the agent's empty filesystem, is run through the host's own dynamic loader with
//! the host's library directories. Nothing runs with a shell, each run is bounded to 10 s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::archive::criu_version;

/// Dynamic loaders, relative to a root, tried in turn.
const LOADERS: &[&str] = &[
    "lib64/ld-linux-x86-64.so.2",
    "usr/lib64/ld-linux-x86-64.so.2",
    "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "lib/ld-linux-aarch64.so.1",
    "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
];
/// Library directories, relative to a root, given to the loader.
const LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
];

/// The version of the first `criu` found in `dirs` (under `root` when given), `None` when none
/// is found or none answers `--version`.
pub async fn find(dirs: &[PathBuf], root: Option<&Path>) -> Option<String> {
    for dir in dirs {
        let bin = match root {
            Some(r) => r.join(dir.strip_prefix("/").unwrap_or(dir)).join("criu"),
            None => dir.join("criu"),
        };
        if !bin.is_file() {
            continue;
        }
        if let Some(v) = version(tokio::process::Command::new(&bin).arg("--version")).await {
            return Some(v);
        }
        let Some(root) = root else {
            continue;
        };
        let libs: Vec<PathBuf> = LIB_DIRS
            .iter()
            .map(|d| root.join(d))
            .filter(|d| d.is_dir())
            .collect();
        let Ok(lib_path) = std::env::join_paths(&libs) else {
            continue;
        };
        for loader in LOADERS.iter().map(|l| root.join(l)).filter(|l| l.is_file()) {
            let mut cmd = tokio::process::Command::new(&loader);
            cmd.arg("--library-path")
                .arg(&lib_path)
                .arg(&bin)
                .arg("--version");
            if let Some(v) = version(&mut cmd).await {
                return Some(v);
            }
        }
    }
    None
}

/// Runs `cmd` (bounded) and reads `Version: X.Y.Z` from its output.
async fn version(cmd: &mut tokio::process::Command) -> Option<String> {
    let run = cmd
        .env_clear()
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .ok()?
        .ok()?;
    criu_version(&String::from_utf8_lossy(&out.stdout))
}
