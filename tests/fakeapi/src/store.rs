//! The object store: JSON objects keyed by resource type, namespace and name, one global
//! resourceVersion counter, and a bounded history of changes that watches resume from.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::managed::{self, Owner};
use crate::merge::{self, ListKeys};
use crate::registry::{ResourceType, StatusMode};
use crate::selector::Selector;

/// Admission for a write: the store, the stored object (None on create) and the object the
/// write would store (None on delete); an error refuses the write.
pub(crate) type Check<'a> =
    &'a dyn Fn(&Store, Option<&Value>, Option<&Value>) -> Result<(), ApiError>;

/// A [`Check`] that admits everything (the handle's direct changes).
pub(crate) fn admit_all(_: &Store, _: Option<&Value>, _: Option<&Value>) -> Result<(), ApiError> {
    Ok(())
}

/// `(type index, namespace or "", name)`.
pub(crate) type Key = (usize, String, String);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

/// One change in the history.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) ty: usize,
    pub(crate) change: Change,
    /// The object before a modification (to see selector transitions).
    pub(crate) old: Option<Value>,
    /// The object after the change (for a deletion: the last state, at the deletion's version).
    pub(crate) object: Value,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main resource (keeps `.status` when the type has a status subresource).
    Main,
    /// The `status` subresource (changes only `.status`).
    Status,
    /// Everything: the library's direct modifications "as another manager".
    All,
}

pub(crate) struct Store {
    pub(crate) types: Vec<ResourceType>,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Event>,
    history_cap: usize,
    /// Watches may resume from any version >= floor.
    floor: u64,
    next_uid: u64,
    pub(crate) list_keys: ListKeys,
    notify: watch::Sender<u64>,
    /// The schemas CRDs give their types (see `crd.rs`).
    pub(crate) schemas: BTreeMap<usize, crate::schema::Schema>,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The object without `metadata` and `status`: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

impl Store {
    pub(crate) fn new(types: Vec<ResourceType>, history_cap: usize) -> Self {
        Store {
            types,
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            floor: 1,
            next_uid: 1,
            list_keys: merge::default_list_keys(),
            notify: watch::channel(1).0,
            schemas: BTreeMap::new(),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Forgets the history: watches from any earlier version get 410 Gone.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// Events newer than `rv`.
    pub(crate) fn events_after(&self, rv: u64) -> impl Iterator<Item = &Event> {
        self.history.iter().filter(move |e| e.rv > rv)
    }

    /// The type a request path or a handle call names.
    pub(crate) fn type_index(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The type named `plural` or `plural.group` (the first registered wins).
    pub(crate) fn type_named(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.is_named(name))
    }

    /// The type of an object by its `apiVersion` and `kind`.
    pub(crate) fn type_of(&self, obj: &Value) -> Option<usize> {
        let av = obj.get("apiVersion")?.as_str()?;
        let kind = obj.get("kind")?.as_str()?;
        self.types
            .iter()
            .position(|t| t.api_version() == av && t.kind == kind)
    }

    /// The merge and ownership shapes of `ty`.
    pub(crate) fn shapes(&self, ty: usize) -> crate::shape::TypeShapes<'_> {
        crate::shape::TypeShapes {
            kind: &self.types[ty].kind,
            schema: self.schema(ty),
            by_name: &self.list_keys,
        }
    }

    pub(crate) fn get(&self, ty: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(ty, ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.types[ty], name))
    }

