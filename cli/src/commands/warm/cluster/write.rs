//! How `coldctl warm` writes a ColdModel: only the fields the command line gives, so two
//! operators (or an operator and a GitOps controller) never undo each other's fields.
//!
//! - A new ColdModel is created by server-side apply of the given fields, under the user's
//!   field manager (`coldctl-<login>`, or `--field-manager`).
//! - An existing one gets a JSON merge patch of the fields whose values change, with the
//!   `resourceVersion` read as precondition: a write in between answers 409 and the command
//!   reads again and re-decides (at most [`ATTEMPTS`] times).
//! - A field another manager owns (its `metadata.managedFields`) is not taken over unless
//!   `--force-conflicts`, as `kubectl apply --server-side` does; the refusal names the
//!   manager, the field and both values.
//!
//! Why not a forced apply of the whole spec (what `warm` did before): with one manager for
//! every user, two operators at once lose one's change; a GitOps-owned ColdModel flip-flops;
//! and since apply removes the fields its manager omits, `warm --revision X` would have had to
//! resend every other field as read, taking them all over.

use std::collections::BTreeSet;

use anyhow::Context as _;
use coldstart_agent::api::ColdModel;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::{Applied, Changes};
use crate::report::{Conflict, NotFound};

/// Reads and writes before giving up on a ColdModel that keeps changing under us.
pub const ATTEMPTS: u32 = 5;

/// The field manager of a user who gave none: `coldctl-<login>` (`$USER`, `$LOGNAME`), so
/// two operators' fields are told apart; plain `coldctl` when no login is known.
pub fn default_field_manager() -> String {
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let login: String = login
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    if login.is_empty() {
        "coldctl".into()
    } else {
        format!("coldctl-{login}")
    }
}

/// The spec fields the command line sets, by their JSON names.
pub fn given_fields(c: &Changes) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(r) = &c.revision {
        m.insert("revision".into(), json!(r));
    }
    if !c.include.is_empty() {
        m.insert("include".into(), json!(c.include));
    }
    if !c.exclude.is_empty() {
        m.insert("exclude".into(), json!(c.exclude));
    }
    if let Some(t) = &c.token_secret {
        m.insert("tokenSecretRef".into(), json!(t));
    }
    if let Some(i) = &c.image {
        m.insert("image".into(), json!(i));
    }
    if let Some(p) = &c.pull_secret {
        m.insert("imagePullSecretRef".into(), json!(p));
    }
    if let Some(s) = &c.selector {
        m.insert("nodeSelector".into(), json!(s));
    }
    m
}

/// The RFC 7386 merge patch that turns `old` into `new` (keys gone from `new` become null).
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut p = Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) if ov.is_object() && v.is_object() => {
                        p.insert(k.clone(), merge_diff(ov, v));
                    }
                    _ => {
                        p.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                p.insert(k.clone(), Value::Null);
            }
            Value::Object(p)
        }
        _ => new.clone(),
    }
}

/// Managers other than `me` owning `spec.<field>` or anything under it.
pub fn owners_of(model: &ColdModel, field: &str, me: &str) -> Vec<String> {
    let key = format!("f:{field}");
    let mut out = BTreeSet::new();
    for e in model.metadata.managed_fields.iter().flatten() {
        let manager = e.manager.as_deref().unwrap_or_default();
        if manager == me {
            continue;
        }
        let owns = e
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.get("f:spec"))
            .is_some_and(|spec| spec.get(&key).is_some());
        if owns {
            out.insert(manager.to_string());
        }
    }
    out.into_iter().collect()
}

/// What `warm` writes: who, and whether it may take fields over.
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `--force-conflicts`.
    pub force: bool,
}

