//! `coldctl version`: this client's version and, when the local agent answers on its socket
//! (`--node[=SOCK]`, else the default socket), the agent's. An agent that does not answer is
//! no failure: the line says so.
//!
//! `-o json|yaml`: `{"client": "0.1.0", "agent": {"socket", "version", "node"} | null,
//! "agentError": "..."}`.

use std::path::PathBuf;
use std::time::Duration;

use coldstart_agent::standalone::NodeClient;
use serde_json::json;

use crate::report::{CliError, Output};
use crate::{Backend, Cli, DEFAULT_AGENT_SOCKET};

/// A version question should not hang on a wedged agent.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Arguments of `coldctl version`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints the versions.
pub async fn run(cli: &Cli, _args: &Args) -> Result<Output, CliError> {
    let client = env!("CARGO_PKG_VERSION");
    let socket = match cli.backend() {
        Backend::Node(sock) => sock,
        Backend::Cluster | Backend::Here => PathBuf::from(DEFAULT_AGENT_SOCKET),
    };
    let asked = NodeClient::new(&socket)
        .with_timeout(ASK_TIMEOUT)
        .status()
        .await;
    let (doc, text) = match asked {
        Ok(st) => {
            let version = st.version.unwrap_or_else(|| "unknown".into());
            let text = format!(
                "coldctl {client}\ncoldstart-agent {version} (node {}, {})\n",
                st.node,
                socket.display()
            );
            let agent = json!({"socket": socket, "version": version, "node": st.node});
            (json!({"client": client, "agent": agent}), text)
        }
        Err(e) => {
            let text = format!("coldctl {client}\ncoldstart-agent: not reachable ({e})\n");
            let doc = json!({"client": client, "agent": null, "agentError": e.to_string()});
            (doc, text)
        }
    };
    Ok(Output::text(doc, text))
}
