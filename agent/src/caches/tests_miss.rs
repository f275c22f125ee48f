//! Miss detection: pods compiling into new hash directories in one scope are reported with the
//! directories, oldest first, and the factors of `cache_key_factors.json` that differ.

use std::time::{Duration, SystemTime};

use super::miss::{HashTree, detect};
use super::tests_support::{put, root, scope};
use super::walk::walk;

const CC: &str = "vllm/torch_compile_cache";

fn age(path: &std::path::Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn one_key_per_tree_is_not_inert() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    put(
        &tree.join(format!(
            "{CC}/aaaaaaaaaa/rank_0_0/backbone/cache_key_factors.json"
        )),
        "{}",
    );
    put(
        &tree.join(format!(
            "{CC}/torch_aot_compile/{}/rank_0_0/model",
            "a".repeat(64)
        )),
        "m",
    );
    let r = detect(&tree, &walk(&tree).unwrap());
    assert_eq!(r.dirs.len(), 2);
    assert!(!r.inert && r.factors.is_empty());
}

#[test]
fn new_keys_are_reported_with_the_differing_factors() {
    let (_dir, root) = root();
    let s = scope(&root, "model-a", 1);
    let tree = root.scope_dir(&s.name);
    let factors = |tokens: u32, extra: &str| {
        format!(
            r#"{{"env": {{"VLLM_A": "1"{extra}}}, "config": {{"max_num_batched_tokens": {tokens}, "model": "org/m"}}}}"#
        )
    };
    let first = tree.join(format!(
        "{CC}/0000000001/rank_0_0/backbone/cache_key_factors.json"
    ));
    put(&first, factors(8192, ""));
    age(&first, 3600);
    let second = tree.join(format!(
        "{CC}/0000000002/rank_0_0/backbone/cache_key_factors.json"
    ));
    put(&second, factors(4096, r#", "VLLM_WORKER_ID": "7""#));
    // A rank's copy of the same key is not another key.
    put(
        &tree.join(format!(
            "{CC}/0000000002/rank_1_0/backbone/cache_key_factors.json"
        )),
        "{",
    );
    let r = detect(&tree, &walk(&tree).unwrap());
    assert!(r.inert);
    let hashes: Vec<_> = r.dirs.iter().map(|d| (d.tree, d.hash.as_str())).collect();
    assert_eq!(
        hashes,
        [
            (HashTree::Piecewise, "0000000001"),
            (HashTree::Piecewise, "0000000002")
        ],
        "oldest first"
    );
    let diffs: Vec<_> = r.factors.iter().map(|f| f.factor.as_str()).collect();
    assert_eq!(
        diffs,
        ["/config/max_num_batched_tokens", "/env/VLLM_WORKER_ID"]
    );
    let worker = &r.factors[1].values;
    assert_eq!(worker["0000000001"], "<absent>");
    assert_eq!(worker["0000000002"], "\"7\"");
}
