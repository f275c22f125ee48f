//! Compile caches across nodes against a real registry (Debian's `docker-registry` on
//! loopback): two cache roots stand for node A and node B. A sealed scope is pushed as an OCI
//! artifact and imported on B only when its digest is trusted; the push rule (tag absent, or a
//! newer generation from a node whose imported scope had misses); corrupt and hostile artifacts
//! (a flipped byte in the stored layer, a manifest listing a file the layer lacks, a tar entry
//! escaping the scope, an artifact of another scope) refused with the reason, the scope left
//! empty, nothing written outside; and nodes sealing the same scope at once push one artifact
//! (a Lease per tag on the fake API server).
//!
//! The real `torch.compile` round trip (compile on A, import on B, B's first call hits) is in
//! `tests/caches.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coldstart_agent::caches::artifact::{CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE};
use coldstart_agent::caches::seal::{self, FileEntry, Manifest};
use coldstart_agent::caches::ship::{self, Exported, Imported, NoClaim, Target, Trust};
use coldstart_agent::caches::{CacheRoot, Owner, Scope, ScopeKey, scope};
use coldstart_agent::cluster::LeaseClaim;
use coldstart_agent::images::RegistryClient;
use coldstart_agent::images::registry::Access;
use coldstart_agent::images::registry::artifact::BlobSource;
use sha2::Digest as _;
use support::registry::Registry;

const GPU: &str = "NVIDIA H100 80GB HBM3";
const NOW: i64 = 1_800_000_000_000_000_000;

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// A node's cache root with the current scope of `model-a` on image `n` (empty).
fn node(n: u8) -> (tempfile::TempDir, CacheRoot, Scope, Owner) {
    let dir = tempfile::Builder::new()
        .prefix("coldstart-ship-")
        .tempdir()
        .unwrap();
    let root = CacheRoot::new(dir.path());
    let m = std::fs::metadata(dir.path()).unwrap();
    let owner = Owner {
        uid: m.uid(),
        gid: m.gid(),
    };
    let key = ScopeKey::new("model-a", &digest(n), GPU).unwrap();
    let s = scope::ensure_scope(&root, &key, owner).unwrap();
    scope::point_model(&root, &s).unwrap();
    (dir, root, s, owner)
}

