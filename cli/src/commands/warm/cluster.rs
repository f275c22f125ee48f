//! `coldctl warm MODEL` against the cluster: create the model's ColdModel or change the
//! fields the flags give (see `write.rs`: the user's own field manager, no takeover of another
//! manager's fields without `--force-conflicts`), then with `--wait` follow each selected
//! node's ColdNode until every one reports the model Ready (exit 0), one reports it Failed
//! (exit 1), or `--timeout` passes (exit 3).
//!
//! Flags not given keep the ColdModel's current values, so `coldctl warm org/name --wait` on an
//! existing model changes nothing and only waits.

use coldstart_agent::api::{ColdModel, ColdModelSpec, SecretKeyRef, SecretRef, parse_selector};
use kube::api::Api;
use serde_json::json;

use super::Args;
use crate::cluster::{self, resolve_model};
use crate::output::Format;
use crate::report::{CliError, Output};
use crate::{Cli, rollup, wait};

#[cfg(test)]
mod tests;
mod write;

pub use write::default_field_manager;

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
    let manager = args
        .field_manager
        .clone()
        .unwrap_or_else(default_field_manager);
    let writer = write::Writer {
        manager: &manager,
        force: args.force_conflicts,
    };
    let models: Api<ColdModel> = Api::all(client.clone());
    let applied = writer
        .write(&models, &name, repo.as_ref().map(|r| r.as_str()), &changes)
        .await?;
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
