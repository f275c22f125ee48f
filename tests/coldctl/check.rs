//! `coldctl check deployment/NAME` against the fake API server with deploy/ applied and its
//! RBAC enforced, as the operator (`coldstart-operator` reads Deployments): the real example
//! (deploy/examples/vllm/base) is clean, a broken copy in another namespace yields its
//! finding, the commit the nodes report decides a ColdModel on a branch, and `-f` reads the
//! files with no cluster at all.

use std::path::Path;

use serde_json::{Value, json};

use super::Cluster;
use crate::common::{self, security};

const EXAMPLE: &str = "deploy/examples/vllm/base/deployment.yaml";
const COLDMODEL: &str = "deploy/examples/coldmodel-qwen.yaml";
const MODEL: &str = "qwen--qwen2-5-0-5b-instruct";
const COMMIT: &str = "7ae557604adf67be50417f59c2c2f167def9a775";

fn read(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The fake cluster with deploy/ applied and enforced, coldctl running as the operator.
fn secured() -> Cluster {
    let api = common::fake_api();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.kubeconfig_with_token(&kubeconfig, security::OPERATOR)
        .unwrap();
    security::secure(&api, &security::render("deploy"), &[]);
    Cluster {
        api,
        _dir: dir,
        kubeconfig,
    }
}

fn deployment(ns: &str, name: &str, edit: impl Fn(&mut Value)) -> Value {
    let mut d = read(EXAMPLE);
    d["metadata"]["namespace"] = json!(ns);
    d["metadata"]["name"] = json!(name);
    edit(&mut d);
    d
}

fn revision(d: &mut Value, rev: &str) {
    for a in d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array_mut()
        .unwrap()
    {
        if a.as_str().unwrap().starts_with("--revision") {
            *a = json!(format!("--revision={rev}"));
        }
    }
}

fn ids(doc: &Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn check_reads_the_deployment_and_coldmodel_from_the_cluster() {
    let c = secured();
    c.api.create(read(COLDMODEL)).unwrap();
    c.api
        .create(deployment("default", "qwen-0-5b", |_| {}))
        .unwrap();
    let run = c.ctl(&["check", "deployment/qwen-0-5b", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["model"], MODEL);
    assert_eq!(doc["container"], "vllm");
    assert_eq!(doc["namespace"], "default");

    // Another namespace, another commit: exactly that finding, one line, exit 1.
    c.api
        .create(deployment("team", "qwen-old", |d| {
            revision(d, "0123456789012345678901234567890123456789");
        }))
        .unwrap();
    let run = c.ctl(&["check", "deploy/qwen-old", "-n", "team"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(lines[0].starts_with("revision-mismatch: "), "{run:?}");
    assert!(lines[0].contains(COMMIT), "{run:?}");
    let run = c.ctl(&["check", "deploy/qwen-old", "-n", "team", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(ids(&run.json()), ["revision-mismatch"]);

    // Missing objects are named.
    let run = c.ctl(&["check", "deployment/nope"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("no Deployment nope in namespace default"),
        "{run:?}"
    );
}

#[test]
fn a_coldmodel_on_a_branch_is_checked_against_the_commit_the_nodes_warmed() {
    let c = secured();
    let mut model = read(COLDMODEL);
    model["spec"]["revision"] = json!("main");
    c.api.create(model).unwrap();
    c.api
        .create(
            json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
            "metadata": {"name": "gpu-1"}, "spec": {},
            "status": {"phase": "Ready", "models": [{"name": MODEL, "phase": "Ready",
                "weights": {"phase": "Ready", "resolved": COMMIT, "bytesDone": 1}}]}}),
        )
        .unwrap();
    c.api
        .create(deployment("default", "pinned", |_| {}))
        .unwrap();
    let run = c.ctl(&["check", "deployment/pinned", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    c.api
        .create(deployment("default", "elsewhere", |d| {
            revision(d, "89abcdef89abcdef89abcdef89abcdef89abcdef");
        }))
        .unwrap();
    let run = c.ctl(&["check", "deployment/elsewhere", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc = run.json();
    assert_eq!(ids(&doc), ["revision-mismatch"]);
    assert!(
        doc["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains(COMMIT),
        "{doc}"
    );
}

#[test]
fn check_of_files_needs_no_cluster() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = format!("{root}/{EXAMPLE}");
    let coldmodel = format!("{root}/{COLDMODEL}");
    // No kubeconfig anywhere: the files say it all.
    let run = common::coldctl(
        &[
            "check",
            "-f",
            &example,
            "-f",
            &coldmodel,
            "--kubeconfig",
            "/nonexistent",
        ],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("deployment/qwen-0-5b: nothing starts it cold"),
        "{run:?}"
    );
    // The instance-store variant is clean for nodes whose cache root is on the RAID0, and
    // names the hostPaths for nodes whose cache root is the default.
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("instance-store.yaml");
    std::fs::write(
        &rendered,
        security::render("deploy/examples/vllm/instance-store"),
    )
    .unwrap();
    let rendered = rendered.to_str().unwrap();
    let raid = ["check", "-f", rendered, "-f", &coldmodel, "--here"];
    let run = common::coldctl(
        &[&raid[..], &["--cache-root", "/mnt/k8s-disks/0/coldstart"]].concat(),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let run = common::coldctl(
        &[&raid[..], &["-o", "json"]].concat(),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        ids(&run.json()),
        ["hub-cache-missing", "compile-cache-differs"]
    );
    // --here with the ColdModel missing from the files: a usage error naming it.
    let run = common::coldctl(
        &["check", "-f", &example, "--here"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.code, 64, "{run:?}");
    assert!(run.stderr.contains(MODEL), "{run:?}");
}
