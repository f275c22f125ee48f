//! `coldctl`: the operator's command line for coldstart.
//!
//! Three backends: the cluster (the default: the Kubernetes API, kubeconfig found as kubectl
//! finds it), the local agent (`--node`), or this process on this node (`--here`).
//!
//! Exit codes: 0 success, 1 failure, 3 timed out (`warm --wait`), 64 bad usage (as sysexits'
//! EX_USAGE). Verbs return their result or a [`report::CliError`] that carries its exit code
//! and kind; `main` prints either once (see [`report`]; the README has the table of kinds).

mod args;
mod cluster;
mod commands;
mod logging;
mod node;
mod output;
mod report;
mod rollup;
mod wait;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::report::{CliError, EXIT_USAGE, Output};

/// The local agent's socket when `--node` names none.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/coldstart/agent.sock";

/// Help heading of the flags that pick where a verb works.
pub const BACKEND: &str = "Backend (default: the cluster)";
/// Help heading of the output flags.
pub const OUTPUT: &str = "Output";

/// coldstart operator command line.
#[derive(Debug, Parser)]
#[command(name = "coldctl", version, about)]
pub struct Cli {
    /// Do the work in this process, on this node, with no cluster and no running agent.
    #[arg(long, global = true, conflicts_with = "node", help_heading = BACKEND)]
    pub here: bool,
    /// Ask this node's agent over its unix socket [default socket: /run/coldstart/agent.sock].
    /// `--node PATH` and `--node=PATH` both name another socket (a PATH starts with `/` or
    /// `.`, or ends in `.sock`).
    #[arg(long, global = true, value_name = "SOCK", num_args = 0..=1, require_equals = true,
          default_missing_value = DEFAULT_AGENT_SOCKET, help_heading = BACKEND)]
    pub node: Option<PathBuf>,
    // The cluster backend's flags (`--kubeconfig`, `--context`); clap documents each one.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub cluster: args::ClusterArgs,
    /// Output format: text for people, or exactly one JSON or YAML document on stdout
    /// (camelCase keys, stable).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = output::Format::Text,
          help_heading = OUTPUT)]
    pub output: output::Format,
    /// Log filter (RUST_LOG syntax); logs always go to stderr.
    #[arg(long, global = true, env = "COLDSTART_LOG", default_value = "warn",
          help_heading = OUTPUT)]
    pub log: String,
    #[command(subcommand)]
    command: Command,
}

/// Where a verb does its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The Kubernetes API (the default).
    Cluster,
    /// The local agent's unix socket.
    Node(PathBuf),
    /// This process, on this node.
    Here,
}

impl Cli {
    /// The backend the global flags pick.
    pub fn backend(&self) -> Backend {
        match (&self.node, self.here) {
            (_, true) => Backend::Here,
            (Some(sock), false) => Backend::Node(sock.clone()),
            (None, false) => Backend::Cluster,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make this node warm: sync a model's weights and/or pre-pull its image, pinned.
    Warm(Box<commands::warm::Args>),
    /// Re-verify a synced model in the local Hub cache.
    Verify(Box<commands::verify::Args>),
    /// Per node and model: phase, progress, rate and reason, with a ready/selected roll-up.
    Status(commands::status::Args),
    /// Stop keeping a model warm: its ColdModel in the cluster, its models-file entry on a
    /// node (`--node`).
    Unwarm(commands::unwarm::Args),
    /// One row per node with an agent: phase, models ready, GPU health, last update.
    Nodes(commands::nodes::Args),
    /// Compile caches on the nodes: the pod spec parts (`env`), the scopes (`list`), GC (`gc`).
    Cache(commands::cache::Args),
    /// Process snapshots on this node: `capture` a running container, `support` (--here).
    Snapshot(commands::snapshot::Args),
    /// What will make a Deployment's pods start cold: one line per finding, exit 1 if any.
    Check(commands::check::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(commands::completion::Args),
    /// coldctl's version and, when it answers, the local agent's.
    Version(commands::version::Args),
}

/// `--node PATH` (two words) as `--node=PATH` when PATH reads as a socket path: it starts
/// with `/` or `.`, or ends in `.sock`. A verb, a Hub repo id (`org/name`) or another flag
/// never does, so `--node status` still means the default socket. Nothing after `--`
/// changes.
pub fn join_node_value(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter().peekable();
    while let Some(arg) = it.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(it);
            break;
        }
        let is_path = |v: &OsString| {
            let v = v.to_string_lossy();
            v.starts_with('/') || v.starts_with('.') || v.ends_with(".sock")
        };
        match it.peek() {
            Some(next) if arg == "--node" && is_path(next) => {
                let mut joined = OsString::from("--node=");
                joined.push(next);
                out.push(joined);
                it.next();
            }
            _ => out.push(arg),
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(join_node_value(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { EXIT_USAGE } else { 0 });
        }
    };
    logging::init(
        &cli.log,
        cli.output.is_document() || !output::stderr_is_terminal(),
    );
    // The runtime outlives the report: dropping it waits for blocking tasks still running.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime");
    let result = match &runtime {
        Ok(rt) => rt.block_on(run(&cli)),
        Err(e) => Err(CliError::Failed(vec![anyhow::anyhow!("{e:#}")])),
    };
    ExitCode::from(report::render(&result, cli.output))
}

/// Runs the verb the command line names.
async fn run(cli: &Cli) -> Result<Output, CliError> {
    match &cli.command {
        Command::Warm(args) => commands::warm::run(cli, args).await,
        Command::Verify(args) => commands::verify::run(cli, args).await,
        Command::Status(args) => commands::status::run(cli, args).await,
        Command::Unwarm(args) => commands::unwarm::run(cli, args).await,
        Command::Nodes(args) => commands::nodes::run(cli, args).await,
        Command::Cache(args) => commands::cache::run(cli, args).await,
        Command::Check(args) => commands::check::run(cli, args).await,
        Command::Snapshot(args) => commands::snapshot::run(cli, args).await,
        Command::Completion(args) => commands::completion::run(args),
        Command::Version(args) => commands::version::run(cli, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Clap's own consistency checks (unique names, valid defaults) run only in debug builds
    /// when a subcommand is first parsed; run them over the whole tree here.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

#[cfg(test)]
mod cli_tests;
