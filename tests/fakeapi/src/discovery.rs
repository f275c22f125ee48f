//! Discovery documents: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// The document for a discovery path, or None when the path is not a discovery path.
pub(crate) fn document(path: &str, types: &[ResourceType], server: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-coldstart-fake",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
            "platform": "linux/amd64"
        })),
        ["api"] => Some(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]
        })),
        ["apis"] => Some(groups(types)),
        ["api", "v1"] => Some(resources("", "v1", types)),
        ["apis", g, v] if types.iter().any(|t| t.group == *g && t.version == *v) => {
            Some(resources(g, v, types))
        }
        _ => None,
    }
}

fn groups(types: &[ResourceType]) -> Value {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        if !names.contains(&(t.group.as_str(), t.version.as_str())) {
            names.push((&t.group, &t.version));
        }
    }
    let groups: Vec<Value> = names
        .iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resources(group: &str, version: &str, types: &[ResourceType]) -> Value {
    let mut list = Vec::new();
    for t in types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let singular = t.kind.to_lowercase();
        list.push(json!({
            "name": t.plural, "singularName": singular, "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
        }));
        if t.has_status() {
            list.push(json!({
                "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["get", "patch", "update"]
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}
