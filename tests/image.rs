//! System tests of the agent image built by `scripts/build-image.sh` (from the workspace's debug
//! binaries, stripped): it is reproducible and labelled, and it runs under real containerd 2.x
//! and runc: `--version`, `gpu-check` against the stand-in NVML bind-mounted from the host, the
//! standalone agent answering `/healthz`, and pulls through containerd's socket *directory*
//! that keep working across a containerd restart (where a bind mount of the socket file, kept
//! beside it as a control, goes dead).
//!
//! They need the workspace binaries (`cargo build --workspace --bins`), root and
//! `scripts/test-env.sh`; `scripts/test.sh` runs them with `--include-ignored`. Everything
//! listens on loopback; every container is removed on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::nvml::NvmlStub;
use support::{
    Containerd, ContainerdBin, ContainerdOpts, OciLayout, Registry, TestEnv, build_image,
    file_tail, free_port, push, run_bounded, run_checked, write_hosts_toml,
};

/// The name the tests give the image (the default names the release registry).
const NAME: &str = "registry.coldstart.test/coldstart-agent:it";
/// Building from stripped debug binaries at gzip level 1 takes a few seconds here.
const BUILD: Duration = Duration::from_secs(180);
/// One `ctr run`/`ctr task exec`/`ctr images import`.
const CTR: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn git(args: &[&str]) -> String {
    let out = run_checked(
        Command::new("git")
            .arg("-C")
            .arg(repo_root())
            .args(args)
            .env("TZ", "UTC"),
        Duration::from_secs(30),
    )
    .expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `scripts/build-image.sh` over the debug binaries into `out`; returns the layout.
fn build_agent_image(out: &Path) -> OciLayout {
    let bin_dir = common::coldctl_bin()
        .parent()
        .expect("target dir")
        .to_path_buf();
    let mut cmd = Command::new(repo_root().join("scripts/build-image.sh"));
    cmd.arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out)
        .args(["--name", NAME, "--gzip-level", "1"])
        .env_remove("SOURCE_DATE_EPOCH");
    run_checked(&mut cmd, BUILD).expect("scripts/build-image.sh");
    OciLayout::load(&out.join("oci")).expect("the OCI layout reads back")
}

fn sha256_file(path: &Path) -> String {
    let out = run_checked(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-r"])
            .arg(path),
        Duration::from_secs(60),
    )
    .expect("openssl dgst");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn kustomization_names_the_release_image_at_the_workspace_version() {
    let text = std::fs::read_to_string(repo_root().join("deploy/base/kustomization.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let images = doc["images"]
        .as_sequence()
        .expect("images: in the kustomization");
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["name"].as_str(), Some("coldstart-agent"));
    // scripts/build-image.sh names the image after newName, tagged with the version.
    let new_name = images[0]["newName"].as_str().expect("newName");
    assert!(
        new_name.contains('/') && !new_name.contains(':'),
        "{new_name}"
    );
    assert_eq!(
        images[0]["newTag"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "bump newTag in deploy/base/kustomization.yaml with the workspace version"
    );
}

#[test]
#[ignore = "needs the workspace binaries (cargo build --workspace --bins), skopeo"]
fn image_builds_reproducibly_with_labels_and_a_minimal_tree() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = build_agent_image(a.path());
    let second = build_agent_image(b.path());
    assert_eq!(first.manifest_digest, second.manifest_digest);
    let archive = |d: &Path| d.join("coldstart-agent.oci.tar");
    assert_eq!(
        sha256_file(&archive(a.path())),
        sha256_file(&archive(b.path())),
        "the OCI archives differ"
    );

    // Labels, platform and digest as another tool reads the archive.
    let out = run_checked(
        Command::new(support::require_tool("skopeo"))
            .args(["--insecure-policy", "inspect"])
            .arg(format!("oci-archive:{}", archive(a.path()).display())),
        Duration::from_secs(60),
    )
    .expect("skopeo inspect");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["Digest"], first.manifest_digest.as_str(), "{doc:#}");
    assert_eq!(doc["Os"], "linux");
    let labels = &doc["Labels"];
    let label = |k: &str| labels[format!("org.opencontainers.image.{k}")].clone();
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"), "{doc:#}");
    let head = git(&["rev-parse", "HEAD"]);
    assert!(
        label("revision").as_str().unwrap().starts_with(&head),
        "{doc:#}"
    );
    let created = git(&[
        "log",
        "-1",
        "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
        "--format=%cd",
        "HEAD",
    ]);
    assert_eq!(label("created"), created.as_str(), "{doc:#}");
    assert_eq!(doc["Created"], label("created"), "{doc:#}");

    // The config the Containerfile declares.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.blob_path(&first.config_digest)).unwrap())
            .unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/coldstart-agent"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["run"]));

    // One layer: sorted, root-owned, every mtime the commit time, nothing but what runs.
    assert_eq!(first.layers.len(), 1);
    let epoch: u64 = git(&["log", "-1", "--format=%ct", "HEAD"]).parse().unwrap();
    let blob = std::fs::File::open(first.blob_path(&first.layers[0].0)).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut paths = Vec::new();
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
            (0, 0, epoch),
            "{path}"
        );
        paths.push(path.trim_end_matches('/').to_string());
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries are not sorted");
    for want in [
        "usr/local/bin/coldstart-agent",
        "usr/local/bin/coldctl",
        "etc/ssl/certs/ca-certificates.crt",
        "tmp",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} missing: {paths:?}");
    }
    assert!(paths.iter().any(|p| p.ends_with("/libc.so.6")), "{paths:?}");
    for banned in ["etc/passwd", "bin/sh", "usr/bin", "libnvidia-ml"] {
        assert!(
            !paths.iter().any(|p| p.contains(banned)),
            "{banned} in the image: {paths:?}"
        );
    }
}

