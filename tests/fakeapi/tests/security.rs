//! Conformance of the fake's security to the apiserver's answers: 401 for a missing or unknown
//! token; RBAC's 403 `Status` (message `<resource> "<name>" is forbidden: User "<u>" cannot
//! <verb> resource "<res>" in API group "<g>" at the cluster scope|in the namespace "<ns>"`,
//! details name/group/kind), as in k8s.io/apiserver `responsewriters.forbiddenMessage`;
//! ValidatingAdmissionPolicy denials (`... is forbidden: ValidatingAdmissionPolicy '<p>' with
//! binding '<b>' denied request: <message>`, the reason's code, the message as a cause), as in
//! the validating policy dispatcher; an expression error refuses under failurePolicy Fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coldstart_fakeapi::{FakeApi, Options, UserInfo};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules: [{apiGroups: [""], resources: ["nodes"], verbs: ["get", "list"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-reads-nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}
subjects: [{kind: User, name: alice}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: models-viewer
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules: [{apiGroups: [coldstart.dev], resources: [coldmodels], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: models-patcher
rules: [{apiGroups: [coldstart.dev], resources: [coldmodels], verbs: [patch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bob-views}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: User, name: bob}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dave-patches}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: models-patcher}
subjects: [{kind: User, name: dave}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-reader, namespace: team}
rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: sa-reads-secrets, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: team}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-magic-label}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: ["v1"], operations: ["UPDATE"], resources: ["nodes"]}
  matchConditions:
    - {name: not-bob, expression: "request.userInfo.username != 'bob'"}
  variables:
    - {name: labels, expression: "has(object.metadata.labels) ? object.metadata.labels : {}"}
  validations:
    - expression: "!('magic' in variables.labels)"
      messageExpression: "'label magic may not be set on ' + request.name"
      reason: Forbidden
    - expression: "!('broken' in variables.labels) || object.spec.noSuchField == 1"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-magic-label-binding}
spec: {policyName: no-magic-label, validationActions: [Deny]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: bound-to-nothing}
spec: {policyName: absent, validationActions: [Deny]}
"#;

async fn fake() -> FakeApi {
    let api = FakeApi::start(Options::default()).await.unwrap();
    assert_eq!(api.load_manifests(POLICY).unwrap(), 11);
    api.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"}}))
        .unwrap();
    api.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "team"}}))
        .unwrap();
    api.add_token("alice-token", UserInfo::user("alice"));
    api.add_token("bob-token", UserInfo::user("bob"));
    api.add_token("dave-token", UserInfo::user("dave"));
    api.add_token(
        "root-token",
        UserInfo::user("root").in_group("system:masters"),
    );
    api.add_token(
        "sa-token",
        UserInfo::service_account("team", "reader").on_node("gpu-1"),
    );
    api.enforce_security();
    api
}

fn client(api: &FakeApi, token: Option<&str>) -> Client {
    let mut config = Config::new(api.url().parse().unwrap());
    config.auth_info.token = token.map(|t| t.to_string().into());
    Client::try_from(config).unwrap()
}

