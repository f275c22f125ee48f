//! Mapping of containerd and CRI gRPC failures onto the port's [`Error`].
//!
//! containerd reports registry failures as free text inside a gRPC status (usually code
//! `Unknown`), so the pull's cause is classified from the message; the raw message is kept so the
//! operator sees containerd's own words.

use std::path::Path;

use tonic::{Code, Status};

use super::super::{Error, ImageRef};

/// Whether the status means the socket itself failed (containerd down or restarting).
fn is_transport(status: &Status) -> bool {
    if status.code() == Code::Unavailable {
        return true;
    }
    let msg = status.message().to_ascii_lowercase();
    matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Cancelled
    ) && (msg.contains("transport error")
        || msg.contains("connection reset")
        || msg.contains("broken pipe")
        || msg.contains("h2 protocol error")
        || msg.contains("error trying to connect"))
}

/// A failed short call.
pub(super) fn rpc(socket: &Path, op: &'static str, status: Status) -> Error {
    if is_transport(&status) {
        return Error::Unavailable {
            socket: socket.to_path_buf(),
            reason: one_line(status.message()),
        };
    }
    Error::Runtime {
        op,
        reason: one_line(status.message()),
    }
}

/// A failed `PullImage`, classified by cause.
pub(super) fn classify_pull(socket: &Path, image: &ImageRef, status: Status) -> Error {
    if is_transport(&status) {
        return Error::Unavailable {
            socket: socket.to_path_buf(),
            reason: one_line(status.message()),
        };
    }
    let reason = one_line(status.message());
    let msg = reason.to_ascii_lowercase();
    let image = image.to_string();
    let any = |needles: &[&str]| needles.iter().any(|n| msg.contains(n));
    if any(&["no space left on device"]) {
        Error::NoSpace { image, reason }
    } else if any(&[
        "401 unauthorized",
        "403 forbidden",
        "unauthorized",
        "authorization failed",
        "pull access denied",
        "denied: ",
    ]) {
        Error::Unauthorized { image, reason }
    } else if any(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "server misbehaving",
        "network is unreachable",
        "tls: ",
        "x509: ",
        "connection reset by peer",
        "unexpected eof",
    ]) {
        Error::RegistryUnreachable { image, reason }
    } else if any(&["not found", "manifest unknown", "name unknown"]) {
        Error::NotFound { image, reason }
    } else {
        Error::Runtime { op: "pull", reason }
    }
}

/// containerd messages can span lines (wrapped Go errors); an operator's error is one line.
fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img() -> ImageRef {
        ImageRef::parse("registry.coldstart.test/test/img:v1").unwrap()
    }

    #[test]
    fn classifies_containerd_messages() {
        let sock = Path::new("/run/c.sock");
        let cases: &[(&str, &str)] = &[
            (
                r#"failed to pull and unpack image "x": failed to resolve reference "x": x: not found"#,
                "not_found",
            ),
            (
                "failed to resolve reference: unexpected status from HEAD request: 401 Unauthorized",
                "unauthorized",
            ),
            (
                "failed to do request: Head \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
                "registry_unreachable",
            ),
            (
                "failed to extract layer: write /x: no space left on device",
                "no_space",
            ),
            ("something else", "runtime"),
        ];
        for (msg, want) in cases {
            let e = classify_pull(sock, &img(), Status::unknown(*msg));
            assert_eq!(e.metric_label(), *want, "{msg}");
        }
        let e = classify_pull(sock, &img(), Status::unavailable("error trying to connect"));
        assert_eq!(e.metric_label(), "runtime_unavailable");
        let e = classify_pull(sock, &img(), Status::unknown("transport error"));
        assert_eq!(e.metric_label(), "runtime_unavailable");
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        let e = rpc(Path::new("/s"), "version", Status::internal("a\n  b\nc"));
        assert_eq!(e.to_string(), "containerd version failed: a b c");
    }
}
