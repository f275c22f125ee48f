//! `coldctl cache`: the shapes of `env`, `list` and `gc` output, and the usage errors of each
//! backend, without a cluster or a node.

use std::path::Path;

use clap::Parser as _;
use coldstart_agent::api::{
    ColdNode, ColdNodeSpec, ColdNodeStatus, CompileCachePolicy, CompileCacheStatus,
};
use coldstart_agent::caches::{CacheRoot, pod_env};
use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use serde_json::json;

use super::{env, gc, list};
use crate::report::{CliError, EXIT_USAGE};
use crate::{Cli, join_node_value};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(join_node_value(args.iter().map(Into::into).collect()))
}

async fn run(args: &[&str]) -> Result<crate::report::Output, CliError> {
    let cli = parse(args).unwrap_or_else(|e| panic!("{e}"));
    crate::run(&cli).await
}

fn usage_message(r: Result<crate::report::Output, CliError>) -> String {
    match r {
        Err(CliError::Usage(msg)) => msg,
        other => panic!("not a usage error: {other:?}"),
    }
}

#[test]
fn env_points_the_pod_at_the_model_link_with_exactly_the_agents_env() {
    let root = CacheRoot::new(Path::new("/nvme/coldstart"));
    let policy = CompileCachePolicy {
        mount_path: Some("/cache/x".into()),
        uid: Some(1000),
        ..CompileCachePolicy::default()
    };
    let pod = env::pod_cache(&root, "org--model-x", &policy).unwrap();
    assert_eq!(pod.env, pod_env(Path::new("/cache/x")));
    let doc = serde_json::to_value(&pod).unwrap();
    assert_eq!(
        doc["volume"],
        json!({"name": "coldstart-compile-cache", "hostPath": {
            "path": "/nvme/coldstart/compile/models/org--model-x", "type": "Directory"}})
    );
    assert_eq!(
        doc["volumeMount"],
        json!({"name": "coldstart-compile-cache", "mountPath": "/cache/x"})
    );
    assert_eq!(doc["model"], "org--model-x");
    // Kubernetes reads the parts as they are: its own types take them field for field.
    let v: Volume = serde_json::from_value(doc["volume"].clone()).unwrap();
    assert_eq!(
        v.host_path.unwrap().type_.as_deref(),
        Some("Directory"),
        "{doc}"
    );
    let m: VolumeMount = serde_json::from_value(doc["volumeMount"].clone()).unwrap();
    assert_eq!(m.mount_path, "/cache/x");
    let e: Vec<EnvVar> = serde_json::from_value(doc["env"].clone()).unwrap();
    assert_eq!(e[0].value.as_deref(), Some("/cache/x/vllm"));

    // The text is YAML under comments: parsed, it has the same three parts.
    let text = env::render(&pod);
    assert!(text.contains("uid 1000, gid 0"), "{text}");
    let parsed: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(parsed["volumes"][0], doc["volume"]);
    assert_eq!(parsed["volumeMounts"][0], doc["volumeMount"]);
    assert_eq!(parsed["env"], doc["env"]);
}

#[test]
fn env_defaults_the_mount_path_and_refuses_a_relative_one() {
    let root = CacheRoot::new(Path::new("/var/lib/coldstart"));
    let pod = env::pod_cache(&root, "m", &CompileCachePolicy::default()).unwrap();
    assert_eq!(pod.volume_mount.mount_path, "/coldstart/compile-cache");
    assert!(!env::render(&pod).contains("uid"), "no owner named");
    let relative = CompileCachePolicy {
        mount_path: Some("cache".into()),
        ..CompileCachePolicy::default()
    };
    let err = env::pod_cache(&root, "m", &relative).unwrap_err();
    assert!(err.to_string().contains("not absolute"), "{err:#}");
}

#[tokio::test]
async fn each_verb_says_which_backend_it_needs() {
    let msg = usage_message(run(&["coldctl", "cache", "gc", "--budget", "1G"]).await);
    assert!(
        msg.contains("--compile-cache-budget") && msg.contains("--here"),
        "{msg}"
    );
    let msg = usage_message(run(&["coldctl", "--node", "cache", "gc", "--budget", "1G"]).await);
    assert!(msg.contains("--here"), "{msg}");
    let msg = usage_message(run(&["coldctl", "cache", "env", "Not_A_Name", "--here"]).await);
    assert!(msg.contains("Not_A_Name"), "{msg}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["coldctl", "cache", "gc", "--here"][..],
        &["coldctl", "cache", "gc", "--here", "--budget", "10x"],
        &["coldctl", "cache", "env"],
        &["coldctl", "cache"],
    ] {
        let err = parse(args).expect_err("refused");
        assert!(err.use_stderr(), "{args:?}");
    }
    let cli = parse(&["coldctl", "cache", "gc", "--here", "--budget", "1.5GiB"]).unwrap();
    assert!(matches!(cli.command, crate::Command::Cache(_)));
    assert_eq!(EXIT_USAGE, CliError::usage("x").exit_code());
}

