//! A `coldstart-agent` process for system tests, shared by the root package's tests (through
//! `common`) and the agent's own (`agent/tests/standalone.rs` includes this file): an
//! environment that cannot steer it, standalone mode with every path in a test directory,
//! stderr collected, SIGTERM with a bounded wait, killed on drop.
#![allow(dead_code, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A command for `bin` with no inherited `COLDSTART_*` settings, no in-cluster `KUBERNETES_*`
/// variables and no proxies (every server of the tests is on loopback).
pub fn scrubbed(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        let proxy = k.to_ascii_lowercase().ends_with("_proxy");
        if k.starts_with("COLDSTART_") || k.starts_with("KUBERNETES_") || proxy {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The arguments of `run --standalone` with its cache, models file and socket under `dir`
/// (`cache/`, `etc/models.toml`, `run/agent.sock`), no containerd, the admin server on an
/// ephemeral loopback port, one pass a second, and the Hub at `hub_url`.
pub fn standalone_args(dir: &Path, hub_url: &str) -> Vec<String> {
    let p = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_string();
    let mut args: Vec<String> = [
        "run",
        "--standalone",
        "--node-name",
        "edge-1",
        "--admin-addr",
        "127.0.0.1:0",
        "--tick-interval",
        "1",
    ]
    .map(String::from)
    .into();
    for (flag, path) in [
        ("--cache-root", "cache"),
        ("--models-file", "etc/models.toml"),
        ("--socket", "run/agent.sock"),
        ("--containerd-socket", "no-containerd.sock"),
        ("--containerd-root", "no-containerd"),
        ("--containerd-config", "no-containerd.toml"),
    ] {
        args.push(flag.to_string());
        args.push(p(path));
    }
    args.extend(["--hub-endpoint".to_string(), hub_url.to_string()]);
    args
}

/// A running agent whose stderr (JSON log lines) is collected.
pub struct AgentProcess {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    /// Starts `cmd` with JSON logs at info on a piped stderr.
    pub fn spawn(mut cmd: Command) -> AgentProcess {
        cmd.env("COLDSTART_LOG", "info")
            .env("COLDSTART_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn coldstart-agent: {e}"));
        let pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
        AgentProcess { child, stderr }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        let lines = self
            .stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.join("\n")
    }

    /// Its exit code once it exited (-1 when a signal ended it), `None` while it runs.
    pub fn exit_code(&mut self) -> Option<i32> {
        let status = self.child.try_wait().expect("wait");
        status.map(|s| s.code().unwrap_or(-1))
    }

    /// SIGTERM, then the exit code, waiting at most `bound`.
    pub fn terminate(&mut self, bound: Duration) -> i32 {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + bound;
        loop {
            if let Some(code) = self.exit_code() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "still running {bound:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
