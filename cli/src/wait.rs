//! `warm --wait`: poll a model's roll-up until it is Ready everywhere it is selected, Failed
//! somewhere, or out of time; a progress bar per node on a terminal, plain lines otherwise.
//! One loop for both backends that can wait (the cluster, and the local agent as a one-node
//! cluster): each passes how to read the roll-up and its words for what it waits on.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use indicatif::MultiProgress;
use serde_json::json;

use crate::output::{self, Format, SizedBar};

/// A node's bar, drawn once the node reports a size.
const BAR: &str = "{bar:30} {bytes}/{total_bytes} {msg}";
use crate::report::{CliError, EXIT_FAILURE, EXIT_TIMEOUT, Output};
use crate::rollup::{self, ModelView, NodeEntry, Outcome, rollup_line};

/// Reads that may fail in a row before waiting gives up (the API server or agent is gone).
const MAX_ERRORS_IN_A_ROW: u32 = 5;

/// What is waited on, and the backend's words for it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The model's name.
    pub name: String,
    /// Its Hub repo id.
    pub repo: String,
    /// Whether the warm command created it.
    pub created: bool,
    /// Its spec as applied, printed as `spec` in the JSON/YAML document.
    pub spec: serde_json::Value,
    /// Time between two reads.
    pub poll: Duration,
    /// The error when the model disappears while waiting.
    pub gone: String,
    /// The warning (once) when no node is selected.
    pub no_nodes: String,
    /// What is being read, for the error when reads keep failing (`following the ColdNodes`).
    pub following: &'static str,
}

/// Waits: the result once every selected node is Ready; a [`CliError::Outcome`] when a node
/// reports the model Failed (exit 1) or `timeout` passes (exit 3); a failure when the model
/// goes away or reads keep failing. `read` returns the model's roll-up, `None` once the model
/// no longer exists. `format` decides how progress shows (bars, lines, or nothing).
pub async fn run<F, Fut>(
    format: Format,
    target: &Target,
    timeout: Duration,
    mut read: F,
) -> Result<Output, CliError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<ModelView>>>,
{
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new(format);
    let mut errors = 0;
    let mut hinted = false;
    let mut last: Option<ModelView> = None;
    loop {
        match read().await {
            Ok(None) => {
                progress.finish();
                return Err(anyhow::anyhow!("{}", target.gone).into());
            }
            Ok(Some(view)) => {
                errors = 0;
                progress.update(&view);
                match rollup::outcome(&view) {
                    Outcome::Ready => {
                        progress.finish();
                        return Ok(result(target, &view, "ready"));
                    }
                    Outcome::Failed(nodes) => {
                        progress.finish();
                        let errors = nodes
                            .iter()
                            .map(|(node, why)| {
                                format!("{} failed on node {node}: {why}", target.name)
                            })
                            .collect();
                        return Err(CliError::Outcome {
                            code: EXIT_FAILURE,
                            kind: "failed",
                            output: result(target, &view, "failed"),
                            errors,
                        });
                    }
                    Outcome::NoNodes if !hinted => {
                        hinted = true;
                        eprintln!("warning: {}", target.no_nodes);
                    }
                    Outcome::NoNodes | Outcome::Waiting => {}
                }
                last = Some(view);
            }
            Err(e) => {
                errors += 1;
                if errors >= MAX_ERRORS_IN_A_ROW {
                    progress.finish();
                    return Err(e.context(target.following).into());
                }
                tracing::warn!(
                    error = format!("{e:#}"),
                    "{} failed; retrying",
                    target.following
                );
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(target.poll.min(deadline - now)).await;
    }
    progress.finish();
    let view = last.unwrap_or_else(|| ModelView {
        name: target.name.clone(),
        repo: target.repo.clone(),
        selected: 0,
        ready: 0,
        failed: 0,
        nodes: Vec::new(),
    });
    Err(CliError::Outcome {
        code: EXIT_TIMEOUT,
        kind: "timeout",
        output: result(target, &view, "timeout"),
        errors: vec![format!(
            "timed out after {timeout:?}: {}",
            rollup_line(&view)
        )],
    })
}

/// What waiting printed, whatever its outcome: the document, or the roll-up line.
fn result(target: &Target, view: &ModelView, outcome: &str) -> Output {
    let doc = json!({
        "name": view.name,
        "created": target.created,
        "spec": target.spec,
        "outcome": outcome,
        "model": view,
    });
    Output::line(doc, rollup_line(view))
}

/// Per-node progress: bars on a terminal, a line per change otherwise (text output only).
enum Progress {
    Bars(MultiProgress, BTreeMap<String, SizedBar>),
    Lines(BTreeMap<String, String>),
    Quiet,
}

impl Progress {
    fn new(format: Format) -> Self {
        match format {
            Format::Text if output::stderr_is_terminal() => {
                Progress::Bars(MultiProgress::new(), BTreeMap::new())
            }
            Format::Text => Progress::Lines(BTreeMap::new()),
            _ => Progress::Quiet,
        }
    }

    fn update(&mut self, view: &ModelView) {
        match self {
            Progress::Bars(multi, bars) => {
                for e in &view.nodes {
                    let bar = bars.entry(e.node.clone()).or_insert_with(|| {
                        SizedBar::new(Some(multi), BAR, format!("{}: {}", e.node, view.name))
                    });
                    let (done, total) = rollup::bytes(e);
                    bar.set_message(format!("{}: {} {}", e.node, view.name, line_state(e)));
                    bar.update(done, total);
                }
            }
            Progress::Lines(seen) => {
                for e in &view.nodes {
                    let state = format!("{} {}", line_state(e), rollup::progress_text(e));
                    if seen.get(&e.node) != Some(&state) {
                        eprintln!("{}: {} {state}", e.node, view.name);
                        seen.insert(e.node.clone(), state);
                    }
                }
            }
            Progress::Quiet => {}
        }
    }

    fn finish(&mut self) {
        if let Progress::Bars(_, bars) = self {
            for bar in bars.values_mut() {
                bar.finish(true);
            }
            bars.clear();
        }
    }
}

/// `Warming`, `Failed (reason)`, `Pending (not reported)`.
fn line_state(e: &NodeEntry) -> String {
    let phase = rollup::phase_text(Some(e.phase));
    match (&e.reason, e.reported) {
        (_, false) => format!("{phase} (not reported)"),
        (Some(why), true) => format!("{phase} ({why})"),
        (None, true) => phase,
    }
}
