//! The node surface in the Kubernetes API: the startup taint, the per-model labels, our node
//! conditions, and our ColdNode. Speaks our types ([`Condition`], [`ColdNodeStatus`]); no kube
//! type crosses it.
//!
//! Taints are one atomic list (server-side apply cannot share it), so the taint is removed with
//! a read and a JSON patch guarded by a `test` on resourceVersion, retried from a fresh read on
//! conflict. Labels use a merge patch touching only our prefix. Conditions and the ColdNode
//! status use server-side apply under [`FIELD_MANAGER`] with only our fields in the object.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use tracing::{debug, instrument};

use crate::api::{
    CONDITION_GPU_HEALTHY, CONDITION_MODELS_WARM, ColdNode, ColdNodeSpec, ColdNodeStatus,
    Condition, MODEL_LABEL_PREFIX, MODEL_LABEL_READY, Phase, SNAPSHOT_LABEL_PREFIX,
    WARMING_TAINT_KEY,
};
use crate::backoff::Backoff;

#[cfg(test)]
mod tests;

/// Field manager of every apply the agent makes.
pub const FIELD_MANAGER: &str = "coldstart-agent";

/// Why a node-surface call failed. The loop retries on its next tick.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server answered with an error status.
    #[error("{op}: the API server answered {code} {reason}")]
    Api {
        /// What we were doing.
        op: &'static str,
        /// HTTP status.
        code: u16,
        /// Kubernetes reason (`Conflict`, `NotFound`, ...).
        reason: String,
    },
    /// The API server could not be reached or answered garbage.
    #[error("{op}: api server unreachable")]
    Unreachable {
        /// What we were doing.
        op: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The taint patch kept conflicting with other writers.
    #[error("removing the startup taint: still conflicting after {0} attempts")]
    Conflict(u32),
    /// A patch could not be built (a bug, not a condition of the cluster).
    #[error("building a patch")]
    Encode(#[source] serde_json::Error),
    /// A condition type that is not ours.
    #[error("condition type {0} is not ours")]
    NotOurCondition(String),
}

impl Error {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api { code: 404, .. } => "not_found",
            Error::Api {
                code: 409 | 422, ..
            }
            | Error::Conflict(_) => "conflict",
            Error::Api { .. } => "api",
            Error::Unreachable { .. } => "unreachable",
            Error::NotOurCondition(_) | Error::Encode(_) => "invalid",
        }
    }

    fn from_kube(op: &'static str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) => Error::Api {
                op,
                code: s.code,
                reason: s.reason.clone(),
            },
            source => Error::Unreachable { op, source },
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Api {
                code: 409 | 422,
                ..
            }
        )
    }
}

/// What the agent does once its node is past the warming deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadlineAction {
    /// Say so (condition, Event) and keep the taint: an operator or an autoscaler decides.
    #[default]
    Report,
    /// Also delete this node's Karpenter NodeClaim, once, so that Karpenter replaces the node
    /// (Karpenter never consolidates a node that never lost its startup taint).
    Replace,
}

impl std::str::FromStr for DeadlineAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "report" => Ok(DeadlineAction::Report),
            "replace" => Ok(DeadlineAction::Replace),
            other => Err(format!("{other:?} is not report or replace")),
        }
    }
}

/// Karpenter's NodeClaim (`karpenter.sh/v1`, cluster-scoped): read as a dynamic object, so no
/// Karpenter crate is needed for the one field we read (`status.nodeName`).
fn nodeclaim_resource() -> ApiResource {
    ApiResource {
        group: "karpenter.sh".into(),
        version: "v1".into(),
        api_version: "karpenter.sh/v1".into(),
        kind: "NodeClaim".into(),
        plural: "nodeclaims".into(),
    }
}

/// Settings of the node surface.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Name of this node (and of its ColdNode).
    pub node: String,
    /// Taint patch attempts before giving up for this pass.
    pub taint_attempts: u32,
    /// Wait between taint attempts.
    pub taint_backoff: Backoff,
    /// At most one ColdNode status write per this long, unless the phase changed.
    pub status_interval: Duration,
}

impl Settings {
    /// Defaults for `node`.
    pub fn new(node: impl Into<String>) -> Settings {
        Settings {
            node: node.into(),
            taint_attempts: 5,
            taint_backoff: Backoff::constant(Duration::from_millis(200), Duration::from_secs(5)),
            status_interval: Duration::from_secs(10),
        }
    }
}

/// This node's surface in the API.
pub struct NodeSurface {
    nodes: Api<Node>,
    coldnodes: Api<ColdNode>,
    nodeclaims: Api<DynamicObject>,
    settings: Settings,
    coldnode_exists: bool,
    last_status: Option<(Timestamp, Phase)>,
}

