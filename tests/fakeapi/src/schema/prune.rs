//! What the apiserver does to a custom resource before validating it, after
//! `apiextensions-apiserver/pkg/apiserver/schema/{defaulting,pruning}`: a `null` where the
//! schema is not nullable and has no default goes; `default`s fill absent fields (and
//! non-nullable nulls) of objects that exist; fields the schema does not name go, unless
//! `x-kubernetes-preserve-unknown-fields`. `apiVersion`, `kind` and `metadata` stay at the
//! root and in embedded resources.

use serde_json::Value;

use super::Node;

/// `PruneNonNullableNullsWithoutDefaults`.
pub(crate) fn drop_nulls(x: &mut Value, s: &Node) {
    match x {
        Value::Object(m) => {
            m.retain(|k, v| {
                !(v.is_null()
                    && s.field(k)
                        .is_some_and(|f| !f.nullable && f.default.is_none()))
            });
            for (k, v) in m.iter_mut() {
                if let Some(f) = s.field(k) {
                    drop_nulls(v, f);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for v in a {
                    drop_nulls(v, items);
                }
            }
        }
        _ => {}
    }
}

fn non_nullable_null(v: &Value, s: &Node) -> bool {
    v.is_null() && !s.nullable && s.default.is_some()
}

/// `structuraldefaulting.Default`.
pub(crate) fn default(x: &mut Value, s: &Node) {
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                if let Some(d) = &prop.default
                    && m.get(k).is_none_or(|v| non_nullable_null(v, prop))
                {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    default(v, prop);
                } else if let Some(add) = s.additional.as_deref() {
                    if non_nullable_null(v, add)
                        && let Some(d) = &add.default
                    {
                        *v = d.clone();
                    }
                    default(v, add);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for v in a {
                    if non_nullable_null(v, items)
                        && let Some(d) = &items.default
                    {
                        *v = d.clone();
                    }
                    default(v, items);
                }
            }
        }
        _ => {}
    }
}

/// Drops the fields the schema does not know (`root`: the object itself, whose `apiVersion`,
/// `kind` and `metadata` are kept).
pub(crate) fn prune(x: &mut Value, s: &Node, root: bool) {
    match x {
        Value::Object(m) => {
            let keeps_meta = root || s.embedded;
            m.retain(|k, _| {
                s.preserve_unknown
                    || s.field(k).is_some()
                    || (keeps_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            });
            for (k, v) in m.iter_mut() {
                if keeps_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(f) = s.field(k) {
                    prune(v, f, false);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for v in a {
                    prune(v, items, false);
                }
            }
        }
        _ => {}
    }
}
