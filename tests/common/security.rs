//! The fake API server as a cluster with deploy/ applied: the rendered base (`kubectl
//! kustomize deploy`) loaded into it, tokens for the agent of each node (its service account,
//! with the node-name claim), an operator bound to `coldstart-operator` and a viewer bound to
//! the built-in `view` (which `coldstart-viewer` is aggregated into), then authentication,
//! RBAC and admission enforced.

use std::process::Command;

use coldstart_fakeapi::{FakeApi, UserInfo};
use serde_json::json;

/// The operator's token (bound to the `coldstart-operator` ClusterRole).
pub const OPERATOR: &str = "operator-token";
/// The viewer's token (bound to the built-in `view` ClusterRole).
pub const VIEWER: &str = "viewer-token";
/// The agent's service account, as deploy/ names it.
pub const AGENT_SA: (&str, &str) = ("coldstart-system", "coldstart-agent");

/// The token of the agent running on `node`.
pub fn agent_token(node: &str) -> String {
    format!("agent-{node}")
}

/// `kubectl kustomize DIR` (relative to the repository root).
pub fn render(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("kubectl (scripts/test-env.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bind(api: &FakeApi, user: &str, role: &str) {
    api.create(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "name": user}]
    }))
    .unwrap_or_else(|e| panic!("binding {user}: {e:#}"));
}

/// Loads `manifests` (rendered YAML), gives out the tokens for `nodes`' agents, the operator
/// and the viewer, and turns enforcement on.
pub fn secure(api: &FakeApi, manifests: &str, nodes: &[&str]) {
    api.load_manifests(manifests)
        .unwrap_or_else(|e| panic!("loading deploy/: {e:#}"));
    for node in nodes {
        let sa = UserInfo::service_account(AGENT_SA.0, AGENT_SA.1).on_node(node);
        api.add_token(&agent_token(node), sa);
    }
    bind(api, "operator", "coldstart-operator");
    bind(api, "viewer", "view");
    api.add_token(OPERATOR, UserInfo::user("operator"));
    api.add_token(VIEWER, UserInfo::user("viewer"));
    api.enforce_security();
}
