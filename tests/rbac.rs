//! deploy/'s RBAC and admission policies under the fake API server enforcing them: what the
//! agent of a node may not do (another node or its ColdNode, an admin's taint, uncordoning,
//! NodeRestriction labels, the Ready condition, events about other objects, any write without
//! the node-name claim), each refused with the apiserver's answer; a renamed deploy/ still
//! confines the agent; coldctl under the viewer role cannot `warm`.
//!
//! They need kubectl (scripts/test-env.sh) and, for coldctl, `cargo build --workspace --bins`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::process::Command;
use std::time::Duration;

use coldstart_fakeapi::{FakeApi, UserInfo};
use common::security::{self, VIEWER, agent_token};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::{Value, json};

const A: &str = "gpu-1";
const B: &str = "gpu-2";
const WARMING: &str = "coldstart.dev/warming";

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": "gpu"}},
        "spec": {"unschedulable": true, "taints": [
            {"key": WARMING, "value": "true", "effect": "NoSchedule"},
            {"key": "example.com/admin", "effect": "NoExecute"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

fn coldnode(name: &str) -> Value {
    json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
        "metadata": {"name": name}, "spec": {}})
}

fn start(dir: &str) -> FakeApi {
    let api = common::fake_api();
    for n in [A, B] {
        api.create(node(n)).unwrap();
    }
    api.create(coldnode(B)).unwrap();
    security::secure(&api, &security::render(dir), &[A, B]);
    api
}

fn client(api: &FakeApi, token: &str) -> Client {
    let mut config = Config::new(api.url().parse().unwrap());
    config.auth_info.token = Some(token.to_string().into());
    Client::try_from(config).unwrap()
}

fn coldnodes(c: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("coldstart.dev", "v1alpha1", "ColdNode");
    Api::all_with(c.clone(), &ApiResource::from_gvk(&gvk))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// (code, reason, message) of a call that must fail.
fn refused<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn denied_by(policy: &str, resource: &str, name: &str, why: &str) -> String {
    format!(
        "{resource} \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding \
         '{policy}' denied request: {why}"
    )
}

fn merge(v: Value) -> Patch<Value> {
    Patch::Merge(v)
}

fn apply_condition(type_: &str) -> Patch<Value> {
    Patch::Apply(
        json!({"apiVersion": "v1", "kind": "Node", "status": {"conditions": [
        {"type": type_, "status": "True", "reason": "R", "message": "m"}]}}),
    )
}

#[test]
#[ignore = "needs kubectl (scripts/test-env.sh)"]
fn the_agent_may_do_what_the_kubelet_may_to_its_own_node_and_no_more() {
    let api = start("deploy");
    let rt = rt();
    let _in_runtime = rt.enter();
    let agent = client(&api, &agent_token(A));
    let nodes: Api<Node> = Api::all(agent.clone());
    let pp = PatchParams::default();
    let ssa = PatchParams::apply("coldstart-agent").force();
    rt.block_on(async {
        // Allowed: a model label, removing the startup taint, our conditions, its ColdNode.
        let label = merge(json!({"metadata": {"labels": {"coldstart.dev/model.m": "ready"}}}));
        nodes.patch(A, &pp, &label).await.unwrap();
        let kept = json!([{"key": "example.com/admin", "effect": "NoExecute"}]);
        nodes.patch(A, &pp, &merge(json!({"spec": {"taints": kept}}))).await.unwrap();
        nodes.patch_status(A, &ssa, &apply_condition("ColdstartModelsWarm")).await.unwrap();
        let cn: DynamicObject = serde_json::from_value(coldnode(A)).unwrap();
        coldnodes(&agent).create(&PostParams::default(), &cn).await.unwrap();

        // Another node, another node's ColdNode.
        let (code, reason, message) = refused(nodes.patch(B, &pp, &label).await);
        assert_eq!((code, reason.as_str()), (403, "Forbidden"));
        let why = "coldstart-agent on node gpu-1 may not write nodes gpu-2";
        assert_eq!(message, denied_by("coldstart-agent-own-node", "nodes", B, why));
        let status = Patch::Apply(json!({"apiVersion": "coldstart.dev/v1alpha1",
            "kind": "ColdNode", "status": {"phase": "Ready"}}));
        let (code, _, message) = refused(coldnodes(&agent).patch_status(B, &ssa, &status).await);
        assert_eq!(code, 403);
        let why = "coldstart-agent on node gpu-1 may not write coldnodes gpu-2";
        let expected = denied_by("coldstart-agent-own-node", "coldnodes.coldstart.dev", B, why);
        assert_eq!(message, expected);

        // More than the kubelet may do to its own node.
        let cases: Vec<(Patch<Value>, &str)> = vec![
            (merge(json!({"spec": {"taints": []}})), "coldstart-agent may remove only the coldstart.dev/warming taint: spec.taints (another taint) may not change"),
            (merge(json!({"spec": {"unschedulable": null}})), "coldstart-agent may not change spec.unschedulable"),
            (merge(json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "x"}}})),
                "coldstart-agent may change only labels under coldstart.dev/model. and coldstart.dev/snapshot., not metadata.labels[node-restriction.kubernetes.io/pool]"),
            (merge(json!({"metadata": {"annotations": {"a": "b"}}})), "coldstart-agent may not change metadata.annotations[a]"),
            (merge(json!({"spec": {"taints": [{"key": "example.com/admin", "effect": "NoExecute"},
                {"key": WARMING, "value": "true", "effect": "NoSchedule"}]}})),
                "coldstart-agent may remove the coldstart.dev/warming taint, never add or change it: spec.taints"),
        ];
        for (patch, why) in cases {
            let (code, _, message) = refused(nodes.patch(A, &pp, &patch).await);
            assert_eq!(code, 403, "{message}");
            assert_eq!(message, denied_by("coldstart-agent-node-changes", "nodes", A, why));
        }
        let (code, _, message) = refused(nodes.patch_status(A, &ssa, &apply_condition("Ready")).await);
        assert_eq!(code, 403);
        let why = "coldstart-agent may apply only the conditions ColdstartGPUHealthy and \
                   ColdstartModelsWarm, not status.conditions[type=Ready]";
        assert_eq!(message, denied_by("coldstart-agent-node-changes", "nodes", A, why));

        // RBAC: the grants deploy/ dropped.
        let (code, reason, message) =
            refused(coldnodes(&agent).delete(A, &DeleteParams::default()).await);
        assert_eq!((code, reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            message,
            "coldnodes.coldstart.dev \"gpu-1\" is forbidden: User \
             \"system:serviceaccount:coldstart-system:coldstart-agent\" cannot delete resource \
             \"coldnodes\" in API group \"coldstart.dev\" at the cluster scope"
        );
        // Patching another node's ColdNode (its owner reference, say) is refused by admission.
        let (code, _, message) = refused(coldnodes(&agent).patch(B, &pp, &merge(json!({}))).await);
        assert_eq!(code, 403, "{message}");
    });
    let n = api.get("nodes", "", A).unwrap();
    assert_eq!(n["spec"]["unschedulable"], true, "{n}");
    assert_eq!(n["spec"]["taints"].as_array().map(Vec::len), Some(1), "{n}");
}

