//! The cluster backend: a Kubernetes client found as kubectl finds one (`--kubeconfig`, else
//! `KUBECONFIG`, else `~/.kube/config`, else in-cluster), made to fail fast, and one read of
//! what the roll-up needs (ColdModels, Nodes' labels, ColdNodes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use coldstart_agent::api::{ColdModel, ColdNode, model_name};
use coldstart_agent::weights::RepoId;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::args::ClusterArgs;
use crate::report::ConnectError;

/// Connecting gives up after this long (an address that drops packets).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request gives up when no answer came for this long (we never watch, so no long reads).
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Where kubectl would look for a kubeconfig: `KUBECONFIG`'s files, else `~/.kube/config`;
/// `None` when running in a pod (the service account).
fn kubeconfig_places() -> Option<Vec<PathBuf>> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return None;
    }
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(list) => Some(std::env::split_paths(&list).collect()),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            Some(home.map(|h| h.join(".kube/config")).into_iter().collect())
        }
    }
}

/// A client for the cluster. Transient answers (429, 503, 504) are not retried behind the
/// caller's back: a one-shot command should say at once that the API server is unwell.
pub async fn connect(args: &ClusterArgs) -> anyhow::Result<Client> {
    if args.kubeconfig.is_none()
        && let Some(places) = kubeconfig_places()
        && places.iter().all(|p| !p.exists())
    {
        let looked: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
        return Err(ConnectError::NoCluster {
            looked: looked.join(", "),
        }
        .into());
    }
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| ConnectError::Kubeconfig {
                path: path.display().to_string(),
                reason: innermost(&e),
            })?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| ConnectError::Kubeconfig {
                    path: path.display().to_string(),
                    reason: innermost(&e),
                })?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await.context("finding the cluster")?,
    };
    config.default_retry = false;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    Client::try_from(config).context("building the Kubernetes client")
}

/// The last message of an error's chain: kube's errors repeat the file name at every level.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The ColdModel name a command-line MODEL means: a Hub repo id (`org/name`) maps through
/// [`model_name`]; anything else is taken as a ColdModel name. Returns the name and the repo
/// id when one was given.
pub fn resolve_model(arg: &str) -> anyhow::Result<(String, Option<RepoId>)> {
    if arg.contains('/') {
        let repo = RepoId::parse(arg)?;
        Ok((model_name(&repo), Some(repo)))
    } else {
        Ok((arg.to_string(), None))
    }
}

/// What the roll-up is computed from, read at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The ColdModels.
    pub models: Vec<ColdModel>,
    /// Every Node's labels, by node name.
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
    /// The ColdNodes.
    pub coldnodes: Vec<ColdNode>,
}

/// Reads the ColdModels (just `model` when given; absent is not an error here), the Nodes'
/// labels and the ColdNodes.
pub async fn snapshot(client: &Client, model: Option<&str>) -> anyhow::Result<Snapshot> {
    let models_api: Api<ColdModel> = Api::all(client.clone());
    let models = match model {
        Some(name) => models_api
            .get_opt(name)
            .await
            .with_context(|| format!("reading ColdModel {name}"))?
            .into_iter()
            .collect(),
        None => {
            models_api
                .list(&ListParams::default())
                .await
                .context("listing ColdModels")?
                .items
        }
    };
    let coldnodes = Api::<ColdNode>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing ColdNodes")?
        .items;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Nodes")?
        .items
        .into_iter()
        .filter_map(|n| {
            let name = n.metadata.name?;
            Some((name, n.metadata.labels.unwrap_or_default()))
        })
        .collect();
    Ok(Snapshot {
        models,
        nodes,
        coldnodes,
    })
}
