//! `coldctl cache export|import MODEL`: moves a model's compile-cache scope on this node to or
//! from a registry, now, as the agent does on its own (`compileCache.registry`).
//!
//! - `--here`: this node's cache root; `--registry REPO` names the repository.
//! - `--node`: the same, with the registry from the standalone agent's models file when
//!   `--registry` is not given.
//! - In the cluster the agents export and import by themselves; these verbs run on a node.
//!
//! `export` pushes the scope's newest sealed generation under the push rule (tag absent, or a
//! newer generation of an imported scope). `import --digest D` imports only the artifact whose manifest digest is D (a node
//! with no fleet to vouch for a digest trusts only what the operator names), into the model's
//! current scope, which must hold no file yet.
//!
//! Text: one line. `-o json|yaml`: `{"result", "model", "scope", "reference", "digest",
//! "generation", "bytes", "transferredBytes"}` (`result`: `pushed`, `already_exported`,
//! `present`, `claimed_elsewhere`, `nothing_sealed`; `imported`, `no_artifact`).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use coldstart_agent::caches::ship::{self, Exported, Imported, NoClaim, Target, Trust};
use coldstart_agent::caches::{CacheRoot, Owner, Scope, scope};
use coldstart_agent::images::{DockerConfig, ImageRef, RegistryClient};
use serde_json::json;

use super::{RootArgs, now_ns};
use crate::cluster::resolve_model;
use crate::report::{CliError, Output};
use crate::{Backend, Cli};

/// Where containerd's CRI plugin reads `hosts.toml` unless configured otherwise.
const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// Arguments shared by export and import.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The model: a Hub repo id (`org/name`) or a ColdModel name.
    pub model: String,
    /// OCI repository (`registry.example.com/team/compile-caches`, no tag).
    #[arg(long, value_name = "REPO")]
    pub registry: Option<String>,
    /// Registry credentials: a Docker config JSON (`~/.docker/config.json`, a
    /// `kubernetes.io/dockerconfigjson` secret's content).
    #[arg(long, value_name = "FILE")]
    pub pull_secret: Option<PathBuf>,
    /// containerd's registry hosts directory (`hosts.toml` mirrors, CAs, plain HTTP)
    /// [default: /etc/containerd/certs.d when it exists].
    #[arg(long, value_name = "DIR")]
    pub registry_config_dir: Option<PathBuf>,
    #[command(flatten)]
    pub root: RootArgs,
}

/// Arguments of `coldctl cache export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `coldctl cache import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub common: Common,
    /// The artifact's manifest digest (`sha256:...`, as `export` or a ColdNode's
    /// `compileCaches[].exported.digest` says): nothing else is imported.
    #[arg(long, value_name = "DIGEST")]
    pub digest: String,
}

/// The scope, target and owner a verb works on.
struct Resolved {
    root: CacheRoot,
    scope: Scope,
    owner: Owner,
    target: Target,
    client: RegistryClient,
}

async fn resolve(cli: &Cli, c: &Common) -> Result<Resolved, CliError> {
    let model = resolve_model(&c.model)?.0;
    let registry = match (cli.backend(), &c.registry) {
        (_, Some(r)) => r.clone(),
        (Backend::Here, None) => {
            return Err(CliError::usage(
                "--registry REPO is required with --here (the agent takes it from the \
                 model's compileCache.registry)",
            ));
        }
        (Backend::Node(sock), None) => {
            let models = crate::node::client(&sock)
                .models()
                .await
                .map_err(anyhow::Error::from)?;
            models
                .into_iter()
                .find(|m| m.name == model)
                .and_then(|m| m.model.compile_cache.and_then(|c| c.registry))
                .ok_or_else(|| {
                    anyhow!(
                        "the agent's models file names no compile-cache registry for {model}: \
                         give --registry"
                    )
                })?
        }
        (Backend::Cluster, None) => {
            return Err(CliError::usage(
                "in the cluster each agent exports and imports its node's compile caches \
                 (ColdModel compileCache.registry): run this on the node with --here or --node",
            ));
        }
    };
    let auth = match &c.pull_secret {
        Some(path) => {
            let cfg = DockerConfig::load(path).map_err(anyhow::Error::from)?;
            cfg.lookup(&ImageRef::parse(&registry).map_err(anyhow::Error::from)?)
        }
        None => None,
    };
    let target = Target::new(&registry, auth).map_err(anyhow::Error::from)?;
    let root = c.root.root();
    let scope = current_scope(&root, &model)?;
    let tree = root.scope_dir(&scope.name);
    let meta = std::fs::metadata(&tree).with_context(|| format!("reading {}", tree.display()))?;
    let hosts_dir = c.registry_config_dir.clone().or_else(|| {
        let d = PathBuf::from(DEFAULT_HOSTS_DIR);
        d.is_dir().then_some(d)
    });
    Ok(Resolved {
        root,
        scope,
        owner: Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        },
        target,
        client: RegistryClient::new(hosts_dir, std::time::Duration::ZERO),
    })
}

