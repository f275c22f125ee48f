//! Merge patch (RFC 7386), a simplified strategic merge patch and server-side apply merging.
//!
//! Strategic merge and apply share one rule set, driven by the type's [`Shapes`] (the CRD's
//! schema, or the table of built-in list types in `shape.rs`): maps merge recursively unless
//! atomic, `null` removes a key, list-maps merge item by item by their keys, sets merge by
//! value, and every other list is replaced whole. Types with neither a schema nor a table row
//! fall back to merge keys by field name ([`default_list_keys`], `FakeApi::merge_list_by`).
//! Strategic merge also honours `$patch: delete` in list items and drops other `$` directives.
//! Field ownership (what apply removes, conflicts) is `managed.rs`'s.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::fieldset::Shapes;
use crate::shape::Shape;

/// Merge keys per list field name.
pub(crate) type ListKeys = HashMap<String, Vec<String>>;

/// The default merge keys by field name, for types without a schema.
pub(crate) fn default_list_keys() -> ListKeys {
    let mut m = ListKeys::new();
    for f in ["conditions", "addresses"] {
        m.insert(f.to_string(), vec!["type".to_string()]);
    }
    for f in [
        "containers",
        "initContainers",
        "env",
        "volumes",
        "volumeMounts",
    ] {
        m.insert(f.to_string(), vec!["name".to_string()]);
    }
    m
}

/// How list items and directives are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Strategic merge patch: `$patch: delete` items, `$` keys dropped.
    Strategic,
    /// Server-side apply.
    Apply,
}

/// Merges `patch` into `doc` by the strategic/apply rules.
pub(crate) fn merge(doc: &mut Value, patch: &Value, shapes: &dyn Shapes, mode: Mode) {
    merge_at(doc, patch, shapes, mode, &mut Vec::new());
}

fn merge_at(
    doc: &mut Value,
    patch: &Value,
    shapes: &dyn Shapes,
    mode: Mode,
    path: &mut Vec<String>,
) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    if !path.is_empty() && shapes.shape(&names) == Some(Shape::AtomicMap) {
        *doc = patch.clone();
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                d.remove(k);
            }
            Value::Array(items) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                let shape = shapes.shape(&names);
                let cur = match d.get_mut(k) {
                    Some(Value::Array(cur)) => cur,
                    _ => {
                        d.insert(k.clone(), Value::Array(Vec::new()));
                        match d.get_mut(k) {
                            Some(Value::Array(cur)) => cur,
                            _ => unreachable!("just inserted an array"),
                        }
                    }
                };
                match shape {
                    Some(Shape::MapList(mk)) => merge_list(cur, items, &mk, shapes, mode, path),
                    Some(Shape::SetList) => {
                        for item in items {
                            if !cur.contains(item) {
                                cur.push(item.clone());
                            }
                        }
                    }
                    _ => *cur = items.clone(),
                }
            }
            Value::Object(_) => merge_at(
                d.entry(k.clone()).or_insert(Value::Object(Map::new())),
                v,
                shapes,
                mode,
                path,
            ),
            other => {
                d.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
}

fn key_of<'a>(item: &'a Value, mk: &[String]) -> Option<Vec<&'a Value>> {
    mk.iter().map(|k| item.get(k)).collect()
}

fn merge_list(
    cur: &mut Vec<Value>,
    items: &[Value],
    mk: &[String],
    shapes: &dyn Shapes,
    mode: Mode,
    path: &mut Vec<String>,
) {
    for item in items {
        let delete =
            mode == Mode::Strategic && item.get("$patch").and_then(Value::as_str) == Some("delete");
        let Some(key) = key_of(item, mk) else {
            if !delete {
                cur.push(item.clone());
            }
            continue;
        };
        let pos = cur
            .iter()
            .position(|c| key_of(c, mk).is_some_and(|ck| ck == key));
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_at(&mut cur[i], item, shapes, mode, path),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                merge_at(&mut fresh, item, shapes, mode, path);
                cur.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_merge_by_type_and_taints_replace() {
        let keys = crate::shape::TypeShapes::test("Node");
        let mut doc = json!({
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "X", "status": "False", "reason": "r"}
            ]}
        });
        let patch = json!({
            "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "X", "status": "True"}, {"type": "Y", "status": "True"}]}
        });
        merge(&mut doc, &patch, &keys, Mode::Apply);
        assert_eq!(
            doc["spec"]["taints"],
            json!([{"key": "b", "effect": "NoSchedule"}])
        );
        assert_eq!(
            doc["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "True"},
                {"type": "X", "status": "True", "reason": "r"},
                {"type": "Y", "status": "True"}
            ])
        );
    }

    #[test]
    fn strategic_delete_directive_and_null() {
        let keys = crate::shape::TypeShapes::test("Node");
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "status": {"conditions": [{"type": "A"}, {"type": "B"}]}});
        let patch = json!({"metadata": {"labels": {"a": null}},
            "status": {"conditions": [{"type": "A", "$patch": "delete"}],
                       "$setElementOrder/conditions": [{"type": "B"}]}});
        merge(&mut doc, &patch, &keys, Mode::Strategic);
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b": "2"}}, "status": {"conditions": [{"type": "B"}]}})
        );
    }
}
