//! Merge patch (RFC 7386), a simplified strategic merge patch and server-side apply merging.
//!
//! Strategic merge and apply share one rule set: maps merge recursively, `null` removes a key,
//! lists whose field name has merge keys (by default `conditions` and `addresses` by `type`;
//! `containers`, `initContainers`, `env`, `volumes`, `volumeMounts` by `name`;
//! `ownerReferences` by `uid`) merge item by item, and every other list is replaced whole. The
//! real server reads this from the type's schema per path; we match on the field name only.
//! `spec.taints` of a Node is atomic on the real server (no patch strategy, `listType=atomic`),
//! so it is replaced here too. Strategic merge also honours `$patch: delete` in list items and
//! drops other `$` directives. Apply keeps no field-manager bookkeeping: it never removes a
//! field that a manager stopped sending, and never reports conflicts between managers.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Merge keys per list field name.
pub(crate) type ListKeys = HashMap<String, Vec<String>>;

/// The default merge keys.
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
    m.insert("ownerReferences".to_string(), vec!["uid".to_string()]);
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
pub(crate) fn merge(doc: &mut Value, patch: &Value, keys: &ListKeys, mode: Mode) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                d.remove(k);
            }
            Value::Array(items) => match (keys.get(k), d.get_mut(k)) {
                (Some(mk), Some(Value::Array(cur))) => merge_list(cur, items, mk, keys, mode),
                _ => {
                    let mut fresh = Vec::new();
                    match keys.get(k) {
                        Some(mk) => merge_list(&mut fresh, items, mk, keys, mode),
                        None => fresh = items.clone(),
                    }
                    d.insert(k.clone(), Value::Array(fresh));
                }
            },
            Value::Object(_) => merge(
                d.entry(k.clone()).or_insert(Value::Object(Map::new())),
                v,
                keys,
                mode,
            ),
            other => {
                d.insert(k.clone(), other.clone());
            }
        }
    }
}

fn key_of<'a>(item: &'a Value, mk: &[String]) -> Option<Vec<&'a Value>> {
    mk.iter().map(|k| item.get(k)).collect()
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], mk: &[String], keys: &ListKeys, mode: Mode) {
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
            (Some(i), false) => merge(&mut cur[i], item, keys, mode),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                merge(&mut fresh, item, keys, mode);
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
        let keys = default_list_keys();
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
        let keys = default_list_keys();
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