fn put(root: &CacheRoot, s: &Scope, rel: &str, bytes: &[u8]) {
    let p = root.scope_dir(&s.name).join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Every file under `dir`: relative path, content, mode, mtime in ns.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>, u32, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((
                    rel,
                    std::fs::read(e.path()).unwrap(),
                    m.mode() & 0o7777,
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn target(reg: &Registry) -> Target {
    Target::new(&format!("{}/coldstart/compile-caches", reg.host()), None).unwrap()
}

fn client() -> RegistryClient {
    RegistryClient::new(None, Duration::from_secs(30))
}

/// Manifest revisions the registry stores for the repository (one per pushed manifest).
fn revisions(reg: &Registry) -> usize {
    let dir = reg.data_dir().join(
        "docker/registry/v2/repositories/coldstart/compile-caches/_manifests/revisions/sha256",
    );
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[ignore = "needs docker-registry (scripts/test-env.sh)"]
fn a_sealed_scope_travels_through_the_registry_by_the_push_rule() {
    let reg = Registry::start_plain().unwrap();
    let rt = rt();
    let (t, c) = (target(&reg), client());
    // Node A compiles and seals.
    let (_a, root_a, s_a, _) = node(1);
    put(&root_a, &s_a, "triton/K/k.cubin", &[3u8; 50_000]);
    put(&root_a, &s_a, "inductor/fxgraph/ab/entry", b"graph");
    put(&root_a, &s_a, "flashinfer/.cache/op/build.ninja", b"rule");
    assert!(seal::seal(&root_a, &s_a, NOW).unwrap().new);
    let pushed = match rt
        .block_on(ship::export(
            &root_a, &s_a.name, &c, &t, &NoClaim, "node-a", NOW,
        ))
        .unwrap()
    {
        Exported::Pushed(a) => a,
        other => panic!("A did not push: {other:?}"),
    };
    assert_eq!(pushed.reference, t.reference(&s_a.name));
    assert_eq!(pushed.generation, 1);
    assert!(pushed.transferred_bytes > 0 && pushed.transferred_bytes < 50_000);
    eprintln!(
        "pushed {} ({} bytes shipped)",
        pushed.digest, pushed.transferred_bytes
    );
    // The same generation again: nothing to do.
    let again = rt
        .block_on(ship::export(
            &root_a, &s_a.name, &c, &t, &NoClaim, "node-a", NOW,
        ))
        .unwrap();
    assert!(matches!(again, Exported::AlreadyExported(_)), "{again:?}");
    assert_eq!(revisions(&reg), 1);

    // Node C compiled on its own meanwhile: the tag is there, it pushes nothing.
    let (_c, root_c, s_c, _) = node(1);
    put(&root_c, &s_c, "triton/K/other.cubin", b"c's own");
    seal::seal(&root_c, &s_c, NOW).unwrap();
    let c_out = rt
        .block_on(ship::export(
            &root_c, &s_c.name, &c, &t, &NoClaim, "node-c", NOW,
        ))
        .unwrap();
    assert_eq!(
        c_out,
        Exported::Present {
            digest: pushed.digest.clone()
        }
    );

    // Node B: an untrusted digest is not imported; the trusted one is, byte for byte.
    let (_b, root_b, s_b, owner_b) = node(1);
    let untrusted = rt
        .block_on(ship::import(
            &root_b,
            &s_b,
            owner_b,
            &c,
            &t,
            &Trust::Recorded(Default::default()),
            NOW,
        ))
        .unwrap();
    assert_eq!(
        untrusted,
        Imported::NotTrusted {
            digest: pushed.digest.clone()
        }
    );
    assert!(tree(&root_b.scope_dir(&s_b.name)).is_empty());
    let trust = Trust::Recorded([pushed.digest.clone()].into());
    let imported = match rt
        .block_on(ship::import(&root_b, &s_b, owner_b, &c, &t, &trust, NOW))
        .unwrap()
    {
        Imported::Done(a) => a,
        other => panic!("B did not import: {other:?}"),
    };
    assert_eq!(imported.digest, pushed.digest);
    assert_eq!(
        tree(&root_a.scope_dir(&s_a.name)),
        tree(&root_b.scope_dir(&s_b.name)),
        "B holds A's files with their modes and nanosecond mtimes"
    );
    assert!(ship::imported(&root_b, &s_b.name).unwrap().is_some());
    // Through the model's stable link, as a pod mounts it.
    assert!(
        root_b
            .model_link("model-a")
            .join("triton/K/k.cubin")
            .is_file()
    );
    // B's files unchanged: its seal adds no generation, so it has nothing to push.
    assert!(!seal::seal(&root_b, &s_b, NOW + 1).unwrap().new);
    let b_same = rt
        .block_on(ship::export(
            &root_b, &s_b.name, &c, &t, &NoClaim, "node-b", NOW,
        ))
        .unwrap();
    assert!(matches!(b_same, Exported::Present { .. }), "{b_same:?}");
    // B's pods missed (compiled more): B pushes the newer generation over the one it imported.
    put(&root_b, &s_b, "triton/K2/new.cubin", b"compiled on b");
    let gen2 = seal::seal(&root_b, &s_b, NOW + 2).unwrap();
    assert!(gen2.new);
    let b_out = rt
        .block_on(ship::export(
            &root_b, &s_b.name, &c, &t, &NoClaim, "node-b", NOW,
        ))
        .unwrap();
    let newer = match b_out {
        Exported::Pushed(a) => a,
        other => panic!("B did not push its misses: {other:?}"),
    };
    assert_eq!(newer.generation, gen2.generation);
    assert_eq!(revisions(&reg), 2);
    // C, whose scope was never imported, still pushes nothing over it.
    let c_out = rt
        .block_on(ship::export(
            &root_c, &s_c.name, &c, &t, &NoClaim, "node-c", NOW,
        ))
        .unwrap();
    assert!(matches!(c_out, Exported::Present { .. }), "{c_out:?}");
    // A scope that already holds files (its pod compiled first) is never replaced.
    let err = rt
        .block_on(ship::import(
            &root_c,
            &s_c,
            owner_b,
            &c,
            &t,
            &Trust::Digest(newer.digest.clone()),
            NOW,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("already holds 2 entries"), "{err}");
    assert_eq!(
        std::fs::read(root_c.scope_dir(&s_c.name).join("triton/K/other.cubin")).unwrap(),
        b"c's own"
    );
}

/// Pushes an artifact for `s` made of `config` (a manifest) and a tar.gz of `entries` (raw
/// header names); returns its manifest digest.
async fn push_raw(
    c: &RegistryClient,
    t: &Target,
    tag: &str,
    config: &Manifest,
    entries: &[(&str, &[u8])],
) -> String {
    let reference = coldstart_agent::images::ImageRef::parse(&t.name()).unwrap();
    let mut repo = c.repository(&reference, None, Access::Push).unwrap();
    let config = serde_json::to_vec(config).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut b = tar::Builder::new(&mut gz);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }
    gz.flush().unwrap();
    let layer = gz.finish().unwrap();
    let d = |b: &[u8]| format!("sha256:{:x}", sha2::Sha256::digest(b));
    let (cd, ld) = (d(&config), d(&layer));
    repo.push_blob(&cd, config.len() as u64, BlobSource::Bytes(config.clone()))
        .await
        .unwrap();
    repo.push_blob(&ld, layer.len() as u64, BlobSource::Bytes(layer.clone()))
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": coldstart_agent::caches::artifact::ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": cd, "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": ld, "size": layer.len()}],
    });
    repo.put_manifest(tag, serde_json::to_vec(&manifest).unwrap())
        .await
        .unwrap()
}

