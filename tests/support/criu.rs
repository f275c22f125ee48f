//! Support for the snapshot tests (tests/snapshots.rs, tests/cluster/snapshot.rs): the CRIU
//! that `scripts/test-env.sh` unpacks, the static pause and counter images
//! (scripts/spike/*.c), and reading what the counter logged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Bound on waiting for a log line.
pub const WAIT: Duration = Duration::from_secs(120);

/// The CRIU wrapper's directory from `$COLDSTART_TESTENV/env` (`criu SUITE VERSION DIR`), else
/// where `scripts/lib/criu.sh` puts sid's (an env file written by an older test-env.sh lacks the
/// line); panics naming scripts/test-env.sh when neither has `criu`.
pub fn criu_dir() -> PathBuf {
    let base =
        std::env::var("COLDSTART_TESTENV").unwrap_or_else(|_| "/opt/coldstart-testenv".into());
    let text = std::fs::read_to_string(Path::new(&base).join("env")).expect("test env file");
    let dir = text
        .lines()
        .find_map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["criu", _, _, dir] => Some(PathBuf::from(dir)),
                _ => None,
            },
        )
        .unwrap_or_else(|| Path::new(&base).join("criu-sid/bin"));
    assert!(
        dir.join("criu").is_file(),
        "{} missing: run scripts/test-env.sh",
        dir.join("criu").display()
    );
    dir
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the static pause and counter programs into OCI archives with scripts/oci_image.py.
pub fn build_images(dir: &Path, pause_ref: &str, counter_ref: &str) -> (PathBuf, PathBuf) {
    let mut out = Vec::new();
    for (name, src, reference) in [
        ("pause", "pause.c", pause_ref),
        ("counter", "counter.c", counter_ref),
    ] {
        let root = dir.join(name).join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        run(Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(root.join(name))
            .arg(Path::new(REPO).join("scripts/spike").join(src)));
        let cf = dir.join(name).join("Containerfile");
        std::fs::write(
            &cf,
            format!("FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/{name}\"]\n"),
        )
        .unwrap();
        let archive = dir.join(format!("{name}.tar"));
        run(Command::new("python3")
            .arg(Path::new(REPO).join("scripts/oci_image.py"))
            .arg("--rootfs")
            .arg(&root)
            .arg("--containerfile")
            .arg(&cf)
            .args(["--epoch", "0", "--name", reference])
            .arg("--layout")
            .arg(dir.join(name).join("layout"))
            .arg("--archive")
            .arg(&archive));
        out.push(archive);
    }
    (out.remove(0), out.remove(0))
}

/// Lines of a CRI log file after the first `skip`.
pub fn log_lines(path: &Path, skip: usize) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(skip)
        .map(str::to_string)
        .collect()
}

pub fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map(str::to_string)
}

/// Waits (bounded) until a line after `skip` contains `needle`.
pub async fn wait_line(path: &Path, skip: usize, needle: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = log_lines(path, skip);
        if lines.iter().any(|l| l.contains(needle)) {
            return lines;
        }
        assert!(
            start.elapsed() < WAIT,
            "no {needle:?} in {} after {WAIT:?}: {lines:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `container.log` inside a snapshot's layer: what the process had printed when CRIU froze it.
pub fn frozen_log(layer: &Path) -> Vec<String> {
    let mut tar = tar::Archive::new(std::fs::File::open(layer).unwrap());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap() == Path::new("container.log") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            return s.lines().map(str::to_string).collect();
        }
    }
    panic!("no container.log in {}", layer.display());
}

/// The first count a restored counter logged after the `skip` lines of its frozen log,
/// checked to go on from the checkpoint: containerd copies the log into the archive after
/// CRIU's dump, with the container left running, so the log may end a tick or more past the
/// frozen memory; the count resumes at most one past the log's `last`, and past `floor` (a
/// count seen before the checkpoint). No second "loaded" line.
pub fn assert_resumed(lines: &[String], last: u64, floor: u64) -> u64 {
    let first: u64 = lines
        .iter()
        .find_map(|l| field(l, "count="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first > floor && first <= last + 1,
        "the count did not go on from the checkpoint (log ended at {last}): {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("loaded")),
        "the restored process loaded again: {lines:?}"
    );
    first
}
