use coldstart_agent::standalone::ClientError;
use coldstart_agent::weights::Error as WeightsError;
use serde_json::json;

use super::{CliError, EXIT_TIMEOUT, EXIT_USAGE, Output};
use crate::output::Format;

fn not_found() -> anyhow::Error {
    anyhow::Error::new(WeightsError::NotFound {
        what: "org/m@nope".into(),
        reason: "404".into(),
    })
    .context("syncing org/m")
}

fn no_agent() -> anyhow::Error {
    ClientError::NoAgent {
        path: "/run/x.sock".into(),
    }
    .into()
}

#[test]
fn a_failure_document_keeps_its_shape() {
    let e = CliError::Failed(vec![not_found(), no_agent()]);
    assert_eq!(e.exit_code(), 1);
    assert_eq!(e.kind(), "not_found");
    assert_eq!(
        e.document(),
        Some(json!({
            "ok": false,
            "error": "syncing org/m: org/m@nope not found on the hub: 404; \
                      no agent listening at /run/x.sock",
            "kind": "not_found",
            "errors": [
                {"kind": "not_found", "error": "syncing org/m: org/m@nope not found on the hub: 404"},
                {"kind": "no_agent", "error": "no agent listening at /run/x.sock"},
            ],
        }))
    );
}

#[test]
fn text_mode_is_one_line_per_failure_and_documents_print_none() {
    let e = CliError::Failed(vec![anyhow::anyhow!("root cause").context("what failed")]);
    assert_eq!(e.lines(Format::Text), ["what failed: root cause"]);
    assert!(e.lines(Format::Json).is_empty());
    assert!(e.lines(Format::Yaml).is_empty());
    assert_eq!(e.kind(), "error");
}

#[test]
fn usage_errors_are_a_line_in_every_format() {
    let e = CliError::usage("give a MODEL");
    assert_eq!(e.exit_code(), EXIT_USAGE);
    assert_eq!(e.kind(), "usage");
    assert_eq!(e.document(), None);
    for format in [Format::Text, Format::Json, Format::Yaml] {
        assert_eq!(e.lines(format), ["give a MODEL"]);
    }
}

#[test]
fn an_outcome_prints_its_result_and_its_lines_in_text_only() {
    let e = CliError::Outcome {
        code: EXIT_TIMEOUT,
        kind: "timeout",
        output: Output::line(json!({"outcome": "timeout"}), "m (org/m): 0/1 nodes ready"),
        errors: vec!["timed out after 2s".into()],
    };
    assert_eq!((e.exit_code(), e.kind().as_str()), (3, "timeout"));
    assert_eq!(e.document(), None, "the result is the document");
    assert_eq!(e.lines(Format::Text), ["timed out after 2s"]);
    assert!(e.lines(Format::Json).is_empty());
}
