//! How the real API server treats a list or map when it merges patches and tracks field
//! ownership: the `x-kubernetes-list-type` / `-map-keys` / `-map-type` of the type's schema.
//!
//! Custom resources take these from their CRD's `openAPIV3Schema` (see `schema.rs`). For the
//! built-in kinds this project touches, [`builtin`] is a small table copied by hand from the
//! `+listType`, `+listMapKey` and `+structType` markers in the Go types of `k8s.io/api`
//! (`core/v1/types.go`: `NodeSpec.Taints`, `NodeStatus.Conditions`, `NodeStatus.Addresses`,
//! `ObjectReference`; `events/v1/types.go`: `Event.Regarding`, `Event.Related`;
//! `apimachinery/pkg/apis/meta/v1/types.go`: `ObjectMeta.OwnerReferences`, `.Finalizers`).
//! A list the table does not name is atomic, as a list without a marker is on the real server.

use crate::fieldset::Shapes;
use crate::merge::ListKeys;

/// The merge behaviour of one list or map in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Replaced whole by a patch or apply, owned as one field.
    AtomicList,
    /// A set of scalars: merged by value, each item owned on its own (`v:<value>`).
    SetList,
    /// Items merged by the values of these keys, each owned on its own (`k:{...}`).
    MapList(Vec<String>),
    /// A map (a struct) replaced and owned whole (`x-kubernetes-map-type: atomic`); other
    /// maps merge field by field.
    AtomicMap,
}

/// The shape of the list or map at `path` (field names from the object's root; a list item
/// adds no step) of a built-in `kind`, when the table knows it.
pub(crate) fn builtin(kind: &str, path: &[&str]) -> Option<Shape> {
    let map_by = |k: &str| Some(Shape::MapList(vec![k.to_string()]));
    match (kind, path) {
        (_, ["metadata", "ownerReferences"]) => map_by("uid"),
        (_, ["metadata", "finalizers"]) => Some(Shape::SetList),
        (_, ["metadata", "managedFields"]) => Some(Shape::AtomicList),
        ("Node", ["spec", "taints"]) => Some(Shape::AtomicList),
        ("Node", ["spec", "podCIDRs"]) => Some(Shape::SetList),
        ("Node", ["status", "conditions"]) => map_by("type"),
        ("Node", ["status", "addresses"]) => map_by("type"),
        ("Event", ["involvedObject"] | ["regarding"] | ["related"]) => Some(Shape::AtomicMap),
        _ => None,
    }
}

/// The shapes of one served type: its CRD schema when it has one, else the built-in table,
/// else merge keys by field name (`FakeApi::merge_list_by`, for schema-less test types).
pub(crate) struct TypeShapes<'a> {
    /// The type's kind.
    pub(crate) kind: &'a str,
    /// Its CRD schema, when it has one: then the only source.
    pub(crate) schema: Option<&'a crate::schema::Schema>,
    /// Merge keys by list field name.
    pub(crate) by_name: &'a ListKeys,
}

impl TypeShapes<'static> {
    /// Shapes of `kind` with the default merge keys (unit tests).
    #[cfg(test)]
    pub(crate) fn test(kind: &'static str) -> TypeShapes<'static> {
        static KEYS: std::sync::LazyLock<ListKeys> =
            std::sync::LazyLock::new(crate::merge::default_list_keys);
        TypeShapes {
            kind,
            schema: None,
            by_name: &KEYS,
        }
    }
}

impl Shapes for TypeShapes<'_> {
    fn shape(&self, path: &[&str]) -> Option<Shape> {
        if let Some(schema) = self.schema {
            return match path {
                ["metadata", ..] => builtin(self.kind, path),
                _ => schema.shape(path),
            };
        }
        if let Some(s) = builtin(self.kind, path) {
            return Some(s);
        }
        let last = path.last()?;
        self.by_name.get(*last).map(|k| Shape::MapList(k.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_what_the_project_touches() {
        assert_eq!(
            builtin("Node", &["status", "conditions"]),
            Some(Shape::MapList(vec!["type".into()]))
        );
        assert_eq!(
            builtin("Node", &["spec", "taints"]),
            Some(Shape::AtomicList)
        );
        assert_eq!(builtin("Event", &["regarding"]), Some(Shape::AtomicMap));
        assert_eq!(
            builtin("ColdNode", &["metadata", "ownerReferences"]),
            Some(Shape::MapList(vec!["uid".into()]))
        );
        assert_eq!(builtin("Node", &["status", "images"]), None);
    }
}
