//! RBAC as the apiserver's authorizer evaluates it, from the Roles, ClusterRoles (aggregation
//! rules included) and bindings stored in the fake, plus the bootstrap roles a cluster has:
//! `cluster-admin` (bound to `system:masters`) and `admin`, `edit`, `view`, which here hold
//! only what is aggregated into them (the real ones also grant the built-in resources).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::selector::Selector;
use crate::store::Store;

/// What a resource request asks to do, as the authorizer sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attributes<'a> {
    pub(crate) user: &'a UserInfo,
    pub(crate) verb: &'a str,
    pub(crate) group: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) subresource: &'a str,
    pub(crate) name: &'a str,
    /// Empty for cluster-scoped requests (and lists across namespaces).
    pub(crate) namespace: &'a str,
}

impl Attributes<'_> {
    /// The apiserver's reason: `User "u" cannot patch resource "nodes/status" in API group ""
    /// at the cluster scope` (or `in the namespace "ns"`).
    pub(crate) fn refusal(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            self.user.username, self.verb, self.group
        )
    }
}

fn aggregate(to: &str) -> Value {
    json!({"clusterRoleSelectors": [{"matchLabels": {
        format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]})
}

/// The bootstrap ClusterRoles the fake assumes (stored ones of the same name win).
fn bootstrap_roles() -> Vec<Value> {
    let label = |to: &str| json!({format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"});
    vec![
        json!({"metadata": {"name": "cluster-admin"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        json!({"metadata": {"name": "admin"}, "aggregationRule": aggregate("admin")}),
        json!({"metadata": {"name": "edit", "labels": label("admin")},
            "aggregationRule": aggregate("edit")}),
        json!({"metadata": {"name": "view", "labels": label("edit")},
            "aggregationRule": aggregate("view")}),
    ]
}

fn objects(store: &Store, resource: &str) -> Vec<Value> {
    let all = Selector::default();
    store
        .type_named(resource)
        .map(|ty| store.list(ty, None, &all, &all))
        .unwrap_or_default()
}

fn name_of(o: &Value) -> &str {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The RBAC objects in effect, read from the store at one moment.
pub(crate) struct Rbac {
    cluster_roles: BTreeMap<String, Value>,
    roles: Vec<Value>,
    cluster_bindings: Vec<Value>,
    bindings: Vec<Value>,
}

impl Rbac {
    pub(crate) fn load(store: &Store) -> Rbac {
        let mut cluster_roles: BTreeMap<String, Value> = bootstrap_roles()
            .into_iter()
            .map(|r| (name_of(&r).to_string(), r))
            .collect();
        for r in objects(store, "clusterroles.rbac.authorization.k8s.io") {
            cluster_roles.insert(name_of(&r).to_string(), r);
        }
        let mut cluster_bindings = objects(store, "clusterrolebindings.rbac.authorization.k8s.io");
        cluster_bindings.push(json!({
            "metadata": {"name": "cluster-admin"},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "Group", "name": "system:masters"}]
        }));
        Rbac {
            cluster_roles,
            roles: objects(store, "roles.rbac.authorization.k8s.io"),
            cluster_bindings,
            bindings: objects(store, "rolebindings.rbac.authorization.k8s.io"),
        }
    }

    /// Whether some binding of the user grants the request.
    pub(crate) fn allows(&self, a: &Attributes<'_>) -> bool {
        let cluster = self
            .cluster_bindings
            .iter()
            .filter(|b| binds(b, a.user, ""));
        for b in cluster {
            if b["roleRef"]["kind"] == "ClusterRole"
                && self
                    .cluster_role_rules(b["roleRef"]["name"].as_str().unwrap_or(""))
                    .iter()
                    .any(|r| rule_allows(r, a))
            {
                return true;
            }
        }
        if a.namespace.is_empty() {
            return false;
        }
        let local = self.bindings.iter().filter(|b| {
            b.pointer("/metadata/namespace").and_then(Value::as_str) == Some(a.namespace)
                && binds(b, a.user, a.namespace)
        });
        for b in local {
            let role = b["roleRef"]["name"].as_str().unwrap_or("");
            let rules = match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => self.cluster_role_rules(role),
                Some("Role") => self
                    .roles
                    .iter()
                    .filter(|r| {
                        name_of(r) == role
                            && r.pointer("/metadata/namespace").and_then(Value::as_str)
                                == Some(a.namespace)
                    })
                    .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
                    .collect(),
                _ => Vec::new(),
            };
            if rules.iter().any(|r| rule_allows(r, a)) {
                return true;
            }
        }
        false
    }

    /// A ClusterRole's rules, with those of every role its aggregation rule selects
    /// (transitively, as the aggregation controller converges to).
    fn cluster_role_rules(&self, name: &str) -> Vec<Value> {
        let mut seen = BTreeSet::new();
        let mut rules = Vec::new();
        let mut todo = vec![name.to_string()];
        // Bounded: each role is visited once.
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            let Some(role) = self.cluster_roles.get(&n) else {
                continue;
            };
            match role.get("aggregationRule") {
                Some(agg) => {
                    let selectors = agg["clusterRoleSelectors"].as_array().cloned();
                    for sel in selectors.unwrap_or_default() {
                        for (other, r) in &self.cluster_roles {
                            if selects(&sel, &r["metadata"]["labels"]) {
                                todo.push(other.clone());
                            }
                        }
                    }
                }
                None => rules.extend(role["rules"].as_array().cloned().unwrap_or_default()),
            }
        }
        rules
    }
}

/// Whether a binding names the user among its subjects (`ns`: the binding's namespace, the
/// default for a ServiceAccount subject without one).
fn binds(binding: &Value, user: &UserInfo, ns: &str) -> bool {
    let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or("");
        match s["kind"].as_str() {
            Some("User") => user.username == name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let sns = s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(ns);
                user.username == format!("system:serviceaccount:{sns}:{name}")
            }
            _ => false,
        }
    })
}

/// The apiserver's `RuleAllows`: verb, API group, resource (`res`, `res/sub`, `*`, `*/sub`)
/// and resourceNames (a rule naming objects never grants a request without a name).
fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    let verbs = strs(&rule["verbs"]);
    let groups = strs(&rule["apiGroups"]);
    let resources = strs(&rule["resources"]);
    let names = strs(&rule["resourceNames"]);
    let combined = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource))
    });
    verbs.iter().any(|v| *v == "*" || *v == a.verb)
        && groups.iter().any(|g| *g == "*" || *g == a.group)
        && resource_ok
        && (names.is_empty() || names.contains(&a.name))
}

/// A `LabelSelector` (matchLabels, matchExpressions) against a labels map.
pub(crate) fn selects(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let exprs = selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    by_label
        && exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values = strs(&e["values"]);
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests;
