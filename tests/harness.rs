//! Smoke tests of the system-test harness itself (tests/support): every containerd version in
//! the test env starts privately, pulls from local registries mapped by hosts.toml (plain HTTP
//! and TLS with a private CA), survives SIGKILL + restart, and the counting proxy sees the bytes.
//!
//! Run: `cargo test --test harness -- --include-ignored --test-threads=1` as root after
//! `scripts/test-env.sh`.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use support::{
    Ca, Containerd, ContainerdOpts, CountingProxy, Registry, TestEnv, TinyFs, build_image, push,
    push_with_creds, write_hosts_toml,
};

const PLAIN_HOST: &str = "registry.coldstart.test";
const SECURE_HOST: &str = "secure.coldstart.test";

fn tmpdir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("coldstart-harness-")
        .tempdir()?)
}

/// Pulls `image` with ctr (namespace k8s.io, `--hosts-dir`) and checks it is listed.
fn pull_and_check(cd: &Containerd, image: &str) -> anyhow::Result<()> {
    cd.ctr_pull(image)
        .with_context(|| format!("pull {image}; containerd log:\n{}", cd.log_tail()))?;
    let names = cd.image_names()?;
    ensure!(names.iter().any(|n| n == image), "{image} not in {names:?}");
    Ok(())
}