impl Writer<'_> {
    /// Creates the ColdModel `name` for `repo` or changes the given fields of the existing one.
    pub async fn write(
        &self,
        api: &Api<ColdModel>,
        name: &str,
        repo: Option<&str>,
        changes: &Changes,
    ) -> anyhow::Result<Applied> {
        let given = given_fields(changes);
        for _ in 0..ATTEMPTS {
            let current = api
                .get_opt(name)
                .await
                .with_context(|| format!("reading ColdModel {name}"))?;
            let Some(cur) = current else {
                let Some(repo) = repo else {
                    return Err(NotFound(format!(
                        "no ColdModel named {name}: give the Hub repo id (org/name) to create one"
                    ))
                    .into());
                };
                return self.create(api, name, repo, &given).await;
            };
            if let Some(given_repo) = repo
                && !cur.spec.repo.eq_ignore_ascii_case(given_repo)
            {
                anyhow::bail!(
                    "ColdModel {name} already keeps {} warm, not {given_repo}",
                    cur.spec.repo
                );
            }
            match self.update(api, name, &cur, &given).await? {
                Some(applied) => return Ok(applied),
                None => continue,
            }
        }
        anyhow::bail!(
            "ColdModel {name} changed under every one of {ATTEMPTS} attempts to write it; try again"
        )
    }

    async fn create(
        &self,
        api: &Api<ColdModel>,
        name: &str,
        repo: &str,
        given: &Map<String, Value>,
    ) -> anyhow::Result<Applied> {
        let mut spec = given.clone();
        spec.insert("repo".into(), json!(repo));
        let body = json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
            "metadata": {"name": name}, "spec": spec});
        let mut params = PatchParams::apply(self.manager);
        params.force = self.force;
        let done = api
            .patch(name, &params, &Patch::Apply(&body))
            .await
            .map_err(|e| conflict_or(e, name))
            .with_context(|| format!("creating ColdModel {name}"))?;
        Ok(Applied {
            created: true,
            changed: true,
            spec: done.spec,
        })
    }

    /// The merge patch of the changed fields, or None when the object changed meanwhile.
    async fn update(
        &self,
        api: &Api<ColdModel>,
        name: &str,
        cur: &ColdModel,
        given: &Map<String, Value>,
    ) -> anyhow::Result<Option<Applied>> {
        let old = serde_json::to_value(&cur.spec).context("encoding the current spec")?;
        let mut new = old.clone();
        let mut refused = Vec::new();
        for (field, value) in given {
            if old.get(field) == Some(value) {
                continue;
            }
            let owners = owners_of(cur, field, self.manager);
            if !owners.is_empty() && !self.force {
                let now = old.get(field).map_or("unset".into(), Value::to_string);
                refused.push(format!(
                    "spec.{field} is managed by {} (now {now}; this command sets {value})",
                    owners
                        .iter()
                        .map(|o| format!("{o:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            new[field] = value.clone();
        }
        if !refused.is_empty() {
            return Err(Conflict(format!(
                "ColdModel {name} not changed: {}; pass --force-conflicts to take {} over \
                 (a controller that owns it may set it back)",
                refused.join("; "),
                if refused.len() == 1 { "it" } else { "them" }
            ))
            .into());
        }
        let patch = merge_diff(&old, &new);
        if patch.as_object().is_none_or(Map::is_empty) {
            return Ok(Some(Applied {
                created: false,
                changed: false,
                spec: cur.spec.clone(),
            }));
        }
        let body = json!({"metadata": {"resourceVersion": cur.metadata.resource_version},
            "spec": patch});
        let params = PatchParams {
            field_manager: Some(self.manager.to_string()),
            ..PatchParams::default()
        };
        match api.patch(name, &params, &Patch::Merge(&body)).await {
            Ok(done) => Ok(Some(Applied {
                created: false,
                changed: cur.spec != done.spec,
                spec: done.spec,
            })),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e).with_context(|| format!("changing ColdModel {name}")),
        }
    }
}

/// A 409 from apply as a [`Conflict`] (its message names the manager and the field).
fn conflict_or(e: kube::Error, name: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 409 => Conflict(format!(
            "ColdModel {name} not created: {}; pass --force-conflicts to take the fields over",
            s.message
        ))
        .into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests;
