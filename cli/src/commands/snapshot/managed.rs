//! `coldctl snapshot create|list|delete|restore-spec`: the managed snapshots of a ColdModel.
//!
//! - `create MODEL`: cluster: asks the model's nodes for a snapshot now (the ColdModel's
//!   `coldstart.dev/snapshot-requested-at` annotation; each node with a Ready pod of the
//!   model's snapshot selector captures once); `--here --pod NS/POD[/CONTAINER]`: captures on
//!   this node now and imports the model's checkpoint image.
//! - `list [MODEL]`: cluster: per node from the ColdNodes (key hash, size, age, restorable and
//!   why not); `--here`: this node's snapshot directory and containerd, read now.
//! - `delete NAME --here`: the image (while it names this snapshot), the compile-cache lease,
//!   the files. In the cluster the policy evicts (`keep`, `maxSize`, or turning it off).
//! - `restore-spec MODEL`: the pod patch that restores from the model's snapshot: the
//!   checkpoint image (`imagePullPolicy: Never`: it exists only on the labelled nodes) and a
//!   required node affinity to `coldstart.dev/snapshot.<model>=<key hash>`; the key hash held
//!   by the most nodes that can restore it (the newest on ties). `--for deployment` nests it
//!   under `spec.template`.
//!
//! `--node` acts on this machine as `--here` does (a standalone agent runs no pods, so no
//! policy: snapshots there are taken by hand).
//!
//! `-o json|yaml`: create (cluster) `{"model", "requestedAt"}`; create (`--here`) a snapshot
//! row plus `{"manifestDigest", "checkpointSeconds"}`; list `{"snapshots": [row]}`, a row being
//! `{"node" (cluster only), "name", "model", "container", "keyHash", "key", "image", "pushed",
//! "bytes", "created", "restorable", "reason"}`; delete `{"name", "deleted", "image"}`;
//! restore-spec `{"model", "keyHash", "nodes", "patch"}`, or `{"model", "patch": null,
//! "outcome": "no_snapshot"}` with exit 1.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use coldstart_agent::api::{
    ColdModel, ColdNode, SNAPSHOT_REQUEST_ANNOTATION, SnapshotStatus, snapshot_label_key,
};
use coldstart_agent::snapshots::policy::local_image;
use coldstart_agent::snapshots::{Managed, NodeFacts, TakeRequest, restore_support};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::NodeArgs;
use crate::cluster::{self, resolve_model};
use crate::report::{CliError, Output};
use crate::{Backend, Cli, output, rollup};

/// Where snapshots live on this node.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The snapshot directory (the agent's `<cache root>/snapshots`).
    #[arg(long, value_name = "DIR",
          default_value_t = format!("{}/snapshots", coldstart_agent::config::DEFAULT_CACHE_ROOT))]
    pub snapshot_dir: String,
    /// The agent's cache root (compile-cache retention leases).
    #[arg(long, env = "COLDSTART_CACHE_ROOT", value_name = "DIR",
          default_value = coldstart_agent::config::DEFAULT_CACHE_ROOT)]
    pub cache_root: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

impl StoreArgs {
    fn open(&self) -> Result<Managed, CliError> {
        Ok(Managed::open(
            std::path::Path::new(&self.snapshot_dir),
            self.node.runtime(),
            Some(&self.cache_root),
        )
        .context("snapshot directory")?)
    }
}