impl std::fmt::Debug for NodeSurface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSurface")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl NodeSurface {
    /// A surface for `settings.node` through `client`.
    pub fn new(client: kube::Client, settings: Settings) -> NodeSurface {
        NodeSurface {
            nodes: Api::all(client.clone()),
            coldnodes: Api::all(client.clone()),
            nodeclaims: Api::all_with(client, &nodeclaim_resource()),
            settings,
            coldnode_exists: false,
            last_status: None,
        }
    }

    async fn get_node(&self) -> Result<Node, Error> {
        let name = &self.settings.node;
        self.nodes
            .get(name)
            .await
            .map_err(|e| Error::from_kube("reading the node", e))
    }

    /// Deletes the Karpenter NodeClaim whose `status.nodeName` is this node (custom resources
    /// have no field selector on it: the list is filtered here); its name, or `None` when no
    /// NodeClaim names this node.
    #[instrument(skip_all, fields(node = %self.settings.node), err(level = "debug"))]
    pub async fn delete_own_nodeclaim(&self) -> Result<Option<String>, Error> {
        let claims = self
            .nodeclaims
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::from_kube("listing nodeclaims", e))?;
        let node = self.settings.node.as_str();
        let own = claims
            .items
            .into_iter()
            .find(|c| c.data.pointer("/status/nodeName").and_then(Value::as_str) == Some(node));
        let Some(name) = own.and_then(|c| c.metadata.name) else {
            return Ok(None);
        };
        self.nodeclaims
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| Error::from_kube("deleting the nodeclaim", e))?;
        Ok(Some(name))
    }

    /// Whether the node carries the startup taint.
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn has_warming_taint(&self) -> Result<bool, Error> {
        let node = self.get_node().await?;
        Ok(taints(&node).iter().any(|t| t["key"] == WARMING_TAINT_KEY))
    }

    /// Removes the startup taint, keeping every other taint; `Ok(false)` when it was absent.
    #[instrument(skip_all, fields(node = %self.settings.node), err(level = "debug"))]
    pub async fn remove_warming_taint(&self) -> Result<bool, Error> {
        self.remove_warming_taint_with(|| {}).await
    }

    /// [`Self::remove_warming_taint`], calling `between` after each read and before its patch
    /// (tests make another manager write there).
    pub(crate) async fn remove_warming_taint_with(
        &self,
        mut between: impl FnMut(),
    ) -> Result<bool, Error> {
        for attempt in 1..=self.settings.taint_attempts {
            let node = self.get_node().await?;
            let all = taints(&node);
            let kept: Vec<Value> = all
                .iter()
                .filter(|t| t["key"] != WARMING_TAINT_KEY)
                .cloned()
                .collect();
            if kept.len() == all.len() {
                return Ok(false);
            }
            let rv = node.metadata.resource_version.unwrap_or_default();
            let ops = json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "replace", "path": "/spec/taints", "value": kept},
            ]);
            let patch: json_patch::Patch = serde_json::from_value(ops).map_err(Error::Encode)?;
            between();
            let name = &self.settings.node;
            let pp = PatchParams::default();
            match self.nodes.patch(name, &pp, &Patch::Json::<()>(patch)).await {
                Ok(_) => return Ok(true),
                Err(e) => {
                    let e = Error::from_kube("removing the startup taint", e);
                    if !e.is_conflict() {
                        return Err(e);
                    }
                    debug!(attempt, "taint patch conflicted; reading again");
                }
            }
            tokio::time::sleep(self.settings.taint_backoff.after_failures(attempt)).await;
        }
        Err(Error::Conflict(self.settings.taint_attempts))
    }

    /// Makes our labels `coldstart.dev/model.<name>=ready` exactly `ready`; other labels are
    /// left alone. `node` is the caller's view (the watch store: no read here). Returns
    /// whether a write was needed.
    #[instrument(skip_all, fields(node = %self.settings.node), err(level = "debug"))]
    pub async fn set_model_labels(
        &self,
        node: &Node,
        ready: &BTreeSet<String>,
    ) -> Result<bool, Error> {
        let want = ready
            .iter()
            .map(|n| (n.clone(), MODEL_LABEL_READY.to_string()))
            .collect();
        self.set_labels_under(node, MODEL_LABEL_PREFIX, &want).await
    }

    /// Makes the node's `coldstart.dev/snapshot.<model>` labels exactly `offered` (model to
    /// key hash). Returns whether a write was made.
    #[instrument(skip_all, fields(node = %self.settings.node), err(level = "debug"))]
    pub async fn set_snapshot_labels(
        &self,
        node: &Node,
        offered: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        self.set_labels_under(node, SNAPSHOT_LABEL_PREFIX, offered)
            .await
    }

    /// Makes the labels under `prefix` exactly `want` (name after the prefix to value) with one
    /// merge patch touching only that prefix; nothing is written when nothing changes.
    async fn set_labels_under(
        &self,
        node: &Node,
        prefix: &str,
        want: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        let have = node.metadata.labels.clone().unwrap_or_default();
        let mut changes = BTreeMap::new();
        for key in have.keys().filter(|k| k.starts_with(prefix)) {
            if !want.contains_key(&key[prefix.len()..]) {
                changes.insert(key.clone(), Value::Null);
            }
        }
        for (name, value) in want {
            let key = format!("{prefix}{name}");
            if have.get(&key) != Some(value) {
                changes.insert(key, json!(value));
            }
        }
        if changes.is_empty() {
            return Ok(false);
        }
        let patch = json!({"metadata": {"labels": changes}});
        self.nodes
            .patch(
                &self.settings.node,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::from_kube("labelling the node", e))?;
        Ok(true)
    }

    /// Applies our node conditions (server-side apply on `nodes/status`, forced, only our
    /// types). A condition keeps its lastTransitionTime while its status stays the same;
    /// nothing is written when nothing changed. `node` is the caller's view (the watch store).
    /// Returns whether a write was made.
    #[instrument(skip_all, fields(node = %self.settings.node), err(level = "debug"))]
    pub async fn apply_conditions(
        &self,
        node: &Node,
        conds: &[Condition],
        now: Timestamp,
    ) -> Result<bool, Error> {
        if let Some(c) = conds.iter().find(|c| !is_ours(c.type_)) {
            return Err(Error::NotOurCondition(c.type_.to_string()));
        }
        let have = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut changed = false;
        let mut applied = Vec::new();
        for c in conds {
            let status = if c.status { "True" } else { "False" };
            let old = have.iter().find(|h| h.type_ == c.type_);
            let same = old.is_some_and(|o| o.status == status);
            changed |= !old.is_some_and(|o| {
                same && o.reason.as_deref() == Some(c.reason)
                    && o.message.as_deref() == Some(c.message.as_str())
            });
            let since = match old.and_then(|o| o.last_transition_time.as_ref()) {
                Some(t) if same => t.0,
                _ => now,
            };
            applied.push(
                json!({"type": c.type_, "status": status, "reason": c.reason,
                "message": c.message, "lastTransitionTime": since.to_string()}),
            );
        }
        if !changed {
            return Ok(false);
        }
        let obj = json!({"apiVersion": "v1", "kind": "Node", "status": {"conditions": applied}});
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        self.nodes
            .patch_status(&self.settings.node, &pp, &Patch::Apply(obj))
            .await
            .map_err(|e| Error::from_kube("applying node conditions", e))?;
        Ok(true)
    }

    /// Writes our ColdNode's status (creating the ColdNode first if missing, owned by `node`
    /// so that deleting the Node collects it), at most once per `status_interval` unless the
    /// phase changed. Returns whether a write was made.
    #[instrument(skip_all, fields(node = %self.settings.node), err(level = "debug"))]
    pub async fn write_status(
        &mut self,
        node: &Node,
        status: &ColdNodeStatus,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let interval =
            SignedDuration::try_from(self.settings.status_interval).unwrap_or(SignedDuration::MAX);
        if let Some((at, phase)) = self.last_status
            && phase == status.phase
            && now.duration_since(at) < interval
        {
            return Ok(false);
        }
        if !self.coldnode_exists {
            self.ensure_coldnode(node).await?;
        }
        let mut status = status.clone();
        status.updated_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        let mut body = serde_json::to_value(&status).map_err(Error::Encode)?;
        // An empty list is sent, not left out: applying without it would keep the old entries
        // on a server that merges (and the list is ours alone to write).
        body["models"] = json!(status.models);
        let obj = json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
            "status": body});
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let r = self
            .coldnodes
            .patch_status(&self.settings.node, &pp, &Patch::Apply(obj))
            .await
            .map_err(|e| Error::from_kube("writing the ColdNode status", e));
        if let Err(Error::Api { code: 404, .. }) = &r {
            // Deleted behind our back: create it on the next attempt.
            self.coldnode_exists = false;
        }
        r?;
        self.last_status = Some((now, status.phase));
        Ok(true)
    }

    /// Creates our ColdNode with an owner reference to `node`, or, when it exists (perhaps from
    /// an agent that set no owner), applies the owner reference to it (a list-map by uid:
    /// other owners stay).
    async fn ensure_coldnode(&mut self, node: &Node) -> Result<(), Error> {
        let owner = node_owner(node);
        let mut cn = ColdNode::new(&self.settings.node, ColdNodeSpec {});
        cn.metadata.owner_references = owner.clone().map(|o| vec![o]);
        match self.coldnodes.create(&PostParams::default(), &cn).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => {
                if let Some(o) = owner {
                    let obj = json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
                        "metadata": {"name": self.settings.node, "ownerReferences": [o]}});
                    let pp = PatchParams::apply(FIELD_MANAGER).force();
                    self.coldnodes
                        .patch(&self.settings.node, &pp, &Patch::Apply(obj))
                        .await
                        .map_err(|e| Error::from_kube("owning the ColdNode by its Node", e))?;
                }
            }
            Err(e) => return Err(Error::from_kube("creating the ColdNode", e)),
        }
        self.coldnode_exists = true;
        Ok(())
    }
}

/// The owner reference to `node` (None before the API server gave it a uid).
fn node_owner(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

fn is_ours(type_: &str) -> bool {
    type_ == CONDITION_MODELS_WARM || type_ == CONDITION_GPU_HEALTHY
}

/// The node's taints as JSON (order kept).
fn taints(node: &Node) -> Vec<Value> {
    let ts = node.spec.as_ref().and_then(|s| s.taints.clone());
    ts.into_iter()
        .flatten()
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect()
}
