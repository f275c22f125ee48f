//! Garbage collection as the controller-manager's collector does it, but at once: an object
//! whose every `ownerReferences` owner is gone (no object of that apiVersion and kind with that
//! name, in the dependent's namespace for a namespaced owner, and that uid) is deleted, and so
//! on down; an object that keeps a live owner loses the references to gone ones. It runs
//! after every delete and every write, so a reference dangling from the start (an owner that
//! never existed) is collected too. An owner whose kind the fake does not serve counts as
//! present (the real collector cannot resolve it either and leaves the dependent alone).
//!
//! `DeleteOptions.propagationPolicy`: `Background` (default) deletes the owner, then the
//! dependents; `Foreground` marks the owner (`deletionTimestamp`, the `foregroundDeletion`
//! finalizer), deletes the dependents, then the owner; `Orphan` removes the owner's
//! references from its dependents, then deletes it.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::store::{Key, Store};

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    /// From a query parameter or a DeleteOptions body (None: the default).
    pub(crate) fn parse(s: Option<&str>) -> Result<Propagation, ApiError> {
        match s.unwrap_or("") {
            "" | "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(crate::field::invalid(
                "",
                "DeleteOptions",
                "",
                &[crate::field::FieldError::not_supported(
                    "propagationPolicy",
                    json!(other),
                    &["Foreground".into(), "Background".into(), "Orphan".into()],
                )],
            )),
        }
    }
}

fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether the owner a reference names (from the dependent at `dep`) exists.
fn owner_present(store: &Store, dep: &Key, r: &Value) -> bool {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
    let Some(ty) = store
        .types
        .iter()
        .position(|t| t.api_version() == s("apiVersion") && t.kind == s("kind"))
    else {
        return true;
    };
    let ns = if store.types[ty].namespaced {
        if dep.1.is_empty() {
            return true;
        }
        dep.1.clone()
    } else {
        String::new()
    };
    store
        .objects()
        .get(&(ty, ns, s("name").to_string()))
        .is_some_and(|o| uid(o) == s("uid"))
}

fn set_refs(obj: &mut Value, keep: Vec<Value>) {
    if keep.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("ownerReferences");
        }
    } else {
        obj["metadata"]["ownerReferences"] = Value::Array(keep);
    }
}

/// Collects until nothing changes.
pub(crate) fn sweep(store: &mut Store) {
    loop {
        let mut changed = false;
        let keys: Vec<Key> = store.objects().keys().cloned().collect();
        for key in keys {
            let Some(obj) = store.objects().get(&key).cloned() else {
                continue;
            };
            let rs = refs(&obj);
            if rs.is_empty() {
                continue;
            }
            let (solid, dangling): (Vec<Value>, Vec<Value>) =
                rs.into_iter().partition(|r| owner_present(store, &key, r));
            if dangling.is_empty() {
                continue;
            }
            changed = true;
            if solid.is_empty() {
                store.remove(&key);
            } else {
                let mut o = obj;
                set_refs(&mut o, solid);
                store.replace(&key, o);
            }
        }
        if !changed {
            return;
        }
    }
}

/// The objects with a reference to `owner_uid`.
fn dependents(store: &Store, owner_uid: &str) -> Vec<Key> {
    store
        .objects()
        .iter()
        .filter(|(_, o)| refs(o).iter().any(|r| r["uid"] == owner_uid))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Removes the references to `owner_uid` from `dep`.
fn orphan(store: &mut Store, dep: &Key, owner_uid: &str) {
    if let Some(mut o) = store.objects().get(dep).cloned() {
        let keep = refs(&o)
            .into_iter()
            .filter(|r| r["uid"] != owner_uid)
            .collect();
        set_refs(&mut o, keep);
        store.replace(dep, o);
    }
}

fn foreground(store: &mut Store, key: &Key) -> Option<Value> {
    let mut obj = store.objects().get(key).cloned()?;
    let owner_uid = uid(&obj).to_string();
    obj["metadata"]["deletionTimestamp"] = json!(crate::time::rfc3339_now());
    let mut fins: Vec<Value> = obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    fins.push(json!("foregroundDeletion"));
    obj["metadata"]["finalizers"] = Value::Array(fins);
    store.replace(key, obj);
    for dep in dependents(store, &owner_uid) {
        let others = store.objects().get(&dep).map(refs).unwrap_or_default();
        let live_other = others
            .iter()
            .any(|r| r["uid"] != owner_uid.as_str() && owner_present(store, &dep, r));
        if live_other {
            orphan(store, &dep, &owner_uid);
        } else {
            foreground(store, &dep);
        }
    }
    store.remove(key)
}

/// Deletes the object at `key` with `policy`; answers its last state.
pub(crate) fn delete(store: &mut Store, key: &Key, policy: Propagation) -> Option<Value> {
    let owner_uid = uid(store.objects().get(key)?).to_string();
    match policy {
        Propagation::Background => store.remove(key),
        Propagation::Orphan => {
            for dep in dependents(store, &owner_uid) {
                orphan(store, &dep, &owner_uid);
            }
            store.remove(key)
        }
        Propagation::Foreground => foreground(store, key),
    }
}
