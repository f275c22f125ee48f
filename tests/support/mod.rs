//! System-test support: containerd daemons of several versions, local registries (plain, TLS,
//! htpasswd), a byte-counting/rate-limiting TCP proxy, OCI image generation and pushing, a test CA
//! and tiny tmpfs filesystems.
//!
//! Everything binds to loopback and lives under temporary directories. Tools come from
//! `scripts/test-env.sh`; when one is missing the helpers panic with a message saying to run it,
//! so that no test skips silently. Daemons need root.
//!
//! Drop order matters for [`TinyFs`]: declare it *before* the [`Containerd`] that uses it as its
//! root, so that the daemon is killed (and its mounts removed) before the filesystem is unmounted.
#![allow(dead_code)] // each test binary uses a different subset

pub mod containerd;
pub mod cri;
pub mod criu;
pub mod hub_py;
pub mod image;
pub mod kubelet;
pub mod nvml;
pub mod proxy;
pub mod registry;
pub mod tls;
pub mod torch;

use std::io::{Read, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

// Re-exports: each test binary uses a different subset.
#[allow(unused_imports)]
pub use containerd::{Containerd, ContainerdBin, ContainerdOpts, TestEnv};
#[allow(unused_imports)]
pub use image::{OciLayout, build_image, push, push_with_creds};
#[allow(unused_imports)]
pub use proxy::CountingProxy;
#[allow(unused_imports)]
pub use registry::Registry;
#[allow(unused_imports)]
pub use tls::Ca;

/// What to tell the user when the test environment is incomplete.
pub const SETUP_HINT: &str = "run `scripts/test-env.sh` as root first (it installs docker-registry, \
     skopeo, runc, openssl, apache2-utils (htpasswd), curl and containerd 1.6/1.7/2.x under \
     /opt/coldstart-testenv and writes /opt/coldstart-testenv/env)";

/// Panics unless the tests run as root (containerd, mounts).
pub fn require_root() {
    // Effective uid from /proc (nix's `user` feature is not enabled here).
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    if euid != "0" {
        panic!("these system tests need root (containerd, mounts); {SETUP_HINT}");
    }
}

/// Finds `name` on `PATH` (plus `/usr/sbin` and `/sbin`), panicking with the setup hint if absent.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| panic!("required tool `{name}` not found; {SETUP_HINT}"))
}

/// Finds `name` on `PATH` (plus `/usr/sbin` and `/sbin`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound then released; a small race is possible).
pub fn free_port() -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot bind 127.0.0.1:0: {e}"),
    }
}

/// Quotes a string as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Quotes a path as a TOML basic string.
pub fn toml_path(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

/// Writes `<hosts_dir>/<host>/hosts.toml` mapping registry `host` to `upstream_url`
/// (`http://127.0.0.1:PORT` or `https://...`), with pull+resolve capabilities and `ca` if given.
pub fn write_hosts_toml(hosts_dir: &Path, host: &str, upstream_url: &str, ca: Option<&Path>) {
    let dir = hosts_dir.join(host);
    let mut toml = format!(
        "server = {up}\n\n[host.{up}]\n  capabilities = [\"pull\", \"resolve\"]\n",
        up = toml_str(upstream_url)
    );
    if let Some(ca) = ca {
        toml.push_str(&format!("  ca = {}\n", toml_path(ca)));
    }
    let res =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("hosts.toml"), toml));
    if let Err(e) = res {
        panic!("cannot write {}/hosts.toml: {e}", dir.display());
    }
}

/// Runs a command to completion with a time bound, capturing stdout and stderr.
/// Fails if it cannot start, exceeds `timeout` (it is killed), or exits non-zero.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let out = run_bounded(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}):\nstdout: {}\nstderr: {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

/// Runs a command to completion with a time bound, capturing stdout and stderr, whatever its
/// exit status. Fails if it cannot start or exceeds `timeout` (it is then killed).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    // Drain pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let t_err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            bail!(
                "{cmd:?} timed out after {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&stderr).trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs a child (if still running) and reaps it.
pub(crate) fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Last `max_bytes` of a file (lossy UTF-8), starting at a line boundary when possible.
pub fn file_tail(path: &Path, max_bytes: usize) -> String {
    let Ok(data) = std::fs::read(path) else {
        return format!("<cannot read {}>", path.display());
    };
    let start = data.len().saturating_sub(max_bytes);
    let mut tail = &data[start..];
    if start > 0
        && let Some(nl) = tail.iter().position(|&b| b == b'\n')
    {
        tail = &tail[nl + 1..];
    }
    String::from_utf8_lossy(tail).into_owned()
}

/// Mount points strictly below `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p != dir && p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.dedup();
    found
}

/// Lazily unmounts everything mounted strictly below `dir` (deepest first).
pub fn umount_all_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&m)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A tmpfs of a given size mounted on a temporary directory; unmounted on drop.
///
/// Declare it before any daemon that writes into it, so that it is dropped after them.
pub struct TinyFs {
    dir: tempfile::TempDir,
    size_mib: u64,
}

impl TinyFs {
    /// Mounts a tmpfs of `size_mib` MiB (`mount -t tmpfs -o size=NM tmpfs DIR`). Needs root.
    pub fn mount(size_mib: u64) -> anyhow::Result<TinyFs> {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("coldstart-tinyfs-")
            .tempdir()?;
        run_checked(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size_mib}M,mode=0755"),
                    "tmpfs",
                ])
                .arg(dir.path()),
            Duration::from_secs(30),
        )?;
        Ok(TinyFs { dir, size_mib })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The size it was mounted with, in MiB.
    pub fn size_mib(&self) -> u64 {
        self.size_mib
    }

    /// Bytes still available to unprivileged writers (statvfs).
    pub fn available_bytes(&self) -> u64 {
        match nix::sys::statvfs::statvfs(self.path()) {
            Ok(s) => s.blocks_available() * s.fragment_size(),
            Err(_) => 0,
        }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        umount_all_under(self.dir.path());
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Writes `data` to `path`, creating parent directories.
pub fn write_file(path: &Path, data: impl AsRef<[u8]>) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(data.as_ref())?;
    Ok(())
}

/// Deterministic, incompressible-enough bytes (xorshift64 from `seed`): test files and
/// weights whose content differs per seed.
pub fn bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}