/// The error text of `res`, which must be an error.
fn must_fail<T>(res: anyhow::Result<T>, what: &str) -> anyhow::Result<String> {
    match res {
        Ok(_) => anyhow::bail!("{what} succeeded but must fail"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

/// Image building needs no root: digests, sizes and diff_ids must be right and deterministic.
#[test]
fn image_layout_is_consistent_and_deterministic() -> anyhow::Result<()> {
    use sha2::{Digest as _, Sha256};
    use std::io::Read as _;
    let a = tmpdir()?;
    let b = tmpdir()?;
    let la = build_image(a.path(), &[100_000, 1, 0, 300_000], 7)?;
    let lb = build_image(b.path(), &[100_000, 1, 0, 300_000], 7)?;
    ensure!(
        la.manifest_digest == lb.manifest_digest,
        "not deterministic"
    );
    let lc = build_image(b.path(), &[100_000, 1, 0, 300_000], 8)?;
    ensure!(la.manifest_digest != lc.manifest_digest, "seed ignored");
    ensure!(la.layers.len() == 4);
    for ((digest, size), diff_id) in la.layers.iter().zip(&la.diff_ids) {
        let blob = std::fs::read(la.blob_path(digest))?;
        ensure!(blob.len() as u64 == *size);
        ensure!(format!("sha256:{:x}", Sha256::digest(&blob)) == *digest);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar)?;
        ensure!(format!("sha256:{:x}", Sha256::digest(&tar)) == *diff_id);
    }
    // Incompressible: a 300 kB layer stays about 300 kB.
    ensure!(
        la.layers[3].1 > 300_000,
        "layer compressed: {}",
        la.layers[3].1
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(la.blob_path(&la.config_digest))?)?;
    ensure!(config["architecture"] == "amd64" && config["os"] == "linux");
    ensure!(config["rootfs"]["diff_ids"].as_array().map(|a| a.len()) == Some(4));
    Ok(())
}

/// Every containerd version pulls through a hosts.toml mapping to a plain-HTTP registry, and
/// keeps the image across SIGKILL + restart.
#[test]
#[ignore = "needs root and scripts/test-env.sh"]
fn plain_registry_pull_every_version() -> anyhow::Result<()> {
    let env = TestEnv::load();
    let registry = Registry::start_plain()?;
    let img_dir = tmpdir()?;
    let layout = build_image(img_dir.path(), &[1 << 20, 3 << 20], 1)?;
    push(&layout, &registry.host(), "test/img:v1", false)?;
    for bin in &env.containerds {
        let hosts = tmpdir()?;
        write_hosts_toml(hosts.path(), PLAIN_HOST, &registry.url(), None);
        let mut cd = Containerd::start(
            bin,
            ContainerdOpts {
                root: None,
                hosts_dir: hosts.path().to_path_buf(),
                ..Default::default()
            },
        )
        .with_context(|| bin.label())?;
        ensure!(cd.version() == bin.version);
        let image = format!("{PLAIN_HOST}/test/img:v1");
        pull_and_check(&cd, &image).with_context(|| bin.label())?;
        // The manifest digest survives skopeo (--preserve-digests) and the pull.
        let ls = cd.ctr(&["image", "ls"])?;
        ensure!(
            ls.contains(&layout.manifest_digest),
            "{}: {} not in\n{ls}",
            bin.label(),
            layout.manifest_digest
        );
        cd.kill9();
        cd.restart().with_context(|| bin.label())?;
        let names = cd.image_names()?;
        ensure!(
            names.contains(&image),
            "{}: lost {image} after restart: {names:?}",
            bin.label()
        );
    }
    Ok(())
}

/// Every version pulls from an HTTPS registry whose certificate only the test CA vouches for,
/// via `ca = ...` in hosts.toml; without the CA the pull fails (TLS really is checked).
#[test]
#[ignore = "needs root and scripts/test-env.sh"]
fn tls_registry_pull_every_version() -> anyhow::Result<()> {
    let env = TestEnv::load();
    let ca_dir = tmpdir()?;
    let ca = Ca::generate(ca_dir.path());
    let registry = Registry::start_tls(&ca)?;
    ensure!(registry.url().starts_with("https://"));
    ensure!(registry.get_status("/v2/")? == 200);
    let img_dir = tmpdir()?;
    let layout = build_image(img_dir.path(), &[512 << 10, 1 << 20], 2)?;
    push(&layout, &registry.host(), "test/secure:v1", true)?;
    for bin in &env.containerds {
        // Without the CA: must fail.
        let bad_hosts = tmpdir()?;
        write_hosts_toml(bad_hosts.path(), SECURE_HOST, &registry.url(), None);
        let cd = Containerd::start(
            bin,
            ContainerdOpts {
                root: None,
                hosts_dir: bad_hosts.path().to_path_buf(),
                ..Default::default()
            },
        )?;
        let image = format!("{SECURE_HOST}/test/secure:v1");
        let res = cd.ctr_pull(&image);
        let err = must_fail(res, &format!("{}: pull without the CA", bin.label()))?;
        ensure!(
            err.contains("x509"),
            "{}: unexpected error: {err}",
            bin.label()
        );
        drop(cd);

        let hosts = tmpdir()?;
        write_hosts_toml(
            hosts.path(),
            SECURE_HOST,
            &registry.url(),
            Some(ca.cert_path()),
        );
        let cd = Containerd::start(
            bin,
            ContainerdOpts {
                root: None,
                hosts_dir: hosts.path().to_path_buf(),
                ..Default::default()
            },
        )?;
        pull_and_check(&cd, &image).with_context(|| bin.label())?;
    }
    Ok(())
}

/// The proxy counts at least the image's bytes, rate-limits, and refuses when told to.
#[test]
#[ignore = "needs root and scripts/test-env.sh"]
fn counting_proxy_counts_limits_and_refuses() -> anyhow::Result<()> {
    let env = TestEnv::load();
    let registry = Registry::start_plain()?;
    let img_dir = tmpdir()?;
    let layout = build_image(img_dir.path(), &[2 << 20, 2 << 20], 3)?;
    push(&layout, &registry.host(), "test/img:v1", false)?;
    let proxy = CountingProxy::start(registry.addr())?;
    let hosts = tmpdir()?;
    write_hosts_toml(hosts.path(), PLAIN_HOST, &proxy.url(), None);
    for bin in &env.containerds {
        proxy.reset();
        proxy.set_rate_limit(None);
        let cd = Containerd::start(
            bin,
            ContainerdOpts {
                root: None,
                hosts_dir: hosts.path().to_path_buf(),
                ..Default::default()
            },
        )?;
        pull_and_check(&cd, &format!("{PLAIN_HOST}/test/img:v1"))?;
        ensure!(
            proxy.bytes_down() >= layout.compressed_size,
            "{}: proxy saw {} < image {}",
            bin.label(),
            proxy.bytes_down(),
            layout.compressed_size
        );
        ensure!(proxy.connections() >= 1);
    }

    // Rate limit: a fresh containerd pulls the 4 MiB image at 2 MiB/s: >= ~1.5 s.
    let bin = env.newest();
    let cd = Containerd::start(
        bin,
        ContainerdOpts {
            root: None,
            hosts_dir: hosts.path().to_path_buf(),
            ..Default::default()
        },
    )?;
    proxy.reset();
    proxy.set_rate_limit(Some(2 << 20));
    let t0 = Instant::now();
    pull_and_check(&cd, &format!("{PLAIN_HOST}/test/img:v1"))?;
    let took = t0.elapsed();
    ensure!(
        took >= Duration::from_millis(1500),
        "rate limit ignored: {took:?}"
    );
    ensure!(
        took < Duration::from_secs(10),
        "rate limit too strict: {took:?}"
    );
    proxy.set_rate_limit(None);

    // Refuse: a new tag fails to resolve.
    push(&layout, &registry.host(), "test/img:v2", false)?;
    proxy.set_refuse(true);
    let res = cd.ctr_pull(&format!("{PLAIN_HOST}/test/img:v2"));
    let err = must_fail(res, "pull through a refusing proxy")?;
    ensure!(
        err.contains("EOF") || err.contains("reset") || err.contains("refused"),
        "unexpected error: {err}"
    );
    proxy.set_refuse(false);
    pull_and_check(&cd, &format!("{PLAIN_HOST}/test/img:v2"))?;
    Ok(())
}

/// htpasswd registry: anonymous access is refused, pushes with credentials work.
#[test]
#[ignore = "needs root and scripts/test-env.sh"]
fn htpasswd_registry() -> anyhow::Result<()> {
    let registry = Registry::start_with_htpasswd("alice", "s3cret")?;
    ensure!(registry.get_status("/v2/")? == 401);
    let img_dir = tmpdir()?;
    let layout = build_image(img_dir.path(), &[64 << 10], 4)?;
    ensure!(push(&layout, &registry.host(), "test/auth:v1", false).is_err());
    ensure!(
        push_with_creds(
            &layout,
            &registry.host(),
            "test/auth:v1",
            false,
            "alice",
            "wrong"
        )
        .is_err()
    );
    push_with_creds(
        &layout,
        &registry.host(),
        "test/auth:v1",
        false,
        "alice",
        "s3cret",
    )?;
    Ok(())
}

/// A containerd rooted on a tiny tmpfs: a pull that does not fit fails, and everything is
/// unmounted afterwards.
#[test]
#[ignore = "needs root and scripts/test-env.sh"]
fn tiny_root_fills_up() -> anyhow::Result<()> {
    let env = TestEnv::load();
    let registry = Registry::start_plain()?;
    let img_dir = tmpdir()?;
    let layout = build_image(img_dir.path(), &[12 << 20], 5)?;
    push(&layout, &registry.host(), "test/big:v1", false)?;
    let hosts = tmpdir()?;
    write_hosts_toml(hosts.path(), PLAIN_HOST, &registry.url(), None);
    let bin = env.newest();
    let tiny = TinyFs::mount(16)?;
    let tiny_path = tiny.path().to_path_buf();
    ensure!(tiny.available_bytes() <= 16 << 20);
    {
        let cd = Containerd::start(
            bin,
            ContainerdOpts {
                root: Some(tiny_path.clone()),
                hosts_dir: hosts.path().to_path_buf(),
                ..Default::default()
            },
        )?;
        ensure!(cd.root() == tiny_path);
        // 12 MiB compressed + 12 MiB unpacked does not fit in 16 MiB.
        let res = cd.ctr_pull(&format!("{PLAIN_HOST}/test/big:v1"));
        let err = must_fail(res, "pull into a 16 MiB root")?;
        ensure!(err.contains("no space left"), "unexpected error: {err}");
    }
    drop(tiny);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !mounts.contains(&*tiny_path.to_string_lossy()),
        "tmpfs still mounted"
    );
    Ok(())
}

/// Dropping a Containerd kills it, unmounts what is still mounted under its directories and
/// deletes them.
#[test]
#[ignore = "needs root and scripts/test-env.sh"]
fn drop_unmounts_and_cleans_up() -> anyhow::Result<()> {
    let env = TestEnv::load();
    let hosts = tmpdir()?;
    let cd = Containerd::start(
        env.newest(),
        ContainerdOpts {
            root: None,
            hosts_dir: hosts.path().to_path_buf(),
            ..Default::default()
        },
    )?;
    let pid = cd.pid().context("no pid")?;
    let leftover = cd.state().join("leftover-shm");
    std::fs::create_dir_all(&leftover)?;
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
        .arg(&leftover)
        .status()?;
    ensure!(st.success(), "mount failed");
    let state = cd.state().to_path_buf();
    drop(cd);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(!mounts.contains(&*state.to_string_lossy()), "still mounted");
    ensure!(!state.exists(), "{} not deleted", state.display());
    ensure!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "containerd {pid} still running"
    );
    Ok(())
}
