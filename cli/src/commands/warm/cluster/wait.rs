//! `warm --wait`: poll the model's roll-up until it is Ready everywhere it is selected, Failed
//! somewhere, or out of time; a progress bar per node on a terminal, plain lines otherwise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::Applied;
use crate::cluster;
use crate::output::{self, Format};
use crate::rollup::{self, ModelView, NodeEntry, Outcome};
use crate::{Cli, EXIT_TIMEOUT};

/// Time between two reads (ColdModel, Nodes, ColdNodes: three lists, so not too often on a
/// large cluster).
const POLL: Duration = Duration::from_secs(2);
/// Reads that may fail in a row before waiting gives up (the API server is gone).
const MAX_ERRORS_IN_A_ROW: u32 = 5;

/// Waits; returns the exit code (0 ready, 1 failed or API errors, 3 timed out).
pub async fn run(
    cli: &Cli,
    client: &kube::Client,
    name: &str,
    applied: &Applied,
    timeout: Duration,
) -> u8 {
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new(cli.output);
    let mut errors = 0;
    let mut hinted = false;
    let mut last: Option<ModelView> = None;
    loop {
        match cluster::snapshot(client, Some(name)).await {
            Ok(snap) if snap.models.is_empty() => {
                progress.finish();
                let e = anyhow::anyhow!("ColdModel {name} was deleted while waiting");
                return super::super::fail(cli, &[e]);
            }
            Ok(snap) => {
                errors = 0;
                let views = rollup::rollup(&snap.models, &snap.nodes, &snap.coldnodes);
                if let Some(view) = views.into_iter().next() {
                    progress.update(&view);
                    match rollup::outcome(&view) {
                        Outcome::Ready => {
                            return done(cli, &mut progress, applied, &view, "ready", 0);
                        }
                        Outcome::Failed(nodes) => {
                            progress.finish();
                            if cli.output == Format::Text {
                                for (node, why) in &nodes {
                                    eprintln!("error: {name} failed on node {node}: {why}");
                                }
                            }
                            return done(cli, &mut progress, applied, &view, "failed", 1);
                        }
                        Outcome::NoNodes if !hinted => {
                            hinted = true;
                            eprintln!(
                                "warning: no node with an agent (a ColdNode) matches {name}'s \
                                 selector yet; check the selector (`coldctl nodes` lists the nodes \
                                 with agents) or wait for a node to join"
                            );
                        }
                        Outcome::NoNodes | Outcome::Waiting => {}
                    }
                    last = Some(view);
                }
            }
            Err(e) => {
                errors += 1;
                if errors >= MAX_ERRORS_IN_A_ROW {
                    progress.finish();
                    return super::super::fail(cli, &[e.context("following the ColdNodes")]);
                }
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reading the ColdNodes failed; retrying"
                );
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
    progress.finish();
    let view = last.unwrap_or_else(|| ModelView {
        name: name.to_string(),
        repo: applied.spec.repo.clone(),
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
    done(cli, &mut progress, applied, &view, "timeout", EXIT_TIMEOUT)
}

fn done(
    cli: &Cli,
    progress: &mut Progress,
    applied: &Applied,
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
                "created": applied.created,
                "spec": applied.spec,
                "outcome": outcome,
                "model": view,
            }),
        ),
        Format::Text => println!("{}", crate::commands::status::rollup_line(view)),
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
