//! System tests of the parallel ranged layer fetch of `coldctl warm --here --image`, on every
//! containerd the test environment unpacked (1.6, 1.7, 2.x), against the real registry reached
//! through hosts.toml under a name that resolves nowhere, with a loopback proxy for faults
//! (byte counting, a shared rate limit, a registry that ignores Range).
//!
//! They need root and `scripts/test-env.sh`; CI runs them with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "ranged_fetch/faults.rs"]
mod faults;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{cri_image_status, warm};
use support::{
    Containerd, ContainerdBin, ContainerdOpts, CountingProxy, OciLayout, Registry, TestEnv,
    build_image, push, write_hosts_toml,
};

const MIB: usize = 1 << 20;
const LONG: Duration = Duration::from_secs(300);
const HOST: &str = "registry.coldstart.test";

/// Small ranges and buffer so that even test-sized layers are fetched as many ranges.
/// Loopback is not capped per connection: the speed fallback is off here.
const RANGED: &[&str] = &[
    "--fetch-fast-mbps",
    "0",
    "--fetch-chunk-mib",
    "2",
    "--fetch-buffer-mib",
    "8",
    "--fetch-connections",
    "4",
    "--margin-mib",
    "1",
    "-o",
    "json",
];

/// A registry holding `repo` built from `sizes`, behind a counting proxy, and a hosts dir
/// mapping [`HOST`] to the proxy.
struct Setup {
    _img: tempfile::TempDir,
    layout: OciLayout,
    registry: Registry,
    proxy: CountingProxy,
    hosts: tempfile::TempDir,
}

fn setup(sizes: &[usize], seed: u64, repo: &str) -> Setup {
    let img = tempfile::Builder::new()
        .prefix("coldstart-img-")
        .tempdir()
        .unwrap();
    let layout = build_image(img.path(), sizes, seed).expect("image");
    let registry = Registry::start_plain().expect("registry");
    push(&layout, &registry.host(), repo, false).expect("push");
    let proxy = CountingProxy::start(registry.addr()).expect("proxy");
    let hosts = tempfile::Builder::new()
        .prefix("coldstart-hosts-")
        .tempdir()
        .unwrap();
    write_hosts_toml(hosts.path(), HOST, &proxy.url(), None);
    Setup {
        _img: img,
        layout,
        registry,
        proxy,
        hosts,
    }
}

fn start(bin: &ContainerdBin, hosts: &Path) -> Containerd {
    Containerd::start(
        bin,
        ContainerdOpts {
            hosts_dir: hosts.to_path_buf(),
            ..Default::default()
        },
    )
    .expect("containerd starts")
}

fn all_versions(env: &TestEnv) -> &[ContainerdBin] {
    assert!(
        env.containerds.len() >= 3,
        "want 1.6, 1.7 and 2.x: {:?}",
        env.containerds
    );
    &env.containerds
}

/// Rows of a `ctr` listing without its header, split on whitespace.
fn rows(ctd: &Containerd, args: &[&str]) -> Vec<Vec<String>> {
    ctd.ctr(args)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Everything of the image a kubelet or containerd's GC could tell apart, as `ctr` and CRI
/// (not our library) report it: image records with their labels, content with sizes and
/// labels (ages dropped), committed snapshots, CRI's id, digests and pin.
fn view(ctd: &Containerd, image: &str) -> BTreeSet<String> {
    // ctr prints labels in Go's random map order.
    let sorted = |labels: &str| {
        let mut l: Vec<&str> = labels.split(',').collect();
        l.sort_unstable();
        l.join(",")
    };
    let mut out = BTreeSet::new();
    for mut r in rows(ctd, &["images", "ls"]) {
        if let Some(labels) = r.last_mut() {
            *labels = sorted(labels);
        }
        out.insert(format!("image {}", r.join(" ")));
    }
    for r in rows(ctd, &["content", "ls"]) {
        let labels = if r.len() > 3 {
            sorted(&r[r.len() - 1])
        } else {
            String::new()
        };
        out.insert(format!("content {} {} {labels}", r[0], r[1]));
    }
    let committed = rows(ctd, &["snapshots", "ls"])
        .iter()
        .filter(|r| r.iter().any(|c| c == "Committed"))
        .count();
    out.insert(format!("snapshots committed {committed}"));
    let cri = cri_image_status(ctd.socket(), image).expect("CRI reports the image");
    out.insert(format!(
        "cri {} pinned={} digests={:?}",
        cri.id, cri.pinned, cri.repo_digests
    ));
    out
}

/// `ctr images check`: every record complete and unpacked.
fn assert_complete(ctd: &Containerd) {
    let check = ctd.ctr(&["images", "check"]).unwrap();
    let lines: Vec<&str> = check.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "{check}");
    for l in lines {
        assert!(
            l.contains("complete") && l.trim_end().ends_with("true"),
            "{}: {l}",
            ctd.version()
        );
    }
}

