//! `coldctl warm MODEL --node`: put the model in the local agent's models file through its
//! socket (the agent edits the file atomically; the file stays the source of truth), then with
//! `--wait` follow the agent's status, shown as a one-node cluster, until the model is Ready
//! (exit 0), Failed (exit 1) or `--timeout` passes (exit 3).
//!
//! Flags not given keep the entry's current values, as in cluster mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coldstart_agent::standalone::{ModelEntry, NamedModel};
use serde_json::json;

use super::Args;
use crate::node::{self, OneNode};
use crate::output::Format;
use crate::report::{CliError, NotFound, Output};
use crate::{Cli, wait};

#[cfg(test)]
mod tests;

/// Time between two reads of the agent's status while waiting (it answers from memory).
const POLL: Duration = Duration::from_secs(1);

/// What the command line asks of the entry; `None`/empty leaves a field as it is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// `--revision`.
    pub revision: Option<String>,
    /// `--include`.
    pub include: Vec<String>,
    /// `--exclude`.
    pub exclude: Vec<String>,
    /// `--image`.
    pub image: Option<String>,
    /// `--token-file`, absolute.
    pub token_file: Option<PathBuf>,
    /// `--pull-secret FILE`, absolute.
    pub pull_secret: Option<PathBuf>,
}

/// Reads the node-mode flags; `cwd` makes relative credential paths absolute (the agent
/// reads them from its own working directory).
pub fn changes(args: &Args, cwd: &Path) -> Result<Changes, String> {
    if args.selector.is_some() || args.token_secret.is_some() {
        return Err(
            "--selector and --token-secret are for the cluster: a node keeps every \
                    model of its file, and reads credentials from files (--token-file, \
                    --pull-secret FILE)"
                .into(),
        );
    }
    Ok(Changes {
        revision: args.hub.revision.clone(),
        include: args.sync.include.clone(),
        exclude: args.sync.exclude.clone(),
        image: args.image.clone(),
        token_file: args.hub.hub_token_file.as_ref().map(|p| cwd.join(p)),
        pull_secret: args.pull_secret.as_ref().map(|p| cwd.join(p)),
    })
}

/// The entry to put: the current one (or a new one for `repo`) with the changes laid over.
pub fn desired(current: Option<&ModelEntry>, repo: &str, c: &Changes) -> ModelEntry {
    let mut entry = current.cloned().unwrap_or_else(|| ModelEntry::new(repo));
    if let Some(r) = &c.revision {
        entry.revision = Some(r.clone());
    }
    if !c.include.is_empty() {
        entry.include = c.include.clone();
    }
    if !c.exclude.is_empty() {
        entry.exclude = c.exclude.clone();
    }
    if let Some(i) = &c.image {
        entry.image = Some(i.clone());
    }
    if let Some(p) = &c.token_file {
        entry.token_file = Some(p.clone());
    }
    if let Some(p) = &c.pull_secret {
        entry.pull_secret = Some(p.clone());
    }
    entry
}

/// The entry for MODEL (a repo id, or the name of a model in the file) given the file's
/// models; an error when MODEL is a name the file does not hold.
pub fn entry(models: &[NamedModel], model: &str, c: &Changes) -> anyhow::Result<ModelEntry> {
    let current = models.iter().find(|m| m.model.matches(&m.name, model));
    match current {
        Some(m) => Ok(desired(Some(&m.model), &m.model.repo, c)),
        None if model.contains('/') => Ok(desired(None, model, c)),
        None => Err(NotFound(format!(
            "no model named {model} in the agent's models file: give the Hub repo id \
             (org/name) to add one"
        ))
        .into()),
    }
}

/// Runs `warm --node`.
pub async fn run(cli: &Cli, args: &Args, sock: &Path) -> Result<Output, CliError> {
    let Some(model) = args.model.as_deref() else {
        return Err(CliError::usage(
            "give a MODEL: a Hub repo id (org/name) or a model's name",
        ));
    };
    // The working directory is read here, at the edge, for relative credential paths.
    let cwd = std::env::current_dir().unwrap_or_default();
    let changes = changes(args, &cwd).map_err(CliError::usage)?;
    // Refuse a bad repo id or flag before talking to the agent.
    let probe_repo = if model.contains('/') {
        model
    } else {
        "org/probe"
    };
    desired(None, probe_repo, &changes)
        .validate()
        .map_err(CliError::usage)?;
    let client = node::client(sock);
    let models = client.models().await.map_err(anyhow::Error::from)?;
    let entry = entry(&models, model, &changes)?;
    let put = client
        .put_model(&entry)
        .await
        .map_err(anyhow::Error::from)?;
    let before = models.into_iter().find(|m| m.name == put.model.name);
    // Read at the edge: statuses from passes that started before the edit are ignored.
    let edited_at = crate::commands::now();
    let changed = before.is_none_or(|b| b.model != put.model.model);
    let name = put.model.name.clone();
    let line = applied_line(&put.model, put.created, changed);
    if !args.wait {
        let doc = json!({"name": name, "created": put.created, "changed": changed,
            "spec": put.model.model});
        return Ok(Output::line(doc, line));
    }
    if cli.output == Format::Text {
        eprintln!("{line}");
    }
    let target = wait::Target {
        name: name.clone(),
        repo: put.model.model.repo.clone(),
        created: put.created,
        spec: json!(put.model.model),
        poll: POLL,
        gone: format!("model {name} was removed from the agent's models file while waiting"),
        no_nodes: "the agent reports no node".into(),
        following: "following the agent's status",
    };
    let (client, name) = (&client, name.as_str());
    wait::run(cli.output, &target, args.timeout, move || async move {
        let mut status = client.status().await?;
        if changed {
            node::forget_unless_after(&mut status, name, edited_at);
        }
        Ok(OneNode::from_status(&status, Some(name))
            .rollup()
            .into_iter()
            .next())
    })
    .await
}

/// kubectl's words: added, updated, or unchanged.
fn applied_line(m: &NamedModel, created: bool, changed: bool) -> String {
    let verb = match (created, changed) {
        (true, _) => "added to",
        (false, true) => "updated in",
        (false, false) => "unchanged in",
    };
    format!(
        "model {} ({}) {verb} the agent's models file",
        m.name, m.model.repo
    )
}