/// Arguments of `coldctl snapshot create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The model: a Hub repo id (`org/name`) or a ColdModel name.
    pub model: String,
    /// `--here`: the pod to capture, NAMESPACE/POD or NAMESPACE/POD/CONTAINER.
    #[arg(long, value_name = "NS/POD[/CONTAINER]")]
    pub pod: Option<String>,
    /// `--here`: the model commit the process has loaded (part of the key).
    #[arg(long, default_value = "")]
    pub model_commit: String,
    /// `--here`: the checkpoint's timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `coldctl snapshot list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this model.
    pub model: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `coldctl snapshot delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The snapshot's name on this node.
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `coldctl snapshot restore-spec`.
#[derive(Debug, clap::Args)]
pub struct RestoreSpecArgs {
    /// The model.
    pub model: String,
    /// The patch's shape: a Pod's (`spec`) or a Deployment's (`spec.template.spec`).
    #[arg(long = "for", value_name = "KIND", default_value = "pod",
          value_parser = ["pod", "deployment"])]
    pub for_kind: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn local(cli: &Cli) -> bool {
    matches!(cli.backend(), Backend::Here | Backend::Node(_))
}

/// `create`.
pub async fn create(cli: &Cli, args: &CreateArgs) -> Result<Output, CliError> {
    let (model, _) = resolve_model(&args.model)?;
    if !local(cli) {
        if args.pod.is_some() {
            return Err(CliError::usage(
                "--pod captures on this node: add --here (in the cluster the agents pick the pod)",
            ));
        }
        let client = cluster::connect(&cli.cluster).await?;
        let api = Api::<ColdModel>::all(client);
        let at = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = json!({"metadata": {"annotations": {SNAPSHOT_REQUEST_ANNOTATION: at}}});
        api.patch(&model, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("asking ColdModel {model} for a snapshot"))?;
        let doc = json!({"model": model, "requestedAt": at});
        let line = format!(
            "requested a snapshot of {model} at {at}: each node with a Ready pod of the model's \
             snapshot selector captures it (`coldctl snapshot list {model}` shows them)"
        );
        return Ok(Output::line(doc, line));
    }
    let Some(pod) = &args.pod else {
        return Err(CliError::usage(
            "--here needs --pod NS/POD[/CONTAINER]: the container to capture",
        ));
    };
    let parts: Vec<&str> = pod.split('/').collect();
    let (ns, name, container) = match parts.as_slice() {
        [ns, p, c] => (*ns, *p, *c),
        [ns, p] => (*ns, *p, *p),
        _ => {
            return Err(CliError::usage(format!(
                "{pod:?} is not NS/POD[/CONTAINER]"
            )));
        }
    };
    let m = args.store.open()?;
    let now = u64::try_from(crate::commands::now()).unwrap_or(0);
    let support = m.runtime.support().await.context("containerd")?;
    let req = TakeRequest {
        model: model.clone(),
        namespace: ns.into(),
        pod: name.into(),
        container: container.into(),
        pod_ip: None,
        quiesce: None,
        timeout: std::time::Duration::from_secs(args.timeout),
        node: NodeFacts {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            model_commit: args.model_commit.clone(),
            criu: support.criu.clone().unwrap_or_default(),
            ..NodeFacts::default()
        },
        compile_scope: None,
        now_unix: now,
    };
    let t = m
        .take(&req)
        .await
        .with_context(|| format!("snapshot of {pod}"))?;
    let row = row_here(
        &t.snapshot,
        true,
        restore_support(&support).err().map(|e| e.to_string()),
    );
    let line = format!(
        "snapshot {} of {pod}: {}, checkpoint {:.1} s, image {} (key {})",
        row.name,
        output::bytes(row.bytes),
        t.checkpoint.as_secs_f64(),
        row.image.as_deref().unwrap_or("-"),
        row.key_hash
    );
    let mut doc = serde_json::to_value(&row).unwrap_or_default();
    doc["manifestDigest"] = json!(t.manifest);
    doc["checkpointSeconds"] = json!(t.checkpoint.as_secs_f64());
    Ok(Output::line(doc, line))
}

/// A held snapshot as this node sees it.
fn row_here(
    s: &coldstart_agent::snapshots::Snapshot,
    present: bool,
    cannot: Option<String>,
) -> SnapshotStatus {
    let verdict = match cannot
        .or_else(|| (!present).then(|| "checkpoint image not in containerd".to_string()))
    {
        Some(why) => Err(why),
        None => Ok(()),
    };
    s.status(verdict)
}

/// One row per (node, snapshot).
fn rows_of(coldnodes: &[ColdNode], model: Option<&str>) -> Vec<(Option<String>, SnapshotStatus)> {
    let mut rows: Vec<(Option<String>, SnapshotStatus)> = coldnodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n.status.as_ref()?)))
        .flat_map(|(node, st)| {
            st.snapshots
                .iter()
                .map(move |s| (Some(node.clone()), s.clone()))
        })
        .filter(|(_, s)| model.is_none_or(|m| s.model == m))
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1.model, &a.1.name).cmp(&(&b.0, &b.1.model, &b.1.name)));
    rows
}

async fn coldnodes(cli: &Cli) -> Result<Vec<ColdNode>, CliError> {
    let client = cluster::connect(&cli.cluster).await?;
    Ok(Api::<ColdNode>::all(client)
        .list(&ListParams::default())
        .await
        .context("listing ColdNodes")?
        .items)
}

/// This node's snapshots, read now (restorable here: the runtime can restore and the image is
/// in containerd; the key is checked against the model when a pod restores).
async fn rows_here(
    store: &StoreArgs,
    model: Option<&str>,
) -> Result<Vec<(Option<String>, SnapshotStatus)>, CliError> {
    let m = store.open()?;
    let cannot = match m.runtime.support().await {
        Ok(s) => restore_support(&s).err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    let mut rows = Vec::new();
    for s in m.store.list().context("listing snapshots")? {
        if model.is_some_and(|want| s.record.meta.model != want) {
            continue;
        }
        let present = m.image_present(&s).await.unwrap_or(false);
        rows.push((None, row_here(&s, present, cannot.clone())));
    }
    Ok(rows)
}

/// `list`.
pub async fn list(cli: &Cli, args: &ListArgs) -> Result<Output, CliError> {
    let model = match &args.model {
        Some(m) => Some(resolve_model(m)?.0),
        None => None,
    };
    let rows = if local(cli) {
        rows_here(&args.store, model.as_deref()).await?
    } else {
        rows_of(&coldnodes(cli).await?, model.as_deref())
    };
    let now = crate::commands::now();
    let docs: Vec<Value> = rows
        .iter()
        .map(|(node, s)| {
            let mut d = serde_json::to_value(s).unwrap_or_default();
            if let Some(n) = node {
                d["node"] = json!(n);
            }
            d
        })
        .collect();
    if rows.is_empty() {
        return Ok(Output::text(
            json!({"snapshots": docs}),
            "no snapshots\n".to_string(),
        ));
    }
    let with_node = rows.iter().any(|(n, _)| n.is_some());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(node, s)| {
            let mut row = Vec::new();
            if with_node {
                row.push(node.clone().unwrap_or_default());
            }
            let age = s.created.as_ref().map(|t| now - t.0.as_second());
            row.extend([
                if s.model.is_empty() {
                    "-".into()
                } else {
                    s.model.clone()
                },
                s.name.clone(),
                s.key_hash.clone(),
                output::bytes(s.bytes),
                rollup::age_text(age),
                if s.restorable {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]);
            row
        })
        .collect();
    let mut headers = vec!["MODEL", "NAME", "KEY", "SIZE", "AGE", "RESTORABLE"];
    if with_node {
        headers.insert(0, "NODE");
    }
    let mut text = rollup::table(&headers, &cells);
    for (node, s) in &rows {
        if let Some(why) = &s.reason {
            let on = node
                .as_deref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default();
            text.push_str(&format!("{}{on}: not restorable: {why}\n", s.name));
        }
    }
    Ok(Output::text(json!({"snapshots": docs}), text))
}

/// `delete`.
pub async fn delete(cli: &Cli, args: &DeleteArgs) -> Result<Output, CliError> {
    if !local(cli) {
        return Err(CliError::usage(
            "in the cluster the agents evict by policy (snapshot.keep, snapshot.maxSize, or \
             enabled: false); delete one on its node with --here",
        ));
    }
    let m = args.store.open()?;
    let snap = m.store.get(&args.name).context("snapshot")?;
    let now = u64::try_from(crate::commands::now()).unwrap_or(0);
    m.evict(&snap, now).await.context("deleting the snapshot")?;
    let doc = json!({"name": args.name, "deleted": true, "image": snap.record.meta.image});
    Ok(Output::line(doc, format!("snapshot {} deleted", args.name)))
}

/// `restore-spec`.
pub async fn restore_spec(cli: &Cli, args: &RestoreSpecArgs) -> Result<Output, CliError> {
    let (model, _) = resolve_model(&args.model)?;
    let Some(label) = snapshot_label_key(&model) else {
        return Err(CliError::usage(format!(
            "model name {model} is too long for the snapshot label"
        )));
    };
    let rows = if local(cli) {
        rows_here(&args.store, Some(&model)).await?
    } else {
        rows_of(&coldnodes(cli).await?, Some(&model))
    };
    let Some((hash, nodes, container)) = pick(&rows) else {
        return Err(CliError::Outcome {
            code: crate::report::EXIT_FAILURE,
            kind: "no_snapshot",
            output: Output::line(
                json!({"model": model, "patch": null, "outcome": "no_snapshot"}),
                format!("no node offers a restorable snapshot of {model}: pods start normally"),
            ),
            errors: Vec::new(),
        });
    };
    let patch = restore_patch(&model, &label, &hash, &container, &args.for_kind);
    let mut text = serde_json::to_string_pretty(&patch).unwrap_or_default();
    text.push('\n');
    let doc = json!({"model": model, "keyHash": hash, "nodes": nodes, "patch": patch});
    Ok(Output::text(doc, text))
}

/// The key hash restorable on the most nodes (newest on ties), those nodes, the container.
fn pick(rows: &[(Option<String>, SnapshotStatus)]) -> Option<(String, Vec<String>, String)> {
    let mut by_hash: BTreeMap<&str, (Vec<String>, i64, String)> = BTreeMap::new();
    for (node, s) in rows.iter().filter(|(_, s)| s.restorable) {
        let e = by_hash.entry(&s.key_hash).or_default();
        let node = node.clone().unwrap_or_else(|| "this node".into());
        if !e.0.contains(&node) {
            e.0.push(node);
        }
        let t = s.created.as_ref().map_or(0, |t| t.0.as_second());
        if t >= e.1 {
            e.1 = t;
            e.2 = s.container.clone();
        }
    }
    by_hash
        .into_iter()
        .max_by_key(|(_, (nodes, newest, _))| (nodes.len(), *newest))
        .map(|(h, (nodes, _, c))| (h.to_string(), nodes, c))
}

/// The patch: the container's image is the checkpoint image (never pulled), and the pod
/// requires a node whose snapshot label carries `hash`.
pub fn restore_patch(
    model: &str,
    label: &str,
    hash: &str,
    container: &str,
    for_kind: &str,
) -> Value {
    let spec = json!({
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": label, "operator": "In", "values": [hash]}]}]}}},
        "containers": [{
            "name": container,
            "image": local_image(model, hash),
            "imagePullPolicy": "Never",
        }],
    });
    match for_kind {
        "deployment" => json!({"spec": {"template": {"spec": spec}}}),
        _ => json!({"spec": spec}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, hash: &str, created: i64, restorable: bool) -> SnapshotStatus {
        SnapshotStatus {
            name: name.into(),
            model: "m".into(),
            container: "vllm".into(),
            key_hash: hash.into(),
            created: k8s_openapi::jiff::Timestamp::from_second(created)
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            restorable,
            ..Default::default()
        }
    }

    #[test]
    fn the_hash_on_the_most_nodes_wins_and_unrestorable_ones_do_not_count() {
        let rows = vec![
            (Some("a".to_string()), status("s1", "old", 100, true)),
            (Some("b".to_string()), status("s2", "old", 110, true)),
            (Some("c".to_string()), status("s3", "new", 500, true)),
            (Some("d".to_string()), status("s4", "new", 600, false)),
            (Some("e".to_string()), status("s5", "other", 900, false)),
        ];
        let (hash, nodes, container) = pick(&rows).unwrap();
        assert_eq!(hash, "old");
        assert_eq!(nodes, ["a", "b"]);
        assert_eq!(container, "vllm");
        // A tie goes to the newest.
        let tie = vec![rows[0].clone(), rows[2].clone()];
        assert_eq!(pick(&tie).unwrap().0, "new");
        assert!(pick(&rows[3..]).is_none());
    }

    #[test]
    fn the_patch_requires_the_label_and_never_pulls() {
        let label = snapshot_label_key("m").unwrap();
        let p = restore_patch("m", &label, "abc", "vllm", "pod");
        let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
        assert_eq!(
            term["matchExpressions"][0],
            json!({"key": "coldstart.dev/snapshot.m", "operator": "In", "values": ["abc"]})
        );
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["image"], "localhost/coldstart-snapshot/m:abc");
        assert_eq!(c["imagePullPolicy"], "Never");
        assert_eq!(c["name"], "vllm");
        let d = restore_patch("m", &label, "abc", "vllm", "deployment");
        assert_eq!(d["spec"]["template"]["spec"], p["spec"]);
    }
}
