//! coldstart node agent library: the ports to the outside systems a GPU node depends on, the
//! pure planning logic, and the orchestration that `coldstart-agent` and `coldctl --here` share.
//!
//! Layout follows STYLE.md: one module per outside system (`images` for containerd), each with
//! its trait, real client, stateful fake and error enum.

pub mod admin;
pub mod agent;
pub mod api;
pub mod backoff;
pub mod caches;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod errors;
pub mod fsx;
pub mod gpu;
pub mod health;
pub mod images;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod prepull;
pub mod rate_floor;
pub mod snapshots;
pub mod standalone;
pub mod telemetry;
pub mod warmer;
pub mod weights;
