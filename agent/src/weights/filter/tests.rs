use super::*;

fn entry(path: &str) -> TreeEntry {
    TreeEntry {
        path: path.to_string(),
        size: 1,
        oid: "0".repeat(40),
        lfs: None,
    }
}

fn paths(v: &[TreeEntry]) -> Vec<&str> {
    let mut p: Vec<&str> = v.iter().map(|e| e.path.as_str()).collect();
    p.sort();
    p
}

fn tree(names: &[&str]) -> Vec<TreeEntry> {
    names.iter().map(|n| entry(n)).collect()
}

#[test]
fn sharded_safetensors_take_the_indexed_shards_and_skip_other_formats() {
    let t = tree(&[
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model-00003-of-00003.safetensors", // stale shard not in the index
        "consolidated.safetensors",
        "pytorch_model.bin",
        "flax_model.msgpack",
        "original/params.json",
        "original/consolidated.00.pth",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "chat_template.jinja",
        "modeling_custom.py",
        "README.md",
        ".gitattributes",
    ]);
    let f = Filter::new(&[], &[]).unwrap();
    assert_eq!(
        paths(&f.index_files(&t).into_iter().cloned().collect::<Vec<_>>()),
        vec!["model.safetensors.index.json"]
    );
    let idx = br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;
    let shards = shards_of_index("model.safetensors.index.json", idx).unwrap();
    let sel = f.select(&t, &shards);
    assert_eq!(
        paths(&sel),
        vec![
            "chat_template.jinja",
            "config.json",
            "generation_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "modeling_custom.py",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json",
        ]
    );
}

#[test]
fn single_file_and_consolidated_rules() {
    let f = Filter::new(&[], &[]).unwrap();
    let t = tree(&[
        "config.json",
        "model.safetensors",
        "consolidated.safetensors",
    ]);
    assert_eq!(
        paths(&f.select(&t, &BTreeSet::new())),
        vec!["config.json", "model.safetensors"]
    );
    let only_consolidated = tree(&["params.json", "consolidated.safetensors"]);
    assert_eq!(
        paths(&f.select(&only_consolidated, &BTreeSet::new())),
        vec!["consolidated.safetensors", "params.json"]
    );
    let pytorch_only = tree(&["config.json", "pytorch_model.bin", "model.onnx"]);
    assert_eq!(
        paths(&f.select(&pytorch_only, &BTreeSet::new())),
        vec!["config.json", "pytorch_model.bin"]
    );
}

#[test]
fn include_replaces_and_exclude_narrows() {
    let t = tree(&[
        "config.json",
        "a/b/model.safetensors",
        "x.bin",
        "sub/dir/tok.json",
    ]);
    let f = Filter::new(&["*.bin".into(), "sub/".into()], &[]).unwrap();
    assert_eq!(
        paths(&f.select(&t, &BTreeSet::new())),
        vec!["sub/dir/tok.json", "x.bin"]
    );
    assert_eq!(
        f.allow_patterns(&[]),
        vec!["*.bin".to_string(), "sub/".to_string()]
    );
    // `*` crosses directories, as fnmatch does in huggingface_hub.
    let f = Filter::new(&["*.safetensors".into()], &[]).unwrap();
    assert_eq!(
        paths(&f.select(&t, &BTreeSet::new())),
        vec!["a/b/model.safetensors"]
    );
    let f = Filter::new(&[], &["*.json".into()]).unwrap();
    assert_eq!(
        paths(&f.select(&t, &BTreeSet::new())),
        vec!["a/b/model.safetensors"]
    );
    assert!(Filter::new(&["a[".into()], &[]).is_err());
}

#[test]
fn index_shard_names_are_checked_and_joined() {
    let s = shards_of_index(
        "sub/model.safetensors.index.json",
        br#"{"weight_map":{"w":"m.safetensors"}}"#,
    )
    .unwrap();
    assert!(s.contains("sub/m.safetensors"));
    let bad = shards_of_index("i.json", br#"{"weight_map":{"w":"../../etc/passwd"}}"#).unwrap_err();
    assert_eq!(bad.metric_label(), "hostile_name");
    assert!(shards_of_index("i.json", b"[]").is_err());
}
