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

/// The merge behaviour of one list or map in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Replaced whole by a patch or apply, owned as one field.
    AtomicList,
    /// A set of scalars: merged by value, each item owned on its own (`v:<value>`).
    SetList,
    /// Items merged by the values of these keys, each owned on its own (`k:{...}`).
    MapList(Vec<String>),
    /// A map (a struct) replaced and owned whole (`x-kubernetes-map-type: atomic`).
    AtomicMap,
    /// A map merged field by field (the default for maps).
    GranularMap,
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
