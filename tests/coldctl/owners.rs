//! `coldctl warm` changes only the fields it is given, under the user's own field manager:
//! two operators keep each other's fields, a field another manager owns is not taken over
//! without `--force-conflicts`, and a write racing another retries on the fresh object.

use serde_json::json;

use super::{MODEL, NAME, cluster};

fn managers(c: &super::Cluster) -> Vec<(String, String)> {
    let obj = c.coldmodel(NAME).unwrap();
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_operators_setting_different_fields_both_keep_theirs() {
    let c = cluster();
    let run = c.ctl_as(
        "alice",
        &["warm", MODEL, "--image", "vllm/vllm-openai:v0.11.0"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let run = c.ctl_as("bob", &["warm", NAME, "--revision", "v2"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = c.ctl_as("alice", &["warm", NAME, "--include", "*.json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let spec = c.coldmodel(NAME).unwrap()["spec"].clone();
    assert_eq!(
        spec,
        json!({"repo": MODEL, "image": "vllm/vllm-openai:v0.11.0", "revision": "v2",
            "include": ["*.json"]})
    );
    assert_eq!(
        managers(&c),
        [
            ("coldctl-alice".to_string(), "Apply".to_string()),
            ("coldctl-bob".to_string(), "Update".to_string()),
            ("coldctl-alice".to_string(), "Update".to_string()),
        ]
    );
}

#[test]
fn the_same_field_conflicts_without_force_conflicts() {
    let c = cluster();
    let run = c.ctl_as("alice", &["warm", MODEL, "--image", "img:1"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Bob setting the value alice set is no conflict.
    let run = c.ctl_as("bob", &["warm", NAME, "--image", "img:1", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["changed"], json!(false), "{run:?}");

    let run = c.ctl_as("bob", &["warm", NAME, "--image", "img:2", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(doc["kind"], "conflict", "{run:?}");
    let msg = doc["error"].as_str().unwrap();
    assert!(
        msg.contains("spec.image is managed by \"coldctl-alice\" (now \"img:1\"; this command sets \"img:2\")")
            && msg.contains("--force-conflicts"),
        "{msg}"
    );
    assert_eq!(c.coldmodel(NAME).unwrap()["spec"]["image"], "img:1");

    let run = c.ctl_as(
        "bob",
        &["warm", NAME, "--image", "img:2", "--force-conflicts"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(c.coldmodel(NAME).unwrap()["spec"]["image"], "img:2");
    // Now bob owns it: alice is the one refused.
    let run = c.ctl_as("alice", &["warm", NAME, "--image", "img:3"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.error_line().contains("\"coldctl-bob\""), "{run:?}");
}

#[test]
fn a_write_racing_another_reads_again_and_retries() {
    let c = cluster();
    let run = c.ctl(&["warm", MODEL, "--revision", "v1"]);
    assert_eq!(run.code, 0, "{run:?}");
    c.api.clear_requests();
    // The first merge patch answers 409, as when another write bumped resourceVersion.
    c.api.conflict_next_writes("coldmodels", 1);
    let run = c.ctl(&["warm", NAME, "--revision", "v2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(c.coldmodel(NAME).unwrap()["spec"]["revision"], "v2");
    let verbs: Vec<(String, u16)> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.resource == "coldmodels")
        .map(|r| (r.verb, r.status))
        .collect();
    assert_eq!(
        verbs,
        [
            ("get".to_string(), 200),
            ("patch".to_string(), 409),
            ("get".to_string(), 200),
            ("patch".to_string(), 200),
        ]
    );
}
