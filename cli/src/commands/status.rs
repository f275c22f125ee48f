//! `coldctl status [MODEL]`: per node and model, the phase, progress, rate, age and reason the
//! agents report in their ColdNodes, with a `ready/selected` roll-up per model. With `--node`,
//! the same for the local agent's models on its one node.
//!
//! `-o json|yaml`: `{"models":[{"name","repo","selected","ready","failed","nodes":[{"node",
//! "reported","phase","image","weights","reason","updatedAt"}]}]}` (`image` and `weights` as
//! in the ColdNode status), plus `"modelsError"` when the agent's models file is invalid
//! (`--node`: the models shown are the last good ones, which the agent keeps warming).
//!
//! Freshness: in the cluster the agents write their ColdNode once a pass (every 10 s by
//! default, and when a task ends); the local agent (`--node`) answers with the bytes of its
//! running tasks as of the call. `--watch` prints the status again whenever it changes.

mod watch;

use coldstart_agent::standalone::NodeStatus;
use serde_json::json;

use crate::cluster::{self, resolve_model};
use crate::node::{self, OneNode};
use crate::report::{CliError, NotFound, Output};
use crate::rollup::{self, ModelView, rollup_line};
use crate::{Backend, Cli};

/// Arguments of `coldctl status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this model: a Hub repo id (`org/name`) or a ColdModel name.
    pub model: Option<String>,
    /// Keep printing the status whenever it changes, until SIGINT/SIGTERM (one JSON document
    /// per line with `-o json|yaml`).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// With `--watch`: time between two reads.
    #[arg(long, value_name = "DURATION", default_value = "2s", requires = "watch",
          value_parser = crate::args::parse_duration)]
    pub interval: std::time::Duration,
    /// With `--watch`: stop after this long.
    #[arg(long, value_name = "DURATION", requires = "watch",
          value_parser = crate::args::parse_duration)]
    pub watch_for: Option<std::time::Duration>,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    if args.watch {
        return watch::run(cli, args).await;
    }
    once(cli, args).await
}

/// One read of the status, on the backend the flags pick.
pub async fn once(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    match cli.backend() {
        Backend::Here => Err(super::cluster_only("status")),
        Backend::Node(sock) => Ok(node_status(args, &sock).await?),
        Backend::Cluster => Ok(status(cli, args).await?),
    }
}

/// What an empty status says, per backend.
const NO_COLDMODELS: &str = "no ColdModels: `coldctl warm org/name` creates one";
const NO_NODE_MODELS: &str =
    "no models in the agent's models file: `coldctl --node warm org/name` adds one";

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
        return Err(NotFound(format!("no ColdModel named {name}")).into());
    }
    let views = rollup::rollup(&snap.models, &snap.nodes, &snap.coldnodes);
    Ok(output(&views, &NodeStatus::default(), NO_COLDMODELS))
}

/// `status --node`: the agent's models on its one node.
async fn node_status(args: &Args, sock: &std::path::Path) -> anyhow::Result<Output> {
    let status = node::client(sock).status().await?;
    let views = OneNode::from_status(&status, args.model.as_deref()).rollup();
    if let Some(m) = &args.model
        && views.is_empty()
    {
        return Err(NotFound(format!("no model {m} in the agent's models file")).into());
    }
    Ok(output(&views, &status, NO_NODE_MODELS))
}

/// The document and the text; a node's invalid models file is part of its status (the last
/// line of the text, `modelsError` in the document).
fn output(views: &[ModelView], node: &NodeStatus, empty: &str) -> Output {
    let mut doc = json!({ "models": views });
    let mut text = render(views, super::now(), empty);
    if let Some(e) = &node.models_error {
        doc["modelsError"] = json!(e);
    }
    if let Some(warning) = node::models_error_warning(node) {
        text.push_str(&warning);
        text.push('\n');
    }
    Output::text(doc, text)
}

/// The text table (one row per selected node and model) and one roll-up line per model;
/// `empty` when there is no model.
pub fn render(views: &[ModelView], now: i64, empty: &str) -> String {
    if views.is_empty() {
        return format!("{empty}\n");
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
