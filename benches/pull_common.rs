//! Pieces shared by the pull benchmarks: where `target/` is, starting every run from cold
//! (images, leases, content, ingests and snapshots removed, writeback flushed), medians.

// Each bench uses what it needs of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context as _;

use crate::support::{self, Containerd};

/// The name images are pulled by; hosts.toml maps it to the loopback registry.
pub const HOST: &str = "registry.coldstart.test";

/// A bench's exit: success, or its error with causes on one line.
pub fn exit(res: anyhow::Result<()>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Bound on containerd's garbage collection after a removal.
const GC_TIMEOUT: Duration = Duration::from_secs(120);

/// `target/` (a bench runs as `target/<profile>/deps/<name>-<hash>`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("bench executable has no target dir")
}

/// Rows of `ctr snapshots ls` (default snapshotter, overlayfs), header dropped.
pub fn snapshots(ctd: &Containerd) -> anyhow::Result<Vec<String>> {
    Ok(ctd
        .ctr(&["snapshots", "ls"])?
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Removes every image (synchronous GC), any lease left, then waits until the content
/// store, the ingests and the snapshots are empty, and flushes writeback.
pub fn clean(ctd: &Containerd) -> anyhow::Result<()> {
    let root = ctd.root();
    let dirs = [
        root.join("io.containerd.content.v1.content/blobs/sha256"),
        root.join("io.containerd.content.v1.content/ingest"),
        root.join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
    ];
    // Removal is repeated until everything is collected: CRI adds its own refs of a
    // freshly pulled image (`sha256:<config>`) from containerd's event stream, which can
    // land after a first `images rm` and would keep the content alive.
    support::wait_for("content and snapshots to be collected", GC_TIMEOUT, || {
        if remove_all(ctd).is_err() {
            return None;
        }
        let files_gone = dirs.iter().all(|d| is_empty_dir(d));
        let snaps_gone = snapshots(ctd).is_ok_and(|s| s.is_empty());
        (files_gone && snaps_gone).then_some(())
    })
    .with_context(|| {
        format!(
            "left after removal: {:?}",
            dirs.iter().filter(|d| !is_empty_dir(d)).collect::<Vec<_>>()
        )
    })?;
    support::run_checked(&mut Command::new("sync"), Duration::from_secs(120))?;
    Ok(())
}

/// Removes every image record and lease in namespace `k8s.io` (synchronous GC).
fn remove_all(ctd: &Containerd) -> anyhow::Result<()> {
    let names = ctd.image_names()?;
    if !names.is_empty() {
        let mut args = vec!["images", "rm", "--sync"];
        args.extend(names.iter().map(String::as_str));
        ctd.ctr(&args)?;
    }
    let leases = ctd.ctr(&["leases", "ls", "-q"])?;
    let leases: Vec<&str> = leases.split_whitespace().collect();
    if !leases.is_empty() {
        let mut args = vec!["leases", "rm", "--sync"];
        args.extend(leases);
        ctd.ctr(&args)?;
    }
    Ok(())
}

/// Empty or absent.
pub fn is_empty_dir(d: &Path) -> bool {
    match std::fs::read_dir(d) {
        Ok(mut it) => it.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The median (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
