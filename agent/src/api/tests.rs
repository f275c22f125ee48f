use kube::{CustomResourceExt, Resource};
use serde_json::json;

use super::*;
use crate::weights::RepoId;

fn name(id: &str) -> String {
    model_name(&RepoId::parse(id).expect("valid repo id"))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[test]
fn names_follow_the_rule() {
    let cases = [
        (
            "meta-llama/Llama-3.1-8B-Instruct",
            "meta-llama--llama-3-1-8b-instruct",
        ),
        ("Qwen/Qwen2.5-0.5B", "qwen--qwen2-5-0-5b"),
        ("gpt2", "gpt2"),
        ("org_x/model_y", "org-x--model-y"),
    ];
    for (id, want) in cases {
        assert_eq!(name(id), want, "{id}");
        assert!(is_dns_label(&name(id)), "{id}");
    }
}

#[test]
fn long_names_are_cut_and_hashed() {
    let id = "some-organisation/an-extremely-long-model-name-that-goes-on-and-on";
    let got = name(id);
    // sha256 of the id as given, first 6 hex digits (checked with `printf %s ID | sha256sum`).
    let mut want = "some-organisation--an-extremely-long-model-".to_string();
    assert_eq!(want.len(), 43);
    want.push_str("-0b2dd4");
    assert_eq!(got, want);
    assert_eq!(got.len(), 50);
    assert!(is_dns_label(&got));
    // 50 characters exactly stay as they are.
    let fifty = format!("org/{}", "a".repeat(45));
    assert_eq!(name(&fifty).len(), 50);
    assert!(!name(&fifty).contains("--a-"));
    // Different ids sharing a prefix get different names.
    let other = "some-organisation/an-extremely-long-model-name-that-goes-on-and-off";
    assert_ne!(name(other), got);
}

#[test]
fn trailing_underscore_still_gives_a_dns_label() {
    let got = name("org/model_");
    assert!(is_dns_label(&got), "{got}");
    assert!(got.starts_with("org--model--"), "{got}");
}

#[test]
fn label_key_fits_a_label_key() {
    let n = name("some-organisation/an-extremely-long-model-name-that-goes-on-and-on");
    let key = model_label_key(&n);
    let (prefix, local) = key.split_once('/').expect("prefixed key");
    assert_eq!(prefix, "coldstart.dev");
    assert!(local.len() <= 63, "{key}");
}

#[test]
fn resource_identity_matches_the_contract() {
    assert_eq!(ColdModel::group(&()), GROUP);
    assert_eq!(ColdModel::version(&()), VERSION);
    assert_eq!(ColdModel::kind(&()), "ColdModel");
    assert_eq!(ColdModel::plural(&()), "coldmodels");
    assert_eq!(ColdNode::kind(&()), "ColdNode");
    assert_eq!(ColdNode::plural(&()), "coldnodes");
    for crd in [ColdModel::crd(), ColdNode::crd()] {
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, "coldstart.dev");
    }
}

