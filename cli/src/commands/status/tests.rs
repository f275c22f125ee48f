use coldstart_agent::api::{PartStatus, Phase};

use super::render;
use crate::rollup::{ModelView, NodeEntry, rollup_line};

fn view(nodes: Vec<NodeEntry>) -> ModelView {
    ModelView {
        name: "org--m".into(),
        repo: "org/m".into(),
        selected: nodes.len(),
        ready: nodes.iter().filter(|e| e.phase == Phase::Ready).count(),
        failed: nodes.iter().filter(|e| e.phase == Phase::Failed).count(),
        nodes,
    }
}

fn entry(node: &str, phase: Phase, reported: bool, reason: Option<&str>) -> NodeEntry {
    NodeEntry {
        node: node.into(),
        reported,
        phase,
        image: None,
        weights: Some(PartStatus {
            bytes_done: 1 << 30,
            bytes_total: Some(4 << 30),
            ..PartStatus::default()
        }),
        reason: reason.map(str::to_string),
        updated_at: None,
    }
}

#[test]
fn the_table_has_a_row_per_node_and_a_rollup_per_model() {
    let text = render(
        &[view(vec![
            entry("gpu-1", Phase::Ready, true, None),
            entry("gpu-2", Phase::Failed, true, Some("disk_full: no space")),
            entry("gpu-3", Phase::Pending, false, None),
        ])],
        0,
        super::NO_COLDMODELS,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{text}");
    for h in ["MODEL", "PHASE", "PROGRESS", "RATE", "AGE", "REASON"] {
        assert!(lines[0].contains(h), "{text}");
    }
    assert!(
        lines[1].starts_with("gpu-1") && lines[1].contains("Ready"),
        "{text}"
    );
    assert!(lines[1].contains("1.0/4.0 GiB 25%"), "{text}");
    assert!(lines[2].contains("Failed") && lines[2].ends_with("disk_full: no space"));
    assert!(lines[3].contains("Pending (not reported)"), "{text}");
    assert_eq!(lines[5], "org--m (org/m): 1/3 nodes ready, 1 failed");
}

#[test]
fn a_model_without_nodes_says_why() {
    assert_eq!(
        rollup_line(&view(Vec::new())),
        "org--m (org/m): 0/0 nodes ready (no node with an agent matches its selector)"
    );
    assert!(render(&[], 0, super::NO_COLDMODELS).starts_with("no ColdModels"));
    let node = render(&[], 0, super::NO_NODE_MODELS);
    assert!(
        node.contains("--node warm") && !node.contains("ColdModel"),
        "{node}"
    );
}
