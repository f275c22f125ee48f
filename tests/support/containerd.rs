//! containerd daemons of several versions, each private to a temporary directory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{
    SETUP_HINT, file_tail, kill_child, require_root, require_tool, run_bounded, toml_path,
    umount_all_under, wait_for,
};

/// Default location of the test environment (see `scripts/test-env.sh`).
pub const DEFAULT_TESTENV: &str = "/opt/coldstart-testenv";

/// How long `start`/`restart` wait for the socket to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a `ctr` invocation may run.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(300);

/// The test environment written by `scripts/test-env.sh`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Every unpacked containerd, in the env file's order (oldest suite first).
    pub containerds: Vec<ContainerdBin>,
}

/// One unpacked containerd release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdBin {
    /// Debian suite it came from (`bookworm`, `trixie`, `sid`).
    pub suite: String,
    /// Detected version, e.g. `1.7.24`.
    pub version: String,
    /// Directory holding `containerd`, `ctr` and the shims.
    pub bin_dir: PathBuf,
}

impl TestEnv {
    /// Reads `$COLDSTART_TESTENV/env` (default `/opt/coldstart-testenv/env`).
    /// Panics, naming `scripts/test-env.sh`, if it or any binary it names is missing.
    pub fn load() -> TestEnv {
        let base = std::env::var_os("COLDSTART_TESTENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_TESTENV));
        let path = base.join("env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}; {SETUP_HINT}", path.display()));
        let mut containerds = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            // Other kinds of lines are for other consumers.
            if let ["containerd", suite, version, bin_dir] = f.as_slice() {
                let bin = ContainerdBin {
                    suite: suite.to_string(),
                    version: version.to_string(),
                    bin_dir: PathBuf::from(bin_dir),
                };
                for exe in ["containerd", "ctr", "containerd-shim-runc-v2"] {
                    if !bin.bin_dir.join(exe).is_file() {
                        panic!(
                            "{}:{}: {} missing; {SETUP_HINT}",
                            path.display(),
                            n + 1,
                            bin.bin_dir.join(exe).display()
                        );
                    }
                }
                containerds.push(bin);
            }
        }
        if containerds.is_empty() {
            panic!("{} lists no containerd; {SETUP_HINT}", path.display());
        }
        TestEnv { containerds }
    }

    /// The containerd unpacked from `suite`; panics if absent.
    pub fn by_suite(&self, suite: &str) -> &ContainerdBin {
        self.containerds
            .iter()
            .find(|c| c.suite == suite)
            .unwrap_or_else(|| panic!("no containerd from suite {suite} in the env; {SETUP_HINT}"))
    }

    /// The newest containerd in the env.
    pub fn newest(&self) -> &ContainerdBin {
        self.containerds
            .iter()
            .max_by_key(|c| parse_version(&c.version))
            .unwrap_or_else(|| panic!("no containerd in the env; {SETUP_HINT}"))
    }
}