    /// Objects of `ty` (in `ns` when given) matching both selectors, by namespace and name.
    pub(crate) fn list(
        &self,
        ty: usize,
        ns: Option<&str>,
        labels: &Selector,
        fields: &Selector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((t, n, _), o)| {
                *t == ty && ns.is_none_or(|ns| ns == n) && labels.matches(o) && fields.matches(o)
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every stored object, by type, namespace and name.
    pub(crate) fn objects(&self) -> &BTreeMap<Key, Value> {
        &self.objects
    }

    /// Deletes an object without admission or garbage collection (the collector's own
    /// deletes); records the event. Answers its last state.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<Value> {
        let stored = self.objects.remove(key)?;
        let mut obj = stored.clone();
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(Event {
            rv,
            ty: key.0,
            change: Change::Deleted,
            old: Some(stored),
            object: obj.clone(),
        });
        Some(obj)
    }

    /// Stores a changed object without admission (the collector's own updates).
    pub(crate) fn replace(&mut self, key: &Key, mut obj: Value) {
        let Some(old) = self.objects.get(key).cloned() else {
            return;
        };
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.record(Event {
            rv,
            ty: key.0,
            change: Change::Modified,
            old: Some(old),
            object: obj,
        });
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, ev: Event) {
        let rv = ev.rv;
        self.history.push_back(ev);
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        self.notify.send_replace(rv);
    }

    /// Creates `obj` in `ns` ("" for cluster-scoped types).
    pub(crate) fn create(&mut self, ty: usize, ns: &str, obj: Value) -> Result<Value, ApiError> {
        self.create_checked(ty, ns, obj, &Owner::Untracked, &admit_all)
    }

    /// [`Store::create`] by `owner`, admitted by `check` first.
    pub(crate) fn create_checked(
        &mut self,
        ty: usize,
        ns: &str,
        mut obj: Value,
        owner: &Owner,
        check: Check<'_>,
    ) -> Result<Value, ApiError> {
        let t = self.types[ty].clone();
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body is not a JSON object".into(),
            ));
        }
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        if let Some(bns) = meta_str(&obj, "namespace").filter(|b| !b.is_empty())
            && bns != ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({bns}) does not match the namespace sent on the request ({ns})"
            )));
        }
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => format!("{prefix}{}", suffix(self.next_uid)),
                None => {
                    return Err(ApiError::invalid(format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        t.kind
                    )));
                }
            },
        };
        let key = (ty, ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&t, &name));
        }
        if let StatusMode::Subresource {
            keep_on_create: false,
        } = t.status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        // Name and namespace come from the request before validation, as on the real server.
        obj["metadata"]["name"] = json!(name);
        if t.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        crate::writes::admit(self, ty, None, &mut obj)?;
        if let Owner::Update {
            manager,
            subresource,
        } = owner
        {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            let shapes = self.shapes(ty);
            managed::track_update(
                None,
                &mut obj,
                manager,
                subresource,
                &t.api_version(),
                &shapes,
            );
        }
        check(self, None, Some(&obj))?;
        let rv = self.bump();
        let uid = self.next_uid;
        self.next_uid += 1;
        obj["apiVersion"] = json!(t.api_version());
        obj["kind"] = json!(t.kind);
        let m = &mut obj["metadata"];
        m["name"] = json!(name);
        if t.namespaced {
            m["namespace"] = json!(ns);
        } else if let Some(mm) = m.as_object_mut() {
            mm.remove("namespace");
        }
        m["uid"] = json!(format!("00000000-0000-4000-8000-{uid:012x}"));
        m["resourceVersion"] = json!(rv.to_string());
        m["creationTimestamp"] = json!(crate::time::rfc3339_now());
        m["generation"] = json!(1);
        self.objects.insert(key, obj.clone());
        self.record(Event {
            rv,
            ty,
            change: Change::Added,
            old: None,
            object: obj.clone(),
        });
        crate::writes::settle(self, ty, &obj);
        Ok(obj)
    }

    /// Replaces the stored object with `new` (a PUT, or the result of a patch), honouring the
    /// status subresource and a `metadata.resourceVersion` precondition. A write that changes
    /// nothing keeps the version and records no event, as the real server does.
    pub(crate) fn update(
        &mut self,
        ty: usize,
        ns: &str,
        name: &str,
        new: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        self.update_checked(ty, ns, name, new, part, &Owner::Untracked, &admit_all)
    }

    /// [`Store::update`] by `owner`, admitted by `check` (even when nothing changes, as the
    /// apiserver admits a no-op write).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_checked(
        &mut self,
        ty: usize,
        ns: &str,
        name: &str,
        new: Value,
        part: Part,
        owner: &Owner,
        check: Check<'_>,
    ) -> Result<Value, ApiError> {
        let t = self.types[ty].clone();
        let key = (ty, ns.to_string(), name.to_string());
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t, name))?;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body is not a JSON object".into(),
            ));
        }
        if let Some(n) = meta_str(&new, "name").filter(|n| !n.is_empty())
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let want_rv = meta_str(&new, "resourceVersion").unwrap_or("");
        if !want_rv.is_empty() && Some(want_rv) != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(&t, name));
        }
        let mut result = match (part, t.has_status()) {
            (Part::Status, _) => {
                let mut r = old.clone();
                match new.get("status") {
                    Some(s) => r["status"] = s.clone(),
                    None => {
                        if let Some(m) = r.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                r
            }
            (Part::Main, true) => {
                let mut r = new.clone();
                if let Some(m) = r.as_object_mut() {
                    match old.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
                r
            }
            _ => new.clone(),
        };
        // System fields come from the stored object.
        result["apiVersion"] = json!(t.api_version());
        result["kind"] = json!(t.kind);
        if result.get("metadata").is_none_or(|m| !m.is_object()) {
            result["metadata"] = json!({});
        }
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match old["metadata"].get(f) {
                Some(v) => result["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = result["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        crate::writes::admit(self, ty, Some(&old), &mut result)?;
        if *owner == Owner::Applied {
            // The apply computed them on the whole object; a status write keeps only `.status`
            // of it above, so they are carried over here.
            match new.pointer("/metadata/managedFields") {
                Some(v) => result["metadata"]["managedFields"] = v.clone(),
                None => {
                    if let Some(m) = result["metadata"].as_object_mut() {
                        m.remove("managedFields");
                    }
                }
            }
        }
        if let Owner::Update {
            manager,
            subresource,
        } = owner
        {
            match old["metadata"].get("managedFields") {
                Some(v) => result["metadata"]["managedFields"] = v.clone(),
                None => {
                    if let Some(m) = result["metadata"].as_object_mut() {
                        m.remove("managedFields");
                    }
                }
            }
            let shapes = self.shapes(ty);
            managed::track_update(
                Some(&old),
                &mut result,
                manager,
                subresource,
                &t.api_version(),
                &shapes,
            );
        }
        check(self, Some(&old), Some(&result))?;
        if result == old {
            return Ok(old);
        }
        if spec_part(&result) != spec_part(&old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            result["metadata"]["generation"] = json!(g + 1);
        }
        let rv = self.bump();
        result["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key, result.clone());
        self.record(Event {
            rv,
            ty,
            change: Change::Modified,
            old: Some(old),
            object: result.clone(),
        });
        crate::writes::settle(self, ty, &result);
        Ok(result)
    }

    /// Deletes an object; answers its last state at the deletion's version.
    pub(crate) fn delete(&mut self, ty: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.delete_checked(ty, ns, name, &admit_all)
    }

    /// [`Store::delete`], admitted by `check` first.
    pub(crate) fn delete_checked(
        &mut self,
        ty: usize,
        ns: &str,
        name: &str,
        check: Check<'_>,
    ) -> Result<Value, ApiError> {
        self.delete_with(ty, ns, name, crate::gc::Propagation::default(), check)
    }

    /// [`Store::delete_checked`] with a propagation policy for the dependents (see `gc.rs`).
    pub(crate) fn delete_with(
        &mut self,
        ty: usize,
        ns: &str,
        name: &str,
        policy: crate::gc::Propagation,
        check: Check<'_>,
    ) -> Result<Value, ApiError> {
        let key = (ty, ns.to_string(), name.to_string());
        let stored = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(&self.types[ty], name))?;
        check(self, Some(stored), None)?;
        let obj = crate::gc::delete(self, &key, policy)
            .ok_or_else(|| ApiError::not_found(&self.types[ty], name))?;
        crate::writes::settle_delete(self, ty, &obj);
        Ok(obj)
    }
}

/// Five lowercase alphanumerics for `generateName`, from a counter.
fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}
