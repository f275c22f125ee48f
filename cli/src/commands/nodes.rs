//! `coldctl nodes`: one row per ColdNode (per node with an agent): overall phase, models ready
//! out of those reported, GPU health and how long ago the agent last wrote; a node whose
//! agent has been silent for two minutes is flagged stale. With `--node`, the local agent's
//! node alone.
//!
//! `-o json|yaml`: `{"nodes":[{"node","phase","modelsReady","modelsTotal","gpu","gpuReason",
//! "updatedAt","ageSeconds","stale"}]}`.

use anyhow::Context as _;
use coldstart_agent::api::ColdNode;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::cluster;
use crate::node::{self, OneNode};
use crate::report::{CliError, Output};
use crate::rollup::{self, NodeRow};
use crate::{Backend, Cli};

/// Arguments of `coldctl nodes`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the verb.
pub async fn run(cli: &Cli, _args: &Args) -> Result<Output, CliError> {
    match cli.backend() {
        Backend::Here => Err(super::cluster_only("nodes")),
        Backend::Node(sock) => Ok(node_nodes(&sock).await?),
        Backend::Cluster => Ok(nodes(cli).await?),
    }
}

async fn nodes(cli: &Cli) -> anyhow::Result<Output> {
    let client = cluster::connect(&cli.cluster).await?;
    let coldnodes = Api::<ColdNode>::all(client)
        .list(&ListParams::default())
        .await
        .context("listing ColdNodes")?
        .items;
    Ok(output(&rollup::node_rows(&coldnodes, super::now())))
}

/// `nodes --node`: the local agent's node, one row.
async fn node_nodes(sock: &std::path::Path) -> anyhow::Result<Output> {
    let status = node::client(sock).status().await?;
    let one = OneNode::from_status(&status, None);
    Ok(output(&rollup::node_rows(&one.coldnodes, super::now())))
}

fn output(rows: &[NodeRow]) -> Output {
    Output::text(json!({ "nodes": rows }), render(rows))
}

/// The text table; stale nodes say so in the UPDATED column.
pub fn render(rows: &[NodeRow]) -> String {
    if rows.is_empty() {
        return "no ColdNodes: no agent has reported yet\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut updated = rollup::age_text(r.age_seconds);
            if r.stale {
                updated.push_str(" (stale)");
            }
            let gpu = match &r.gpu_reason {
                Some(why) => format!("{}: {why}", r.gpu),
                None => r.gpu.to_string(),
            };
            vec![
                r.node.clone(),
                rollup::phase_text(r.phase),
                format!("{}/{}", r.models_ready, r.models_total),
                gpu,
                updated,
            ]
        })
        .collect();
    rollup::table(&["NODE", "PHASE", "MODELS", "GPU", "UPDATED"], &cells)
}
