//! `coldctl warm MODEL` against the cluster: create or update the model's ColdModel
//! (server-side apply, field manager `coldctl`), then with `--wait` follow each selected node's
//! ColdNode until every one reports the model Ready (exit 0), one reports it Failed (exit 1),
//! or `--timeout` passes (exit 3).
//!
//! Flags not given keep the ColdModel's current values, so `coldctl warm org/name --wait` on an
//! existing model changes nothing and only waits.

use anyhow::Context as _;
use coldstart_agent::api::{ColdModel, ColdModelSpec, SecretKeyRef, SecretRef, parse_selector};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Args;
use crate::cluster::{self, resolve_model};
use crate::output::Format;
use crate::report::{CliError, NotFound, Output};
use crate::{Cli, rollup, wait};

#[cfg(test)]
mod tests;

/// Field manager of everything `coldctl` applies.
pub const FIELD_MANAGER: &str = "coldctl";

/// What the command line asks of the ColdModel's spec; `None`/empty leaves a field as it is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// `--revision`.
    pub revision: Option<String>,
    /// `--include`.
    pub include: Vec<String>,
    /// `--exclude`.
    pub exclude: Vec<String>,
    /// `--token-secret NAME[:KEY]`.
    pub token_secret: Option<SecretKeyRef>,
    /// `--image`.
    pub image: Option<String>,
    /// `--pull-secret NAME`.
    pub pull_secret: Option<SecretRef>,
    /// `--selector`.
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// Reads the cluster-mode flags; a bad one is a usage error (the message says which).
pub fn changes(args: &Args) -> Result<Changes, String> {
    let selector = match args.selector.as_deref() {
        Some(s) => Some(parse_selector(s).map_err(|e| e.to_string())?),
        None => None,
    };
    let token_secret = match args.token_secret.as_deref() {
        Some(s) => Some(parse_secret_key(s)?),
        None => None,
    };
    let pull_secret = match &args.pull_secret {
        Some(p) => {
            let name = p.to_str().unwrap_or_default();
            check_secret_name(name)?;
            Some(SecretRef { name: name.into() })
        }
        None => None,
    };
    Ok(Changes {
        revision: args.hub.revision.clone(),
        include: args.sync.include.clone(),
        exclude: args.sync.exclude.clone(),
        token_secret,
        image: args.image.clone(),
        pull_secret,
        selector,
    })
}

/// `NAME[:KEY]` of `--token-secret`.
pub fn parse_secret_key(text: &str) -> Result<SecretKeyRef, String> {
    let (name, key) = match text.split_once(':') {
        Some((_, "")) => return Err(format!("--token-secret {text:?}: empty key")),
        Some((n, k)) => (n, Some(k.to_string())),
        None => (text, None),
    };
    check_secret_name(name)?;
    Ok(SecretKeyRef {
        name: name.into(),
        key,
    })
}

/// A secret name is a DNS subdomain: lowercase letters, digits, `-` and `.`, at most 253.
fn check_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid secret name"))
    }
}

/// The spec to apply: the current one (or a new one for `repo`) with the changes laid over.
pub fn desired(current: Option<&ColdModelSpec>, repo: &str, c: &Changes) -> ColdModelSpec {
    let mut spec = current.cloned().unwrap_or(ColdModelSpec {
        repo: repo.to_string(),
        revision: None,
        include: Vec::new(),
        exclude: Vec::new(),
        token_secret_ref: None,
        image: None,
        image_pull_secret_ref: None,
        node_selector: None,
        compile_cache: None,
        snapshot: None,
    });
    if let Some(r) = &c.revision {
        spec.revision = Some(r.clone());
    }
    if !c.include.is_empty() {
        spec.include = c.include.clone();
    }
    if !c.exclude.is_empty() {
        spec.exclude = c.exclude.clone();
    }
    if let Some(t) = &c.token_secret {
        spec.token_secret_ref = Some(t.clone());
    }
    if let Some(i) = &c.image {
        spec.image = Some(i.clone());
    }
    if let Some(p) = &c.pull_secret {
        spec.image_pull_secret_ref = Some(p.clone());
    }
    if let Some(s) = &c.selector {
        spec.node_selector = Some(s.clone());
    }
    spec
}

