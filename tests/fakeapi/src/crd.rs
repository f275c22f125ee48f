//! CustomResourceDefinitions as objects: writing one (through the API or the handle) makes
//! each served version's `openAPIV3Schema`, `subresources.status` and `selectableFields`
//! those of the matching resource type, adding the type when the fake does not serve it yet;
//! deleting one deletes its custom resources and forgets the schemas (the type stays served,
//! leniently, so indices into the type table stay valid).

use serde_json::Value;

use crate::field::FieldError;
use crate::registry::{ResourceType, StatusMode};
use crate::schema::{self, Schema};
use crate::store::Store;

/// The CRD resource type (served by [`crate::default_resources`]).
pub(crate) fn resource_type() -> ResourceType {
    ResourceType::cluster(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
    )
}

/// Whether `t` is the CRD type.
pub(crate) fn is_crd(t: &ResourceType) -> bool {
    t.group == "apiextensions.k8s.io" && t.plural == "customresourcedefinitions"
}

fn versions(crd: &Value) -> impl Iterator<Item = (usize, &Value)> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// The errors in a CRD's schemas: a pattern that does not compile, a rule that does not parse.
pub(crate) fn validate(crd: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, v) in versions(crd) {
        let Some(open_api) = v.pointer("/schema/openAPIV3Schema") else {
            continue;
        };
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        match schema::Node::parse(open_api) {
            Ok(node) => errs.extend(schema::compile_errors(&node, &path)),
            Err(e) => errs.push(FieldError::invalid(&path, Value::Null, &e)),
        }
    }
    errs
}

impl Store {
    /// The schema of a type registered by a CRD (None: no CRD, lenient).
    pub(crate) fn schema(&self, ty: usize) -> Option<&Schema> {
        self.schemas.get(&ty)
    }

    /// The type `rt` names (group, version, plural), added when not served yet.
    pub(crate) fn ensure_type(&mut self, rt: ResourceType) -> usize {
        match self.type_index(&rt.group, &rt.version, &rt.plural) {
            Some(ty) => ty,
            None => {
                self.types.push(rt);
                self.types.len() - 1
            }
        }
    }

    /// Applies a stored CRD to the type table and the schemas.
    pub(crate) fn register_crd(&mut self, crd: &Value) {
        let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (group, kind, plural) = (
            s("/spec/group"),
            s("/spec/names/kind"),
            s("/spec/names/plural"),
        );
        let namespaced = s("/spec/scope") == "Namespaced";
        for (_, v) in versions(crd) {
            let version = v.get("name").and_then(Value::as_str).unwrap_or("");
            if v.get("served") == Some(&Value::Bool(false)) || version.is_empty() {
                continue;
            }
            let rt = if namespaced {
                ResourceType::namespaced(group, version, plural, kind)
            } else {
                ResourceType::cluster(group, version, plural, kind)
            };
            let ty = self.ensure_type(rt);
            let t = &mut self.types[ty];
            t.namespaced = namespaced;
            t.status = if v.pointer("/subresources/status").is_some() {
                StatusMode::Subresource {
                    keep_on_create: false,
                }
            } else {
                StatusMode::Plain
            };
            let selectable = v
                .get("selectableFields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match v.pointer("/schema/openAPIV3Schema") {
                Some(open_api) => match Schema::parse(open_api, &selectable) {
                    Ok(schema) => {
                        self.schemas.insert(ty, schema);
                    }
                    Err(e) => tracing::warn!(%e, "a CRD schema the fake cannot read"),
                },
                None => {
                    self.schemas.remove(&ty);
                }
            }
        }
    }

    /// Undoes [`Store::register_crd`] for a deleted CRD and deletes its objects.
    pub(crate) fn forget_crd(&mut self, crd: &Value) {
        let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (group, plural) = (
            s("/spec/group").to_string(),
            s("/spec/names/plural").to_string(),
        );
        let tys: Vec<usize> = (0..self.types.len())
            .filter(|&i| self.types[i].group == group && self.types[i].plural == plural)
            .collect();
        for ty in tys {
            self.schemas.remove(&ty);
            let keys: Vec<_> = self
                .objects()
                .keys()
                .filter(|k| k.0 == ty)
                .cloned()
                .collect();
            for k in keys {
                self.remove(&k);
            }
        }
    }
}

impl Store {}
