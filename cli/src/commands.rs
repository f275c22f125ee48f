//! One module per verb.

pub mod cache;
pub mod check;
pub mod completion;
pub mod nodes;
pub mod snapshot;
pub mod status;
pub mod unwarm;
pub mod verify;
pub mod version;
pub mod warm;

use crate::report::CliError;

/// The error for verbs that read what the agents report, run with `--here`.
pub fn cluster_only(verb: &str) -> CliError {
    CliError::usage(format!(
        "`coldctl {verb}` asks the cluster, or this node's agent with --node: drop --here"
    ))
}

/// Now, in seconds since the epoch: read once at the edge and passed to the pure renderers.
pub fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}
