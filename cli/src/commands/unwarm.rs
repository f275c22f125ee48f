//! `coldctl unwarm MODEL`: stop keeping a model warm. In the cluster, its ColdModel is deleted
//! (the agents then unpin and evict on their own schedule); with `--node`, its entry leaves
//! the local agent's models file (the agent unpins and evicts the same way). A model that
//! does not exist is kind `not_found` (exit 1), unless `--ignore-not-found`.

use anyhow::Context as _;
use coldstart_agent::api::ColdModel;
use coldstart_agent::standalone::ClientError;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::cluster::{self, resolve_model};
use crate::node;
use crate::report::{CliError, NotFound, Output};
use crate::{Backend, Cli};

/// Arguments of `coldctl unwarm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Hub repo id (`org/name`) or a ColdModel name.
    pub model: String,
    /// Succeed when there is no such model.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    match cli.backend() {
        Backend::Here => Err(super::cluster_only("unwarm")),
        Backend::Node(sock) => Ok(node_unwarm(args, &sock).await?),
        Backend::Cluster => Ok(unwarm(cli, args).await?),
    }
}

async fn unwarm(cli: &Cli, args: &Args) -> anyhow::Result<Output> {
    let (name, _) = resolve_model(&args.model)?;
    let client = cluster::connect(&cli.cluster).await?;
    let api: Api<ColdModel> = Api::all(client);
    let found = match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => return Err(e).with_context(|| format!("deleting ColdModel {name}")),
    };
    if !found && !args.ignore_not_found {
        return Err(NotFound(format!(
            "no ColdModel named {name} (--ignore-not-found to accept that)"
        ))
        .into());
    }
    let line = if found {
        format!("coldmodel {name} deleted")
    } else {
        format!("coldmodel {name} not found (nothing to do)")
    };
    Ok(Output::line(
        json!({ "name": name, "deleted": found }),
        line,
    ))
}

/// `unwarm --node`: remove the model from the local agent's models file.
async fn node_unwarm(args: &Args, sock: &std::path::Path) -> anyhow::Result<Output> {
    let name = match node::client(sock).remove_model(&args.model).await {
        Ok(removed) => Some(removed.name),
        Err(ClientError::Api { kind, .. }) if kind == "not_found" => None,
        Err(e) => return Err(e.into()),
    };
    if name.is_none() && !args.ignore_not_found {
        return Err(NotFound(format!(
            "no model {} in the agent's models file (--ignore-not-found to accept that)",
            args.model
        ))
        .into());
    }
    let deleted = name.is_some();
    let name = name.unwrap_or_else(|| args.model.clone());
    let line = if deleted {
        format!("model {name} removed from the agent's models file")
    } else {
        format!("model {name} not in the agent's models file (nothing to do)")
    };
    Ok(Output::line(
        json!({ "name": name, "deleted": deleted }),
        line,
    ))
}
