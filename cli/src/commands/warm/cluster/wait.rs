//! `warm --wait`: poll the model's roll-up until it is Ready everywhere it is selected, Failed
//! somewhere, or out of time; a progress bar per node on a terminal, plain lines otherwise.
//! The loop is the same for both backends that can wait (the cluster, and the local agent as
//! a one-node cluster): each passes how to read the roll-up and what to say.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::output::{self, Format};
use crate::rollup::{self, ModelView, NodeEntry, Outcome};
use crate::{Cli, EXIT_TIMEOUT};

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

/// Waits; returns the exit code (0 ready, 1 failed or read errors, 3 timed out). `read`
/// returns the model's roll-up, `None` once the model no longer exists.
pub async fn run<F, Fut>(cli: &Cli, target: &Target, timeout: Duration, mut read: F) -> u8
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<ModelView>>>,
{
    let name = target.name.as_str();
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new(cli.output);
    let mut errors = 0;
    let mut hinted = false;
    let mut last: Option<ModelView> = None;
    loop {
        match read().await {
            Ok(None) => {
                progress.finish();
                let e = anyhow::anyhow!("{}", target.gone);
                return crate::commands::warm::fail(cli, &[e]);
            }
            Ok(Some(view)) => {
                errors = 0;
                progress.update(&view);
                match rollup::outcome(&view) {
                    Outcome::Ready => {
                        return done(cli, &mut progress, target, &view, "ready", 0);
                    }
                    Outcome::Failed(nodes) => {
                        progress.finish();
                        if cli.output == Format::Text {
                            for (node, why) in &nodes {
                                eprintln!("error: {name} failed on node {node}: {why}");
                            }
                        }
                        return done(cli, &mut progress, target, &view, "failed", 1);
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
                    return crate::commands::warm::fail(cli, &[e.context(target.following)]);
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
        name: name.to_string(),
        repo: target.repo.clone(),
        selected: 0,
        ready: 0,
        failed: 0,
        nodes: Vec::new(),
    });
    if cli.output == Format::Text {
        eprintln!(
            "error: timed out after {:?}: {}",
            timeout,
            crate::commands::status::rollup_line(&view)
        );
    }
    done(cli, &mut progress, target, &view, "timeout", EXIT_TIMEOUT)
}

fn done(
    cli: &Cli,
    progress: &mut Progress,
    target: &Target,
    view: &ModelView,
    outcome: &str,
    code: u8,
) -> u8 {
    progress.finish();
    match cli.output {
        Format::Json | Format::Yaml => output::print_doc(
            cli.output,
            &json!({
                "name": view.name,
                "created": target.created,
                "spec": target.spec,
                "outcome": outcome,
                "model": view,
            }),
        ),
        Format::Text => crate::outln!("{}", crate::commands::status::rollup_line(view)),
    }
    code
}

/// Per-node progress: bars on a terminal, a line per change otherwise (text output only).
enum Progress {
    Bars(MultiProgress, BTreeMap<String, ProgressBar>),
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
                        let bar = multi.add(ProgressBar::new(0));
                        if let Ok(style) = ProgressStyle::with_template(
                            "{prefix:20} {bar:30} {bytes}/{total_bytes} {msg}",
                        ) {
                            bar.set_style(style);
                        }
                        bar.set_prefix(e.node.clone());
                        bar
                    });
                    let (done, total) = rollup::bytes(e);
                    bar.set_length(total.unwrap_or(done));
                    bar.set_position(done);
                    bar.set_message(line_state(e));
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
            for bar in bars.values() {
                bar.abandon();
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
