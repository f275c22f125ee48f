//! `coldctl cache env MODEL`: what to paste into a model's pod spec so its compilers write into
//! the node's compile cache: a `hostPath` volume on the model's stable link
//! (`<cache root>/compile/models/<name>`, type `Directory`: the agent creates it), its
//! `volumeMount` at the policy's mount path, and the env that points vLLM, Triton, Inductor,
//! FlashInfer and the CUDA driver into it (exactly the agent's `caches::pod_env`).
//!
//! Cluster: the ColdModel's `compileCache.mountPath` (a model with `compileCache.enabled:
//! false` is refused, kind `cache_disabled`); `--here`: the default mount path, no cluster.
//!
//! Text: a YAML snippet, each part under a comment saying where it goes. `-o json|yaml`:
//! `{"model", "volume": {"name", "hostPath": {"path", "type"}}, "volumeMount": {"name",
//! "mountPath"}, "env": [{"name", "value"}]}` (Kubernetes field names: `-o yaml` pastes too).

use std::path::Path;

use anyhow::Context as _;
use coldstart_agent::api::{ColdModel, CompileCachePolicy};
use coldstart_agent::caches::layout::DEFAULT_MOUNT_PATH;
use coldstart_agent::caches::scope::validate_model;
use coldstart_agent::caches::{CacheRoot, EnvVar};
use kube::api::Api;
use serde::Serialize;

use super::RootArgs;
use crate::cluster::{self, resolve_model};
use crate::report::{CacheDisabled, CliError, NotFound, Output};
use crate::{Backend, Cli};

/// The volume's name in the pod spec.
pub const VOLUME_NAME: &str = "coldstart-compile-cache";

/// Arguments of `coldctl cache env`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Hub repo id (`org/name`) or a ColdModel name.
    pub model: String,
    #[command(flatten)]
    pub root: RootArgs,
}

/// The document: the parts of a pod spec, with Kubernetes field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCache {
    /// The ColdModel's name.
    pub model: String,
    /// For `spec.volumes`.
    pub volume: Volume,
    /// For the vLLM container's `volumeMounts`.
    pub volume_mount: VolumeMount,
    /// For the vLLM container's `env`.
    pub env: Vec<EnvVar>,
    /// The scope's owner when the policy names one (the container must run as it).
    #[serde(skip)]
    pub run_as: Option<(u32, u32)>,
}

/// A `hostPath` volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Volume name.
    pub name: String,
    /// Its source.
    pub host_path: HostPath,
}

/// `hostPath` source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPath {
    /// Path on the node.
    pub path: String,
    /// What must be there (`Directory`).
    #[serde(rename = "type")]
    pub kind: String,
}

/// A container's mount of the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where the container sees it.
    pub mount_path: String,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    let name = resolve_model(&args.model)?.0;
    validate_model(&name).map_err(CliError::usage)?;
    let policy = match cli.backend() {
        Backend::Node(sock) => node_policy(&sock, &name).await?,
        Backend::Here => CompileCachePolicy::default(),
        Backend::Cluster => policy(cli, &name).await?,
    };
    let pod = pod_cache(&args.root.root(), &name, &policy)?;
    Ok(output(&pod))
}

/// The ColdModel's compile-cache policy (its defaults when it names none); refused when the
/// policy is disabled.
async fn policy(cli: &Cli, name: &str) -> anyhow::Result<CompileCachePolicy> {
    let client = cluster::connect(&cli.cluster).await?;
    let model = Api::<ColdModel>::all(client)
        .get_opt(name)
        .await
        .with_context(|| format!("reading ColdModel {name}"))?
        .ok_or_else(|| NotFound(format!("no ColdModel named {name}")))?;
    let policy = model.spec.compile_cache.unwrap_or_default();
    if policy.enabled == Some(false) {
        return Err(CacheDisabled(format!(
            "ColdModel {name} has compileCache.enabled: false, so the agents keep no compile \
             cache for it (set it to true, or remove the field)"
        ))
        .into());
    }
    Ok(policy)
}

/// The policy of the model the standalone agent at `sock` keeps (its models file's
/// `[model.compile-cache]`), refused when disabled or when the agent has no such model.
async fn node_policy(sock: &std::path::Path, name: &str) -> anyhow::Result<CompileCachePolicy> {
    let status = crate::node::client(sock).status().await?;
    let entry = status
        .models
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            NotFound(format!(
                "the agent at {} keeps no model {name}",
                sock.display()
            ))
        })?;
    let policy = entry
        .model
        .to_cold_model(name)
        .spec
        .compile_cache
        .unwrap_or_default();
    if policy.enabled == Some(false) {
        return Err(CacheDisabled(format!(
            "model {name} has compile-cache.enabled = false in the agent's models file"
        ))
        .into());
    }
    Ok(policy)
}

/// The pod parts for `model` under `root` with `policy`'s mount path (or the default).
pub fn pod_cache(
    root: &CacheRoot,
    model: &str,
    policy: &CompileCachePolicy,
) -> anyhow::Result<PodCache> {
    let mount = policy.mount_path.as_deref().unwrap_or(DEFAULT_MOUNT_PATH);
    if !mount.starts_with('/') {
        anyhow::bail!("ColdModel {model}: compileCache.mountPath {mount:?} is not absolute");
    }
    let m = root.pod_mount(model, Path::new(mount));
    let run_as = (policy.uid.is_some() || policy.gid.is_some())
        .then(|| (policy.uid.unwrap_or(0), policy.gid.unwrap_or(0)));
    Ok(PodCache {
        model: model.to_string(),
        volume: Volume {
            name: VOLUME_NAME.into(),
            host_path: HostPath {
                path: m.host_path.to_string_lossy().into_owned(),
                kind: "Directory".into(),
            },
        },
        volume_mount: VolumeMount {
            name: VOLUME_NAME.into(),
            mount_path: m.mount_path.to_string_lossy().into_owned(),
        },
        env: m.env,
        run_as,
    })
}

fn output(pod: &PodCache) -> Output {
    let doc = serde_json::to_value(pod).unwrap_or_default();
    Output::text(doc, render(pod))
}

/// The text: a YAML snippet per part of the pod spec, under a comment saying where it goes.
pub fn render(pod: &PodCache) -> String {
    let mut out = format!(
        "# Compile cache of ColdModel {} (coldctl cache env).\n",
        pod.model
    );
    if let Some((uid, gid)) = pod.run_as {
        out.push_str(&format!(
            "# The container runs as uid {uid}, gid {gid}: the owner of the cache \
             (compileCache.uid/gid; hostPath volumes ignore fsGroup).\n"
        ));
    }
    out.push_str("# Under the pod's spec:\n");
    out.push_str(&yaml("volumes", &[&pod.volume]));
    out.push_str("# Under the vLLM container:\n");
    out.push_str(&yaml("volumeMounts", &[&pod.volume_mount]));
    out.push_str(&yaml("env", &pod.env));
    out
}

/// `key:` and `value` below it, as YAML (fields in their declared order).
fn yaml<T: Serialize + ?Sized>(key: &str, value: &T) -> String {
    serde_yaml::to_string(&std::collections::BTreeMap::from([(key, value)])).unwrap_or_default()
}