/// `ctr -a SOCKET -n k8s.io` for a daemon, usable while the [`Containerd`] is borrowed mutably.
#[derive(Clone)]
struct Ctr {
    bin: ContainerdBin,
    socket: PathBuf,
}

impl Ctr {
    fn of(ctd: &Containerd) -> Ctr {
        Ctr {
            bin: ctd.bin().clone(),
            socket: ctd.socket().to_path_buf(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.bin_dir.join("ctr"));
        cmd.arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run_bounded(&mut self.cmd(args), CTR).expect("ctr ran")
    }
}

/// A `--mount` for `ctr run`: `src` at the same path inside the container.
fn same_path(src: &Path, options: &str) -> String {
    format!(
        "type=bind,src={p},dst={p},options={options}",
        p = src.display()
    )
}

/// A container started with `ctr run -d`; killed and removed on drop.
struct Container {
    ctr: Ctr,
    id: String,
    log: PathBuf,
    /// Its init process, SIGKILLed on drop should containerd be gone by then (the test
    /// daemon's drop kills the shims, which would leave the container's processes behind).
    pid: Option<i32>,
}

impl Container {
    /// `ctr run -d --net-host [--mount M]... NAME ID ARGS...`, logging to `log`.
    fn start(ctr: &Ctr, id: &str, mounts: &[String], args: &[String], log: &Path) -> Container {
        let log_uri = format!("file://{}", log.display());
        let mut all: Vec<&str> = vec!["run", "-d", "--net-host", "--log-uri", &log_uri];
        for m in mounts {
            all.extend(["--mount", m]);
        }
        all.extend([NAME, id]);
        all.extend(args.iter().map(String::as_str));
        let out = ctr.run(&all);
        assert!(out.status.success(), "ctr run {id}: {out:?}");
        // `ctr task ls`: TASK PID STATUS.
        let tasks = ctr.run(&["task", "ls"]);
        let pid = String::from_utf8_lossy(&tasks.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&id))
            .and_then(|cols| cols.get(1)?.parse().ok());
        Container {
            ctr: ctr.clone(),
            id: id.to_string(),
            log: log.to_path_buf(),
            pid,
        }
    }

    /// `ctr task exec` of `args` inside it.
    fn exec(&self, exec_id: &str, args: &[&str]) -> Output {
        let mut all = vec!["task", "exec", "--exec-id", exec_id, &self.id];
        all.extend(args);
        self.ctr.run(&all)
    }