/// (code, reason, message, details as JSON) of a failed call.
fn refusal<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String, String, Value) {
    match r {
        Err(kube::Error::Api(s)) => {
            let details = serde_json::to_value(&s.details).unwrap();
            (s.code, s.reason.clone(), s.message.clone(), details)
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn models(c: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("coldstart.dev", "v1alpha1", "ColdModel");
    Api::all_with(c, &ApiResource::from_gvk(&gvk))
}

#[tokio::test]
async fn authentication_answers_401_without_a_known_token() {
    let api = fake().await;
    for token in [None, Some("nobody")] {
        let nodes: Api<Node> = Api::all(client(&api, token));
        let (code, reason, message, _) = refusal(nodes.get("gpu-1").await);
        assert_eq!(
            (code, reason.as_str(), message.as_str()),
            (401, "Unauthorized", "Unauthorized")
        );
    }
}

#[tokio::test]
async fn rbac_answers_the_apiservers_403() {
    let api = fake().await;
    let nodes: Api<Node> = Api::all(client(&api, Some("alice-token")));
    nodes.get("gpu-1").await.unwrap();
    nodes.list(&ListParams::default()).await.unwrap();
    let label = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    let (code, reason, message, details) =
        refusal(nodes.patch("gpu-1", &PatchParams::default(), &label).await);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        r#"nodes "gpu-1" is forbidden: User "alice" cannot patch resource "nodes" in API group "" at the cluster scope"#
    );
    assert_eq!(details["name"], "gpu-1");
    assert_eq!(details["kind"], "nodes");
    let (_, _, message, _) = refusal(
        nodes
            .patch_status("gpu-1", &PatchParams::default(), &label)
            .await,
    );
    assert!(
        message.contains(r#"cannot patch resource "nodes/status" in API group """#),
        "{message}"
    );

    // A role aggregated into `view`, reached through `admin` (view -> edit -> admin).
    let bob = models(client(&api, Some("bob-token")));
    bob.list(&ListParams::default()).await.unwrap();
    let apply = Patch::Apply(
        json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": "m"}, "spec": {}}),
    );
    let (code, _, message, _) = refusal(bob.patch("m", &PatchParams::apply("t"), &apply).await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"coldmodels.coldstart.dev "m" is forbidden: User "bob" cannot patch resource "coldmodels" in API group "coldstart.dev" at the cluster scope"#
    );
    // Patch alone does not create: an apply that creates needs `create` too.
    let dave = models(client(&api, Some("dave-token")));
    let (code, _, message, _) = refusal(dave.patch("m", &PatchParams::apply("t"), &apply).await);
    assert_eq!(code, 403);
    assert!(
        message.contains(r#"cannot create resource "coldmodels""#),
        "{message}"
    );

    // A Role binds in its namespace only.
    let sa = client(&api, Some("sa-token"));
    Api::<Secret>::namespaced(sa.clone(), "team")
        .get("s")
        .await
        .unwrap();
    let (code, _, message, _) = refusal(Api::<Secret>::namespaced(sa, "default").get("s").await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"secrets "s" is forbidden: User "system:serviceaccount:team:reader" cannot get resource "secrets" in API group "" in the namespace "default""#
    );
}

#[tokio::test]
async fn admission_policies_refuse_with_the_apiservers_answer() {
    let api = fake().await;
    let nodes: Api<Node> = Api::all(client(&api, Some("root-token")));
    let label = |k: &str| Patch::Merge(json!({"metadata": {"labels": {k: "1"}}}));
    nodes
        .patch("gpu-1", &PatchParams::default(), &label("fine"))
        .await
        .unwrap();
    let (code, reason, message, details) = refusal(
        nodes
            .patch("gpu-1", &PatchParams::default(), &label("magic"))
            .await,
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    let expected = "nodes \"gpu-1\" is forbidden: ValidatingAdmissionPolicy 'no-magic-label' \
        with binding 'no-magic-label-binding' denied request: label magic may not be set on gpu-1";
    assert_eq!(message, expected);
    let cause = "ValidatingAdmissionPolicy 'no-magic-label' with binding 'no-magic-label-binding' \
        denied request: label magic may not be set on gpu-1";
    assert_eq!(details["causes"][0]["message"], cause, "{details}");
    assert!(
        api.get("nodes", "", "gpu-1").unwrap()["metadata"]["labels"]
            .get("magic")
            .is_none()
    );

    // A field the object does not have is an error, and the error refuses (422, Invalid).
    let (code, reason, message, _) = refusal(
        nodes
            .patch("gpu-1", &PatchParams::default(), &label("broken"))
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(message.contains("resulted in error"), "{message}");

    // A false match condition skips the policy.
    api.add_token("bob-root", UserInfo::user("bob").in_group("system:masters"));
    let bob: Api<Node> = Api::all(client(&api, Some("bob-root")));
    bob.patch("gpu-1", &PatchParams::default(), &label("magic"))
        .await
        .unwrap();
}

#[tokio::test]
async fn without_enforcement_everything_is_served_as_before() {
    let api = FakeApi::start(Options::default()).await.unwrap();
    api.load_manifests(POLICY).unwrap();
    api.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"}}))
        .unwrap();
    let nodes: Api<Node> = Api::all(client(&api, None));
    let label = Patch::Merge(json!({"metadata": {"labels": {"magic": "1"}}}));
    nodes
        .patch("gpu-1", &PatchParams::default(), &label)
        .await
        .unwrap();
}
