//! System tests of `coldctl warm --here --image` against real containerd (every version the
//! test environment unpacked), real registries (Debian's docker-registry, plain HTTP, HTTPS with
//! a test CA, basic auth) reached through hosts.toml under names that resolve nowhere.
//!
//! They need root and `scripts/test-env.sh`; CI runs them with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{cri_image_status, warm};
use support::{
    Ca, Containerd, ContainerdBin, ContainerdOpts, CountingProxy, OciLayout, Registry, TestEnv,
    TinyFs, build_image, push, push_with_creds, write_hosts_toml,
};

const MIB: usize = 1 << 20;
const LONG: Duration = Duration::from_secs(300);

/// A hosts directory and the registries it maps.
struct Registries {
    hosts: tempfile::TempDir,
    _keep: Vec<Registry>,
    _ca: Option<(tempfile::TempDir, Ca)>,
}

fn hosts_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coldstart-hosts-")
        .tempdir()
        .expect("hosts dir")
}

fn image_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coldstart-img-")
        .tempdir()
        .expect("image dir")
}

/// `registry.coldstart.test` (plain HTTP) and `secure.coldstart.test` (HTTPS, test CA), each
/// holding `test/img:v1` built from `layout`.
fn plain_and_tls(layout: &OciLayout) -> Registries {
    let hosts = hosts_dir();
    let plain = Registry::start_plain().expect("plain registry");
    push(layout, &plain.host(), "test/img:v1", false).expect("push plain");
    write_hosts_toml(hosts.path(), "registry.coldstart.test", &plain.url(), None);
    let ca_dir = tempfile::tempdir().expect("ca dir");
    let ca = Ca::generate(ca_dir.path());
    let tls = Registry::start_tls(&ca).expect("tls registry");
    push(layout, &tls.host(), "test/img:v1", true).expect("push tls");
    write_hosts_toml(
        hosts.path(),
        "secure.coldstart.test",
        &tls.url(),
        Some(ca.cert_path()),
    );
    Registries {
        hosts,
        _keep: vec![plain, tls],
        _ca: Some((ca_dir, ca)),
    }
}

fn start(bin: &ContainerdBin, hosts: &Path, root: Option<PathBuf>) -> Containerd {
    Containerd::start(
        bin,
        ContainerdOpts {
            root,
            hosts_dir: hosts.to_path_buf(),
            ..Default::default()
        },
    )
    .expect("containerd starts")
}

