//! Conformance rows: CRD schemas (the committed deploy/crds and small inline ones), built-in
//! checks (names, labels, the Event note), each accepted when valid and refused with the
//! real server's reason, field and message when not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use coldstart_fakeapi::{FakeApi, Options};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::{Value, json};

async fn start() -> (FakeApi, Client) {
    let api = FakeApi::start(Options::default()).await.unwrap();
    let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
    (api, client)
}

fn crds_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The refusal: (code, reason, message, causes as (reason, field, message)).
fn refusal<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String, String, Vec<[String; 3]>) {
    match r {
        Err(kube::Error::Api(s)) => {
            let causes = s
                .details
                .as_ref()
                .map(|d| {
                    d.causes
                        .iter()
                        .map(|c| [c.reason.clone(), c.field.clone(), c.message.clone()])
                        .collect()
                })
                .unwrap_or_default();
            (s.code, s.reason.clone(), s.message.clone(), causes)
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn committed_crds_validate_prune_and_default_coldmodels_and_coldnodes() {
    let (fake, client) = start().await;
    assert_eq!(fake.install_crds(&crds_dir()).unwrap(), 2);
    let models: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("coldstart.dev", "v1alpha1", "ColdModel", "coldmodels"),
    );
    let pp = PostParams::default();
    let created = models
        .create(
            &pp,
            &obj(
                json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
                "metadata": {"name": "org--model"},
                "spec": {"repo": "org/model", "revison": "typo", "include": ["*.json"]}}),
            ),
        )
        .await
        .unwrap();
    // The unknown field is pruned, not refused.
    assert_eq!(
        created.data["spec"],
        json!({"repo": "org/model", "include": ["*.json"]})
    );
    let (code, reason, message, causes) = refusal(
        models
            .create(
                &pp,
                &obj(
                    json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
                    "metadata": {"name": "m2"}, "spec": {"revision": 3}}),
                ),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "ColdModel.coldstart.dev \"m2\" is invalid: [spec.revision: Invalid value: \"integer\": \
         spec.revision in body must be of type string: \"integer\", spec.repo: Required value, \
         <nil>: Invalid value: null: some validation rules were not checked because the object \
         was invalid; correct the existing errors to complete validation]"
    );
    assert_eq!(
        causes[1],
        [
            "FieldValueRequired".to_string(),
            "spec.repo".into(),
            "Required value".into()
        ]
    );

    // ColdNode: status is a subresource; its entries are defaulted and validated.
    let nodes: Api<DynamicObject> = Api::all_with(
        client,
        &resource("coldstart.dev", "v1alpha1", "ColdNode", "coldnodes"),
    );
    let cn = nodes
        .create(
            &pp,
            &obj(
                json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
                "metadata": {"name": "gpu-1"}, "spec": {"extra": 1},
                "status": {"models": [{"name": "m"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(cn.data["spec"], json!({}));
    assert!(cn.data.get("status").is_none(), "status dropped on create");
    let status =
        |s: Value| json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode", "status": s});
    let pp_merge = PatchParams::default();
    let written = nodes
        .patch_status(
            "gpu-1",
            &pp_merge,
            &Patch::Merge(status(json!({"models": [{"name": "m", "weights": {}}]}))),
        )
        .await
        .unwrap();
    assert_eq!(
        written.data["status"]["models"][0],
        json!({"name": "m", "phase": "Pending", "weights": {"bytesDone": 0, "phase": "Pending"}})
    );
    let (code, _, message, causes) = refusal(
        nodes
            .patch_status(
                "gpu-1",
                &pp_merge,
                &Patch::Merge(status(json!({"models": [{"name": "m", "phase": "Cold"}]}))),
            )
            .await,
    );
    assert_eq!(code, 422);
    assert_eq!(causes[0][0], "FieldValueNotSupported");
    assert_eq!(causes[0][1], "status.models[0].phase");
    assert!(
        message.ends_with(
            "status.models[0].phase: Unsupported value: \"Cold\": supported values: \
             \"Pending\", \"Warming\", \"Ready\", \"Failed\""
        ),
        "{message}"
    );
}

fn widget_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "selectableFields": [{"jsonPath": ".spec.color"}],
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "self.metadata.name.startsWith('w-')",
                        "message": "names start with w-"}],
                    "properties": {"spec": {"type": "object",
                        "x-kubernetes-validations": [
                            {"rule": "self.size >= oldSelf.size", "message": "size may only grow",
                             "fieldPath": ".size"},
                            {"rule": "self.color.matches('^[a-z]+$')",
                             "messageExpression": "'bad color ' + self.color"}],
                        "properties": {
                            "color": {"type": "string", "default": "red"},
                            "size": {"type": "integer", "default": 1}}}}}}}]}})
}

