//! `coldctl unwarm MODEL`: stop keeping a model warm by deleting its ColdModel (the agents
//! then unpin and evict on their own schedule).

use anyhow::Context as _;
use coldstart_agent::api::ColdModel;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::cluster::{self, resolve_model};
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
        Backend::Node(sock) => return crate::node_not_implemented("unwarm", &sock),
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
        Format::Text if found => println!("coldmodel {name} deleted"),
        Format::Text => println!("coldmodel {name} not found (nothing to do)"),
    }
    Ok(0)
}
