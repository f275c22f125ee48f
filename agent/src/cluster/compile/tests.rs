#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;

fn pod(
    uid: &str,
    labels: serde_json::Value,
    host_path: Option<&str>,
    phase: &str,
    ready: bool,
) -> Pod {
    let mut p = json!({"metadata": {"name": uid, "uid": uid, "labels": labels},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": phase, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    if let Some(h) = host_path {
        p["spec"]["volumes"] = json!([{"name": "cc", "hostPath": {"path": h}}]);
    }
    serde_json::from_value(p).unwrap()
}

#[test]
fn pods_count_for_their_model_by_label_or_by_mount() {
    let root = CacheRoot::new(std::path::Path::new("/var/lib/coldstart"));
    let models: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    let pods = [
        pod(
            "1",
            json!({"coldstart.dev/model": "a"}),
            None,
            "Running",
            true,
        ),
        pod(
            "2",
            json!({"coldstart.dev/model": "a"}),
            None,
            "Pending",
            false,
        ),
        pod(
            "3",
            json!({}),
            Some("/var/lib/coldstart/compile/models/b"),
            "Running",
            false,
        ),
        pod(
            "4",
            json!({"coldstart.dev/model": "gone"}),
            None,
            "Running",
            true,
        ),
        pod("5", json!({}), Some("/data"), "Running", true),
    ];
    let uses = pod_uses(&pods, &models, &root);
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert!(uses["a"].running);
    assert_eq!(uses["a"].ready, ["1".to_string()].into());
    assert!(uses["b"].running && uses["b"].ready.is_empty());
}
