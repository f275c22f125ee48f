//! Server-side apply over HTTP with kube-rs: field managers in `metadata.managedFields`,
//! conflicts answered 409 naming the manager and the field, `force`, and updates (merge
//! patches) taking ownership without conflicts, as on the real API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coldstart_fakeapi::{FakeApi, Options};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::{Value, json};

async fn models() -> (FakeApi, Api<DynamicObject>) {
    let api = FakeApi::start(Options::default()).await.unwrap();
    let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
    let gvk = GroupVersionKind::gvk("coldstart.dev", "v1alpha1", "ColdModel");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "coldmodels");
    (api, Api::all_with(client, &ar))
}

fn cfg(spec: Value) -> Value {
    json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": "m"}, "spec": spec})
}

fn managers(o: &DynamicObject) -> Vec<(String, String)> {
    o.metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn conflicts_name_the_owner_and_force_takes_the_field() {
    let (_fake, models) = models().await;
    let gitops = PatchParams::apply("gitops");
    models
        .patch(
            "m",
            &gitops,
            &Patch::Apply(cfg(json!({"repo": "a/b", "image": "i:1"}))),
        )
        .await
        .unwrap();
    let alice = PatchParams::apply("alice");
    let r = models
        .patch("m", &alice, &Patch::Apply(cfg(json!({"image": "i:2"}))))
        .await;
    let Err(kube::Error::Api(s)) = r else {
        panic!("expected a conflict, got {r:?}")
    };
    assert_eq!(s.code, 409);
    assert_eq!(
        s.message,
        "Apply failed with 1 conflict: conflict with \"gitops\": .spec.image"
    );
    let forced = models
        .patch(
            "m",
            &alice.clone().force(),
            &Patch::Apply(cfg(json!({"image": "i:2"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"], json!({"repo": "a/b", "image": "i:2"}));
    assert_eq!(
        managers(&forced),
        [
            ("gitops".into(), "Apply".into()),
            ("alice".into(), "Apply".into())
        ]
    );
    // gitops applies again without the image: alice's image stays, gitops keeps the repo.
    let again = models
        .patch("m", &gitops, &Patch::Apply(cfg(json!({"repo": "a/b"}))))
        .await
        .unwrap();
    assert_eq!(again.data["spec"], json!({"repo": "a/b", "image": "i:2"}));
}

#[tokio::test]
async fn merge_patches_take_ownership_without_conflict() {
    let (_fake, models) = models().await;
    models
        .patch(
            "m",
            &PatchParams::apply("gitops"),
            &Patch::Apply(cfg(json!({"repo": "a/b", "revision": "main"}))),
        )
        .await
        .unwrap();
    let bob = PatchParams {
        field_manager: Some("bob".into()),
        ..PatchParams::default()
    };
    let patched = models
        .patch(
            "m",
            &bob,
            &Patch::Merge(json!({"spec": {"revision": "v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        managers(&patched),
        [
            ("gitops".into(), "Apply".into()),
            ("bob".into(), "Update".into())
        ]
    );
    // gitops re-applies its revision: now a conflict with bob's update.
    let r = models
        .patch(
            "m",
            &PatchParams::apply("gitops"),
            &Patch::Apply(cfg(json!({"repo": "a/b", "revision": "main"}))),
        )
        .await;
    let Err(kube::Error::Api(s)) = r else {
        panic!("expected a conflict, got {r:?}")
    };
    assert!(
        s.message.starts_with(
            "Apply failed with 1 conflict: conflict with \"bob\" using coldstart.dev/v1alpha1 at "
        ),
        "{}",
        s.message
    );
    assert!(s.message.ends_with(": .spec.revision"), "{}", s.message);
}

#[tokio::test]
async fn a_status_apply_with_an_empty_list_map_removes_the_managers_items() {
    let api = FakeApi::start(Options::default()).await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    api.install_crds(&dir).unwrap();
    let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
    let gvk = GroupVersionKind::gvk("coldstart.dev", "v1alpha1", "ColdNode");
    let nodes: Api<DynamicObject> = Api::all_with(
        client,
        &ApiResource::from_gvk_with_plural(&gvk, "coldnodes"),
    );
    api.create(
        json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
        "metadata": {"name": "n1"}, "spec": {}}),
    )
    .unwrap();
    let pp = PatchParams::apply("coldstart-agent").force();
    let status = |models: Value| {
        json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
            "status": {"phase": "Ready", "models": models}})
    };
    let one = nodes
        .patch_status(
            "n1",
            &pp,
            &Patch::Apply(status(json!([{"name": "m", "phase": "Ready"}]))),
        )
        .await
        .unwrap();
    assert_eq!(
        one.data["status"]["models"].as_array().unwrap().len(),
        1,
        "{:?}",
        one.data
    );
    let two = nodes
        .patch_status("n1", &pp, &Patch::Apply(status(json!([]))))
        .await
        .unwrap();
    assert_eq!(two.data["status"]["models"], json!([]), "{:?}", two);
}
