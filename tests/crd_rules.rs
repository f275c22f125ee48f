//! The rules the committed CRDs add (deploy/crds, generated from agent/src/api/crds.rs), each
//! a conformance row through the fake API server's schema and CEL enforcement: ColdModel names
//! that make a node label, the revision rules, the selector operator enum; and the ColdNode's
//! owner reference collected with its Node. (A rule's failure names the value for a scalar
//! and omits it for an object, as the API server's CEL validation does.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use coldstart_fakeapi::{FakeApi, Options};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::{Value, json};

async fn start() -> (FakeApi, Api<DynamicObject>) {
    let api = FakeApi::start(Options::default()).await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds");
    api.install_crds(&dir).unwrap();
    let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
    let gvk = GroupVersionKind::gvk("coldstart.dev", "v1alpha1", "ColdModel");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "coldmodels");
    (api, Api::all_with(client, &ar))
}

fn model(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

/// (code, message) of a refused create; None when it was accepted.
async fn create(models: &Api<DynamicObject>, name: &str, spec: Value) -> Option<(u16, String)> {
    match models
        .create(&PostParams::default(), &model(name, spec))
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some((s.code, s.message.clone())),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn coldmodel_names_must_make_a_node_label() {
    let (_fake, models) = start().await;
    let spec = json!({"repo": "org/m"});
    assert_eq!(create(&models, "org--m", spec.clone()).await, None);
    assert_eq!(create(&models, &"a".repeat(57), spec.clone()).await, None);
    let name_rule = "a ColdModel name must be a DNS label (lowercase letters, digits, '-') of \
                     at most 57 characters, so that coldstart.dev/model.<name> is a valid node \
                     label key";
    for bad in ["a".repeat(58), "org.model".to_string()] {
        let (code, msg) = create(&models, &bad, spec.clone()).await.expect("refused");
        assert_eq!(code, 422, "{msg}");
        assert_eq!(
            msg,
            format!(
                "ColdModel.coldstart.dev \"{bad}\" is invalid: <nil>: Invalid value: {name_rule}"
            )
        );
    }
}

#[tokio::test]
async fn revisions_follow_the_weights_rules() {
    let (_fake, models) = start().await;
    let ok = [
        "main",
        "v1.0",
        "refs/pr/1",
        "refs/convert/parquet",
        "0123456789abcdef0123456789abcdef01234567",
    ];
    for (i, r) in ok.iter().enumerate() {
        let spec = json!({"repo": "org/m", "revision": r});
        assert_eq!(create(&models, &format!("ok-{i}"), spec).await, None, "{r}");
    }
    let bad = [
        ("..", "a revision may not be '@' or contain '..' or '@{'"),
        ("a@{b", "a revision may not be '@' or contain '..' or '@{'"),
        ("@", "a revision may not be '@' or contain '..' or '@{'"),
        (
            "/main",
            "a revision may not start with '/' or end with '/' or '.'",
        ),
        (
            "main.",
            "a revision may not start with '/' or end with '/' or '.'",
        ),
        (
            "a b",
            "a revision may not contain control characters, space, or any of ~ ^ : ? * [ \\",
        ),
        (
            "a:b",
            "a revision may not contain control characters, space, or any of ~ ^ : ? * [ \\",
        ),
        (
            "a\\b",
            "a revision may not contain control characters, space, or any of ~ ^ : ? * [ \\",
        ),
        (
            "a//b",
            "each '/'-separated part of a revision must be non-empty, not start with '.' and not end in '.lock'",
        ),
        (
            "a/.b",
            "each '/'-separated part of a revision must be non-empty, not start with '.' and not end in '.lock'",
        ),
        (
            "a.lock",
            "each '/'-separated part of a revision must be non-empty, not start with '.' and not end in '.lock'",
        ),
    ];
    for (i, (r, why)) in bad.iter().enumerate() {
        let name = format!("bad-{i}");
        let spec = json!({"repo": "org/m", "revision": r});
        let (code, msg) = create(&models, &name, spec).await.expect(r);
        assert_eq!(code, 422, "{r}: {msg}");
        assert!(
            msg.contains(&format!("spec.revision: Invalid value: {r:?}: {why}")),
            "{r}: {msg}"
        );
    }
    // The agent's own check agrees with every row.
    for r in ok {
        assert!(
            coldstart_agent::weights::validate_revision(r).is_ok(),
            "{r}"
        );
    }
    for (r, _) in bad {
        assert!(
            coldstart_agent::weights::validate_revision(r).is_err(),
            "{r}"
        );
    }
}

#[tokio::test]
async fn selector_operators_are_an_enum() {
    let (_fake, models) = start().await;
    let sel = |op: &str| {
        json!({"repo": "org/m", "nodeSelector": {"matchExpressions": [
            {"key": "pool", "operator": op, "values": ["a"]}]}})
    };
    assert_eq!(create(&models, "in", sel("In")).await, None);
    let (code, msg) = create(&models, "gt", sel("Gt")).await.expect("refused");
    assert_eq!(code, 422);
    assert!(
        msg.contains(
            "spec.nodeSelector.matchExpressions[0].operator: Unsupported value: \"Gt\": \
             supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn deleting_a_node_collects_the_coldnode_it_owns() {
    let (fake, models) = start().await;
    let node = fake
        .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
        .unwrap();
    let uid = node["metadata"]["uid"].clone();
    fake.create(
        json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
        "metadata": {"name": "n1", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": uid}]}, "spec": {}}),
    )
    .unwrap();
    let client = Client::try_from(Config::new(fake.url().parse().unwrap())).unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    assert!(fake.get("coldnodes", "", "n1").is_none());
    drop(models);
}
