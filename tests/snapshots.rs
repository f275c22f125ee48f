//! System tests of the snapshots port (issue 17) on real CRIU (Debian sid's 4.2.1, unpacked by
//! `scripts/test-env.sh`) and real containerd 2.1.9, with no kubelet: a test kubelet endpoint over
//! HTTPS answers `POST /checkpoint/...` by calling CRI `CheckpointContainer` on that containerd.
//!
//! A static counter (scripts/spike/counter.c) fills `COLDSTART_SNAPSHOT_MIB` MiB (default 256;
//! 1 GiB works but takes a minute more per capture here) over a slow load (`SPIKE_LOAD_MS`,
//! default 2000), then counts. It is captured through the kubelet endpoint and through CRI,
//! converted, imported into `k8s.io` pinned, and each snapshot is restored into a new pod: the
//! count goes on from where CRIU froze it, the checksum of its memory is the same, and no second
//! "loaded" line appears. The base image is pushed to a registry on 127.0.0.1 (restore on 2.1.9
//! pulls it by name@digest with the default resolver, which ignores hosts.toml).
//!
//! They need root and `scripts/test-env.sh`; CI runs them with `--include-ignored`. One line
//! starting `bench:` gives the numbers `benches/snapshots.sh` reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use coldstart_agent::snapshots::{
    self, CaptureRequest, Capturer, CompatKey, ContainerdSnapshots, KubeletClient, KubeletConfig,
    Limits, NodeFacts, RestoreTarget, RuntimeConfig, SnapshotStore,
};
use support::cri::{Cri, Pod};
use support::criu::{
    assert_resumed, build_images, criu_dir, field, frozen_log, log_lines, run, wait_line,
};
use support::kubelet::Kubelet;
use support::{Ca, Containerd, ContainerdOpts, Registry, TestEnv, write_hosts_toml};

const PAUSE: &str = "coldstart.test/snapshots/pause:1";
const TOKEN: &str = "test-token-of-the-agent";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn node_facts() -> NodeFacts {
    NodeFacts {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
            .to_string(),
        model_commit: "test-commit".into(),
        ..NodeFacts::default()
    }
}

struct World {
    ctd: Containerd,
    rt: ContainerdSnapshots,
    cri: Cri,
    counter: String,
    counter_digest: String,
    work: tempfile::TempDir,
    _registry: Registry,
    _hosts: tempfile::TempDir,
}

async fn world() -> World {
    let env = TestEnv::load();
    let bin = env.by_suite("sid");
    assert!(
        bin.version.starts_with("2.1."),
        "restore via CreateContainer needs containerd 2.1.x; sid has {}",
        bin.version
    );
    let criu = criu_dir();
    let work = tempfile::Builder::new()
        .prefix("coldstart-snap-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let registry = Registry::start_plain().unwrap();
    let counter = format!("{}/snapshots/counter:1", registry.host());
    let (pause_tar, counter_tar) = build_images(&work.path().join("img"), PAUSE, &counter);
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", counter_tar.display()))
        .arg(format!("docker://{counter}")));
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(
        hosts.path(),
        &registry.host(),
        &format!("http://{}", registry.host()),
        None,
    );
    let ctd = Containerd::start(
        bin,
        ContainerdOpts {
            hosts_dir: hosts.path().to_path_buf(),
            path_first: Some(criu.clone()),
            sandbox_image: Some(PAUSE.to_string()),
            run_pods: true,
            ..Default::default()
        },
    )
    .unwrap();
    ctd.ctr_ns("k8s.io", &["images", "import", pause_tar.to_str().unwrap()])
        .unwrap();
    let mut cri = Cri::connect(ctd.socket());
    cri.pull(&counter).await.unwrap();
    let counter_digest = cri.repo_digest(&counter).await.unwrap();
    let mut cfg = RuntimeConfig::new(ctd.socket().to_path_buf());
    cfg.config_file = ctd.config_path().to_path_buf();
    cfg.criu_search = vec![criu];
    cfg.containerd_root = Some(ctd.root().to_path_buf());
    let rt = ContainerdSnapshots::new(cfg);
    World {
        ctd,
        rt,
        cri,
        counter,
        counter_digest,
        work,
        _registry: registry,
        _hosts: hosts,
    }
}

