//! The node backend (`--node[=SOCK]`): the local standalone agent's unix-socket API through
//! the agent library's [`NodeClient`]. The agent edits its models file (the one source of
//! truth) for us; what it reports is presented as a one-node cluster, so the verbs reuse the
//! cluster mode's pure roll-up and rendering.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use coldstart_agent::api::{ColdModel, ColdNode, ColdNodeSpec};
use coldstart_agent::standalone::{NodeClient, NodeStatus};

use crate::rollup::{self, ModelView};

/// Bound on one call to the agent: it answers from memory, or after one flock'ed file edit.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of the agent listening at `sock`.
pub fn client(sock: &Path) -> NodeClient {
    NodeClient::new(sock).with_timeout(CALL_TIMEOUT)
}

/// The agent's answer as the cluster verbs see a cluster: one ColdNode (named after the node,
/// with no labels, so it matches every model: a standalone agent selects all its models) and
/// a ColdModel per model in its file. The ColdModels carry no generation: the agent reports
/// none, and the roll-up would otherwise take its entries for stale ones.
#[derive(Debug, Clone)]
pub struct OneNode {
    /// The models in the agent's file.
    pub models: Vec<ColdModel>,
    /// The node's (empty) labels, by name.
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
    /// The node's ColdNode, with the agent's last status.
    pub coldnodes: Vec<ColdNode>,
}

impl OneNode {
    /// The roll-up of every model, or only of the model `key` names (its name or repo id).
    pub fn from_status(status: &NodeStatus, key: Option<&str>) -> OneNode {
        let models = status
            .models
            .iter()
            .filter(|m| key.is_none_or(|k| m.model.matches(&m.name, k)))
            .map(|m| m.model.to_cold_model(&m.name))
            .collect();
        let mut coldnode = ColdNode::new(&status.node, ColdNodeSpec {});
        coldnode.status = Some(status.status.clone());
        OneNode {
            models,
            nodes: BTreeMap::from([(status.node.clone(), BTreeMap::new())]),
            coldnodes: vec![coldnode],
        }
    }

    /// [`rollup::rollup`] over this one node.
    pub fn rollup(&self) -> Vec<ModelView> {
        rollup::rollup(&self.models, &self.nodes, &self.coldnodes)
    }
}

/// Drops what the agent reports about model `name` when its last pass started no later than
/// `since` (seconds since the epoch; statuses carry whole seconds): that pass may have planned
/// against the entry as it was before an edit made at `since`. The roll-up then shows the
/// model as not reported yet, instead of, say, Ready at the old revision.
pub fn forget_unless_after(status: &mut NodeStatus, name: &str, since: i64) {
    let started = status.status.updated_at.as_ref().map(|t| t.0.as_second());
    if started.is_none_or(|s| s <= since) {
        status.status.models.retain(|m| m.name != name);
    }
}

/// The warning to print when the agent does not apply its file as it is on disk.
pub fn models_error_warning(status: &NodeStatus) -> Option<String> {
    status.models_error.as_ref().map(|e| {
        format!("warning: the agent keeps its last good models: its models file is invalid: {e}")
    })
}

#[cfg(test)]
mod tests;
