//! `coldctl check deployment/NAME | -f FILE`: what will make a model's pods start cold. One
//! line per finding, `<id>: <message>`, each id stable (README "coldctl check" has the table);
//! exit 0 when there is none, 1 when there are (kind `findings`), with `-o json|yaml`:
//! `{"ok", "deployment", "namespace", "model", "container", "findings": [{"id", "message"}]}`.
//!
//! The Deployment comes from the cluster (`deployment/NAME`, `-n`) or from files (`-f`,
//! several allowed; `deployment/NAME` then picks one). The ColdModel is `--model`, else the
//! pod template's `coldstart.dev/model` label; it is read from the files when they hold it
//! (then nothing is read from the cluster), else from the cluster, which also says which
//! commits the nodes warmed. `--here`: files only.

mod argv;
pub mod findings;
mod ids;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use coldstart_agent::api::{ColdModel, ColdNode, POD_MODEL_LABEL, PartPhase, name_of};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Deserialize as _;
use serde_json::json;

use self::findings::{Expect, Finding, check, pick_container};
use super::cache::RootArgs;
use crate::args::parse_duration;
use crate::cluster::{self, resolve_model};
use crate::report::{CliError, EXIT_FAILURE, NotFound, Output};
use crate::{Backend, Cli};

/// Arguments of `coldctl check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `deployment/NAME` (also `deploy/NAME`): in the cluster, or among the `-f` files.
    pub target: Option<String>,
    /// A file with the Deployment (and maybe its ColdModel); `-` reads stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The Deployment's namespace in the cluster [default: the kubeconfig context's].
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The ColdModel (a name or a Hub repo id) [default: the pods' `coldstart.dev/model`].
    #[arg(long)]
    pub model: Option<String>,
    /// The vLLM container [default: the one running the ColdModel's image, else vLLM].
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// The shortest cold start a probe must allow (`10m`, `600s`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub min_startup: Duration,
    #[command(flatten)]
    pub root: RootArgs,
}

/// What the files given with `-f` hold.
#[derive(Debug, Default)]
struct Files {
    deployments: Vec<Deployment>,
    models: Vec<ColdModel>,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    if let Backend::Node(_) = cli.backend() {
        return Err(CliError::usage(
            "`coldctl check` reads a Deployment from the cluster or from -f FILE: drop --node",
        ));
    }
    let target = args.target.as_deref().map(parse_target).transpose()?;
    if target.is_none() && args.files.is_empty() {
        return Err(CliError::usage(
            "name what to check: deployment/NAME (in the cluster) or -f FILE",
        ));
    }
    let offline = cli.backend() == Backend::Here;
    if offline && args.files.is_empty() {
        return Err(CliError::usage(
            "with --here, give the Deployment with -f FILE",
        ));
    }
    let files = load(&args.files)?;
    let mut client = None;
    let deploy = match &target {
        _ if !args.files.is_empty() => pick_deployment(&files.deployments, target.as_deref())?,
        Some(name) => {
            let c = connect(cli, &mut client).await?;
            get_deployment(c, args.namespace.as_deref(), name).await?
        }
        None => return Err(CliError::usage("name deployment/NAME or -f FILE")),
    };
    let model_name = model_name(args.model.as_deref(), &deploy)?;
    let (model, warmed) = match files.models.iter().find(|m| name_of(m) == model_name) {
        Some(m) => (m.clone(), BTreeSet::new()),
        None if offline => {
            return Err(CliError::usage(format!(
                "ColdModel {model_name} is in none of the -f files (--here reads no cluster)"
            )));
        }
        None => {
            let c = connect(cli, &mut client).await?;
            cluster_model(c, &model_name).await?
        }
    };
    let min = i64::try_from(args.min_startup.as_secs()).unwrap_or(i64::MAX);
    let expect = Expect::new(&model, &args.root.cache_root, warmed, min)?;
    let pod = deploy
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let container = pick_container(&pod, args.container.as_deref(), &expect)
        .map_err(|e| anyhow::anyhow!("Deployment {}: {e}", name(&deploy)))?;
    let found = check(&deploy, container, &expect);
    report(&deploy, &expect.model, &container.name, found)
}

fn name(d: &Deployment) -> &str {
    d.metadata.name.as_deref().unwrap_or_default()
}

/// `deployment/NAME` (also `deploy/`, `deployments/`, `deployment.apps/`) -> NAME.
fn parse_target(text: &str) -> Result<String, CliError> {
    match text.split_once('/') {
        Some(("deployment" | "deploy" | "deployments" | "deployment.apps", name))
            if !name.is_empty() && !name.contains('/') =>
        {
            Ok(name.to_string())
        }
        _ => Err(CliError::usage(format!(
            "{text:?}: expected deployment/NAME (only Deployments are checked)"
        ))),
    }
}