fn event(about: &str) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": "x-", "namespace": "default"},
        "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "coldstart.dev/agent",
        "reportingInstance": A, "action": "Warm", "reason": "NodeWarm", "type": "Normal",
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": about}}))
    .unwrap()
}

#[test]
#[ignore = "needs kubectl (scripts/test-env.sh)"]
fn events_only_about_its_node_and_nothing_without_the_node_name_claim() {
    let api = start("deploy");
    let (ns, sa) = security::AGENT_SA;
    api.add_token("no-claim", UserInfo::service_account(ns, sa));
    let rt = rt();
    rt.block_on(async {
        let agent = client(&api, &agent_token(A));
        let gvk = GroupVersionKind::gvk("events.k8s.io", "v1", "Event");
        let events: Api<DynamicObject> =
            Api::namespaced_with(agent, "default", &ApiResource::from_gvk(&gvk));
        events
            .create(&PostParams::default(), &event(A))
            .await
            .unwrap();
        let (code, _, message) = refused(events.create(&PostParams::default(), &event(B)).await);
        assert_eq!(code, 403);
        assert!(
            message.ends_with(
                "coldstart-agent on node gpu-1 may record events only about its own Node"
            ),
            "{message}"
        );

        let nodes: Api<Node> = Api::all(client(&api, "no-claim"));
        let label = merge(json!({"metadata": {"labels": {"coldstart.dev/model.m": "ready"}}}));
        let (code, _, message) = refused(nodes.patch(A, &PatchParams::default(), &label).await);
        assert_eq!(code, 403);
        let why = "coldstart-agent on node (no node-name claim) may not write nodes gpu-1";
        assert_eq!(
            message,
            denied_by("coldstart-agent-own-node", "nodes", A, why)
        );
    });
}

#[test]
#[ignore = "needs kubectl (scripts/test-env.sh)"]
fn a_renamed_deploy_still_confines_the_agent() {
    let api = start("tests/fixtures/renamed-overlay");
    api.add_token(
        "renamed",
        UserInfo::service_account("team-system", "team-coldstart-agent").on_node(A),
    );
    let rt = rt();
    rt.block_on(async {
        let nodes: Api<Node> = Api::all(client(&api, "renamed"));
        let label = merge(json!({"metadata": {"labels": {"coldstart.dev/model.m": "ready"}}}));
        nodes
            .patch(A, &PatchParams::default(), &label)
            .await
            .unwrap();
        let (code, _, message) = refused(nodes.patch(B, &PatchParams::default(), &label).await);
        assert_eq!(code, 403);
        assert!(
            message.contains("'team-coldstart-agent-own-node'"),
            "{message}"
        );
    });
}

#[test]
#[ignore = "needs kubectl (scripts/test-env.sh) and cargo build --workspace --bins"]
fn coldctl_under_the_viewer_role_shows_status_but_cannot_warm() {
    let api = start("deploy");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.kubeconfig_with_token(&kubeconfig, VIEWER).unwrap();
    let coldctl = |args: &[&str]| {
        let mut cmd = Command::new(common::coldctl_bin());
        cmd.args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("COLDSTART_LOG", "warn")
            .env_remove("KUBERNETES_SERVICE_HOST");
        support::run_bounded(&mut cmd, Duration::from_secs(60)).expect("coldctl ran")
    };
    let status = coldctl(&["status"]);
    assert!(status.status.success(), "{status:?}");
    let warm = coldctl(&["warm", "acme/tiny-model", "--image", "example.com/vllm:v1"]);
    assert!(!warm.status.success(), "{warm:?}");
    let stderr = String::from_utf8_lossy(&warm.stderr);
    assert!(
        stderr.contains(
            "User \"viewer\" cannot patch resource \"coldmodels\" in API group \"coldstart.dev\" at the cluster scope"
        ),
        "{stderr}"
    );
    assert!(api.list("coldmodels").unwrap().is_empty());
}
