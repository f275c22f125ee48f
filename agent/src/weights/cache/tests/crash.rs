//! A publish stopped after each of its steps (the hook panics, so nothing cleans up, as after
//! SIGKILL): no temporary is ever where readers or `scan_cache_dir` look, and the next
//! cleanup removes every one.

use std::sync::Arc;

use super::*;

/// Names under `dir` (recursively) that start with our temporary prefix.
fn temps_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            out.push(e.path().display().to_string());
        } else if e.file_type().unwrap().is_dir() {
            out.extend(temps_under(&e.path()));
        }
    }
    out
}

fn stopping_at(f: &Fixture, step: PublishStep) -> HubCache {
    f.cache
        .clone()
        .with_publish_hook(PublishHook(Arc::new(move |s| {
            if s == step {
                panic!("stopped at {}", s.name());
            }
        })))
}

#[test]
fn a_publish_stopped_at_any_step_leaves_no_temporary_where_readers_look() {
    for replace in [false, true] {
        for step in PublishStep::ALL {
            let f = fixture();
            let all = files();
            let tree: Vec<TreeEntry> = all.iter().map(|(e, _)| e.clone()).collect();
            for (e, c) in &all {
                store(&f, e, c);
            }
            if replace {
                f.cache
                    .publish(&f.repo, "main", C1, &tree, &tree[..1])
                    .unwrap();
            }
            let cache = stopping_at(&f, step);
            let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cache.publish(&f.repo, "refs/pr/1", C1, &tree, &tree[..3])
            }));
            assert!(stopped.is_err(), "{step:?} was never reached");
            let repo_dir = f.cache.repo_dir(&f.repo);
            for sub in ["snapshots", "refs", "trees", "blobs"] {
                let found = temps_under(&repo_dir.join(sub));
                assert!(found.is_empty(), "{step:?} replace={replace}: {found:?}");
            }
            for snap in std::fs::read_dir(repo_dir.join("snapshots")).unwrap() {
                let name = snap.unwrap().file_name().to_string_lossy().into_owned();
                assert_eq!(name, C1, "{step:?}");
            }
            f.cache.clean_temporaries(&f.repo).unwrap();
            assert!(temps_under(&repo_dir).is_empty(), "{step:?}");
            f.cache
                .publish(&f.repo, "refs/pr/1", C1, &tree, &tree[..3])
                .unwrap();
            assert_eq!(
                std::fs::read_to_string(repo_dir.join("refs/refs/pr/1")).unwrap(),
                C1
            );
        }
    }
}

#[test]
fn leftovers_of_older_versions_are_cleaned_too() {
    let f = fixture();
    publish_some(&f, "refs/pr/1", C1, 2);
    let repo_dir = f.cache.repo_dir(&f.repo);
    let planted = [
        repo_dir.join("snapshots/.coldstart-snapshot-1-1/x"),
        repo_dir.join("refs/.coldstart-write-1-2"),
        repo_dir.join("refs/refs/pr/.coldstart-write-1-3"),
        repo_dir.join("trees/.coldstart-write-1-4"),
        repo_dir.join(".coldstart-old-1-5/y"),
    ];
    for p in &planted {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }
    f.cache.clean_temporaries(&f.repo).unwrap();
    assert!(temps_under(&repo_dir).is_empty());
    // What is ours stays.
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/refs/pr/1")).unwrap(),
        C1
    );
    assert!(
        repo_dir
            .join("snapshots")
            .join(C1)
            .join("config.json")
            .exists()
    );
    // A repo never synced: nothing to do.
    let other = RepoId::parse("org/other").unwrap();
    f.cache.clean_temporaries(&other).unwrap();
}