/// The scope the model's link points at.
fn current_scope(root: &CacheRoot, model: &str) -> anyhow::Result<Scope> {
    let Some(name) = scope::current_scope(root, model)? else {
        bail!(
            "no compile-cache scope for {model} under {}: the agent makes it once the model's \
             image is pulled",
            root.compile_dir().display()
        );
    };
    scope::list_scopes(root)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("scope {name} of {model} has no state (key.json)"))
}

fn artifact_doc(
    result: &str,
    model: &str,
    scope: &str,
    a: &coldstart_agent::api::CacheArtifact,
) -> serde_json::Value {
    json!({
        "result": result,
        "model": model,
        "scope": scope,
        "reference": a.reference,
        "digest": a.digest,
        "generation": a.generation,
        "bytes": a.bytes,
        "transferredBytes": a.transferred_bytes,
    })
}

/// Runs `export`.
pub async fn export(cli: &Cli, args: &ExportArgs) -> Result<Output, CliError> {
    let r = resolve(cli, &args.common).await?;
    let model = r.scope.key.model.clone();
    let out = ship::export(
        &r.root,
        &r.scope.name,
        &r.client,
        &r.target,
        &NoClaim,
        &node_name(),
        now_ns(),
    )
    .await
    .map_err(anyhow::Error::from)?;
    let reference = r.target.reference(&r.scope.name);
    Ok(match out {
        Exported::Pushed(a) => Output::line(
            artifact_doc("pushed", &model, &r.scope.name, &a),
            format!(
                "pushed {model} generation {} to {}@{} ({} bytes, {} shipped)",
                a.generation, a.reference, a.digest, a.bytes, a.transferred_bytes
            ),
        ),
        Exported::AlreadyExported(a) => Output::line(
            artifact_doc("already_exported", &model, &r.scope.name, &a),
            format!(
                "{model} generation {} was exported before: {}@{}",
                a.generation, a.reference, a.digest
            ),
        ),
        Exported::Present { digest } => Output::line(
            json!({"result": "present", "model": model, "scope": r.scope.name,
                   "reference": reference, "digest": digest}),
            format!(
                "not pushed: {reference} names {digest} already (this node's scope was not \
                 imported from it, so its generation adds nothing the fleet needs)"
            ),
        ),
        Exported::ClaimedElsewhere => Output::line(
            json!({"result": "claimed_elsewhere", "model": model, "scope": r.scope.name,
                   "reference": reference}),
            format!("not pushed: another node is pushing {reference}"),
        ),
        Exported::NothingSealed => Output::line(
            json!({"result": "nothing_sealed", "model": model, "scope": r.scope.name}),
            format!(
                "not pushed: {model}'s scope has no sealed generation yet (the agent seals it \
                 once a pod was Ready and the tree stayed quiet)"
            ),
        ),
    })
}

/// Runs `import`.
pub async fn import(cli: &Cli, args: &ImportArgs) -> Result<Output, CliError> {
    let r = resolve(cli, &args.common).await?;
    let model = r.scope.key.model.clone();
    let trust = Trust::Digest(args.digest.clone());
    let out = ship::import(
        &r.root,
        &r.scope,
        r.owner,
        &r.client,
        &r.target,
        &trust,
        now_ns(),
    )
    .await
    .map_err(anyhow::Error::from)?;
    let reference = r.target.reference(&r.scope.name);
    match out {
        Imported::Done(a) => Ok(Output::line(
            artifact_doc("imported", &model, &r.scope.name, &a),
            format!(
                "imported {}@{} into {model}'s scope ({} bytes, {} shipped)",
                a.reference, a.digest, a.bytes, a.transferred_bytes
            ),
        )),
        Imported::NoArtifact => Err(anyhow!("{reference} does not exist in the registry").into()),
        Imported::NotTrusted { digest } => Err(anyhow!(
            "{reference} names {digest}, not the --digest {}: nothing imported",
            args.digest
        )
        .into()),
    }
}

/// This machine's host name, recorded in pushed artifacts.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
