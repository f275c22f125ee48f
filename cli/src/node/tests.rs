#![allow(clippy::unwrap_used, clippy::expect_used)]

use coldstart_agent::api::Phase;
use coldstart_agent::standalone::NodeStatus;
use serde_json::json;

use super::OneNode;
use crate::rollup::{self, Outcome};

/// An agent's answer: `org/a` Ready, `org/b` in the file but not planned yet.
fn answer() -> NodeStatus {
    serde_json::from_value(json!({
        "node": "edge-1",
        "status": {
            "phase": "Warming",
            "updatedAt": "2026-11-23T16:00:00Z",
            "models": [{"name": "org--a", "phase": "Ready",
                "weights": {"phase": "Ready", "bytesDone": 10, "bytesTotal": 10}}],
        },
        "models": [
            {"name": "org--a", "model": {"repo": "org/a"}},
            {"name": "org--b", "model": {"repo": "org/b", "revision": "v1"}},
        ],
    }))
    .unwrap()
}

#[test]
fn every_model_in_the_file_is_rolled_up_over_the_one_node() {
    let views = OneNode::from_status(&answer(), None).rollup();
    assert_eq!(views.len(), 2);
    let (a, b) = (&views[0], &views[1]);
    assert_eq!((a.name.as_str(), a.repo.as_str()), ("org--a", "org/a"));
    assert_eq!((a.selected, a.ready, a.failed), (1, 1, 0));
    assert_eq!(a.nodes[0].node, "edge-1");
    assert_eq!(rollup::outcome(a), Outcome::Ready);
    assert_eq!(b.nodes[0].phase, Phase::Pending);
    assert!(!b.nodes[0].reported);
    assert_eq!(rollup::outcome(b), Outcome::Waiting);
}

#[test]
fn a_key_picks_a_model_by_name_or_repo() {
    for key in ["org--b", "org/b", "ORG/B"] {
        let views = OneNode::from_status(&answer(), Some(key)).rollup();
        assert_eq!(views.len(), 1, "{key}");
        assert_eq!(views[0].name, "org--b");
    }
    assert!(
        OneNode::from_status(&answer(), Some("org/c"))
            .rollup()
            .is_empty()
    );
}

#[test]
fn the_node_row_counts_what_the_agent_reports() {
    let one = OneNode::from_status(&answer(), None);
    let rows = rollup::node_rows(&one.coldnodes, 1_795_449_600 + 30);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].node, "edge-1");
    assert_eq!((rows[0].models_ready, rows[0].models_total), (1, 1));
    assert_eq!(rows[0].phase, Some(Phase::Warming));
}

#[test]
fn an_invalid_file_is_a_warning() {
    let mut st = answer();
    assert_eq!(super::models_error_warning(&st), None);
    st.models_error = Some("line 3: bad".into());
    assert!(
        super::models_error_warning(&st)
            .unwrap()
            .contains("line 3: bad")
    );
}

#[test]
fn a_pass_older_than_an_edit_says_nothing_about_the_model() {
    let started = 1_795_449_600;
    for (since, kept) in [(started - 1, true), (started, false), (started + 5, false)] {
        let mut st = answer();
        super::forget_unless_after(&mut st, "org--a", since);
        let views = OneNode::from_status(&st, Some("org--a")).rollup();
        assert_eq!(views[0].nodes[0].reported, kept, "since {since}");
        assert_eq!(st.status.models.is_empty(), !kept);
    }
}
