//! Field paths and sets as `metadata.managedFields` writes them (`fieldsV1`): `f:<name>` for a
//! field, `k:{"type":"Ready"}` for a list item by its map keys, `v:<json>` for an item of a set,
//! and `.` for a list item itself. A set is flat here (every owned path in full) and nested
//! only when encoded.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::shape::Shape;

/// One owned path: its elements from the object's root.
pub(crate) type FieldPath = Vec<String>;
/// The paths one manager owns.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Answers the shape of the list or map at a path of field names (list items add no step).
pub(crate) trait Shapes {
    /// The shape at `path`, when the schema or table knows it.
    fn shape(&self, path: &[&str]) -> Option<Shape>;
}

/// `metadata` fields the server sets: never owned by a manager.
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The encoded key of a list-map item (`k:{"type":"Ready"}`), keys in the schema's order.
fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// Every leaf path of `obj` (apiVersion, kind and the server's metadata left out).
pub(crate) fn fields_of(obj: &Value, shapes: &dyn Shapes) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(m) = obj else { return out };
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        if k == "metadata" {
            let Value::Object(meta) = v else { continue };
            for (mk, mv) in meta {
                if SYSTEM_META.contains(&mk.as_str()) {
                    continue;
                }
                walk(
                    mv,
                    &mut vec!["metadata", mk],
                    &mut vec![f("metadata"), f(mk)],
                    shapes,
                    &mut out,
                );
            }
            continue;
        }
        walk(v, &mut vec![k], &mut vec![f(k)], shapes, &mut out);
    }
    out
}

fn f(name: &str) -> String {
    format!("f:{name}")
}

fn walk<'a>(
    v: &'a Value,
    names: &mut Vec<&'a str>,
    at: &mut FieldPath,
    shapes: &dyn Shapes,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() && shapes.shape(names) != Some(Shape::AtomicMap) => {
            for (k, child) in m {
                names.push(k);
                at.push(f(k));
                walk(child, names, at, shapes, out);
                at.pop();
                names.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match shapes.shape(names) {
            Some(Shape::MapList(keys)) => {
                for item in items {
                    let Some(k) = item_key(item, &keys) else {
                        out.insert(at.clone());
                        return;
                    };
                    at.push(k);
                    let mut dot = at.clone();
                    dot.push(".".into());
                    out.insert(dot);
                    walk(item, names, at, shapes, out);
                    at.pop();
                }
            }
            Some(Shape::SetList) => {
                for item in items {
                    let mut p = at.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            _ => {
                out.insert(at.clone());
            }
        },
        _ => {
            out.insert(at.clone());
        }
    }
}

/// The value a path names in `obj` (for `.`: the list item itself).
pub(crate) fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if el == "." {
        return Some(cur);
    }
    if let Some(name) = el.strip_prefix("f:") {
        return cur.get(name);
    }
    let items = cur.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)));
    }
    let want: Value = serde_json::from_str(el.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == want)
}

/// Removes what `path` names from `obj` (a field, or a list item for `k:`/`v:` and `.`).
pub(crate) fn remove_at(obj: &mut Value, path: &[String]) {
    let path = match path.last().map(String::as_str) {
        Some(".") => &path[..path.len() - 1],
        _ => path,
    };
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent {
        let Some(next) = step_mut(cur, el) else {
            return;
        };
        cur = next;
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(name);
        }
        return;
    }
    let Some(target) = step(cur, last).cloned() else {
        return;
    };
    if let Some(items) = cur.as_array_mut()
        && let Some(i) = items.iter().position(|x| *x == target)
    {
        items.remove(i);
    }
}

fn step_mut<'a>(cur: &'a mut Value, el: &str) -> Option<&'a mut Value> {
    if let Some(name) = el.strip_prefix("f:") {
        return cur.get_mut(name);
    }
    let target = step(cur, el)?.clone();
    cur.as_array_mut()?.iter_mut().find(|x| **x == target)
}

/// The set as `fieldsV1` nests it.
pub(crate) fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for el in p {
            let next = cur
                .entry(el.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            let Value::Object(m) = next else { break };
            cur = m;
        }
    }
    Value::Object(root)
}

/// The flat set of an encoded `fieldsV1` (an empty object at a key is a leaf).
pub(crate) fn decode(v: &Value) -> FieldSet {
    fn go(v: &Value, at: &mut FieldPath, out: &mut FieldSet) {
        let Value::Object(m) = v else { return };
        for (k, child) in m {
            at.push(k.clone());
            if child.as_object().is_none_or(Map::is_empty) {
                out.insert(at.clone());
            } else {
                go(child, at, out);
            }
            at.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// A path as the server prints it in conflicts: `.spec.image`,
/// `.status.conditions[type="Ready"].status`.
pub(crate) fn display(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(n) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(n);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct NodeShapes;
    impl Shapes for NodeShapes {
        fn shape(&self, path: &[&str]) -> Option<Shape> {
            crate::shape::builtin("Node", path)
        }
    }

    fn p(els: &[&str]) -> FieldPath {
        els.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn leaves_keys_and_round_trip() {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "uid": "u", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"taints": [{"key": "t", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let set = fields_of(&node, &NodeShapes);
        let want: FieldSet = [
            p(&["f:metadata", "f:labels", "f:a"]),
            p(&["f:metadata", "f:finalizers", "v:\"x\""]),
            p(&["f:spec", "f:taints"]),
            p(&["f:status", "f:conditions", "k:{\"type\":\"Ready\"}", "."]),
            p(&[
                "f:status",
                "f:conditions",
                "k:{\"type\":\"Ready\"}",
                "f:status",
            ]),
            p(&[
                "f:status",
                "f:conditions",
                "k:{\"type\":\"Ready\"}",
                "f:type",
            ]),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want);
        assert_eq!(decode(&encode(&set)), set);
        let cond = p(&[
            "f:status",
            "f:conditions",
            "k:{\"type\":\"Ready\"}",
            "f:status",
        ]);
        assert_eq!(value_at(&node, &cond), Some(&json!("True")));
        assert_eq!(display(&cond), ".status.conditions[type=\"Ready\"].status");
    }

    #[test]
    fn removing_fields_and_items() {
        let mut o = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
            "status": {"conditions": [{"type": "A"}, {"type": "B"}]}});
        remove_at(&mut o, &p(&["f:metadata", "f:labels", "f:a"]));
        remove_at(&mut o, &p(&["f:metadata", "f:finalizers", "v:\"x\""]));
        remove_at(
            &mut o,
            &p(&["f:status", "f:conditions", "k:{\"type\":\"A\"}", "."]),
        );
        assert_eq!(
            o,
            json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]},
                "status": {"conditions": [{"type": "B"}]}})
        );
    }
}