/// Every Deployment and ColdModel in the files; other kinds are ignored.
fn load(paths: &[PathBuf]) -> anyhow::Result<Files> {
    let mut files = Files::default();
    for path in paths {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("{}: not YAML", path.display()))?;
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let at = || format!("{}: {kind} {}", path.display(), value["metadata"]["name"]);
            match kind.as_str() {
                "Deployment" => files
                    .deployments
                    .push(serde_json::from_value(value.clone()).with_context(at)?),
                "ColdModel" => files
                    .models
                    .push(serde_json::from_value(value.clone()).with_context(at)?),
                _ => {}
            }
        }
    }
    Ok(files)
}

fn pick_deployment(found: &[Deployment], name: Option<&str>) -> Result<Deployment, CliError> {
    let matching: Vec<&Deployment> = found
        .iter()
        .filter(|d| name.is_none_or(|n| self::name(d) == n))
        .collect();
    match (matching.as_slice(), name) {
        ([one], _) => Ok((*one).clone()),
        ([], Some(n)) => {
            Err(anyhow::Error::from(NotFound(format!("no Deployment {n} in the -f files"))).into())
        }
        ([], None) => Err(CliError::usage("the -f files hold no Deployment")),
        (_, _) => Err(CliError::usage(
            "the -f files hold several Deployments: name one as deployment/NAME",
        )),
    }
}

/// The ColdModel's name: `--model`, else the pod template's label, else the Deployment's.
fn model_name(arg: Option<&str>, d: &Deployment) -> Result<String, CliError> {
    if let Some(m) = arg {
        return Ok(resolve_model(m)
            .map_err(|e| CliError::usage(format!("{e:#}")))?
            .0);
    }
    let template = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    template
        .or(d.metadata.labels.as_ref())
        .and_then(|l| l.get(POD_MODEL_LABEL))
        .cloned()
        .ok_or_else(|| {
            CliError::usage(format!(
                "Deployment {} has no {POD_MODEL_LABEL} label: name the ColdModel with --model",
                name(d)
            ))
        })
}

async fn connect<'a>(cli: &Cli, client: &'a mut Option<Client>) -> anyhow::Result<&'a Client> {
    if client.is_none() {
        *client = Some(cluster::connect(&cli.cluster).await?);
    }
    client.as_ref().context("no client")
}

async fn get_deployment(c: &Client, ns: Option<&str>, name: &str) -> anyhow::Result<Deployment> {
    let ns = ns.unwrap_or(c.default_namespace()).to_string();
    Api::<Deployment>::namespaced(c.clone(), &ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading Deployment {ns}/{name}"))?
        .ok_or_else(|| NotFound(format!("no Deployment {name} in namespace {ns}")).into())
}

/// The ColdModel and the commits the nodes report Ready for it.
async fn cluster_model(c: &Client, name: &str) -> anyhow::Result<(ColdModel, BTreeSet<String>)> {
    let model = Api::<ColdModel>::all(c.clone())
        .get_opt(name)
        .await
        .with_context(|| format!("reading ColdModel {name}"))?
        .ok_or_else(|| NotFound(format!("no ColdModel named {name}")))?;
    let nodes = Api::<ColdNode>::all(c.clone())
        .list(&ListParams::default())
        .await
        .context("listing ColdNodes")?;
    let warmed = nodes
        .items
        .iter()
        .filter_map(|n| n.status.as_ref())
        .flat_map(|s| s.models.iter().filter(|m| m.name == name))
        .filter_map(|m| m.weights.as_ref())
        .filter(|w| w.phase == PartPhase::Ready)
        .filter_map(|w| w.resolved.as_ref().map(|r| r.to_ascii_lowercase()))
        .collect();
    Ok((model, warmed))
}

/// The result: clean, or the findings as an outcome with exit 1.
fn report(
    d: &Deployment,
    model: &str,
    container: &str,
    found: Vec<Finding>,
) -> Result<Output, CliError> {
    let doc = json!({
        "ok": found.is_empty(),
        "deployment": name(d),
        "namespace": d.metadata.namespace,
        "model": model,
        "container": container,
        "findings": found.iter().map(|f| json!({"id": f.id.as_str(), "message": f.message}))
            .collect::<Vec<_>>(),
    });
    if found.is_empty() {
        return Ok(Output::line(
            doc,
            format!(
                "deployment/{}: nothing starts it cold (ColdModel {model}, container {container})",
                name(d)
            ),
        ));
    }
    let text: String = found
        .iter()
        .map(|f| format!("{}: {}\n", f.id.as_str(), f.message))
        .collect();
    Err(CliError::Outcome {
        code: EXIT_FAILURE,
        kind: "findings",
        output: Output::text(doc, text),
        errors: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
