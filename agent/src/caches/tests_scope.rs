use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::layout::{SCOPE_SUBDIRS, pod_env};
use super::scope::{self, ScopeKey, current_scope, list_scopes, point_model};
use super::tests_support::{digest, me, root, scope};

#[test]
fn keys_are_validated_and_name_stable_safe_directories() {
    let key = ScopeKey::new(
        "meta-llama--llama-3.1-8b",
        &digest(1),
        "NVIDIA H100 80GB HBM3",
    )
    .unwrap();
    let name = key.dir_name();
    assert_eq!(name, key.clone().dir_name());
    assert!(name.starts_with("meta-llama--llama-3.1-8b_nvidia-h100-80gb-hbm3_010101010101_"));
    assert!(name.len() < 120);
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    );
    // Every part changes the name, the cut-off ones too (through the hash).
    let long = "a".repeat(60);
    let a = ScopeKey::new(&format!("{long}x"), &digest(1), "G").unwrap();
    let b = ScopeKey::new(&format!("{long}y"), &digest(1), "G").unwrap();
    assert_ne!(a.dir_name(), b.dir_name());
    let c = ScopeKey::new("m", &digest(1), "NVIDIA A100-SXM4-80GB").unwrap();
    let d = ScopeKey::new("m", &digest(1), "NVIDIA A100 SXM4 80GB").unwrap();
    assert_ne!(c.dir_name(), d.dir_name(), "slugs collide, hashes do not");

    for (model, dig, gpu) in [
        ("", digest(1), "G".to_string()),
        ("Upper", digest(1), "G".to_string()),
        ("a/b", digest(1), "G".to_string()),
        ("..", digest(1), "G".to_string()),
        ("m", "sha256:abc".to_string(), "G".to_string()),
        ("m", digest(1).to_uppercase(), "G".to_string()),
        ("m", digest(1), "".to_string()),
        ("m", digest(1), "a\nb".to_string()),
    ] {
        let err = ScopeKey::new(model, &dig, &gpu).unwrap_err();
        assert_eq!(
            err.metric_label(),
            "invalid_key",
            "{model:?} {dig:?} {gpu:?}"
        );
    }
}

#[test]
fn a_scope_is_created_owned_with_every_env_directory_and_listed() {
    let (dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    let owner = me(dir.path());
    for sub in SCOPE_SUBDIRS
        .iter()
        .map(|s| tree.join(s))
        .chain([tree.clone()])
    {
        let m = std::fs::symlink_metadata(&sub).unwrap();
        assert!(m.is_dir(), "{}", sub.display());
        assert_eq!(m.permissions().mode() & 0o7777, 0o775, "{}", sub.display());
        assert_eq!((m.uid(), m.gid()), (owner.uid, owner.gid));
    }
    // Idempotent, and the state remembers the key.
    let again = scope(&root, "model-a", 1);
    assert_eq!(again, s);
    assert_eq!(list_scopes(&root).unwrap(), vec![s]);
}

#[test]
fn a_symlink_in_place_of_the_scope_is_refused() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    std::fs::remove_dir_all(&tree).unwrap();
    std::os::unix::fs::symlink("/etc", &tree).unwrap();
    let owner = me(root.compile_dir());
    let err = scope::ensure_scope(&root, &s.key, owner).unwrap_err();
    assert_eq!(err.metric_label(), "unsafe_entry", "{err}");
}

#[test]
fn the_model_link_is_swapped_atomically_to_the_current_scope() {
    let (_dir, root) = root();
    let old = scope(&root, "model-a", 1);
    let new = scope(&root, "model-a", 2);
    assert_eq!(current_scope(&root, "model-a").unwrap(), None);
    point_model(&root, &old).unwrap();
    assert_eq!(
        current_scope(&root, "model-a").unwrap(),
        Some(old.name.clone())
    );
    point_model(&root, &new).unwrap();
    assert_eq!(
        current_scope(&root, "model-a").unwrap(),
        Some(new.name.clone())
    );
    // The link resolves to the scope's tree, relative, so a pod's hostPath follows it.
    let link = root.model_link("model-a");
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(root.scope_dir(&new.name)).unwrap()
    );
    // Only the link and nothing temporary is left in models/.
    let names: Vec<_> = std::fs::read_dir(root.models_dir()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn the_env_points_every_cache_into_the_mount_as_the_pod_sees_it() {
    let env = pod_env(Path::new("/coldstart/compile-cache"));
    let got: Vec<(&str, &str)> = env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("VLLM_CACHE_ROOT", "/coldstart/compile-cache/vllm"),
            ("TRITON_CACHE_DIR", "/coldstart/compile-cache/triton"),
            (
                "TORCHINDUCTOR_CACHE_DIR",
                "/coldstart/compile-cache/inductor"
            ),
            (
                "FLASHINFER_WORKSPACE_BASE",
                "/coldstart/compile-cache/flashinfer"
            ),
            ("CUDA_CACHE_PATH", "/coldstart/compile-cache/cuda"),
            ("TMPDIR", "/coldstart/compile-cache/tmp"),
        ]
    );
    assert!(env.iter().all(|e| e.name != "CUDA_GRAPHS_CACHE_DIR"));
}

#[test]
fn last_use_is_recorded_per_scope() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    assert_eq!(scope::last_used(&root, &s.name).unwrap(), None);
    scope::record_used(&root, &s.name, 42).unwrap();
    scope::record_used(&root, &s.name, 43).unwrap();
    assert_eq!(scope::last_used(&root, &s.name).unwrap(), Some(43));
}