/// Runs `warm` against the cluster.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    let Some(model) = args.model.as_deref() else {
        return Err(CliError::usage(
            "give a MODEL: a Hub repo id (org/name) or a ColdModel name",
        ));
    };
    let changes = changes(args).map_err(CliError::usage)?;
    let (name, repo) = resolve_model(model).map_err(|e| CliError::usage(format!("{e:#}")))?;
    let client = cluster::connect(&cli.cluster).await?;
    let applied = apply(&client, &name, repo.as_ref().map(|r| r.as_str()), &changes).await?;
    if !args.wait {
        let doc = json!({"name": name, "created": applied.created, "changed": applied.changed,
            "spec": applied.spec});
        return Ok(Output::line(doc, applied_line(&name, &applied)));
    }
    if cli.output == Format::Text {
        eprintln!("{}", applied_line(&name, &applied));
    }
    let target = wait::Target {
        name: name.clone(),
        repo: applied.spec.repo.clone(),
        created: applied.created,
        spec: json!(applied.spec),
        poll: POLL,
        gone: format!("ColdModel {name} was deleted while waiting"),
        no_nodes: format!(
            "no node with an agent (a ColdNode) matches {name}'s selector yet; check the \
             selector (`coldctl nodes` lists the nodes with agents) or wait for a node to join"
        ),
        following: "following the ColdNodes",
    };
    let (client, name) = (&client, name.as_str());
    wait::run(cli.output, &target, args.timeout, move || async move {
        let snap = cluster::snapshot(client, Some(name)).await?;
        if snap.models.is_empty() {
            return Ok(None);
        }
        let views = rollup::rollup(&snap.models, &snap.nodes, &snap.coldnodes);
        Ok(views.into_iter().next())
    })
    .await
}

/// Time between two reads while waiting (ColdModel, Nodes, ColdNodes: three lists, so not
/// too often on a large cluster).
const POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What was applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The ColdModel did not exist before.
    pub created: bool,
    /// Its spec differs from before (always, when created).
    pub changed: bool,
    /// Its spec now.
    pub spec: ColdModelSpec,
}

/// kubectl apply's words: created, configured, or unchanged.
fn applied_line(name: &str, a: &Applied) -> String {
    let verb = match (a.created, a.changed) {
        (true, _) => "created",
        (false, true) => "configured",
        (false, false) => "unchanged",
    };
    format!("coldmodel {name} {verb} ({})", a.spec.repo)
}

async fn apply(
    client: &kube::Client,
    name: &str,
    repo: Option<&str>,
    changes: &Changes,
) -> anyhow::Result<Applied> {
    let api: Api<ColdModel> = Api::all(client.clone());
    let current = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading ColdModel {name}"))?;
    let repo = match (&current, repo) {
        (Some(cur), Some(given)) if !cur.spec.repo.eq_ignore_ascii_case(given) => {
            anyhow::bail!(
                "ColdModel {name} already keeps {} warm, not {given}",
                cur.spec.repo
            )
        }
        (Some(cur), _) => cur.spec.repo.clone(),
        (None, Some(given)) => given.to_string(),
        (None, None) => {
            return Err(NotFound(format!(
                "no ColdModel named {name}: give the Hub repo id (org/name) to create one"
            ))
            .into());
        }
    };
    let spec = desired(current.as_ref().map(|c| &c.spec), &repo, changes);
    let patch = json!({
        "apiVersion": "coldstart.dev/v1alpha1",
        "kind": "ColdModel",
        "metadata": {"name": name},
        "spec": spec,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let done = api
        .patch(name, &params, &Patch::Apply(&patch))
        .await
        .with_context(|| format!("applying ColdModel {name}"))?;
    Ok(Applied {
        created: current.is_none(),
        changed: current.is_none_or(|c| c.spec != done.spec),
        spec: done.spec,
    })
}
