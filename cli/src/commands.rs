//! One module per verb.

pub mod nodes;
pub mod status;
pub mod unwarm;
pub mod verify;
pub mod warm;

/// The error for cluster verbs run with `--here`: they read the whole cluster.
pub fn cluster_only(verb: &str) -> u8 {
    eprintln!("error: `coldctl {verb}` reads the cluster: drop --here");
    crate::EXIT_USAGE
}

/// Now, in seconds since the epoch: read once at the edge and passed to the pure renderers.
pub fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}
