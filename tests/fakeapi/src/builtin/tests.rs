use serde_json::json;

use super::*;

fn messages(t: &ResourceType, obj: &Value) -> Vec<String> {
    check(t, None, obj)
        .iter()
        .map(FieldError::message)
        .collect()
}

#[test]
fn names_follow_each_kind() {
    let node = ResourceType::cluster("", "v1", "nodes", "Node");
    assert!(messages(&node, &json!({"metadata": {"name": "gpu-1.example"}})).is_empty());
    assert_eq!(
        messages(&node, &json!({"metadata": {"name": "GPU_1"}})),
        [
            "metadata.name: Invalid value: \"GPU_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ]
    );
    let role = ResourceType::namespaced("rbac.authorization.k8s.io", "v1", "roles", "Role");
    assert!(
        messages(
            &role,
            &json!({"metadata": {"name": "system:Odd", "namespace": "ns"}})
        )
        .is_empty()
    );
    assert_eq!(
        messages(
            &role,
            &json!({"metadata": {"name": "a/b", "namespace": "ns"}})
        ),
        ["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
    );
}

#[test]
fn label_keys_and_values() {
    let node = ResourceType::cluster("", "v1", "nodes", "Node");
    let ok = json!({"metadata": {"name": "n", "labels": {
        "coldstart.dev/model.m": "ready", "a": "", "x_y.z": "A-b_c.1"}}});
    assert!(messages(&node, &ok).is_empty());
    let bad = json!({"metadata": {"name": "n", "labels": {
        "Bad Key": "v", "a": "x".repeat(64), "/b": "ok"}}});
    assert_eq!(
        messages(&node, &bad),
        [
            "metadata.labels: Invalid value: \"/b\": prefix part must be non-empty",
            "metadata.labels: Invalid value: \"Bad Key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            &format!(
                "metadata.labels: Invalid value: \"{}\": must be no more than 63 characters",
                "x".repeat(64)
            ),
        ]
    );
}

#[test]
fn the_event_note_is_limited_when_event_time_is_set() {
    let v1 = ResourceType::namespaced("events.k8s.io", "v1", "events", "Event");
    let core = ResourceType::namespaced("", "v1", "events", "Event");
    let event = |note: &str| {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000000Z",
            "type": "Normal", "reason": "Warmed", "action": "Warm", "note": note,
            "reportingController": "coldstart.dev/agent", "reportingInstance": "agent-1",
            "regarding": {"kind": "Node", "name": "n"}})
    };
    assert!(messages(&v1, &event(&"x".repeat(1024))).is_empty());
    assert_eq!(
        messages(&v1, &event(&"x".repeat(1025))),
        ["message: Invalid value: \"\": can have at most 1024 characters"]
    );
    // A core/v1 Event without eventTime has no limit.
    let old_style = json!({"metadata": {"name": "e", "namespace": "default"},
        "message": "x".repeat(5000), "involvedObject": {"kind": "Node", "name": "n"}});
    assert!(messages(&core, &old_style).is_empty());
    let mut with_time = old_style.clone();
    with_time["eventTime"] = json!("2024-01-01T00:00:00.000000Z");
    let m = messages(&core, &with_time);
    assert!(
        m.contains(&"message: Invalid value: \"\": can have at most 1024 characters".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(&"reportingController: Required value".to_string()),
        "{m:?}"
    );
}