fn coldnode(name: &str, caches: Vec<CompileCacheStatus>) -> ColdNode {
    let mut n = ColdNode::new(name, ColdNodeSpec {});
    n.status = Some(ColdNodeStatus {
        compile_caches: caches,
        ..ColdNodeStatus::default()
    });
    n
}

fn status(model: &str, scope: &str) -> CompileCacheStatus {
    CompileCacheStatus {
        scope: scope.into(),
        model: model.into(),
        image_digest: "sha256:ab".into(),
        gpu_product: "NVIDIA H100".into(),
        bytes: 3 << 20,
        files: 7,
        ..CompileCacheStatus::default()
    }
}

#[test]
fn list_has_a_row_per_node_and_scope_filtered_by_model() {
    let mut inert = status("b", "b_nvidia_0000_222222222222");
    inert.inert = Some("2 keys".into());
    inert.generation = Some(3);
    let nodes = [
        coldnode("n2", vec![status("a", "a_nvidia_0000_111111111111")]),
        coldnode("n1", vec![inert, status("a", "a_nvidia_0000_111111111111")]),
        ColdNode::new("silent", ColdNodeSpec {}),
    ];
    let rows = list::from_coldnodes(&nodes, None);
    let keys: Vec<_> = rows
        .iter()
        .map(|r| (r.node.as_deref().unwrap(), r.model.as_str()))
        .collect();
    assert_eq!(keys, [("n1", "a"), ("n1", "b"), ("n2", "a")]);
    assert_eq!(list::from_coldnodes(&nodes, Some("b")).len(), 1);
    let doc = serde_json::to_value(&rows[1]).unwrap();
    assert_eq!(doc["node"], "n1");
    assert_eq!(doc["imageDigest"], "sha256:ab");
    assert_eq!(doc["generation"], 3);
    assert!(doc.get("inUseBy").is_none(), "{doc}");
    let text = list::render(&rows, 0, "none");
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("NODE") && header.contains("LAST USED"),
        "{text}"
    );
    assert!(
        text.contains("222222222222") && text.contains("3.0 MiB"),
        "{text}"
    );
    assert!(
        text.contains("warning: b scope 222222222222 on n1 is inert"),
        "{text}"
    );
    let mut here = rows[0].clone();
    here.node = None;
    let text = list::render(&[here], 0, "none");
    assert!(text.starts_with("MODEL"), "{text}");
    assert_eq!(list::render(&[], 0, "none"), "none\n");
}

#[test]
fn gc_text_says_what_went_and_why_the_rest_stayed() {
    let entry = |scope: &str, reason: Option<&'static str>| gc::Entry {
        model: "m".into(),
        scope: scope.into(),
        bytes: 1024,
        last_used: None,
        reason,
        in_use_by: None,
        leases: if reason == Some("leased") {
            vec!["ckpt-1".into()]
        } else {
            Vec::new()
        },
    };
    let report = gc::Report {
        dry_run: true,
        budget: 2048,
        used_bytes: 4096,
        freed_bytes: 0,
        remaining_bytes: 3072,
        over_budget: true,
        evicted: vec![entry("m_x_0_aaaaaaaaaaaa", None)],
        kept: vec![
            entry("m_x_0_bbbbbbbbbbbb", Some("in_use")),
            entry("m_x_0_cccccccccccc", Some("leased")),
        ],
    };
    let text = gc::render(&report, 0);
    assert!(
        text.contains("would evict") && text.contains("aaaaaaaaaaaa"),
        "{text}"
    );
    assert!(
        text.contains("in use") && text.contains("leased (ckpt-1)"),
        "{text}"
    );
    assert!(text.contains("would free 1.0 KiB"), "{text}");
    assert!(text.contains("still over budget"), "{text}");
    let doc = serde_json::to_value(&report).unwrap();
    assert_eq!(doc["kept"][1]["leases"], json!(["ckpt-1"]));
    assert_eq!(doc["kept"][0]["reason"], "in_use");
    assert!(doc["evicted"][0].get("reason").is_none(), "{doc}");
}
