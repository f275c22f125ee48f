//! System tests of `coldstart-agent run`, the real binary: admin endpoints, settings precedence,
//! exit code 64 on bad configuration, and a clean exit 0 on SIGTERM. No cluster and no root:
//! `--standalone`, or a kubeconfig pointing at a closed port (which also proves that building
//! the Kubernetes client's TLS stack does not panic on the rustls provider).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BOUND: Duration = Duration::from_secs(20);

/// The `coldstart-agent` binary. This test lives in the agent package (not the root package's
/// tests/) so that cargo builds the binary fresh for it and names it here: never a stale one.
fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coldstart-agent"))
}

/// A base command with no inherited COLDSTART_* or cluster settings.
fn agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(agent_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("COLDSTART_") || k.starts_with("KUBERNETES_") || k == "KUBECONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("COLDSTART_LOG", "info")
        .env("COLDSTART_LOG_FORMAT", "json");
    cmd
}

/// A running daemon whose stderr lines arrive on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    /// Cache root, models file and socket under `dir` (as environment variables, the lowest
    /// precedence above the file), never the host's.
    fn private_paths(cmd: &mut Command, dir: &std::path::Path) {
        cmd.env("COLDSTART_CACHE_ROOT", dir.join("cache"))
            .env("COLDSTART_MODELS_FILE", dir.join("models.toml"))
            .env("COLDSTART_SOCKET", dir.join("agent.sock"))
            .env("COLDSTART_CONTAINERD_SOCKET", dir.join("containerd.sock"));
    }

    fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn coldstart-agent");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a JSON log line with `message`, returning it parsed.
    fn wait_for(&mut self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {message:?} log line within {BOUND:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                )
            });
            self.seen.push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                panic!("stderr line is not JSON: {line}");
            };
            if v["message"] == message {
                return v;
            }
        }
    }

    fn admin_addr(&mut self) -> String {
        let v = self.wait_for("admin server listening");
        v["addr"].as_str().expect("addr field").to_string()
    }

    /// SIGTERM, then the exit code (bounded) and the rest of stderr.
    fn terminate(mut self) -> (i32, Vec<String>) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("coldstart-agent still running {BOUND:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.try_iter());
        (status.code().unwrap_or(-1), std::mem::take(&mut self.seen))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over plain HTTP/1.1; returns (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the admin server");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {raw}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn wait_ready(addr: &str) {
    let deadline = Instant::now() + BOUND;
    loop {
        let (code, body) = get(addr, "/readyz");
        if code == 200 {
            return;
        }
        assert_eq!(code, 503, "{body}");
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_serves_admin_endpoints_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = agent(&[
        "run",
        "--standalone",
        "--admin-addr",
        "127.0.0.1:0",
        "--tick-interval",
        "1",
    ]);
    Daemon::private_paths(&mut cmd, dir.path());
    let mut d = Daemon::start(cmd);
    let addr = d.admin_addr();
    assert_eq!(get(&addr, "/healthz").0, 200);
    wait_ready(&addr);
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    // Families show up once they have a series; with no planner yet, only the loop's do.
    for family in [
        "coldstart_reconcile_passes_total{outcome=\"ok\"}",
        "# TYPE coldstart_reconcile_duration_seconds histogram",
        "coldstart_build_info{version=",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    let (code, stderr) = d.terminate();
    assert_eq!(code, 0, "stderr:\n{}", stderr.join("\n"));
    let text = stderr.join("\n");
    assert!(text.contains("\"signal\":\"SIGTERM\""), "{text}");
    assert!(text.contains("coldstart-agent stopped"), "{text}");
}

#[test]
fn env_beats_the_config_file_and_flags_beat_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.toml");
    // The file alone is invalid (tick-interval 0) and names a port we never bind.
    std::fs::write(
        &file,
        "standalone = true\ntick-interval = 0\nadmin-addr = \"127.0.0.1:1\"\n",
    )
    .expect("write config");
    let file = file.to_str().expect("utf-8 path");

    let out = agent(&["run", "--config", file]).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: invalid tick-interval: must be 1 to 3600 seconds"
    );

    let mut cmd = agent(&["run", "--admin-addr", "127.0.0.1:0"]);
    cmd.env("COLDSTART_CONFIG", file)
        .env("COLDSTART_TICK_INTERVAL", "1")
        .env("COLDSTART_ADMIN_ADDR", "127.0.0.1:2");
    Daemon::private_paths(&mut cmd, dir.path());
    let mut d = Daemon::start(cmd);
    let addr = d.admin_addr();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(
        !addr.ends_with(":1") && !addr.ends_with(":2"),
        "flag lost: {addr}"
    );
    wait_ready(&addr);
    let (code, stderr) = d.terminate();
    assert_eq!(code, 0, "stderr:\n{}", stderr.join("\n"));
}

#[test]
fn bad_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "nodename = \"a\"\n").expect("write");
    let unknown = unknown.to_str().expect("utf-8 path");
    let cases: &[(&[&str], &str)] = &[
        (
            &["run"],
            "error: invalid node-name: required unless --standalone",
        ),
        (
            &["run", "--node-name", "Not_A_Node"],
            "error: invalid node-name: ",
        ),
        (
            &["run", "--standalone", "--config", unknown],
            "error: config file ",
        ),
        (
            &["run", "--standalone", "--config", "/nonexistent.toml"],
            "error: cannot read config file",
        ),
        (
            &["run", "--standalone", "--cache-root", "rel"],
            "error: invalid cache-root: ",
        ),
        (
            &["run", "--admin-addr", "nonsense"],
            "error: invalid value 'nonsense'",
        ),
    ];
    for (args, want) in cases {
        let out = agent(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with(want), "{args:?}: {stderr}");
        if !want.contains("invalid value") {
            assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        }
    }
}

#[test]
fn cluster_mode_without_an_api_server_keeps_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on: connection refused, after the TLS client is built.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: not-a-secret\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .expect("write kubeconfig");
    let mut cmd = agent(&[
        "run",
        "--node-name",
        "node-a",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    cmd.env("KUBECONFIG", &kubeconfig);
    Daemon::private_paths(&mut cmd, dir.path());
    let mut d = Daemon::start(cmd);
    d.wait_for("Kubernetes API server not reachable yet");
    let addr = d.admin_addr();
    assert_eq!(get(&addr, "/healthz").0, 200);
    let (code, stderr) = d.terminate();
    assert_eq!(code, 0, "stderr:\n{}", stderr.join("\n"));
    assert!(
        !stderr.join("\n").contains("panicked"),
        "{}",
        stderr.join("\n")
    );
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = agent(&["run", "--standalone", "--admin-addr", "127.0.0.1:0"]);
    cmd.env("COLDSTART_LOG_FORMAT", "text");
    Daemon::private_paths(&mut cmd, dir.path());
    let mut d = Daemon::start(cmd);
    let deadline = Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no admin line within {BOUND:?}:\n{}", d.seen.join("\n")));
        d.seen.push(line.clone());
        if line.contains("admin server listening") {
            break;
        }
    }
    let (code, stderr) = d.terminate();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    let text = stderr.join("\n");
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe:\n{text}");
    assert!(text.contains(" INFO "), "text lines expected:\n{text}");
}
