use serde_json::json;

use super::*;

fn schema(v: Value) -> Schema {
    Schema::parse(&v, &[]).unwrap()
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(FieldError::message).collect()
}

fn widget() -> Schema {
    schema(json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["revision"],
                "properties": {
                    "revision": {"type": "string", "pattern": "^[a-z0-9]+$", "maxLength": 8},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                    "phase": {"type": "string", "enum": ["A", "B"]},
                    "tags": {"type": "array", "x-kubernetes-list-type": "set",
                        "items": {"type": "string"}},
                    "ports": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"], "maxItems": 2,
                        "items": {"type": "object", "required": ["name"],
                            "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
                    "size": {"x-kubernetes-int-or-string": true},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "when": {"type": "string", "format": "date-time"},
                    "note": {"type": "string", "nullable": true}
                },
                "x-kubernetes-validations": [
                    {"rule": "self.replicas <= 3 || self.phase == 'B'",
                     "message": "more than 3 replicas need phase B", "fieldPath": ".replicas"},
                    {"rule": "self.revision == oldSelf.revision || !has(oldSelf.phase)",
                     "messageExpression": "'revision is fixed at ' + oldSelf.revision",
                     "reason": "FieldValueForbidden"}
                ]
            }
        }
    }))
}

#[test]
fn pruning_and_defaulting() {
    let s = widget();
    let mut obj = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"},
        "spec": {"revision": "abc", "unknown": 1, "free": {"any": {"thing": 1}}, "note": null,
            "ports": [{"name": "a", "extra": true}]},
        "junk": true});
    assert!(s.admit(&mut obj, None).is_empty());
    assert_eq!(
        obj,
        json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"},
            "spec": {"revision": "abc", "replicas": 1, "free": {"any": {"thing": 1}},
                "note": null, "ports": [{"name": "a"}]}})
    );
}

#[test]
fn value_errors_read_as_the_apiserver_writes_them() {
    let s = widget();
    let mut obj = json!({"spec": {"revision": "A B", "replicas": 9, "phase": "C",
        "when": "yesterday"}});
    assert_eq!(
        messages(&s.admit(&mut obj, None)),
        [
            "spec.phase: Unsupported value: \"C\": supported values: \"A\", \"B\"",
            "spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5",
            "spec.revision: Invalid value: \"A B\": spec.revision in body should match '^[a-z0-9]+$'",
            "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
    let mut obj = json!({"spec": {"revision": "abcdefghij", "size": true}});
    let errs = s.admit(&mut obj, None);
    assert_eq!(errs[0].kind.reason(), "FieldValueTooLong");
    assert_eq!(
        messages(&errs)[..2],
        [
            "spec.revision: Too long: may not be more than 8 bytes",
            "spec.size: Invalid value: \"boolean\": spec.size in body must be of type integer,string: \"boolean\"",
        ]
    );
    let mut obj = json!({"spec": {}});
    assert_eq!(
        messages(&s.admit(&mut obj, None))[0],
        "spec.revision: Required value"
    );
    let mut obj = json!({"spec": {"revision": "a", "replicas": "two"}});
    assert_eq!(
        messages(&s.admit(&mut obj, None))[0],
        "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
    );
}

#[test]
fn list_types_refuse_duplicates() {
    let s = widget();
    let mut obj = json!({"spec": {"revision": "a", "tags": ["x", "y", "x"],
        "ports": [{"name": "a"}, {"name": "a", "port": 2}]}});
    assert_eq!(
        messages(&s.admit(&mut obj, None)),
        [
            "spec.ports[1]: Duplicate value: {\"name\":\"a\"}",
            "spec.tags[2]: Duplicate value: \"x\"",
        ]
    );
    let mut obj = json!({"spec": {"revision": "a", "ports": [{"port": 1}]}});
    assert_eq!(
        messages(&s.admit(&mut obj, None))[0],
        "spec.ports[0].name: Required value"
    );
    let mut obj =
        json!({"spec": {"revision": "a", "ports": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
    assert_eq!(
        messages(&s.admit(&mut obj, None))[0],
        "spec.ports: Too many: 3: must have at most 2 items"
    );
}

#[test]
fn rules_and_transition_rules() {
    let s = widget();
    let mut obj = json!({"spec": {"revision": "a", "replicas": 4, "phase": "A"}});
    assert_eq!(
        messages(&s.admit(&mut obj, None)),
        ["spec.replicas: Invalid value: more than 3 replicas need phase B"]
    );
    let old = json!({"spec": {"revision": "a", "replicas": 1, "phase": "A"}});
    let mut obj = json!({"spec": {"revision": "b", "replicas": 1, "phase": "A"}});
    let errs = s.admit(&mut obj, Some(&old));
    assert_eq!(messages(&errs), ["spec: Forbidden: revision is fixed at a"]);
    assert_eq!(errs[0].kind.reason(), "FieldValueForbidden");
    // Without an old value, the transition rule is not evaluated.
    let mut obj = json!({"spec": {"revision": "b", "replicas": 1, "phase": "A"}});
    assert!(s.admit(&mut obj, None).is_empty());
}

#[test]
fn a_rule_that_fails_to_evaluate_is_an_error() {
    let s = schema(json!({"type": "object", "x-kubernetes-validations": [
        {"rule": "self.metadata.name.startsWith('ok-')"},
        {"rule": "self.spec.missing > 1"}]}));
    let mut obj = json!({"metadata": {"name": "bad"}, "spec": {}});
    let m = messages(&s.admit(&mut obj, None));
    assert_eq!(
        m[0],
        "<nil>: Invalid value: failed rule: self.metadata.name.startsWith('ok-')"
    );
    assert!(
        m[1].starts_with("<nil>: Invalid value: \"object\": "),
        "{m:?}"
    );
    assert!(
        m[1].ends_with(" evaluating rule: self.spec.missing > 1"),
        "{m:?}"
    );
}

#[test]
fn shapes_come_from_the_list_and_map_types() {
    let s = widget();
    assert_eq!(s.shape(&["spec", "tags"]), Some(Shape::SetList));
    assert_eq!(
        s.shape(&["spec", "ports"]),
        Some(Shape::MapList(vec!["name".into()]))
    );
    assert_eq!(s.shape(&["spec", "ports", "port"]), None);
    assert_eq!(s.shape(&["spec"]), None);
    assert_eq!(s.shape(&["spec", "nope"]), None);
}