fn manifest_for(s: &Scope, files: &[(&str, &[u8])]) -> Manifest {
    let mut entries: Vec<FileEntry> = files
        .iter()
        .map(|(p, d)| FileEntry {
            path: p.to_string(),
            size: d.len() as u64,
            sha256: format!("{:x}", sha2::Sha256::digest(d)),
            mode: 0o644,
            mtime_ns: NOW,
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest {
        format: seal::MANIFEST_FORMAT,
        scope: s.name.clone(),
        key: s.key.clone(),
        generation: 1,
        sealed_at_ns: NOW,
        bytes: entries.iter().map(|f| f.size).sum(),
        files: entries,
    }
}

/// The blob file the registry serves for `digest`.
fn stored_blob(reg: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.data_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Imports into a fresh node of image `n`, trusting `digest`; returns the error and checks
/// that nothing was kept: the scope empty, no temporary file in its state, no file outside.
fn refused(reg: &Registry, n: u8, digest: &str) -> String {
    let (dir, root, s, owner) = node(n);
    let err = rt()
        .block_on(ship::import(
            &root,
            &s,
            owner,
            &client(),
            &target(reg),
            &Trust::Digest(digest.to_string()),
            NOW,
        ))
        .unwrap_err();
    assert!(
        tree(&root.scope_dir(&s.name)).is_empty(),
        "scope left empty"
    );
    let state: Vec<String> = std::fs::read_dir(root.scope_state_dir(&s.name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        state.iter().all(|n| n == "key.json" || n == "seal.lock"),
        "leftovers in the state dir: {state:?}"
    );
    assert!(!dir.path().join("escaped").exists());
    assert!(!dir.path().join("compile/escaped").exists());
    assert!(!dir.path().parent().unwrap().join("escaped").exists());
    err.to_string()
}

#[test]
#[ignore = "needs docker-registry (scripts/test-env.sh)"]
fn corrupt_or_hostile_artifacts_are_refused_and_leave_the_scope_empty() {
    let reg = Registry::start_plain().unwrap();
    let rt = rt();
    let (t, c) = (target(&reg), client());

    // A flipped byte in the layer the registry stores: the download does not match its digest.
    let (_a, root_a, s_a, _) = node(1);
    put(&root_a, &s_a, "triton/K/k.cubin", &[9u8; 10_000]);
    seal::seal(&root_a, &s_a, NOW).unwrap();
    let Exported::Pushed(a) = rt
        .block_on(ship::export(
            &root_a, &s_a.name, &c, &t, &NoClaim, "node-a", NOW,
        ))
        .unwrap()
    else {
        panic!("no push")
    };
    let reference = coldstart_agent::images::ImageRef::parse(&t.name()).unwrap();
    let mut repo = c.repository(&reference, None, Access::Pull).unwrap();
    let remote = rt.block_on(repo.manifest(&s_a.name)).unwrap().unwrap();
    let layer = stored_blob(&reg, &remote.layers[0].digest);
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&layer, bytes).unwrap();
    let e = refused(&reg, 1, &a.digest);
    assert!(
        e.contains(&remote.layers[0].digest) && e.contains("does not match its digest"),
        "{e}"
    );

    // A manifest listing a file the layer does not hold.
    let (_x, _root_x, s2, _) = node(2);
    let m = manifest_for(&s2, &[("triton/a", b"A"), ("triton/missing", b"M")]);
    let d = rt.block_on(push_raw(&c, &t, &s2.name, &m, &[("triton/a", b"A")]));
    let e = refused(&reg, 2, &d);
    assert!(
        e.contains("\"triton/missing\", which is not in the layer"),
        "{e}"
    );

    // A tar entry escaping the scope.
    let (_y, _root_y, s3, _) = node(3);
    let m = manifest_for(&s3, &[("triton/a", b"A")]);
    let d = rt.block_on(push_raw(
        &c,
        &t,
        &s3.name,
        &m,
        &[("triton/../../../../escaped", b"A"), ("triton/a", b"A")],
    ));
    let e = refused(&reg, 3, &d);
    assert!(e.contains("not a plain relative path"), "{e}");

    // An artifact whose manifest is for another scope (pushed under this scope's tag).
    let (_z, _root_z, s4, _) = node(4);
    let (_w, _root_w, other, _) = node(5);
    let m = manifest_for(&other, &[("triton/a", b"A")]);
    let d = rt.block_on(push_raw(&c, &t, &s4.name, &m, &[("triton/a", b"A")]));
    let e = refused(&reg, 4, &d);
    assert!(e.contains("this node's scope is"), "{e}");
}

#[test]
#[ignore = "needs docker-registry (scripts/test-env.sh)"]
fn nodes_sealing_the_same_scope_at_once_push_one_artifact() {
    let reg = Registry::start_plain().unwrap();
    let api = common::fake_api();
    let rt = rt();
    let (t, c) = (target(&reg), client());
    let kube = rt.block_on(async {
        let cfg = kube::Config::new(api.url().parse().unwrap());
        kube::Client::try_from(cfg).unwrap()
    });
    let claim = |node: &str| LeaseClaim {
        api: kube::Api::namespaced(kube.clone(), "coldstart-system"),
        holder: node.to_string(),
    };
    let claims = [claim("node-a"), claim("node-b"), claim("node-c")];
    // Several rounds (a scope each), so that the exports really overlap in some.
    for n in 10..15u8 {
        let nodes: Vec<_> = (0..3u8)
            .map(|i| {
                let (dir, root, s, _) = node(n);
                put(&root, &s, "triton/K/k.cubin", &vec![i; 200_000]);
                seal::seal(&root, &s, NOW).unwrap();
                (dir, root, s)
            })
            .collect();
        let before = revisions(&reg);
        let outs = rt.block_on(async {
            let run = |i: usize| {
                let (root, s, claim) = (&nodes[i].1, &nodes[i].2, &claims[i]);
                let (t, c) = (&t, &c);
                async move {
                    ship::export(root, &s.name, c, t, claim, &claim.holder, NOW)
                        .await
                        .unwrap()
                }
            };
            tokio::join!(run(0), run(1), run(2))
        });
        let outs = [outs.0, outs.1, outs.2];
        let pushed = outs
            .iter()
            .filter(|o| matches!(o, Exported::Pushed(_)))
            .count();
        assert_eq!(pushed, 1, "round {n}: {outs:?}");
        assert!(
            outs.iter().all(|o| matches!(
                o,
                Exported::Pushed(_) | Exported::Present { .. } | Exported::ClaimedElsewhere
            )),
            "{outs:?}"
        );
        assert_eq!(
            revisions(&reg),
            before + 1,
            "round {n}: one manifest pushed"
        );
    }
    drop(api);
}

#[test]
#[ignore = "needs docker-registry (scripts/test-env.sh)"]
fn coldctl_cache_export_and_import_here() {
    let reg = Registry::start_plain().unwrap();
    let repo = format!("{}/coldstart/compile-caches", reg.host());
    let (a, root_a, s_a, _) = node(1);
    let root_arg = |d: &tempfile::TempDir| d.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| common::coldctl(args, Duration::from_secs(120));

    // Nothing sealed yet: said, exit 0, nothing pushed.
    let ra = root_arg(&a);
    let base = ["cache", "export", "model-a", "--here", "--registry", &repo];
    let r = run(&[&base[..], &["--cache-root", &ra, "-o", "json"]].concat());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["result"], "nothing_sealed", "{r:?}");
    put(&root_a, &s_a, "triton/K/k.cubin", b"kernel");
    seal::seal(&root_a, &s_a, NOW).unwrap();
    let r = run(&[&base[..], &["--cache-root", &ra, "-o", "json"]].concat());
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["result"], "pushed", "{doc}");
    assert_eq!(doc["scope"], s_a.name.as_str());
    let digest = doc["digest"].as_str().unwrap().to_string();

    // Import on another node: the digest must be named, and must be the tag's.
    let (b, root_b, s_b, _) = node(1);
    let rb = root_arg(&b);
    let imp = ["cache", "import", "model-a", "--here", "--registry", &repo];
    let r = run(&[&imp[..], &["--cache-root", &rb]].concat());
    assert_eq!(r.code, 64, "--digest is required: {r:?}");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let r = run(&[&imp[..], &["--cache-root", &rb, "--digest", &wrong]].concat());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.error_line().contains("nothing imported"), "{r:?}");
    assert!(tree(&root_b.scope_dir(&s_b.name)).is_empty());
    let r = run(&[
        &imp[..],
        &["--cache-root", &rb, "--digest", &digest, "-o", "json"],
    ]
    .concat());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["result"], "imported", "{r:?}");
    assert_eq!(
        std::fs::read(root_b.scope_dir(&s_b.name).join("triton/K/k.cubin")).unwrap(),
        b"kernel"
    );
    // Without --registry in --here mode: a usage error.
    let r = run(&["cache", "export", "model-a", "--here", "--cache-root", &ra]);
    assert_eq!(r.code, 64, "{r:?}");
}
