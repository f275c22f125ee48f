//! `coldctl unwarm MODEL`: stop keeping a model warm by deleting its ColdModel (the agents
//! then unpin and evict on their own schedule). With `--node`, remove it from the local agent's
//! models file.

use anyhow::Context as _;
use coldstart_agent::api::ColdModel;
use coldstart_agent::standalone::ClientError;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::cluster::{self, resolve_model};
use crate::node;
use crate::output::{self, Format};
use crate::{Backend, Cli};

/// Arguments of `coldctl unwarm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Hub repo id (`org/name`) or a ColdModel name.
    pub model: String,
    /// Succeed when there is no such ColdModel.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Runs the verb; returns the exit code.
pub async fn run(cli: &Cli, args: &Args) -> u8 {
    match cli.backend() {
        Backend::Here => return super::cluster_only("unwarm"),
        Backend::Node(sock) => {
            return match node_unwarm(cli, args, &sock).await {
                Ok(code) => code,
                Err(e) => super::warm::fail(cli, &[e]),
            };
        }
        Backend::Cluster => {}
    }
    match unwarm(cli, args).await {
        Ok(code) => code,
        Err(e) => super::warm::fail(cli, &[e]),
    }
}

async fn unwarm(cli: &Cli, args: &Args) -> anyhow::Result<u8> {
    let (name, _) = resolve_model(&args.model)?;
    let client = cluster::connect(&cli.cluster).await?;
    let api: Api<ColdModel> = Api::all(client);
    let found = match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => return Err(e).with_context(|| format!("deleting ColdModel {name}")),
    };
    if !found && !args.ignore_not_found {
        anyhow::bail!("no ColdModel named {name} (--ignore-not-found to accept that)");
    }
    match cli.output {
        Format::Json | Format::Yaml => {
            output::print_doc(cli.output, &json!({ "name": name, "deleted": found }))
        }
        Format::Text if found => crate::outln!("coldmodel {name} deleted"),
        Format::Text => crate::outln!("coldmodel {name} not found (nothing to do)"),
    }
    Ok(0)
}

/// `unwarm --node`: remove the model from the local agent's models file.
async fn node_unwarm(cli: &Cli, args: &Args, sock: &std::path::Path) -> anyhow::Result<u8> {
    let name = match node::client(sock).remove_model(&args.model).await {
        Ok(removed) => Some(removed.name),
        Err(ClientError::Api { kind, .. }) if kind == "not_found" => None,
        Err(e) => return Err(e.into()),
    };
    if name.is_none() && !args.ignore_not_found {
        anyhow::bail!(
            "no model {} in the agent's models file (--ignore-not-found to accept that)",
            args.model
        );
    }
    let deleted = name.is_some();
    let name = name.unwrap_or_else(|| args.model.clone());
    match cli.output {
        Format::Json | Format::Yaml => {
            output::print_doc(cli.output, &json!({ "name": name, "deleted": deleted }))
        }
        Format::Text if deleted => {
            crate::outln!("model {name} removed from the agent's models file")
        }
        Format::Text => {
            crate::outln!("model {name} not in the agent's models file (nothing to do)")
        }
    }
    Ok(0)
}
