//! `coldctl status [MODEL]`: per node and model, the phase, progress, rate, age and reason the
//! agents report in their ColdNodes, with a `ready/selected` roll-up per model. With `--node`,
//! the same for the local agent's models on its one node.
//!
//! `-o json|yaml`: `{"models":[{"name","repo","selected","ready","failed","nodes":[{"node",
//! "reported","phase","image","weights","reason","updatedAt"}]}]}` (`image` and `weights` as
//! in the ColdNode status).

use serde_json::json;

use crate::cluster::{self, resolve_model};
use crate::node::{self, OneNode};
use crate::report::{CliError, Output};
use crate::rollup::{self, ModelView, rollup_line};
use crate::{Backend, Cli};

/// Arguments of `coldctl status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this model: a Hub repo id (`org/name`) or a ColdModel name.
    pub model: Option<String>,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    match cli.backend() {
        Backend::Here => Err(super::cluster_only("status")),
        Backend::Node(sock) => Ok(node_status(args, &sock).await?),
        Backend::Cluster => Ok(status(cli, args).await?),
    }
}

async fn status(cli: &Cli, args: &Args) -> anyhow::Result<Output> {
    let name = match &args.model {
        Some(m) => Some(resolve_model(m)?.0),
        None => None,
    };
    let client = cluster::connect(&cli.cluster).await?;
    let snap = cluster::snapshot(&client, name.as_deref()).await?;
    if let Some(name) = &name
        && snap.models.is_empty()
    {
        anyhow::bail!("no ColdModel named {name}");
    }
    let views = rollup::rollup(&snap.models, &snap.nodes, &snap.coldnodes);
    Ok(output(&views))
}

/// `status --node`: the agent's models on its one node.
async fn node_status(args: &Args, sock: &std::path::Path) -> anyhow::Result<Output> {
    let status = node::client(sock).status().await?;
    if let Some(warning) = node::models_error_warning(&status) {
        eprintln!("{warning}");
    }
    let views = OneNode::from_status(&status, args.model.as_deref()).rollup();
    if let Some(m) = &args.model
        && views.is_empty()
    {
        anyhow::bail!("no model {m} in the agent's models file");
    }
    Ok(output(&views))
}

fn output(views: &[ModelView]) -> Output {
    Output::text(json!({ "models": views }), render(views, super::now()))
}

/// The text table (one row per selected node and model) and one roll-up line per model.
pub fn render(views: &[ModelView], now: i64) -> String {
    if views.is_empty() {
        return "no ColdModels: `coldctl warm org/name` creates one\n".into();
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .flat_map(|v| {
            v.nodes.iter().map(move |e| {
                vec![
                    e.node.clone(),
                    v.name.clone(),
                    if e.reported {
                        rollup::phase_text(Some(e.phase))
                    } else {
                        "Pending (not reported)".into()
                    },
                    rollup::progress_text(e),
                    rollup::rate_text(e),
                    rollup::age_text(rollup::age_seconds(e, now)),
                    e.reason.clone().unwrap_or_default(),
                ]
            })
        })
        .collect();
    let mut out = String::new();
    if !rows.is_empty() {
        let headers = [
            "NODE", "MODEL", "PHASE", "PROGRESS", "RATE", "AGE", "REASON",
        ];
        out.push_str(&rollup::table(&headers, &rows));
        out.push('\n');
    }
    for v in views {
        out.push_str(&rollup_line(v));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