#[test]
fn cold_model_round_trips() {
    let doc = json!({
        "apiVersion": "coldstart.dev/v1alpha1",
        "kind": "ColdModel",
        "metadata": {"name": "qwen--qwen2-5-0-5b"},
        "spec": {
            "repo": "Qwen/Qwen2.5-0.5B",
            "revision": "main",
            "include": ["*.safetensors", "*.json"],
            "exclude": ["original/*"],
            "tokenSecretRef": {"name": "hf-token", "key": "token"},
            "image": "vllm/vllm-openai:v0.11.0",
            "imagePullSecretRef": {"name": "regcred"},
            "nodeSelector": {"matchLabels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "compileCache": {"enabled": true},
            "snapshot": {"enabled": false}
        }
    });
    let model: ColdModel = serde_json::from_value(doc.clone()).expect("parses");
    assert_eq!(model.spec.repo, "Qwen/Qwen2.5-0.5B");
    assert_eq!(model.spec.include.len(), 2);
    assert_eq!(serde_json::to_value(&model).expect("serialises"), doc);
}

#[test]
fn minimal_cold_model_keeps_defaults_out() {
    let doc = json!({
        "apiVersion": "coldstart.dev/v1alpha1",
        "kind": "ColdModel",
        "metadata": {"name": "gpt2"},
        "spec": {"repo": "gpt2"}
    });
    let model: ColdModel = serde_json::from_value(doc.clone()).expect("parses");
    assert_eq!(model.spec.revision, None);
    assert!(model.spec.node_selector.is_none());
    assert_eq!(serde_json::to_value(&model).expect("serialises"), doc);
}

#[test]
fn cold_node_status_round_trips() {
    let doc = json!({
        "apiVersion": "coldstart.dev/v1alpha1",
        "kind": "ColdNode",
        "metadata": {"name": "ip-10-0-1-2.ec2.internal"},
        "spec": {},
        "status": {
            "phase": "Warming",
            "models": [{
                "name": "qwen--qwen2-5-0-5b",
                "phase": "Warming",
                "image": {"phase": "Ready", "resolved": "sha256:abc", "bytesDone": 10, "bytesTotal": 10},
                "weights": {
                    "phase": "Syncing", "bytesDone": 5, "bytesTotal": 20,
                    "bytesPerSecond": 3, "startedAt": "2025-01-02T03:04:05Z",
                    "lastTransitionTime": "2025-01-02T03:04:06Z"
                }
            }],
            "gpu": {"healthy": false, "reason": "xid", "devices": [
                {"index": 0, "uuid": "GPU-1", "name": "H100", "memoryBytes": 85899345920u64,
                 "healthy": false, "reason": "xid 79"}
            ]},
            "updatedAt": "2025-01-02T03:04:07Z"
        }
    });
    let node: ColdNode = serde_json::from_value(doc.clone()).expect("parses");
    let status = node.status.as_ref().expect("status");
    assert_eq!(
        status.models[0].weights.as_ref().map(|w| w.phase),
        Some(PartPhase::Syncing)
    );
    assert_eq!(serde_json::to_value(&node).expect("serialises"), doc);
}

#[test]
fn status_models_is_a_map_list_keyed_by_name() {
    let crd = serde_json::to_value(ColdNode::crd()).expect("crd");
    let models = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["models"];
    assert_eq!(models["x-kubernetes-list-type"], "map");
    assert_eq!(models["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["status"],
        json!({})
    );
}

#[test]
fn crd_files_are_named_after_the_crds() {
    let files = crd_files().expect("yaml");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "coldmodels.coldstart.dev.yaml",
            "coldnodes.coldstart.dev.yaml"
        ]
    );
    assert!(files.iter().all(|f| f.yaml.starts_with("# Generated by")));
}

#[test]
fn model_names_must_make_a_label_key() {
    use super::{MAX_MODEL_NAME, model_name_problem};
    for ok in ["a", "org--model-x", &"x".repeat(MAX_MODEL_NAME)] {
        assert_eq!(model_name_problem(ok), None, "{ok}");
        let key = model_label_key(ok);
        let local = key.split_once('/').unwrap().1;
        assert!(local.len() <= 63, "{key}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "A",
        "a.b",
        "a_b",
        &"x".repeat(MAX_MODEL_NAME + 1),
    ] {
        assert!(model_name_problem(bad).is_some(), "{bad:?}");
    }
}

#[test]
fn the_crds_carry_the_rules_schemars_cannot_derive() {
    let crds = super::crds().expect("crds");
    let model = serde_json::to_value(&crds[0]).unwrap();
    let root = &model["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(
        root["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("self.metadata.name.size() <= 57")
    );
    let spec = &root["properties"]["spec"]["properties"];
    assert_eq!(spec["revision"]["maxLength"], 255);
    assert_eq!(
        spec["revision"]["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        spec["nodeSelector"]["properties"]["matchExpressions"]["items"]["properties"]["operator"]["enum"],
        json!(["In", "NotIn", "Exists", "DoesNotExist"])
    );
    let node = serde_yaml::to_string(&crds[1]).unwrap();
    assert!(!node.contains("format: uint"), "{node}");
}
