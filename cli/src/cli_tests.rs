//! How the command line parses: `--node` in both spellings and both positions, the old flag
//! spellings, and the grouped help.

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser as _};

use crate::{Backend, Cli, DEFAULT_AGENT_SOCKET, join_node_value};

fn parse(args: &[&str]) -> Cli {
    let args = join_node_value(args.iter().map(Into::into).collect());
    Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"))
}

fn node(path: &str) -> Backend {
    Backend::Node(PathBuf::from(path))
}

#[test]
fn node_takes_a_socket_path_with_a_space_or_an_equals_sign_before_or_after_the_verb() {
    let sock = "/x/agent.sock";
    for args in [
        &["coldctl", "status", "--node", sock][..],
        &["coldctl", "--node", sock, "status"],
        &["coldctl", "--node=/x/agent.sock", "status"],
        &["coldctl", "status", "--node=/x/agent.sock"],
    ] {
        let cli = parse(args);
        assert_eq!(cli.backend(), node(sock), "{args:?}");
        let crate::Command::Status(s) = &cli.command else {
            panic!("{args:?}: not status");
        };
        assert_eq!(s.model, None, "{args:?}: the path is no MODEL");
    }
    assert_eq!(
        parse(&["coldctl", "--node", "./run/a.sock", "nodes"]).backend(),
        node("./run/a.sock")
    );
    assert_eq!(
        parse(&["coldctl", "--node", "agent.sock", "nodes"]).backend(),
        node("agent.sock")
    );
}

#[test]
fn a_bare_node_means_the_default_socket_and_leaves_a_model_alone() {
    let cli = parse(&["coldctl", "--node", "status", "org/model"]);
    assert_eq!(cli.backend(), node(DEFAULT_AGENT_SOCKET));
    let crate::Command::Status(s) = &cli.command else {
        panic!("not status");
    };
    assert_eq!(s.model.as_deref(), Some("org/model"));
    let cli = parse(&["coldctl", "warm", "--node", "org/model"]);
    assert_eq!(cli.backend(), node(DEFAULT_AGENT_SOCKET));
    let joined = join_node_value(
        ["coldctl", "warm", "--", "--node", "/x"]
            .iter()
            .map(Into::into)
            .collect(),
    );
    assert_eq!(joined.len(), 5, "nothing after -- changes: {joined:?}");
}

#[test]
fn old_flag_spellings_still_parse_and_stay_out_of_the_help() {
    let cli = parse(&[
        "coldctl",
        "verify",
        "org/m",
        "--here",
        "--endpoint",
        "http://127.0.0.1:1",
        "--token-file",
        "/t",
    ]);
    let crate::Command::Verify(v) = &cli.command else {
        panic!("not verify");
    };
    assert_eq!(v.hub.hub_endpoint, "http://127.0.0.1:1");
    assert_eq!(v.hub.hub_token_file, Some(PathBuf::from("/t")));
    let mut cmd = Cli::command();
    cmd.build();
    let help = cmd
        .find_subcommand_mut("warm")
        .expect("warm")
        .render_long_help()
        .to_string();
    for heading in ["Backend", "Hub", "Image", "Cluster", "Output"] {
        assert!(help.contains(heading), "no {heading}:\n{help}");
    }
    for name in ["--hub-endpoint", "--hub-token-file", "--cache-root"] {
        assert!(help.contains(name), "{name} missing:\n{help}");
    }
    for old in ["--endpoint ", "--token-file "] {
        assert!(!help.contains(old), "{old} shown:\n{help}");
    }
}
