//! Registry sharing in the cluster pass (a policy's `registry`, off by default): after a
//! capture the snapshot is pushed under its key hash and the digest recorded in the ColdNode;
//! a node of the model that offers none pulls a snapshot another node recorded as pushed, when
//! its key fits this node. Only digests a ColdNode recorded are pulled (the admission policy
//! lets an agent write only its own ColdNode).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::ListParams;
use tracing::{info, warn};

use super::{Outcome, SnapshotView, Snapshots};
use crate::api::{ColdModel, SnapshotCapture, SnapshotPolicy, name_of};
use crate::images::registry::Access;
use crate::images::{ImageRef, RegistryAuth, RegistryClient};
use crate::snapshots::key::CompatKey;
use crate::snapshots::policy::{self, HereFacts, ModelNow};
use crate::snapshots::{Managed, Snapshot, Taken, share};
use crate::warmer::Credentials;

/// How often the fleet's ColdNodes are read for a snapshot to pull.
const LOOK_EVERY: Duration = Duration::from_secs(30);

/// Where a model's snapshots are shared.
#[derive(Debug, Clone)]
pub(super) struct ShareTarget {
    client: RegistryClient,
    repo: ImageRef,
    auth: Option<RegistryAuth>,
}

/// The share targets of the policies that name a registry (`Err`: why not, for status).
pub(super) async fn targets<C: Credentials>(
    models: &[ColdModel],
    policies: &BTreeMap<String, SnapshotPolicy>,
    creds: &C,
    client: impl Future<Output = RegistryClient>,
) -> BTreeMap<String, Result<ShareTarget, String>> {
    let mut out = BTreeMap::new();
    let wanted: Vec<(&ColdModel, &str)> = models
        .iter()
        .filter_map(|m| {
            let p = policies.get(name_of(m))?;
            Some((m, p.registry.as_deref().filter(|r| !r.is_empty())?))
        })
        .collect();
    if wanted.is_empty() {
        return out;
    }
    let client = client.await;
    for (m, registry) in wanted {
        let target = async {
            let repo = ImageRef::parse(registry).map_err(|e| e.to_string())?;
            let auth = creds.pull_auth(m, &repo).await.map_err(|e| e.to_string())?;
            Ok(ShareTarget {
                client: client.clone(),
                repo,
                auth,
            })
        };
        let t: Result<ShareTarget, String> = target.await;
        out.insert(
            name_of(m).to_string(),
            t.map_err(|e| format!("snapshot registry: {e}")),
        );
    }
    out
}

/// Pushes a snapshot just taken; records where in its meta. Returns `registry/repo@digest`.
pub(super) async fn push(m: &Managed, snap: &Snapshot, t: &ShareTarget) -> Result<String, String> {
    let mut repo = t
        .client
        .repository(&t.repo, t.auth.as_ref(), Access::Push)
        .map_err(|e| e.to_string())?;
    let digest = share::push(snap, &mut repo, &snap.record.key.hash())
        .await
        .map_err(|e| e.to_string())?;
    let reference = format!("{}@{digest}", repo.name());
    let mut meta = snap.record.meta.clone();
    meta.pushed = Some(reference.clone());
    m.store
        .set_meta(&snap.record.name, &meta)
        .map_err(|e| e.to_string())?;
    Ok(reference)
}

/// A snapshot another node recorded as pushed.
struct Candidate {
    node: String,
    reference: String,
    digest: String,
    key_hash: String,
    created: i64,
}

impl Snapshots {
    /// Starts a pull of `model`'s snapshot when this node offers none, no task runs, and a
    /// ColdNode of another node recorded a pushed one whose key fits here.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn maybe_pull(
        &mut self,
        m: &Managed,
        model: &str,
        target: &ShareTarget,
        support: &Result<(), String>,
        here: &HereFacts,
        now_model: Option<&ModelNow>,
        now_unix: u64,
    ) -> Option<SnapshotCapture> {
        if self.task.is_some() || support.is_err() {
            return None;
        }
        if self
            .remote_checked
            .is_some_and(|t| t.elapsed() < LOOK_EVERY)
        {
            return None;
        }
        self.remote_checked = Some(Instant::now());
        let coldnodes = match self.coldnodes.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                warn!(error = %e, "listing ColdNodes for a shared snapshot");
                return None;
            }
        };
        let mut found: Vec<Candidate> = coldnodes
            .iter()
            .filter(|n| n.metadata.name.as_deref() != Some(self.node.as_str()))
            .filter_map(|n| Some((n.metadata.name.clone()?, n.status.as_ref()?)))
            .flat_map(|(node, st)| {
                st.snapshots
                    .iter()
                    .filter(|s| s.model == model)
                    .filter_map(move |s| {
                        let reference = s.pushed.clone()?;
                        let (_, digest) = reference.rsplit_once('@')?;
                        let key = CompatKey::from_fields(&s.key)?;
                        Some((node.clone(), s, key, digest.to_string(), reference.clone()))
                    })
            })
            .filter(|(_, _, key, digest, _)| {
                self.failed
                    .get(digest)
                    .is_none_or(|t| t.elapsed() >= super::RETRY_AFTER)
                    && policy::fits(key, support, here, now_model).is_ok()
            })
            .map(|(node, s, _, digest, reference)| Candidate {
                node,
                reference,
                digest,
                key_hash: s.key_hash.clone(),
                created: s.created.as_ref().map_or(0, |t| t.0.as_second()),
            })
            .collect();
        found.sort_by_key(|c| std::cmp::Reverse(c.created));
        let c = found.into_iter().next()?;
        // Only from the repository the policy names.
        let repo_name = target.repo.name();
        if !c.reference.starts_with(&format!("{repo_name}@")) {
            return None;
        }
        info!(%model, from = %c.node, reference = %c.reference, "pulling a shared snapshot");
        let (managed, t, model_name) = (m.clone(), target.clone(), model.to_string());
        let (digest, key_hash) = (c.digest.clone(), c.key_hash.clone());
        self.task = Some(tokio::spawn(async move {
            let result = async {
                let mut repo = t
                    .client
                    .repository(&t.repo, t.auth.as_ref(), Access::Pull)
                    .map_err(|e| crate::snapshots::Error::Runtime {
                        op: "registry",
                        reason: e.to_string(),
                    })?;
                let snapshot = share::pull(
                    &managed,
                    &mut repo,
                    &digest,
                    &model_name,
                    &key_hash,
                    now_unix,
                )
                .await?;
                Ok(Taken {
                    snapshot,
                    checkpoint: Duration::ZERO,
                    manifest: digest.clone(),
                })
            }
            .await;
            Outcome {
                model: model_name,
                from: digest,
                pulled: true,
                result,
                push: None,
            }
        }));
        Some(SnapshotCapture {
            model: model.to_string(),
            state: "pulling".into(),
            message: Some(format!("{} (recorded by {})", c.reference, c.node)),
            at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            )),
        })
    }
}

/// Events and status for a finished push (after a capture).
pub(super) fn pushed(
    view: &mut SnapshotView,
    model: &str,
    push: &Result<String, String>,
) -> String {
    match push {
        Ok(r) => format!("; pushed to {r}"),
        Err(e) => {
            let msg = format!("snapshot of model {model} not pushed: {e}");
            view.events.push((
                kube::runtime::events::EventType::Warning,
                "SnapshotPushFailed",
                msg,
            ));
            format!("; push failed: {e}")
        }
    }
}
