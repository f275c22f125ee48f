//! ValidatingAdmissionPolicies and their bindings, from the store, evaluated as the apiserver
//! does: a binding (with `Deny` among its actions) names its policy (a binding to a policy
//! that does not exist does nothing, as in a cluster); the policy's `matchConstraints` select
//! the request, its `matchConditions` must all be true, its `variables` are evaluated in order,
//! then each validation must be true, or the request is refused with its `message` or
//! `messageExpression`. An error (unknown function, missing field, a selector this fake cannot
//! evaluate) refuses the request under `failurePolicy: Fail`, the default.

use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::cel::{CelError, Env};
use crate::error::ApiError;
use crate::registry::ResourceType;
use crate::selector::Selector;
use crate::store::Store;

/// One write, as admission sees it.
pub(crate) struct Request<'a> {
    pub(crate) user: &'a UserInfo,
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub(crate) operation: &'a str,
    pub(crate) ty: &'a ResourceType,
    /// `status` or empty.
    pub(crate) subresource: &'a str,
    pub(crate) name: &'a str,
    pub(crate) namespace: &'a str,
    /// The object after the write (None for DELETE).
    pub(crate) object: Option<&'a Value>,
    /// The stored object (None for CREATE).
    pub(crate) old: Option<&'a Value>,
}