fn parse_version(v: &str) -> (u64, u64, u64) {
    let v = v.trim_start_matches('v');
    let v = v.split(['~', '+', '-']).next().unwrap_or("");
    let mut it = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

impl ContainerdBin {
    /// `(major, minor, patch)` of the detected version.
    pub fn semver(&self) -> (u64, u64, u64) {
        parse_version(&self.version)
    }

    /// Major version (1 or 2).
    pub fn major(&self) -> u64 {
        self.semver().0
    }

    /// Whether this version is `min` (e.g. `"1.7.3"`) or newer.
    pub fn version_at_least(&self, min: &str) -> bool {
        self.semver() >= parse_version(min)
    }

    /// Short label for messages, e.g. `containerd 1.7.24 (trixie)`.
    pub fn label(&self) -> String {
        format!("containerd {} ({})", self.version, self.suite)
    }
}

/// Options for [`Containerd::start`].
#[derive(Debug, Clone, Default)]
pub struct ContainerdOpts {
    /// Override the root directory (e.g. a [`super::TinyFs`] path); default `<tmp>/root`.
    pub root: Option<PathBuf>,
    /// CRI registry `config_path` (the hosts.toml directory).
    pub hosts_dir: PathBuf,
    /// A directory put first on containerd's PATH (the CRIU wrapper's, for snapshots).
    pub path_first: Option<PathBuf>,
    /// CRI's sandbox (pause) image (`pinned_images.sandbox`, 2.x only).
    pub sandbox_image: Option<String>,
    /// The Transfer service's parallel layer fetch (2.1+ only): `max_concurrent_downloads`
    /// and `concurrent_layer_fetch_buffer` (bytes per chunk) of
    /// `[plugins."io.containerd.transfer.v1.local"]`, which `ctr image pull` uses on 2.x.
    pub transfer_parallel: Option<(u32, u64)>,
    /// More plugins to disable (e.g. `io.containerd.grpc.v1.leases`: a Leases API that
    /// refuses every call).
    pub disabled_plugins: Vec<String>,
    /// `restrict_oom_score_adj = true` and `enable_cdi = false` (2.x only): root here lacks
    /// CAP_SYS_RESOURCE, so a pod sandbox's oom_score_adj -998 cannot be set otherwise.
    pub run_pods: bool,
}

/// A running containerd with its own root, state, socket, config and log under a temp dir.
/// Dropping it SIGKILLs the daemon (and shims it started), unmounts what is left mounted under
/// its directories and deletes the temp dir.
pub struct Containerd {
    bin: ContainerdBin,
    opts: ContainerdOpts,
    tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Writes a config for `bin`'s version and starts `<bin_dir>/containerd --config <file>`,
    /// waiting (30 s at most) until `ctr version` answers on its socket.
    pub fn start(bin: &ContainerdBin, opts: ContainerdOpts) -> anyhow::Result<Containerd> {
        require_root();
        require_tool("runc");
        if !bin.bin_dir.join("containerd").is_file() {
            panic!(
                "{} missing; {SETUP_HINT}",
                bin.bin_dir.join("containerd").display()
            );
        }
        let tmp = tempfile::Builder::new().prefix("coldstart-cd-").tempdir()?;
        let t = tmp.path();
        let root = opts.root.clone().unwrap_or_else(|| t.join("root"));
        let state = t.join("state");
        for d in [
            root.clone(),
            state.clone(),
            t.join("cni-conf"),
            t.join("cni-bin"),
            t.join("cdi"),
            t.join("opt"),
            t.join("tmp"),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
        }
        let socket = t.join("containerd.sock");
        let config = t.join("config.toml");
        let log = t.join("containerd.log");
        std::fs::write(
            &config,
            render_config(bin, t, &root, &state, &socket, &opts),
        )?;
        let mut cd = Containerd {
            bin: bin.clone(),
            opts,
            tmp,
            root,
            state,
            socket,
            config,
            log,
            child: None,
        };
        cd.spawn()?;
        Ok(cd)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let log2 = log.try_clone()?;
        let first = match &self.opts.path_first {
            Some(d) => format!("{}:", d.display()),
            None => String::new(),
        };
        let path = format!(
            "{first}{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.bin.bin_dir.display()
        );
        let child = Command::new(self.bin.bin_dir.join("containerd"))
            .arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .env("TMPDIR", self.tmp.path().join("tmp"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.label()))?;
        self.child = Some(child);
        let ready = wait_for(
            &format!(
                "{} to answer on {}",
                self.bin.label(),
                self.socket.display()
            ),
            START_TIMEOUT,
            || {
                if let Some(c) = self.child.as_mut()
                    && let Ok(Some(_)) = c.try_wait()
                {
                    return Some(false); // exited early
                }
                let ok = Command::new(self.bin.bin_dir.join("ctr"))
                    .arg("-a")
                    .arg(&self.socket)
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                ok.then_some(true)
            },
        );
        match ready {
            Ok(true) => Ok(()),
            Ok(false) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.child = None;
                bail!(
                    "{} exited during start ({status:?}); log tail:\n{}",
                    self.bin.label(),
                    self.log_tail()
                )
            }
            Err(e) => {
                if let Some(c) = self.child.as_mut() {
                    kill_child(c);
                }
                self.child = None;
                bail!("{e}; log tail:\n{}", self.log_tail())
            }
        }
    }

    /// The gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's root directory (content store, snapshots, metadata).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// containerd's state directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The detected version, e.g. `2.1.9`.
    pub fn version(&self) -> &str {
        &self.bin.version
    }

    /// Which release this is.
    pub fn bin(&self) -> &ContainerdBin {
        &self.bin
    }

    /// The config file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The hosts.toml directory it was configured with.
    pub fn hosts_dir(&self) -> &Path {
        &self.opts.hosts_dir
    }

    /// The daemon's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `ctr -a <sock> -n k8s.io <args>` (bounded: 300 s), returning stdout.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ctr_ns("k8s.io", args)
    }

    /// Runs `ctr -a <sock> -n <namespace> <args>` (bounded: 300 s), returning stdout.
    pub fn ctr_ns(&self, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(self.bin.bin_dir.join("ctr"));
        cmd.arg("-a")
            .arg(&self.socket)
            .args(["-n", namespace])
            .args(args);
        let out = run_bounded(&mut cmd, CTR_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "ctr {} ({}) failed ({}): {}",
                args.join(" "),
                self.bin.label(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctr image pull --hosts-dir <hosts_dir> <image>` in namespace k8s.io.
    pub fn ctr_pull(&self, image: &str) -> anyhow::Result<String> {
        let hosts = self.opts.hosts_dir.to_string_lossy().into_owned();
        self.ctr(&["image", "pull", "--hosts-dir", &hosts, image])
    }

    /// Image names in namespace k8s.io (`ctr image ls -q`).
    pub fn image_names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ctr(&["image", "ls", "-q"])?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// SIGKILLs the daemon and waits for it. Shims (if any) survive, as in a real crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }

    /// SIGTERMs the daemon and waits up to 10 s, then SIGKILLs it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = wait_for("containerd to exit", Duration::from_secs(10), || {
                matches!(c.try_wait(), Ok(Some(_))).then_some(())
            });
            kill_child(&mut c);
        }
    }

    /// Starts the daemon again on the same root, state and config (SIGKILLing it first if it
    /// is still running).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The last ~8 KiB of the daemon's log (all runs).
    pub fn log_tail(&self) -> String {
        file_tail(&self.log, 8 * 1024)
    }

    /// The log file (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Kills shims started by this daemon (found by `-address <our socket>` in their command line).
    fn kill_shims(&self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let sock = self.socket.as_os_str().as_encoded_bytes();
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_shim = args
                .first()
                .is_some_and(|a| a.windows(15).any(|w| w == b"containerd-shim"));
            let ours = args.windows(2).any(|w| w[0] == b"-address" && w[1] == sock);
            if is_shim && ours {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Containerd {
    /// SIGKILLs every process whose root filesystem is one of this daemon's snapshots (its
    /// `/` mount in `/proc/PID/mountinfo` names a path under our root): the containers of its
    /// pods, which outlive their killed shims (reparented to init) and would go on using CPU
    /// after the test.
    fn kill_containers(&self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let ours = format!("{}/", self.root.display());
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(info) = std::fs::read_to_string(e.path().join("mountinfo")) else {
                continue;
            };
            let root_mount = info
                .lines()
                .find(|l| l.split(' ').nth(4) == Some("/"))
                .unwrap_or("");
            if root_mount.contains(&ours) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill9();
        self.kill_shims();
        self.kill_containers();
        umount_all_under(&self.state);
        umount_all_under(&self.root);
        umount_all_under(self.tmp.path());
    }
}

/// Renders the daemon config for `bin`'s version: config `version = 2` for 1.x, `version = 3`
/// for 2.x. Every path containerd would otherwise take globally is moved under `t`.
fn render_config(
    bin: &ContainerdBin,
    t: &Path,
    root: &Path,
    state: &Path,
    socket: &Path,
    opts: &ContainerdOpts,
) -> String {
    let hosts_dir = opts.hosts_dir.as_path();
    let log_level =
        std::env::var("COLDSTART_CONTAINERD_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let p = |s: &str| toml_path(&t.join(s));
    let mut c = String::new();
    let v2 = bin.major() < 2;
    c.push_str(if v2 { "version = 2\n" } else { "version = 3\n" });
    c.push_str(&format!(
        "root = {}\nstate = {}\n",
        toml_path(root),
        toml_path(state)
    ));
    if bin.version_at_least("1.7.0") {
        c.push_str(&format!("temp = {}\n", p("tmp")));
    }
    // NRI listens on a global socket (/var/run/nri/nri.sock); aufs would modprobe; the other
    // snapshotters only produce noise here. The CRI plugin and overlayfs must load.
    let extra: String = opts
        .disabled_plugins
        .iter()
        .map(|p| format!(", {}", super::toml_str(p)))
        .collect();
    c.push_str(&format!(
        "disabled_plugins = [\"io.containerd.nri.v1.nri\", \"io.containerd.snapshotter.v1.aufs\", \
         \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
         \"io.containerd.snapshotter.v1.devmapper\"{extra}]\n",
    ));
    c.push_str(
        "required_plugins = [\"io.containerd.grpc.v1.cri\", \
         \"io.containerd.snapshotter.v1.overlayfs\"]\n",
    );
    c.push_str(&format!(
        "\n[grpc]\n  address = {}\n\n[ttrpc]\n  address = {}\n\n[debug]\n  level = {}\n",
        toml_path(socket),
        toml_path(&socket.with_extension("sock.ttrpc")),
        super::toml_str(&log_level)
    ));
    // /opt/containerd otherwise.
    c.push_str(&format!(
        "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
        p("opt")
    ));
    if v2 {
        c.push_str(
            "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  \
             stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n  \
             netns_mounts_under_state_dir = true\n",
        );
        if bin.version_at_least("1.7.0") {
            c.push_str(&format!(
                "  enable_cdi = false\n  cdi_spec_dirs = [{}]\n",
                p("cdi")
            ));
        }
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {}\n  conf_dir = {}\n",
            p("cni-bin"),
            p("cni-conf")
        ));
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {}\n",
            toml_path(hosts_dir)
        ));
    } else {
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = {}\n",
            toml_path(hosts_dir)
        ));
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  cdi_spec_dirs = [{}]\n  \
             netns_mounts_under_state_dir = true\n",
            p("cdi")
        ));
        if opts.run_pods {
            c.push_str("  restrict_oom_score_adj = true\n  enable_cdi = false\n");
        }
        if let Some(image) = &opts.sandbox_image {
            c.push_str(&format!(
                "\n[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = {}\n",
                super::toml_str(image)
            ));
        }
        let bin_key = if bin.version_at_least("2.1.0") {
            format!("bin_dirs = [{}]", p("cni-bin"))
        } else {
            format!("bin_dir = {}", p("cni-bin"))
        };
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\n  {bin_key}\n  conf_dir = {}\n",
            p("cni-conf")
        ));
        c.push_str(
            "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  \
             stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n",
        );
        // /opt/containerd/image-verifier/bin otherwise.
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.image-verifier.v1.bindir\"]\n  bin_dir = {}\n",
            p("opt/image-verifier/bin")
        ));
        // The Transfer service (ctr's default pull path on 2.x) reads hosts.toml from here too.
        c.push_str(&format!(
            "\n[plugins.\"io.containerd.transfer.v1.local\"]\n  config_path = {}\n",
            toml_path(hosts_dir)
        ));
        if let Some((downloads, chunk)) = opts.transfer_parallel {
            c.push_str(&format!(
                "  max_concurrent_downloads = {downloads}\n  concurrent_layer_fetch_buffer = {chunk}\n"
            ));
        }
    }
    c
}