/// Removes every image and lease (synchronous GC) and waits until no content is left.
fn remove_all(ctd: &Containerd) {
    support::wait_for("the content store to empty", LONG, || {
        let names = ctd.image_names().ok()?;
        if !names.is_empty() {
            let mut args = vec!["images", "rm", "--sync"];
            args.extend(names.iter().map(String::as_str));
            ctd.ctr(&args).ok()?;
        }
        for lease in ctd.ctr(&["leases", "ls", "-q"]).ok()?.split_whitespace() {
            ctd.ctr(&["leases", "rm", "--sync", lease]).ok()?;
        }
        let left = rows(ctd, &["content", "ls"]).len() + rows(ctd, &["snapshots", "ls"]).len();
        (left == 0).then_some(())
    })
    .expect("content collected");
}

/// Leases in `k8s.io`, as `ctr` lists them (id and labels).
fn leases(ctd: &Containerd) -> Vec<String> {
    ctd.ctr(&["leases", "ls"])
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_ranged_pull_leaves_exactly_what_a_plain_cri_pull_leaves() {
    let env = TestEnv::load();
    let s = setup(&[12 * MIB, 3 * MIB, MIB], 41, "test/ranged:v1");
    let image = format!("{HOST}/test/ranged:v1");
    for bin in all_versions(&env) {
        let ctd = start(bin, s.hosts.path());
        // Through the Content API first, then in place (the default): the same image.
        let mut api_args = RANGED.to_vec();
        api_args.push("--fetch-via-api");
        let run = warm(&ctd, &image, &api_args, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let fetch = &run.json()["image"]["fetch"];
        assert_eq!(fetch["blobs"], 4, "{fetch}");
        assert_eq!(fetch["inPlace"], 0, "{fetch}");
        assert_complete(&ctd);
        let via_api = view(&ctd, &image);
        remove_all(&ctd);

        s.proxy.reset();
        let run = warm(&ctd, &image, RANGED, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let doc = run.json();
        let fetch = &doc["image"]["fetch"];
        assert!(fetch["fallback"].is_null(), "{}: {doc}", bin.version);
        assert_eq!(fetch["blobs"], 4, "config and three layers: {doc}");
        assert_eq!(
            fetch["inPlace"], 4,
            "every blob staged in place: {doc}\n{}",
            run.stderr
        );
        let blob_bytes = s.layout.layers_size() + s.layout.config_size;
        assert_eq!(fetch["bytes"].as_u64(), Some(blob_bytes), "{doc}");
        assert!(run.stderr.is_empty() || !run.stderr.contains("ranged fetch off"));
        // Every blob came over the wire once: the CRI pull only read the manifest.
        let served = s.proxy.bytes_down();
        assert!(
            served < blob_bytes + 2 * MIB as u64,
            "{}: served {served} for {blob_bytes} of blobs",
            bin.version
        );
        assert_complete(&ctd);
        assert!(
            leases(&ctd).is_empty(),
            "lease released: {:?}",
            leases(&ctd)
        );
        let active = ctd.ctr(&["content", "active"]).unwrap();
        assert_eq!(active.lines().skip(1).count(), 0, "ingests left: {active}");
        let ranged = view(&ctd, &image);
        assert_eq!(ranged, via_api, "containerd {}", bin.version);

        remove_all(&ctd);
        let mut plain_args = RANGED.to_vec();
        plain_args.push("--no-ranged-fetch");
        let run = warm(&ctd, &image, &plain_args, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        assert!(run.json()["image"]["fetch"].is_null());
        assert_complete(&ctd);
        let plain = view(&ctd, &image);
        assert_eq!(
            ranged, plain,
            "containerd {}: ranged and plain pulls differ",
            bin.version
        );
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_registry_that_ignores_range_falls_back_to_the_cri_pull_and_says_so() {
    let env = TestEnv::load();
    let s = setup(&[10 * MIB, MIB], 43, "test/norange:v1");
    s.proxy.set_strip_range(true);
    let image = format!("{HOST}/test/norange:v1");
    for bin in all_versions(&env) {
        let ctd = start(bin, s.hosts.path());
        let run = warm(&ctd, &image, RANGED, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let doc = run.json();
        let why = doc["image"]["fetch"]["fallback"]
            .as_str()
            .unwrap_or_default();
        assert!(why.contains("ignores Range"), "{}: {doc}", bin.version);
        assert!(
            run.stderr.contains("ranged fetch off") && run.stderr.contains("ignores Range"),
            "the progress output says so: {}",
            run.stderr
        );
        assert_complete(&ctd);
        assert!(cri_image_status(ctd.socket(), &image).is_some());
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_containerd_whose_leases_api_refuses_falls_back_to_the_cri_pull() {
    let env = TestEnv::load();
    let s = setup(&[4 * MIB], 61, "test/nolease:v1");
    let image = format!("{HOST}/test/nolease:v1");
    for bin in all_versions(&env) {
        // CRI keeps its own in-process leases; only the gRPC service is gone.
        let ctd = Containerd::start(
            bin,
            ContainerdOpts {
                hosts_dir: s.hosts.path().to_path_buf(),
                disabled_plugins: vec!["io.containerd.grpc.v1.leases".to_owned()],
                ..Default::default()
            },
        )
        .expect("containerd starts");
        let run = warm(&ctd, &image, RANGED, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let doc = run.json();
        let why = doc["image"]["fetch"]["fallback"]
            .as_str()
            .unwrap_or_default();
        assert!(why.contains("refused a lease"), "{}: {doc}", bin.version);
        assert!(run.stderr.contains("ranged fetch off"), "{}", run.stderr);
        assert_complete(&ctd);
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_blob_whose_bytes_do_not_match_its_digest_is_never_committed() {
    let env = TestEnv::load();
    let s = setup(&[6 * MIB, MIB], 47, "test/corrupt:v1");
    // Flip one byte in the middle of the big layer in the registry's own storage: it serves
    // the wrong bytes under the right digest and size.
    let (digest, size) = s.layout.layers[0].clone();
    let hex = digest.trim_start_matches("sha256:");
    let data = s
        .registry
        .data_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).expect("registry blob");
    assert_eq!(bytes.len() as u64, size);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let image = format!("{HOST}/test/corrupt:v1");
    for bin in all_versions(&env) {
        let ctd = start(bin, s.hosts.path());
        let mut args = RANGED.to_vec();
        args.retain(|a| *a != "-o" && *a != "json");
        let run = warm(&ctd, &image, &args, LONG);
        assert_eq!(run.code, 1, "containerd {}: {run:?}", bin.version);
        let line = run.error_line();
        assert!(
            line.contains(&digest) && line.contains("does not match its digest"),
            "{}: {line}",
            bin.version
        );
        let content: Vec<String> = rows(&ctd, &["content", "ls"])
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        assert!(!content.contains(&digest), "{}: committed", bin.version);
        let active = ctd.ctr(&["content", "active"]).unwrap();
        assert!(
            !active.contains(hex),
            "{}: ingest left: {active}",
            bin.version
        );
        assert!(ctd.image_names().unwrap().is_empty());
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn what_a_crashed_fetch_leaves_is_collected_when_its_lease_expires() {
    let env = TestEnv::load();
    let s = setup(&[24 * MIB, MIB], 59, "test/crash:v1");
    let image = format!("{HOST}/test/crash:v1");
    let size = s.layout.layers_size();
    for bin in all_versions(&env) {
        let ctd = start(bin, s.hosts.path());
        s.proxy.reset();
        s.proxy.set_rate_limit(Some(8 * MIB as u64));
        let mut args = RANGED.to_vec();
        args.extend(["--fetch-lease-ttl", "4"]);
        let mut child = common::spawn_warm(&ctd, &image, &args);
        support::wait_for("a third of the image through", LONG, || {
            (s.proxy.bytes_down() > size / 3).then_some(())
        })
        .expect("fetch progresses");
        // The agent dies without a word: nothing deletes its lease.
        child.kill().unwrap();
        let _ = child.wait();
        s.proxy.set_rate_limit(None);
        let held = leases(&ctd);
        assert!(
            held.iter().any(
                |l| l.contains("coldstart.dev/fetch-") && l.contains("containerd.io/gc.expire")
            ),
            "{}: {held:?}",
            bin.version
        );
        let written = |ctd: &Containerd| {
            rows(ctd, &["content", "ls"]).len()
                + ctd
                    .ctr(&["content", "active"])
                    .unwrap()
                    .lines()
                    .skip(1)
                    .count()
        };
        assert!(
            written(&ctd) > 0,
            "{}: the fetch wrote something",
            bin.version
        );
        std::thread::sleep(Duration::from_secs(5));
        // Any synchronous deletion runs containerd's garbage collector.
        ctd.ctr(&["leases", "create", "--id", "trigger-gc"])
            .unwrap();
        ctd.ctr(&["leases", "rm", "--sync", "trigger-gc"]).unwrap();
        assert!(
            leases(&ctd).is_empty(),
            "{}: {:?}",
            bin.version,
            leases(&ctd)
        );
        assert_eq!(written(&ctd), 0, "{}: content left", bin.version);
    }
}
