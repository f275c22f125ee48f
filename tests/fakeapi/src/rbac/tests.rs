use serde_json::json;

use super::*;

fn attrs<'a>(user: &'a UserInfo, verb: &'a str, resource: &'a str, sub: &'a str) -> Attributes<'a> {
    Attributes {
        user,
        verb,
        group: "",
        resource,
        subresource: sub,
        name: "gpu-1",
        namespace: "",
    }
}

#[test]
fn rules_match_verbs_resources_subresources_and_names() {
    let u = UserInfo::user("alice");
    let rule = json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]});
    assert!(rule_allows(&rule, &attrs(&u, "patch", "nodes", "")));
    assert!(!rule_allows(&rule, &attrs(&u, "delete", "nodes", "")));
    assert!(
        !rule_allows(&rule, &attrs(&u, "patch", "nodes", "status")),
        "a subresource is named"
    );
    let sub = json!({"apiGroups": [""], "resources": ["*/status"], "verbs": ["*"]});
    assert!(rule_allows(&sub, &attrs(&u, "patch", "nodes", "status")));
    assert!(!rule_allows(&sub, &attrs(&u, "patch", "nodes", "")));
    let named = json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"],
        "resourceNames": ["gpu-2"]});
    assert!(!rule_allows(&named, &attrs(&u, "get", "nodes", "")));
    let other_group = json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]});
    assert!(!rule_allows(&other_group, &attrs(&u, "get", "nodes", "")));
}

#[test]
fn the_refusal_reads_like_the_apiservers() {
    let u = UserInfo::user("bob");
    let mut a = attrs(&u, "patch", "nodes", "status");
    assert_eq!(
        a.refusal(),
        r#"User "bob" cannot patch resource "nodes/status" in API group "" at the cluster scope"#
    );
    a.namespace = "default";
    a.subresource = "";
    assert_eq!(
        a.refusal(),
        r#"User "bob" cannot patch resource "nodes" in API group "" in the namespace "default""#
    );
}

#[test]
fn selectors_match_labels_and_expressions() {
    let labels = json!({"a": "1", "b": "2"});
    assert!(selects(&json!({}), &labels));
    assert!(selects(&json!({"matchLabels": {"a": "1"}}), &labels));
    assert!(!selects(&json!({"matchLabels": {"a": "2"}}), &labels));
    let e = |op: &str| json!({"matchExpressions": [{"key": "b", "operator": op, "values": ["2"]}]});
    assert!(selects(&e("In"), &labels));
    assert!(!selects(&e("NotIn"), &labels));
    assert!(selects(&e("Exists"), &labels));
    assert!(!selects(&e("DoesNotExist"), &labels));
    assert!(
        !selects(&e("Bogus"), &labels),
        "an unknown operator selects nothing"
    );
}