/// Image records in namespace k8s.io, as `ctr` (not our code) lists them: (name, labels).
fn ctr_images(ctd: &Containerd) -> Vec<(String, String)> {
    let out = ctd.ctr(&["images", "ls"]).expect("ctr images ls");
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((cols.first()?.to_string(), cols.last()?.to_string()))
        })
        .collect()
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn warm_pulls_unpacks_and_pins_on_every_containerd_version() {
    let env = TestEnv::load();
    let img = image_dir();
    let layout = build_image(img.path(), &[3 * MIB, 2 * MIB, MIB], 7).expect("image");
    let regs = plain_and_tls(&layout);
    assert!(
        env.containerds.len() >= 3,
        "want 1.6, 1.7 and 2.x: {:?}",
        env.containerds
    );
    for bin in &env.containerds {
        let ctd = start(bin, regs.hosts.path(), None);
        for name in [
            "registry.coldstart.test/test/img:v1",
            "secure.coldstart.test/test/img:v1",
        ] {
            let run = warm(&ctd, name, &["-o", "json", "--margin-mib", "1"], LONG);
            assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
            let doc = run.json();
            assert_eq!(doc["ok"], true);
            assert_eq!(doc["image"]["state"]["unpacked"], true);
            assert_eq!(doc["image"]["state"]["pinLabel"], true);
            assert_eq!(doc["image"]["runtime"]["version"], bin.version.as_str());
            assert_eq!(
                doc["image"]["manifestDigest"],
                layout.manifest_digest.as_str()
            );

            // What the kubelet would see, asked through CRI directly.
            let cri = cri_image_status(ctd.socket(), name)
                .unwrap_or_else(|| panic!("CRI does not report {name} on {}", bin.version));
            assert_eq!(cri.id, layout.config_digest);
            assert!(cri.size > 0, "{cri:?}");
            assert!(
                cri.repo_digests
                    .iter()
                    .any(|d| d.ends_with(&layout.manifest_digest)),
                "{cri:?}"
            );
            assert_eq!(
                cri.pinned,
                bin.version_at_least("1.7.3"),
                "CRI pinned flag on {}",
                bin.version
            );
            // Every containerd record of the image carries the pin label (as ctr sees it).
            let records: Vec<_> = ctr_images(&ctd)
                .into_iter()
                .filter(|(n, _)| {
                    n.starts_with(name.trim_end_matches(":v1")) || n.starts_with("sha256:")
                })
                .collect();
            assert!(records.len() >= 2, "{records:?}");
            for (n, labels) in &records {
                assert!(
                    labels.contains("io.cri-containerd.pinned=pinned"),
                    "{n}: {labels}"
                );
                assert!(
                    labels.contains("io.cri-containerd.image=managed"),
                    "{n}: {labels}"
                );
            }
        }
        if !bin.version_at_least("1.7.3") {
            // A second warm on 1.6 warns that kubelet GC may still evict.
            let run = warm(
                &ctd,
                "registry.coldstart.test/test/img:v1",
                &["--margin-mib", "1"],
                LONG,
            );
            assert_eq!(run.code, 0, "{run:?}");
            assert!(run.stderr.contains("ignores the pin label"), "{run:?}");
        }
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn bad_input_fails_with_one_line_naming_the_cause_and_leaves_nothing() {
    let env = TestEnv::load();
    let img = image_dir();
    let layout = build_image(img.path(), &[2 * MIB, MIB], 11).expect("image");
    let hosts = hosts_dir();
    let plain = Registry::start_plain().expect("registry");
    push(&layout, &plain.host(), "test/img:v1", false).expect("push");
    write_hosts_toml(hosts.path(), "registry.coldstart.test", &plain.url(), None);
    let authreg = Registry::start_with_htpasswd("puller", "s3cret").expect("auth registry");
    push_with_creds(
        &layout,
        &authreg.host(),
        "private/img:v1",
        false,
        "puller",
        "s3cret",
    )
    .expect("push with creds");
    write_hosts_toml(hosts.path(), "auth.coldstart.test", &authreg.url(), None);
    let dead_port = support::free_port();
    write_hosts_toml(
        hosts.path(),
        "down.coldstart.test",
        &format!("http://127.0.0.1:{dead_port}"),
        None,
    );
    let secrets = tempfile::tempdir().expect("secrets");
    let wrong = secrets.path().join("wrong.json");
    let right = secrets.path().join("right.json");
    let auth = |user: &str, pw: &str| {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        format!(r#"{{"auths":{{"auth.coldstart.test":{{"auth":"{token}"}}}}}}"#)
    };
    std::fs::write(&wrong, auth("puller", "wrong")).expect("write");
    std::fs::write(&right, auth("puller", "s3cret")).expect("write");

    let ctd = start(env.newest(), hosts.path(), None);
    let sock = ctd.socket();
    let w = wrong.to_string_lossy().into_owned();
    let cases: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        (
            "registry.coldstart.test/Test/img:v1",
            vec![],
            "invalid_reference",
            "lowercase",
        ),
        (
            "registry.coldstart.test/test/missing:v1",
            vec![],
            "not_found",
            "not found",
        ),
        (
            "down.coldstart.test/test/img:v1",
            vec!["--attempts", "2"],
            "registry_unreachable",
            "connection refused",
        ),
        (
            "auth.coldstart.test/private/img:v1",
            vec!["--pull-secret", &w],
            "unauthorized",
            "401",
        ),
        (
            "auth.coldstart.test/private/img:v1",
            vec![],
            "unauthorized",
            "authorization",
        ),
    ];
    for (image, extra, kind, cause) in &cases {
        let mut json_args = extra.clone();
        json_args.extend(["-o", "json"]);
        let run = warm(&ctd, image, &json_args, LONG);
        assert_eq!(run.code, 1, "{image}: {run:?}");
        let doc = run.json();
        assert_eq!(doc["ok"], false, "{image}");
        assert_eq!(doc["kind"], *kind, "{image}: {doc}");
        let text = warm(&ctd, image, extra, LONG);
        assert_eq!(text.code, 1, "{image}: {text:?}");
        let line = text.error_line();
        assert!(line.to_lowercase().contains(cause), "{image}: {line}");
        assert!(
            line.contains(image.split(':').next().unwrap_or(image)) || *kind == "invalid_reference",
            "{line}"
        );
    }
    // Nothing half-made: no image records, CRI knows none of them.
    assert!(ctr_images(&ctd).is_empty(), "{:?}", ctr_images(&ctd));
    for (image, ..) in &cases[1..] {
        assert!(cri_image_status(sock, image).is_none(), "{image}");
    }
    // The right credentials work against the same registry.
    let r = right.to_string_lossy().into_owned();
    let run = warm(
        &ctd,
        "auth.coldstart.test/private/img:v1",
        &["--pull-secret", &r, "--margin-mib", "1"],
        LONG,
    );
    assert_eq!(run.code, 0, "{run:?}");

    // Bad usage: exit 64.
    let run = common::coldctl(&["warm", "--here"], LONG);
    assert_eq!(run.code, 64, "{run:?}");
    let run = common::coldctl(&["warm", "--here", "--image", "x", "--no-such-flag"], LONG);
    assert_eq!(run.code, 64, "{run:?}");
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd, tmpfs mount)"]
fn a_containerd_root_on_a_tiny_filesystem_fails_the_disk_check() {
    let env = TestEnv::load();
    let img = image_dir();
    let layout = build_image(img.path(), &[24 * MIB, 24 * MIB], 13).expect("image");
    let hosts = hosts_dir();
    let plain = Registry::start_plain().expect("registry");
    push(&layout, &plain.host(), "test/big:v1", false).expect("push");
    write_hosts_toml(hosts.path(), "registry.coldstart.test", &plain.url(), None);
    let tiny = TinyFs::mount(64).expect("tmpfs");
    let ctd = start(env.newest(), hosts.path(), Some(tiny.path().join("root")));
    let run = warm(
        &ctd,
        "registry.coldstart.test/test/big:v1",
        &["--margin-mib", "8"],
        LONG,
    );
    assert_eq!(run.code, 1, "{run:?}");
    let line = run.error_line();
    assert!(line.contains("not enough disk space"), "{line}");
    assert!(
        line.contains(&tiny.path().display().to_string()),
        "names the filesystem: {line}"
    );
    assert!(ctr_images(&ctd).is_empty());
    let used: u64 = std::fs::read_dir(
        ctd.root()
            .join("io.containerd.content.v1.content/blobs/sha256"),
    )
    .map(|d| d.count() as u64)
    .unwrap_or(0);
    assert_eq!(used, 0, "no blob fetched");
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_pull_survives_a_containerd_restart_and_refetches_only_what_was_lost() {
    let env = TestEnv::load();
    let img = image_dir();
    let layout =
        build_image(img.path(), &[8 * MIB, 8 * MIB, 40 * MIB, 40 * MIB], 17).expect("image");
    let registry = Registry::start_plain().expect("registry");
    push(&layout, &registry.host(), "test/multi:v1", false).expect("push");
    let proxy = CountingProxy::start(registry.addr()).expect("proxy");
    for bin in [env.by_suite("trixie"), env.newest()] {
        let hosts = hosts_dir();
        write_hosts_toml(hosts.path(), "registry.coldstart.test", &proxy.url(), None);
        let mut ctd = start(bin, hosts.path(), None);
        proxy.reset();
        proxy.set_rate_limit(Some(12 * MIB as u64));
        let child = common::spawn_warm(
            &ctd,
            "registry.coldstart.test/test/multi:v1",
            // containerd's own pull resuming its ingests (the fallback path); the ranged
            // fetch's resume is tests/ranged_fetch.rs's.
            &[
                "--no-ranged-fetch",
                "--stall-timeout",
                "30",
                "--attempts",
                "10",
                "--margin-mib",
                "1",
                "-o",
                "json",
            ],
        );
        support::wait_for("half the image through the registry", LONG, || {
            (proxy.bytes_down() > layout.compressed_size / 2).then_some(())
        })
        .expect("pull progresses");
        let before_kill = proxy.bytes_down();
        ctd.kill9();
        std::thread::sleep(Duration::from_millis(500));
        ctd.restart().expect("containerd restarts");
        proxy.set_rate_limit(None);
        let run = common::finish(child, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let doc = run.json();
        let attempts = doc["image"]["attempts"].as_u64().unwrap_or(0);
        assert!(attempts >= 2, "the restart cost an attempt: {doc}");
        let served = proxy.bytes_down();
        let size = layout.compressed_size;
        eprintln!(
            "containerd {}: image {size} B, served {served} B ({:.2}x), {before_kill} B before the kill",
            bin.version,
            served as f64 / size as f64
        );
        assert!(served >= size, "{served} < {size}");
        // Complete blobs, and the partial ingests containerd keeps on disk, are not fetched
        // again: well under half of what had arrived before the kill is fetched twice.
        assert!(
            served < size + before_kill / 2,
            "everything fetched twice: served {served}, image {size}, before kill {before_kill}"
        );
        let cri = cri_image_status(ctd.socket(), "registry.coldstart.test/test/multi:v1");
        assert!(cri.is_some(), "present after the restart");
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_stalled_pull_is_cancelled_and_retried() {
    let env = TestEnv::load();
    let img = image_dir();
    let layout = build_image(img.path(), &[16 * MIB, 16 * MIB], 19).expect("image");
    let registry = Registry::start_plain().expect("registry");
    push(&layout, &registry.host(), "test/stall:v1", false).expect("push");
    let proxy = CountingProxy::start(registry.addr()).expect("proxy");
    let hosts = hosts_dir();
    write_hosts_toml(hosts.path(), "registry.coldstart.test", &proxy.url(), None);
    let ctd = start(env.newest(), hosts.path(), None);
    proxy.set_rate_limit(Some(4 * MIB as u64));
    let child = common::spawn_warm(
        &ctd,
        "registry.coldstart.test/test/stall:v1",
        &[
            "--stall-timeout",
            "3",
            "--attempts",
            "5",
            "--margin-mib",
            "1",
            "-o",
            "json",
        ],
    );
    support::wait_for("some bytes through", LONG, || {
        (proxy.bytes_down() > 4 * MIB as u64).then_some(())
    })
    .expect("pull starts");
    // The network goes silent (1 byte/s): the stall detector must cancel the pull. Silent for
    // well over the 3 s stall timeout: what the kernel's socket buffers already hold (a few
    // MiB on loopback) still drains into containerd first and counts as progress.
    proxy.set_rate_limit(Some(1));
    // 20 s: on a loaded machine containerd takes a while to drain those buffers.
    std::thread::sleep(Duration::from_secs(20));
    proxy.set_rate_limit(None);
    let run = common::finish(child, LONG);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert!(doc["image"]["attempts"].as_u64().unwrap_or(0) >= 2, "{doc}");
    assert!(
        run.stderr.contains("stalled"),
        "the retry says why: {}",
        run.stderr
    );
}
