use serde_json::json;

use super::*;
use crate::shape::TypeShapes;

fn all(_: &FieldPath) -> bool {
    true
}

fn req<'a>(manager: &'a str, force: bool) -> Apply<'a> {
    Apply {
        manager,
        subresource: "",
        force,
        api_version: "coldstart.dev/v1alpha1",
        keeps: &all,
    }
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    read(obj)
        .into_iter()
        .map(|e| (e.manager, e.operation))
        .collect()
}

#[test]
fn an_apply_that_omits_a_field_it_owned_removes_it_unless_another_owns_it() {
    let shapes = TypeShapes::test("ColdModel");
    let live = json!({"metadata": {"name": "m"}});
    let one = apply(
        &live,
        &json!({"spec": {"repo": "a/b", "image": "i:1", "revision": "r"}}),
        &req("alice", false),
        &shapes,
    )
    .unwrap();
    // bob updates the revision to the same value: co-owned from now on.
    let mut two = one.clone();
    track_update(Some(&one), &mut two, "bob", "", "v", &shapes);
    assert_eq!(two, one, "an update that changes nothing takes nothing");
    let mut three = one.clone();
    three["spec"]["revision"] = json!("r2");
    track_update(Some(&one), &mut three, "bob", "", "v", &shapes);
    // alice applies again without image and revision: image goes, revision (bob's) stays.
    let four = apply(
        &three,
        &json!({"spec": {"repo": "a/b"}}),
        &req("alice", false),
        &shapes,
    )
    .unwrap();
    assert_eq!(four["spec"], json!({"repo": "a/b", "revision": "r2"}));
    assert_eq!(
        managers(&four),
        vec![
            ("alice".into(), "Apply".into()),
            ("bob".into(), "Update".into())
        ]
    );
}

#[test]
fn a_conflicting_apply_is_refused_naming_the_manager_unless_forced() {
    let shapes = TypeShapes::test("ColdModel");
    let live = json!({"metadata": {"name": "m"}});
    let one = apply(
        &live,
        &json!({"spec": {"image": "i:1"}}),
        &req("gitops", false),
        &shapes,
    )
    .unwrap();
    // The same value is no conflict (shared ownership).
    apply(
        &one,
        &json!({"spec": {"image": "i:1"}}),
        &req("coldctl", false),
        &shapes,
    )
    .unwrap();
    let err = apply(
        &one,
        &json!({"spec": {"image": "i:2"}}),
        &req("coldctl", false),
        &shapes,
    )
    .unwrap_err();
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"gitops\": .spec.image"
    );
    let forced = apply(
        &one,
        &json!({"spec": {"image": "i:2"}}),
        &req("coldctl", true),
        &shapes,
    )
    .unwrap();
    assert_eq!(forced["spec"]["image"], json!("i:2"));
    // gitops lost the field: its next apply without it does not remove coldctl's value.
    let again = apply(
        &forced,
        &json!({"spec": {}}),
        &req("gitops", false),
        &shapes,
    )
    .unwrap();
    assert_eq!(again["spec"]["image"], json!("i:2"));
}

#[test]
fn list_map_items_are_owned_by_key_and_removed_with_their_last_owner() {
    let shapes = TypeShapes::test("Node");
    let live = json!({"metadata": {"name": "n"}, "status": {"conditions": [
        {"type": "Ready", "status": "True"}]}});
    let mut kubelet = live.clone();
    track_update(None, &mut kubelet, "kubelet", "status", "v1", &shapes);
    let cfg = |s: &str| json!({"status": {"conditions": [{"type": "Warm", "status": s}]}});
    let one = apply(&kubelet, &cfg("False"), &req("agent", false), &shapes).unwrap();
    let two = apply(&one, &cfg("True"), &req("agent", false), &shapes).unwrap();
    assert_eq!(two["status"]["conditions"].as_array().unwrap().len(), 2);
    let three = apply(&two, &json!({"status": {}}), &req("agent", false), &shapes).unwrap();
    assert_eq!(
        three["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}])
    );
}

#[test]
fn several_conflicts_are_listed_by_manager() {
    let shapes = TypeShapes::test("ColdModel");
    let one = apply(
        &json!({}),
        &json!({"spec": {"a": 1, "b": 1}}),
        &req("x", false),
        &shapes,
    )
    .unwrap();
    let err = apply(
        &one,
        &json!({"spec": {"a": 2, "b": 2}}),
        &req("y", false),
        &shapes,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"x\":\n- .spec.a\n- .spec.b"
    );
}
