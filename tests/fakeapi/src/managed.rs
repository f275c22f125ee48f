//! Field ownership (`metadata.managedFields`) and server-side apply as the real server keeps
//! them, for the fields this project and kubectl touch.
//!
//! Every write is recorded under a manager: an update (create, PUT, JSON/merge/strategic
//! patch) gives its manager, operation `Update`, the fields it changed and takes them from
//! everyone else; a removed field leaves every set. An apply (operation `Apply`) owns exactly
//! the fields of its configuration: a field it applies with a value different from the live
//! one, owned by another manager, is a conflict (409 naming the manager and the path) unless
//! `force` takes it over; a field it owned before and now omits is removed from the object
//! when no other manager owns it. Entries are keyed by manager, operation and subresource.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::fieldset::{self, FieldPath, FieldSet, Shapes};

/// Who writes, for the ownership bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The handle's direct changes: `managedFields` left as they are.
    Untracked,
    /// An update by `manager` (to `subresource`, "" for the main resource).
    Update {
        /// The field manager.
        manager: String,
        /// "" or "status".
        subresource: String,
    },
    /// An apply: the object's `managedFields` were computed by [`apply`].
    Applied,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    set: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How the real server names the manager in a conflict.
    fn printed(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {} at {}", self.api_version, self.time));
        }
        s
    }
}

fn read(obj: &Value) -> Vec<Entry> {
    let Some(Value::Array(items)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    items
        .iter()
        .map(|e| Entry {
            manager: s(e, "manager"),
            operation: s(e, "operation"),
            api_version: s(e, "apiVersion"),
            time: s(e, "time"),
            subresource: s(e, "subresource"),
            set: e.get("fieldsV1").map(fieldset::decode).unwrap_or_default(),
        })
        .collect()
}

fn write(obj: &mut Value, entries: &[Entry]) {
    let items: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fieldset::encode(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    let Some(meta) = obj["metadata"].as_object_mut() else {
        return;
    };
    if items.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(items));
    }
}

fn is_item(p: &FieldPath) -> bool {
    p.last().is_some_and(|l| l == ".")
}

/// Records an update by `manager` that turned `old` (None on create) into `new`; `new`'s
/// `managedFields` start from `old`'s whatever the request sent.
pub(crate) fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    shapes: &dyn Shapes,
) {
    let mut entries = old.map(read).unwrap_or_default();
    let before = old
        .map(|o| fieldset::fields_of(o, shapes))
        .unwrap_or_default();
    let after = fieldset::fields_of(new, shapes);
    let changed: FieldSet = after
        .iter()
        .filter(|p| {
            let was = old.and_then(|o| fieldset::value_at(o, p));
            if is_item(p) {
                was.is_none()
            } else {
                was != fieldset::value_at(new, p)
            }
        })
        .cloned()
        .collect();
    let removed: FieldSet = before.difference(&after).cloned().collect();
    if !changed.is_empty() || !removed.is_empty() {
        for e in &mut entries {
            e.set
                .retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        if !changed.is_empty() {
            let now = crate::time::rfc3339_now();
            match entries
                .iter_mut()
                .find(|e| e.is(manager, "Update", subresource))
            {
                Some(e) => {
                    e.set.extend(changed);
                    e.time = now;
                }
                None => entries.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version: api_version.to_string(),
                    time: now,
                    subresource: subresource.to_string(),
                    set: changed,
                }),
            }
        }
    }
    write(new, &entries);
}

/// What an apply request asks.
pub(crate) struct Apply<'a> {
    /// The field manager.
    pub(crate) manager: &'a str,
    /// "" or "status".
    pub(crate) subresource: &'a str,
    /// Take over conflicting fields.
    pub(crate) force: bool,
    /// The type's `apiVersion`.
    pub(crate) api_version: &'a str,
    /// Whether a path of the configuration is written by this request (the status split).
    pub(crate) keeps: &'a dyn Fn(&FieldPath) -> bool,
}

/// Applies `config` over `live` (`{}` for an object being created), returning the object to
/// store with its `managedFields`, or the 409 the real server answers on conflicts.
pub(crate) fn apply(
    live: &Value,
    config: &Value,
    req: &Apply<'_>,
    shapes: &dyn Shapes,
) -> Result<Value, ApiError> {
    let mut entries = read(live);
    let cfg: FieldSet = fieldset::fields_of(config, shapes)
        .into_iter()
        .filter(|p| (req.keeps)(p))
        .collect();
    let mine = |e: &Entry| e.is(req.manager, "Apply", req.subresource);
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if mine(e) {
            continue;
        }
        for p in cfg.intersection(&e.set) {
            if !is_item(p) && fieldset::value_at(live, p) != fieldset::value_at(config, p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !req.force {
        return Err(conflict_error(&entries, &conflicts));
    }
    for (i, p) in &conflicts {
        entries[*i].set.remove(p);
    }
    let mut merged = live.clone();
    let mut body = config.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    crate::merge::merge(&mut merged, &body, shapes, crate::merge::Mode::Apply);
    let prev = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others: Vec<&Entry> = entries.iter().filter(|e| !mine(e)).collect();
    let owned_by_others = |p: &FieldPath| {
        if is_item(p) {
            let item = &p[..p.len() - 1];
            others
                .iter()
                .any(|e| e.set.iter().any(|q| q.starts_with(item)))
        } else {
            others.iter().any(|e| e.set.contains(p))
        }
    };
    let mut dropped: Vec<&FieldPath> = prev
        .difference(&cfg)
        .filter(|p| !owned_by_others(p))
        .collect();
    // Whole items first: their key fields must still be there to find them.
    dropped.sort_by_key(|p| (!is_item(p), p.len()));
    for p in dropped {
        fieldset::remove_at(&mut merged, p);
    }
    let now = crate::time::rfc3339_now();
    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => {
            if e.set != cfg {
                e.time = now;
            }
            e.set = cfg;
        }
        None => entries.push(Entry {
            manager: req.manager.to_string(),
            operation: "Apply".into(),
            api_version: req.api_version.to_string(),
            time: now,
            subresource: req.subresource.to_string(),
            set: cfg,
        }),
    }
    write(&mut merged, &entries);
    Ok(merged)
}

fn conflict_error(entries: &[Entry], conflicts: &[(usize, FieldPath)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, p)| {
            json!({"reason": "FieldManagerConflict",
                "message": format!("conflict with {}", entries[*i].printed()),
                "field": fieldset::display(p)})
        })
        .collect();
    let message = if let [(i, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            entries[*i].printed(),
            fieldset::display(p)
        )
    } else {
        let mut by: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (i, p) in conflicts {
            by.entry(entries[*i].printed())
                .or_default()
                .push(fieldset::display(p));
        }
        let lines: Vec<String> = by
            .iter()
            .flat_map(|(m, ps)| {
                std::iter::once(format!("conflicts with {m}:"))
                    .chain(ps.iter().map(|p| format!("- {p}")))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests;