#[tokio::test]
async fn inline_crd_rules_transition_rules_and_selectable_fields() {
    let (fake, client) = start().await;
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    crds.create(&PostParams::default(), &obj(widget_crd()))
        .await
        .unwrap();
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client,
        "default",
        &resource("example.com", "v1", "Widget", "widgets"),
    );
    let pp = PostParams::default();
    let w = |name: &str, spec: Value| {
        obj(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}))
    };
    let created = widgets.create(&pp, &w("w-1", json!({}))).await.unwrap();
    assert_eq!(created.data["spec"], json!({"color": "red", "size": 1}));
    let (code, _, message, causes) = refusal(widgets.create(&pp, &w("x-1", json!({}))).await);
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "Widget.example.com \"x-1\" is invalid: <nil>: Invalid value: names start with w-"
    );
    assert_eq!(causes[0][1], "<nil>");
    let (_, _, message, _) = refusal(
        widgets
            .create(&pp, &w("w-2", json!({"color": "Blue"})))
            .await,
    );
    assert!(
        message.ends_with("spec: Invalid value: bad color Blue"),
        "{message}"
    );
    // The transition rule: on update only.
    let pm = PatchParams::default();
    widgets
        .patch("w-1", &pm, &Patch::Merge(json!({"spec": {"size": 3}})))
        .await
        .unwrap();
    let (code, _, message, causes) = refusal(
        widgets
            .patch("w-1", &pm, &Patch::Merge(json!({"spec": {"size": 2}})))
            .await,
    );
    assert_eq!(code, 422);
    assert_eq!(causes[0][1], "spec.size");
    assert!(
        message.ends_with("spec.size: Invalid value: size may only grow"),
        "{message}"
    );
    // selectableFields make spec.color selectable.
    widgets
        .create(&pp, &w("w-3", json!({"color": "green"})))
        .await
        .unwrap();
    let lp = kube::api::ListParams::default().fields("spec.color=green");
    let names: Vec<String> = widgets
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["w-3"]);
    let lp = kube::api::ListParams::default().fields("spec.size=1");
    let (code, _, message, _) = refusal(widgets.list(&lp).await);
    assert_eq!(
        (code, message.as_str()),
        (400, "field label not supported: spec.size")
    );
    assert!(fake.get("widgets.example.com", "default", "w-3").is_some());
}

#[tokio::test]
async fn a_crd_whose_rule_does_not_compile_is_refused() {
    let (fake, _client) = start().await;
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"][0]["rule"] =
        json!("self.metadata.name.startsWith(");
    let err = fake.create(crd).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "CustomResourceDefinition.apiextensions.k8s.io \"widgets.example.com\" is invalid: \
             spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn names_labels_and_the_event_note() {
    let (_fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PostParams::default();
    let node = |name: &str, labels: Value| -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    };
    nodes
        .create(&pp, &node("gpu-1", json!({"coldstart.dev/ready": "true"})))
        .await
        .unwrap();
    let (code, _, message, causes) = refusal(nodes.create(&pp, &node("GPU_2", json!({}))).await);
    assert_eq!(code, 422);
    assert!(message.starts_with("Node \"GPU_2\" is invalid: metadata.name: Invalid value: \"GPU_2\": a lowercase RFC 1123 subdomain"), "{message}");
    assert_eq!(causes[0][1], "metadata.name");
    let (_, _, message, _) = refusal(
        nodes
            .create(&pp, &node("gpu-3", json!({"coldstart.dev/model": "a b"})))
            .await,
    );
    assert!(
        message.starts_with(
            "Node \"gpu-3\" is invalid: metadata.labels: Invalid value: \"a b\": a valid label must be an empty string"
        ),
        "{message}"
    );

    let events: Api<Event> = Api::namespaced(client, "default");
    let event = |name: &str, note: String| -> Event {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "eventTime": "2024-01-01T00:00:00.000000Z", "type": "Normal", "reason": "Warmed",
            "action": "Warm", "note": note, "reportingController": "coldstart.dev/agent",
            "reportingInstance": "agent-gpu-1", "regarding": {"kind": "Node", "name": "gpu-1"}}))
        .unwrap()
    };
    events
        .create(&pp, &event("e1", "x".repeat(1024)))
        .await
        .unwrap();
    // The namespace comes from the path when the body has none (as kube's Recorder sends).
    let mut bare = event("e0", "ok".into());
    bare.metadata.namespace = None;
    events.create(&pp, &bare).await.unwrap();
    let (code, reason, message, causes) =
        refusal(events.create(&pp, &event("e2", "x".repeat(1025))).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "Event.events.k8s.io \"e2\" is invalid: message: Invalid value: \"\": can have at most 1024 characters"
    );
    assert_eq!(causes[0][0], "FieldValueInvalid");
}