/// Restores `snap` (imported as `image`) into a new pod and checks that it continued.
async fn restore_and_check(
    w: &mut World,
    snap: &snapshots::Snapshot,
    image: &str,
    pod_name: &str,
) -> Duration {
    let frozen = frozen_log(&snap.layer());
    let last = frozen
        .iter()
        .rev()
        .find_map(|l| field(l, "count="))
        .expect("a count before the checkpoint");
    let last: u64 = last.parse().unwrap();
    let sum = frozen.iter().rev().find_map(|l| field(l, "sum=")).unwrap();
    let logs = w.work.path().join("logs").join(pod_name);
    let pod: Pod = w.cri.run_pod(pod_name, "default", &logs).await.unwrap();
    let target = RestoreTarget {
        sandbox_id: pod.id.clone(),
        pod: pod.name.clone(),
        namespace: pod.namespace.clone(),
        uid: pod.uid.clone(),
        log_directory: logs.clone(),
        container: "counter".into(),
        log_path: "counter.log".into(),
    };
    // This node's key, from what it reports (not from the snapshot): the base image CRI pulled,
    // runc, this kernel, the CRIU containerd would run.
    let support = w.rt.support().await.unwrap();
    let mut node = node_facts();
    node.criu = support.criu.clone().unwrap_or_default();
    let here = CompatKey::here(&node, &w.counter_digest, "io.containerd.runc.v2");
    // A key that does not fit refuses by name, before anything is created.
    let mut other = here.clone();
    other.kernel = "0.0.0-elsewhere".into();
    let err =
        w.rt.restore_checked(&snap.record.key, &other, &target, image)
            .await
            .unwrap_err();
    assert!(err.to_string().contains("kernel is"), "{err}");
    let t0 = Instant::now();
    let id =
        w.rt.restore_checked(&snap.record.key, &here, &target, image)
            .await
            .unwrap();
    let lines = wait_line(&logs.join("counter.log"), frozen.len(), "count=").await;
    let restore = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let lines = if lines.len() < 3 {
        log_lines(&logs.join("counter.log"), frozen.len())
    } else {
        lines
    };
    assert_resumed(&lines, last, 5);
    for l in &lines {
        if let Some(s) = field(l, "sum=") {
            assert_eq!(s, sum, "memory checksum changed after restore");
        }
    }
    let (state, ann) = w.cri.status(&id).await.unwrap();
    assert_eq!(state, 1, "restored container not running");
    assert_eq!(
        ann.get("restored").map(String::as_str),
        Some("true"),
        "{ann:?}"
    );
    w.cri.remove_pod(&pod).await;
    restore
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and scripts/test-env.sh (containerd 2.1.9, CRIU 4.2.1)"]
async fn capture_through_kubelet_and_cri_then_restore_in_new_pods() {
    let mut w = world().await;
    let mib = env_u64("COLDSTART_SNAPSHOT_MIB", 256);
    let load_ms = env_u64("SPIKE_LOAD_MS", 2000);
    let logs = w.work.path().join("logs/original");
    let pod = w.cri.run_pod("original", "default", &logs).await.unwrap();
    let t0 = Instant::now();
    let env = [
        ("SPIKE_MIB", mib.to_string()),
        ("SPIKE_LOAD_MS", load_ms.to_string()),
        ("SPIKE_TICK_MS", "100".to_string()),
    ];
    let counter = w.counter.clone();
    let id = w
        .cri
        .run_container(&pod, "counter", &counter, &env)
        .await
        .unwrap();
    wait_line(&logs.join("counter.log"), 0, "count=1 ").await;
    let cold = t0.elapsed();
    wait_line(&logs.join("counter.log"), 0, "count=5 ").await;

    // The kubelet endpoint: own CA, token, timeout.
    let ca_dir = w.work.path().join("ca");
    let ca = Ca::generate(&ca_dir);
    let (cert, key) = ca.issue(&[], &ca_dir.join("kubelet"));
    let archives = w.work.path().join("kubelet-checkpoints");
    std::fs::create_dir_all(&archives).unwrap();
    let kubelet = Kubelet::start(
        &cert,
        &key,
        TOKEN,
        w.ctd.socket(),
        HashMap::from([("default/original/counter".to_string(), id.clone())]),
        &archives,
    )
    .await
    .unwrap();
    let client = |token: &str, ca: Option<PathBuf>| {
        KubeletClient::new(KubeletConfig {
            endpoint: kubelet.url.clone(),
            token: token.into(),
            ca_bundle: ca,
            insecure_skip_verify: false,
            request_timeout: Duration::from_secs(300),
        })
        .unwrap()
    };
    // Unverified serving certificate: refused without the CA bundle.
    let err = client(TOKEN, None)
        .checkpoint("default", "original", "counter", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("kubelet checkpoint failed"),
        "{err}"
    );
    // A wrong token: 401 from the endpoint.
    let err = client("wrong", Some(ca.cert_path().to_path_buf()))
        .checkpoint("default", "original", "counter", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    let store = SnapshotStore::open(w.work.path().join("snapshots")).unwrap();
    let node = node_facts();
    let via_kubelet = Capturer::Kubelet(client(TOKEN, Some(ca.cert_path().to_path_buf())));
    let req = |name: &str| CaptureRequest {
        namespace: "default".into(),
        pod: "original".into(),
        container: "counter".into(),
        name: name.into(),
        timeout: Duration::from_secs(120),
        meta: Default::default(),
    };
    let a = snapshots::capture(
        &via_kubelet,
        &store,
        &req("via-kubelet"),
        &Limits::default(),
        &node,
        Instant::now,
    )
    .await
    .unwrap();
    let seen = kubelet.seen.lock().unwrap().clone();
    assert_eq!(
        seen.last().unwrap().line,
        "POST /checkpoint/default/original/counter?timeout=120 HTTP/1.1",
        "{seen:?}"
    );
    assert_eq!(seen.last().unwrap().status, 200);
    assert_eq!(
        std::fs::read_dir(&archives).unwrap().count(),
        0,
        "the kubelet's archive was left behind"
    );

    let via_cri = Capturer::Cri {
        runtime: w.rt.clone(),
        spool: w.work.path().join("spool"),
    };
    let b = snapshots::capture(
        &via_cri,
        &store,
        &req("via-cri"),
        &Limits::default(),
        &node,
        Instant::now,
    )
    .await
    .unwrap();
    assert_eq!(
        w.cri.status(&id).await.unwrap().0,
        1,
        "the original keeps running after a checkpoint"
    );
    // The same through coldctl, with the checkpoint image imported.
    let socket = w.ctd.socket().to_str().unwrap().to_string();
    let run = tokio::task::block_in_place(|| {
        common::coldctl(
            &[
                "snapshot",
                "capture",
                "default/original/counter",
                "--here",
                "-o",
                "json",
                "--name",
                "via-coldctl",
                "--capture-via",
                "cri",
                "--image",
                "coldstart.test/snapshots/counter-checkpoint:via-coldctl",
                "--snapshot-dir",
                store.root().to_str().unwrap(),
                "--containerd-socket",
                &socket,
                "--containerd-root",
                w.ctd.root().to_str().unwrap(),
            ],
            Duration::from_secs(300),
        )
    });
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["key"]["criu"], "4.2.1", "{doc}");
    assert!(
        doc["manifestDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{doc}"
    );
    let key: &CompatKey = &b.snapshot.record.key;
    assert_eq!(key.criu, "4.2.1");
    assert_eq!(key.runtime, "io.containerd.runc.v2");
    assert!(key.image_digest.starts_with("sha256:"), "{key:?}");
    assert_eq!(key.model_commit, "test-commit");

    // The managed verbs on this node: create (a model's snapshot, imported under the model's
    // checkpoint image), list, restore-spec, delete.
    let criu = criu_dir();
    let here = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--here",
            "-o",
            "json",
            "--snapshot-dir",
            store.root().to_str().unwrap(),
            "--cache-root",
            w.work.path().to_str().unwrap(),
            "--containerd-socket",
            &socket,
            "--containerd-root",
            w.ctd.root().to_str().unwrap(),
            "--containerd-config",
            w.ctd.config_path().to_str().unwrap(),
            "--criu-path",
            criu.to_str().unwrap(),
        ]);
        tokio::task::block_in_place(|| common::coldctl(&all, Duration::from_secs(300)))
    };
    let run = here(&[
        "snapshot",
        "create",
        "acme--m",
        "--pod",
        "default/original/counter",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let made = run.json();
    let name = made["name"].as_str().unwrap().to_string();
    let image = made["image"].as_str().unwrap().to_string();
    assert!(
        image.starts_with("localhost/coldstart-snapshot/acme--m:"),
        "{made}"
    );
    let run = here(&["snapshot", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    let listed = run.json();
    let rows = listed["snapshots"].as_array().unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).cloned().unwrap();
    assert_eq!(row(&name)["restorable"], true, "{listed}");
    assert_eq!(
        row("via-coldctl")["image"],
        "coldstart.test/snapshots/counter-checkpoint:via-coldctl"
    );
    assert_eq!(
        row("via-cri")["restorable"],
        false,
        "not imported yet: {listed}"
    );
    let run = here(&["snapshot", "restore-spec", "acme--m"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.json()["patch"]["spec"]["containers"][0]["image"],
        image.as_str()
    );
    let run = here(&["snapshot", "delete", &name]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!store.root().join(&name).exists());
    let listed = w.ctd.ctr_ns("k8s.io", &["images", "ls", "-q"]).unwrap();
    assert!(!listed.lines().any(|l| l == image), "{listed}");
    let run = here(&["snapshot", "restore-spec", "acme--m"]);
    assert_eq!(run.code, 1, "nothing left to restore from: {run:?}");

    // Convert and import, pinned.
    let image_a = "coldstart.test/snapshots/counter-checkpoint:via-kubelet";
    let image_b = "coldstart.test/snapshots/counter-checkpoint:via-cri";
    let t = Instant::now();
    w.rt.import(&a.snapshot, image_a).await.unwrap();
    let import = t.elapsed();
    w.rt.import(&b.snapshot, image_b).await.unwrap();
    let listed = w.ctd.ctr_ns("k8s.io", &["images", "ls"]).unwrap();
    for image in [image_a, image_b] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(image))
            .unwrap_or_else(|| panic!("{image} not in {listed}"));
        assert!(line.contains("io.cri-containerd.pinned=pinned"), "{line}");
    }
    // Process memory: the layer's blob and the snapshot's files are root only.
    for snap in [&a.snapshot, &b.snapshot] {
        let hex = snap.record.layer_digest.trim_start_matches("sha256:");
        let blob = w
            .ctd
            .root()
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(hex);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&blob).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o400, "{}", blob.display());
    }
    w.cri.remove_pod(&pod).await;

    let restore_a = restore_and_check(&mut w, &a.snapshot, image_a, "restored-a").await;
    let restore_b = restore_and_check(&mut w, &b.snapshot, image_b, "restored-b").await;
    let restore = restore_a.min(restore_b);
    println!(
        "bench: mib={mib} load_ms={load_ms} cold_ms={} capture_ms={} archive_bytes={} layer_bytes={} import_ms={} restore_ms={} ratio={:.3}",
        cold.as_millis(),
        b.checkpoint.as_millis(),
        b.archive_bytes,
        b.snapshot.record.layer_size,
        import.as_millis(),
        restore.as_millis(),
        restore.as_secs_f64() / cold.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and scripts/test-env.sh (containerd 1.7 from trixie)"]
async fn containerd_1_7_cannot_restore_and_says_why() {
    let env = TestEnv::load();
    let bin = env.by_suite("trixie");
    let hosts = tempfile::tempdir().unwrap();
    let ctd = Containerd::start(
        bin,
        ContainerdOpts {
            hosts_dir: hosts.path().to_path_buf(),
            ..Default::default()
        },
    )
    .unwrap();
    let mut cfg = RuntimeConfig::new(ctd.socket().to_path_buf());
    cfg.config_file = ctd.config_path().to_path_buf();
    cfg.criu_search = vec![criu_dir()];
    let support = ContainerdSnapshots::new(cfg).support().await.unwrap();
    assert_eq!(support.criu.as_deref(), Some("4.2.1"));
    let err = snapshots::restore_support(&support)
        .unwrap_err()
        .to_string();
    // The same through coldctl: exit 1, the reason in the document.
    let run = common::coldctl(
        &[
            "snapshot",
            "support",
            "--here",
            "-o",
            "json",
            "--containerd-socket",
            ctd.socket().to_str().unwrap(),
            "--containerd-config",
            ctd.config_path().to_str().unwrap(),
            "--criu-path",
            criu_dir().to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["canRestore"], false, "{doc}");
    assert!(
        doc["reason"].as_str().unwrap().contains("cannot restore"),
        "{doc}"
    );
    assert!(
        err.contains(&format!(
            "cannot restore on this node: containerd {} cannot restore",
            bin.version
        )),
        "{err}"
    );
}

/// The DaemonSet's case: the agent's image has no CRIU and no libraries, the host's root is
/// mounted. The test env's CRIU tree (sid's, with its own glibc) stands for that host root:
/// its binary cannot run on this filesystem, and is found and run through the root's loader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/test-env.sh (CRIU 4.2.1 unpacked)"]
async fn a_host_criu_under_a_mounted_root_answers_through_the_roots_loader() {
    let root = criu_dir().parent().unwrap().to_path_buf();
    let bin = root.join("usr/sbin/criu");
    let direct = Command::new(&bin).arg("--version").output().unwrap();
    assert!(
        !direct.status.success(),
        "{} runs directly here: this test would not exercise the loader",
        bin.display()
    );
    let dirs = [PathBuf::from("/usr/local/sbin"), PathBuf::from("/usr/sbin")];
    assert_eq!(
        snapshots::criu::find(&dirs, Some(&root)).await.as_deref(),
        Some("4.2.1")
    );
}
