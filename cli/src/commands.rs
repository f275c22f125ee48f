//! One module per verb.

pub mod nodes;
pub mod status;
pub mod unwarm;
pub mod verify;
pub mod warm;

use crate::report::CliError;

/// The error for cluster verbs run with `--here`: they read the whole cluster.
pub fn cluster_only(verb: &str) -> CliError {
    CliError::usage(format!("`coldctl {verb}` reads the cluster: drop --here"))
}

/// Now, in seconds since the epoch: read once at the edge and passed to the pure renderers.
pub fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}
