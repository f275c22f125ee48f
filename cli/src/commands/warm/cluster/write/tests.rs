use coldstart_agent::api::ColdModel;
use serde_json::json;

use super::{Changes, given_fields, merge_diff, owners_of};

#[test]
fn only_the_given_flags_become_fields() {
    let c = Changes {
        revision: Some("v2".into()),
        image: Some("i:1".into()),
        ..Changes::default()
    };
    assert_eq!(
        serde_json::Value::Object(given_fields(&c)),
        json!({"revision": "v2", "image": "i:1"})
    );
    assert!(given_fields(&Changes::default()).is_empty());
}

#[test]
fn merge_diffs_replace_what_changed_and_null_what_went() {
    let old = json!({"repo": "a/b", "nodeSelector": {"matchLabels": {"pool": "a"}}, "image": "i"});
    let new = json!({"repo": "a/b", "nodeSelector": {"matchLabels": {"zone": "z"}}, "image": "i"});
    assert_eq!(
        merge_diff(&old, &new),
        json!({"nodeSelector": {"matchLabels": {"pool": null, "zone": "z"}}})
    );
    let mut patched = old.clone();
    json_patch::merge(&mut patched, &merge_diff(&old, &new));
    assert_eq!(patched, new);
}

#[test]
fn owners_are_the_other_managers_of_the_field_or_below_it() {
    let m: ColdModel = serde_json::from_value(json!({
        "apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": "m", "managedFields": [
            {"manager": "gitops", "operation": "Apply", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:repo": {}, "f:nodeSelector": {"f:matchLabels": {"f:pool": {}}}}}},
            {"manager": "coldctl-alice", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:image": {}}}}
        ]},
        "spec": {"repo": "a/b"}
    }))
    .unwrap();
    assert_eq!(owners_of(&m, "nodeSelector", "coldctl-bob"), ["gitops"]);
    assert_eq!(owners_of(&m, "image", "coldctl-bob"), ["coldctl-alice"]);
    assert!(owners_of(&m, "image", "coldctl-alice").is_empty());
    assert!(owners_of(&m, "revision", "coldctl-bob").is_empty());
}
