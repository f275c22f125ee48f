#![allow(clippy::unwrap_used)]

use std::io;

use super::chain;

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// Real errors of the crate, each with a cause.
fn samples() -> Vec<anyhow::Error> {
    vec![
        crate::weights::Error::io("open", "/cache/blobs/x", io::ErrorKind::NotFound.into()).into(),
        crate::weights::Error::from(crate::fsx::Error::io("fsync", "/cache", enospc())).into(),
        crate::agent::Error::Weights(crate::weights::Error::from(crate::fsx::Error::io(
            "rename",
            "/cache/refs/main",
            io::ErrorKind::PermissionDenied.into(),
        )))
        .into(),
        crate::agent::Error::StatusFile(crate::fsx::Error::io(
            "write",
            "/state/status.json",
            enospc(),
        ))
        .into(),
        crate::images::Error::Io {
            op: "read",
            path: "/etc/containerd/config.toml".into(),
            source: io::ErrorKind::NotFound.into(),
        }
        .into(),
        crate::config::Error::Read {
            path: "/etc/coldstart/agent.toml".into(),
            source: io::ErrorKind::PermissionDenied.into(),
        }
        .into(),
    ]
}

#[test]
fn no_cause_is_printed_twice() {
    for e in samples() {
        // What coldctl and the agent's main print.
        let line = format!("{e:#}");
        for cause in e.chain().skip(1) {
            let text = cause.to_string();
            assert_eq!(
                line.matches(&text).count(),
                1,
                "{text:?} repeated in {line:?}"
            );
        }
        assert_eq!(chain(e.as_ref()), line, "chain() reads as anyhow's {{:#}}");
    }
}

#[test]
fn a_message_says_what_failed_and_the_chain_says_why() {
    let e = crate::agent::Error::StatusFile(crate::fsx::Error::io(
        "write",
        "/state/status.json",
        enospc(),
    ));
    assert_eq!(
        chain(&e),
        "status file: write /state/status.json: No space left on device (os error 28)"
    );
}

#[test]
fn a_foreign_error_that_repeats_its_source_is_not_repeated() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] io::Error);
    let e = Repeats(io::ErrorKind::TimedOut.into());
    assert_eq!(chain(&e), "outer: timed out");
}
