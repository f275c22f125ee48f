//! Helpers shared by the system tests that drive the real `coldctl` binary against real
//! containerd: locating the binary, running it bounded, and an independent CRI client (raw
//! k8s-cri over the same socket, not our library) to check what the kubelet would see.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper_util::rt::TokioIo;

pub mod agent;
pub mod security;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest};
use tonic::transport::Endpoint;

/// A fake API server (on its own thread) with the repository's CRDs (`deploy/crds`)
/// installed, so custom resources are validated, pruned and defaulted as in a cluster.
pub fn fake_api() -> coldstart_fakeapi::FakeApi {
    let api = coldstart_fakeapi::FakeApi::start_blocking(coldstart_fakeapi::Options::default())
        .expect("the fake API server starts");
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds");
    api.install_crds(&crds)
        .unwrap_or_else(|e| panic!("installing {}: {e:#}", crds.display()));
    api
}

/// The workspace's `coldctl`, built by `cargo build --workspace --bins` (scripts/test.sh does it
/// before the system tests). Tests cannot build it themselves: cargo holds the build lock.
pub fn coldctl_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("coldctl");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A command for the workspace's `coldstart-agent` (built next to `coldctl`), with an
/// environment that cannot steer it: no inherited `COLDSTART_*` settings, no in-cluster
/// `KUBERNETES_*` variables, no proxies (every server of the tests is on loopback).
pub fn agent_command() -> Command {
    let bin = coldctl_bin().with_file_name("coldstart-agent");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    agent::scrubbed(&bin)
}

/// The result of one `coldctl` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The one JSON document `-o json` prints on stdout.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// The `error: ...` line of a text-mode failure.
    pub fn error_line(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(lines.len(), 1, "one error line expected: {self:?}");
        lines[0].to_string()
    }
}

/// Runs `coldctl ARGS` (bounded by `timeout`).
pub fn coldctl(args: &[&str], timeout: Duration) -> Run {
    let mut cmd = Command::new(coldctl_bin());
    cmd.args(args).env("COLDSTART_LOG", "warn");
    let out = crate::support::run_bounded(&mut cmd, timeout).expect("coldctl ran");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `coldctl warm --here --image IMAGE` against the test's containerd, then `EXTRA...`.
pub fn warm(
    ctd: &crate::support::Containerd,
    image: &str,
    extra: &[&str],
    timeout: Duration,
) -> Run {
    let mut args: Vec<String> = ["warm", "--here", "--image", image]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(containerd_args(ctd));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    coldctl(&args, timeout)
}

/// Starts `coldctl warm --here --image IMAGE` against the test's containerd, then `EXTRA...`,
/// in the background with its output captured (end it with [`finish`]).
pub fn spawn_warm(
    ctd: &crate::support::Containerd,
    image: &str,
    extra: &[&str],
) -> std::process::Child {
    Command::new(coldctl_bin())
        .args(["warm", "--here", "--image", image])
        .args(containerd_args(ctd))
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn coldctl")
}

/// Waits for `child` (SIGKILLed past `timeout`) and returns its exit code and output.
pub fn finish(child: std::process::Child, timeout: Duration) -> Run {
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if std::fs::metadata(format!("/proc/{pid}")).is_err() {
                return;
            }
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().expect("wait coldctl");
    let _ = killer.join();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The flags that point `coldctl` at a test containerd (socket and config file).
pub fn containerd_args(ctd: &crate::support::Containerd) -> Vec<String> {
    vec![
        "--containerd-socket".to_string(),
        ctd.socket().display().to_string(),
        "--containerd-config".to_string(),
        ctd.config_path().display().to_string(),
    ]
}

/// What CRI's ImageService says about an image, asked independently of our library.
#[derive(Debug)]
pub struct CriImage {
    /// Image id.
    pub id: String,
    /// Size CRI reports.
    pub size: u64,
    /// CRI's pinned flag.
    pub pinned: bool,
    /// Repo digests.
    pub repo_digests: Vec<String>,
}

/// CRI `ImageStatus` for `image` over `socket`; `None` when absent.
pub fn cri_image_status(socket: &Path, image: &str) -> Option<CriImage> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let socket = socket.to_path_buf();
    rt.block_on(async move {
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .expect("connect to CRI");
        let resp = ImageServiceClient::new(channel)
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("CRI ImageStatus")
            .into_inner();
        resp.image.map(|i| CriImage {
            id: i.id,
            size: i.size,
            pinned: i.pinned,
            repo_digests: i.repo_digests,
        })
    })
}