impl Request<'_> {
    /// `request` as the apiserver builds the AdmissionRequest for CEL.
    fn to_json(&self) -> Value {
        let t = self.ty;
        let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let resource = json!({"group": t.group, "version": t.version, "resource": t.plural});
        json!({
            "kind": kind, "resource": resource, "subResource": self.subresource,
            "requestKind": kind, "requestResource": resource,
            "requestSubResource": self.subresource,
            "name": self.name, "namespace": self.namespace, "operation": self.operation,
            "userInfo": self.user.to_json(), "dryRun": false, "options": {},
        })
    }

    fn refuse(&self, why: &str, reason: &str) -> ApiError {
        ApiError::denied(&self.ty.group, &self.ty.plural, self.name, why, reason)
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// An admission `RuleWithOperations` (plus resourceNames) against the request.
fn rule_matches(rule: &Value, r: &Request<'_>) -> bool {
    let any = |field: &str, want: &str| strs(&rule[field]).iter().any(|v| *v == "*" || *v == want);
    // `*`: every resource, no subresource; `nodes/*`: every subresource of nodes; `*/status`;
    // `*/*`: everything.
    let sub = r.subresource;
    let resource_ok = strs(&rule["resources"]).iter().any(|res| {
        let (rr, rs) = res.split_once('/').unwrap_or((res, ""));
        let sub_ok = (rs.is_empty() && sub.is_empty())
            || (rs == "*" && (!sub.is_empty() || rr == "*"))
            || (!rs.is_empty() && rs == sub);
        (rr == "*" || rr == r.ty.plural) && sub_ok
    });
    let names = strs(&rule["resourceNames"]);
    any("operations", r.operation)
        && any("apiGroups", &r.ty.group)
        && any("apiVersions", &r.ty.version)
        && resource_ok
        && (names.is_empty() || names.contains(&r.name))
}

/// Whether `matchConstraints` (or a binding's `matchResources`) select the request; a
/// namespace or object selector that is not empty is not evaluated here, so it is an error.
fn selected(m: &Value, r: &Request<'_>) -> Result<bool, String> {
    for sel in ["namespaceSelector", "objectSelector"] {
        if m.get(sel)
            .is_some_and(|s| s.as_object().is_some_and(|o| !o.is_empty()))
        {
            return Err(format!("{sel} is not supported by this fake"));
        }
    }
    let rules = m["resourceRules"].as_array().cloned().unwrap_or_default();
    let excluded = m["excludeResourceRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(rules.iter().any(|x| rule_matches(x, r)) && !excluded.iter().any(|x| rule_matches(x, r)))
}

/// What one policy decided.
enum Decision {
    /// Not selected, or a match condition is false.
    Skip,
    Allow,
    /// Refused: message and reason.
    Deny(String, String),
    /// The policy could not be evaluated.
    Error(String),
}

fn expression_error(expr: &str, e: &CelError) -> String {
    format!("expression '{expr}' resulted in error: {e}")
}

fn evaluate(policy: &Value, r: &Request<'_>) -> Decision {
    let spec = &policy["spec"];
    match selected(&spec["matchConstraints"], r) {
        Ok(false) => return Decision::Skip,
        Ok(true) => {}
        Err(e) => return Decision::Error(e),
    }
    let mut env = Env::new();
    env.bind("object", r.object.unwrap_or(&Value::Null));
    env.bind("oldObject", r.old.unwrap_or(&Value::Null));
    env.bind("request", &r.to_json());
    let conditions = spec["matchConditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &conditions {
        let expr = c["expression"].as_str().unwrap_or("");
        match env.eval_bool(expr) {
            Ok(true) => {}
            Ok(false) => return Decision::Skip,
            Err(e) => {
                let name = c["name"].as_str().unwrap_or("");
                return Decision::Error(format!(
                    "failed to evaluate matchCondition '{name}': {}",
                    expression_error(expr, &e)
                ));
            }
        }
    }
    let mut vars: Vec<(String, cel_interpreter::Value)> = Vec::new();
    let variables = spec["variables"].as_array().cloned().unwrap_or_default();
    for v in &variables {
        let (name, expr) = (
            v["name"].as_str().unwrap_or(""),
            v["expression"].as_str().unwrap_or(""),
        );
        env.bind_map("variables", &vars);
        match env.eval(expr) {
            Ok(value) => vars.push((name.to_string(), value)),
            Err(e) => {
                return Decision::Error(format!(
                    "variable '{name}': {}",
                    expression_error(expr, &e)
                ));
            }
        }
    }
    env.bind_map("variables", &vars);
    let validations = spec["validations"].as_array().cloned().unwrap_or_default();
    for v in &validations {
        let expr = v["expression"].as_str().unwrap_or("");
        match env.eval_bool(expr) {
            Ok(true) => {}
            Ok(false) => {
                let fallback = match v["message"].as_str() {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => format!("failed expression: {expr}"),
                };
                let message = v["messageExpression"]
                    .as_str()
                    .and_then(|m| env.eval_string(m).ok())
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or(fallback);
                let reason = v["reason"].as_str().unwrap_or("Invalid").to_string();
                return Decision::Deny(message, reason);
            }
            Err(e) => return Decision::Error(expression_error(expr, &e)),
        }
    }
    Decision::Allow
}

fn list(store: &Store, resource: &str) -> Vec<Value> {
    let all = Selector::default();
    store
        .type_named(resource)
        .map(|ty| store.list(ty, None, &all, &all))
        .unwrap_or_default()
}

/// Runs every bound policy on the request; the first refusal (by binding name) is the answer.
pub(crate) fn admit(store: &Store, r: &Request<'_>) -> Result<(), ApiError> {
    let policies = list(
        store,
        "validatingadmissionpolicies.admissionregistration.k8s.io",
    );
    let bindings = list(
        store,
        "validatingadmissionpolicybindings.admissionregistration.k8s.io",
    );
    for b in &bindings {
        if !strs(&b["spec"]["validationActions"]).contains(&"Deny") {
            continue;
        }
        let policy_name = b["spec"]["policyName"].as_str().unwrap_or("");
        let Some(policy) = policies
            .iter()
            .find(|p| p["metadata"]["name"] == policy_name)
        else {
            continue;
        };
        let binding = b["metadata"]["name"].as_str().unwrap_or("");
        let prefix = format!(
            "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding}' denied request: "
        );
        if let Some(m) = b["spec"].get("matchResources") {
            match selected(m, r) {
                Ok(true) => {}
                Ok(false) if m["resourceRules"].is_array() => continue,
                Ok(false) => {}
                Err(e) => return Err(r.refuse(&format!("{prefix}{e}"), "Invalid")),
            }
        }
        let ignore = policy["spec"]["failurePolicy"] == "Ignore";
        match evaluate(policy, r) {
            Decision::Skip | Decision::Allow => {}
            Decision::Deny(message, reason) => {
                return Err(r.refuse(&format!("{prefix}{message}"), &reason));
            }
            Decision::Error(_) if ignore => {}
            Decision::Error(e) => return Err(r.refuse(&format!("{prefix}{e}"), "Invalid")),
        }
    }
    Ok(())
}