    fn log(&self) -> String {
        file_tail(&self.log, 8 * 1024)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let mut delete = self.ctr.cmd(&["task", "delete", "--force", &self.id]);
        let deleted = run_bounded(&mut delete, CTR).is_ok_and(|o| o.status.success());
        let mut remove = self.ctr.cmd(&["container", "delete", &self.id]);
        let _ = run_bounded(&mut remove, CTR);
        // containerd gone (a failed test): end the container's init ourselves, if it is still
        // the agent this test started (its own PID namespace goes with it).
        let ours = |pid: i32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"/usr/local/bin/coldstart-agent\0"))
        };
        if let Some(pid) = self.pid.filter(|&p| !deleted && ours(p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// containerd 2.x from the test environment, with the agent image imported.
fn containerd_with_image(hosts: &Path, archive: &Path) -> Containerd {
    let env = TestEnv::load();
    let bin = env.newest();
    assert!(
        bin.version_at_least("2.1.0"),
        "want containerd 2.1+: {bin:?}"
    );
    let ctd = Containerd::start(
        bin,
        ContainerdOpts {
            root: None,
            hosts_dir: hosts.to_path_buf(),
            ..Default::default()
        },
    )
    .expect("containerd starts");
    let archive = archive.to_str().unwrap();
    ctd.ctr(&["images", "import", archive])
        .expect("ctr images import");
    assert!(
        ctd.image_names().unwrap().iter().any(|n| n == NAME),
        "{NAME} not imported: {:?}",
        ctd.image_names()
    );
    ctd
}

/// `GET path` on 127.0.0.1:port; the status code, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The standalone agent in a container: its directory under `dir` (mounted at the same path),
/// its admin server on 127.0.0.1:`port` (host network), no containerd of its own.
fn standalone_agent(ctr: &Ctr, id: &str, dir: &Path, port: u16, mounts: &[String]) -> Container {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    let mut args = vec!["/usr/local/bin/coldstart-agent".to_string()];
    let mut rest = common::agent::standalone_args(dir, "http://127.0.0.1:9");
    let at = rest.iter().position(|a| a == "--admin-addr").unwrap();
    rest[at + 1] = format!("127.0.0.1:{port}");
    args.extend(rest);
    let mut all = vec![same_path(dir, "rbind:rw")];
    all.extend(mounts.iter().cloned());
    let agent = Container::start(ctr, id, &all, &args, &dir.join("agent.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(port, "/healthz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "no /healthz on 127.0.0.1:{port} within 30 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

#[test]
#[ignore = "needs root, containerd (scripts/test-env.sh) and the workspace binaries"]
fn image_runs_under_containerd_and_runc() {
    support::require_root();
    let work = tempfile::tempdir().unwrap();
    build_agent_image(&work.path().join("image"));
    let hosts = tempfile::tempdir().unwrap();
    let ctd = containerd_with_image(
        hosts.path(),
        &work.path().join("image/coldstart-agent.oci.tar"),
    );
    let ctr = Ctr::of(&ctd);

    let out = ctr.run(&[
        "run",
        "--rm",
        NAME,
        "agent-version",
        "/usr/local/bin/coldstart-agent",
        "--version",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("coldstart-agent {}", env!("CARGO_PKG_VERSION"))
    );

    // The stand-in NVML and its scenario, from the host, at the paths it was built with.
    let nvml_dir = work.path().join("nvml");
    std::fs::create_dir_all(&nvml_dir).unwrap();
    let stub = NvmlStub::build(&nvml_dir, 2);
    let mount = same_path(&nvml_dir, "rbind:ro");
    let lib = stub.lib.to_str().unwrap();
    let out = ctr.run(&[
        "run",
        "--rm",
        "--mount",
        &mount,
        NAME,
        "agent-gpu-check",
        "/usr/local/bin/coldstart-agent",
        "--log-format",
        "text",
        "gpu-check",
        "-o",
        "json",
        "--nvml-library",
        lib,
        "--gpus-expected",
        "2",
        "--xid-wait",
        "0.2",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {out:?}"));
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["healthy"], true, "{doc:#}");
    let devices = doc["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{doc:#}");
    assert_eq!(devices[1]["name"], "NVIDIA Stub GPU", "{doc:#}");
    assert_eq!(
        devices[1]["uuid"], "GPU-00000000-0000-0000-0000-000000000001",
        "{doc:#}"
    );

    let port = free_port();
    let agent = standalone_agent(
        &ctr,
        "agent-standalone",
        &work.path().join("agent"),
        port,
        &[],
    );
    assert_eq!(http_status(port, "/metrics"), Some(200), "{}", agent.log());
}

/// `coldctl warm --here` inside `agent` for `image` through `socket`, with the config and root
/// of `ctd` (mounted at their host paths).
fn warm_inside(
    agent: &Container,
    exec_id: &str,
    ctd: &Containerd,
    socket: &Path,
    image: &str,
) -> Output {
    agent.exec(
        exec_id,
        &[
            "/usr/local/bin/coldctl",
            "warm",
            "--here",
            "--image",
            image,
            "-o",
            "json",
            "--margin-mib",
            "1",
            "--containerd-socket",
            socket.to_str().unwrap(),
            "--containerd-config",
            ctd.config_path().to_str().unwrap(),
            "--containerd-root",
            ctd.root().to_str().unwrap(),
        ],
    )
}

fn ok_json(out: &Output) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {out:?}"));
    assert_eq!(out.status.code(), Some(0), "{doc:#}\n{out:?}");
    assert_eq!(doc["ok"], true, "{doc:#}");
    doc
}

#[test]
#[ignore = "needs root, containerd (scripts/test-env.sh) and the workspace binaries"]
fn pulls_from_the_image_survive_a_containerd_restart_through_the_socket_directory() {
    support::require_root();
    let work = tempfile::tempdir().unwrap();
    build_agent_image(&work.path().join("image"));
    let before = build_image(&work.path().join("before"), &[1 << 20], 21).unwrap();
    let after = build_image(&work.path().join("after"), &[1 << 20], 22).unwrap();
    let registry = Registry::start_plain().expect("registry");
    push(&before, &registry.host(), "test/before:v1", false).unwrap();
    push(&after, &registry.host(), "test/after:v1", false).unwrap();
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(
        hosts.path(),
        "registry.coldstart.test",
        &registry.url(),
        None,
    );
    let mut ctd = containerd_with_image(
        hosts.path(),
        &work.path().join("image/coldstart-agent.oci.tar"),
    );
    let ctr = Ctr::of(&ctd);

    // As the DaemonSet mounts it: the directory holding the socket (plain bind: the daemon's
    // own mounts below it stay out). Beside it, the control: the socket file bind-mounted.
    let socket_dir = ctd.socket().parent().unwrap().to_path_buf();
    let file_socket = Path::new("/run/containerd/containerd.sock");
    let mounts = [
        same_path(&socket_dir, "bind:rw"),
        same_path(hosts.path(), "rbind:ro"),
        format!(
            "type=bind,src={},dst={},options=bind:rw",
            ctd.socket().display(),
            file_socket.display()
        ),
    ];
    let agent = standalone_agent(
        &ctr,
        "agent-socket-dir",
        &work.path().join("agent"),
        free_port(),
        &mounts,
    );
    let before_ref = "registry.coldstart.test/test/before:v1";
    let after_ref = "registry.coldstart.test/test/after:v1";
    let dir_socket = ctd.socket().to_path_buf();
    ok_json(&warm_inside(
        &agent,
        "warm-file-1",
        &ctd,
        file_socket,
        before_ref,
    ));
    let doc = ok_json(&warm_inside(
        &agent,
        "warm-dir-1",
        &ctd,
        &dir_socket,
        before_ref,
    ));
    assert_eq!(
        doc["image"]["manifestDigest"],
        before.manifest_digest.as_str()
    );

    // containerd restarts and makes a new socket; the container keeps running.
    ctd.restart().expect("containerd restarts");

    let dead = warm_inside(&agent, "warm-file-2", &ctd, file_socket, after_ref);
    let doc: serde_json::Value = serde_json::from_slice(&dead.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {dead:?}"));
    assert_eq!(dead.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["kind"], "runtime_unavailable", "{doc:#}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "the file bind mount should keep the dead socket: {doc:#}"
    );
    let doc = ok_json(&warm_inside(
        &agent,
        "warm-dir-2",
        &ctd,
        &dir_socket,
        after_ref,
    ));
    assert_eq!(
        doc["image"]["manifestDigest"],
        after.manifest_digest.as_str()
    );
    assert_eq!(doc["image"]["state"]["unpacked"], true, "{doc:#}");
    assert!(
        ctd.image_names().unwrap().iter().any(|n| n == after_ref),
        "{after_ref} not in containerd"
    );
}
