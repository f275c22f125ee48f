use std::collections::BTreeMap;

use coldstart_agent::api::{ColdModel, ColdNode, parse_selector};
use serde_json::{Value, json};

use super::*;

/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

fn model(name: &str, selector: Option<&str>) -> ColdModel {
    let mut spec = json!({"repo": format!("org/{name}")});
    if let Some(s) = selector {
        spec["nodeSelector"] = serde_json::to_value(parse_selector(s).unwrap()).unwrap();
    }
    serde_json::from_value(json!({
        "apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn coldnode(name: &str, status: Value) -> ColdNode {
    serde_json::from_value(json!({
        "apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
        "metadata": {"name": name}, "spec": {}, "status": status
    }))
    .unwrap()
}

fn part(phase: &str, done: u64, total: Option<u64>) -> Value {
    let mut p = json!({"phase": phase, "bytesDone": done});
    if let Some(t) = total {
        p["bytesTotal"] = json!(t);
    }
    p
}

fn nodes(pairs: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|(n, labels)| {
            let l = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (n.to_string(), l)
        })
        .collect()
}

#[test]
fn selected_nodes_match_the_selector_and_have_an_agent() {
    let nodes = nodes(&[
        ("a", &[("pool", "gpu")]),
        ("b", &[("pool", "gpu")]),
        ("c", &[("pool", "cpu")]),
        ("d", &[("pool", "gpu")]), // no agent
    ]);
    let cns = [
        coldnode(
            "b",
            json!({"phase": "Ready", "models": [{"name": "m", "phase": "Ready"}]}),
        ),
        coldnode(
            "a",
            json!({"phase": "Warming", "models": [{"name": "m", "phase": "Warming",
            "weights": part("Syncing", 1 << 30, Some(4 << 30))}]}),
        ),
        coldnode("c", json!({"phase": "Ready"})),
        coldnode("gone", json!({"phase": "Ready"})), // no Node any more
    ];
    let views = rollup(&[model("m", Some("pool=gpu"))], &nodes, &cns);
    assert_eq!(views.len(), 1);
    let v = &views[0];
    assert_eq!((v.name.as_str(), v.repo.as_str()), ("m", "org/m"));
    assert_eq!((v.selected, v.ready, v.failed), (2, 1, 0));
    let names: Vec<&str> = v.nodes.iter().map(|e| e.node.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(outcome(v), Outcome::Waiting);

    // No selector: every node with an agent; c has not reported the model yet.
    let all = rollup(&[model("m", None)], &nodes, &cns);
    assert_eq!(all[0].selected, 3);
    let c = &all[0].nodes[2];
    assert_eq!(
        (c.node.as_str(), c.reported, c.phase),
        ("c", false, Phase::Pending)
    );
}

#[test]
fn outcomes_fail_first_then_ready_then_wait() {
    let nodes = nodes(&[("a", &[]), ("b", &[])]);
    let failed = part("Failed", 0, None);
    let mut failed_with_reason = failed.clone();
    failed_with_reason["reason"] = json!("disk_full");
    failed_with_reason["message"] = json!("no space left");
    let cns = [
        coldnode("a", json!({"models": [{"name": "m", "phase": "Ready"}]})),
        coldnode(
            "b",
            json!({"models": [{"name": "m", "phase": "Failed",
            "image": part("Ready", 5, Some(5)), "weights": failed_with_reason}]}),
        ),
    ];
    let v = &rollup(&[model("m", None)], &nodes, &cns)[0];
    assert_eq!(
        outcome(v),
        Outcome::Failed(vec![("b".into(), "disk_full: no space left".into())])
    );
    assert_eq!(v.failed, 1);

    let ready = [
        coldnode("a", json!({"models": [{"name": "m", "phase": "Ready"}]})),
        coldnode("b", json!({"models": [{"name": "m", "phase": "Ready"}]})),
    ];
    assert_eq!(
        outcome(&rollup(&[model("m", None)], &nodes, &ready)[0]),
        Outcome::Ready
    );
    let none = rollup(&[model("m", Some("pool=x"))], &nodes, &ready);
    assert_eq!(outcome(&none[0]), Outcome::NoNodes);
}

fn entry(image: Option<Value>, weights: Option<Value>) -> NodeEntry {
    NodeEntry {
        node: "n".into(),
        reported: true,
        phase: Phase::Warming,
        image: image.map(|v| serde_json::from_value(v).unwrap()),
        weights: weights.map(|v| serde_json::from_value(v).unwrap()),
        reason: None,
        updated_at: None,
    }
}

#[test]
fn progress_sums_image_and_weights() {
    let gib = 1u64 << 30;
    let e = entry(
        Some(part("Ready", gib, Some(gib))),
        Some(part("Syncing", gib, Some(9 * gib))),
    );
    assert_eq!(bytes(&e), (2 * gib, Some(10 * gib)));
    // Floored: 100% only when done.
    assert_eq!(progress_text(&e), "2.0/10.0 GiB 20%");
    let e = entry(None, Some(part("Syncing", 999, Some(1000))));
    assert_eq!(progress_text(&e), "999.0/1000.0 B 99%");
    // One part without a total: the sum is unknown.
    let e = entry(
        Some(part("Pulling", gib, None)),
        Some(part("Syncing", 0, Some(gib))),
    );
    assert_eq!(progress_text(&e), "1.0 GiB");
    assert_eq!(progress_text(&entry(None, None)), "-");
}

#[test]
fn rate_and_age() {
    let mut w = part("Syncing", 0, None);
    w["bytesPerSecond"] = json!(3 << 20);
    w["lastTransitionTime"] = json!("2025-12-31T23:59:15Z");
    let mut i = part("Pulling", 0, None);
    i["bytesPerSecond"] = json!(1 << 20);
    i["lastTransitionTime"] = json!("2025-12-31T23:50:00Z");
    let e = entry(Some(i), Some(w));
    assert_eq!(rate_text(&e), "4.0 MiB/s");
    assert_eq!(age_seconds(&e, NOW), Some(45));
    let mut e = entry(None, None);
    assert_eq!(rate_text(&e), "-");
    assert_eq!(age_seconds(&e, NOW), None);
    e.updated_at = Some("2025-12-31T23:00:00Z".into());
    assert_eq!(age_seconds(&e, NOW), Some(3600));
    assert_eq!(age_text(Some(45)), "45s");
    assert_eq!(age_text(Some(600)), "10m");
    assert_eq!(age_text(Some(3 * 3600)), "3h");
    assert_eq!(age_text(Some(3 * 86400)), "3d");
    assert_eq!(age_text(None), "-");
}

#[test]
fn node_rows_count_models_and_flag_stale_agents() {
    let cns = [
        coldnode(
            "b",
            json!({"phase": "Warming", "updatedAt": "2025-12-31T23:59:30Z",
            "gpu": {"healthy": false, "reason": "xid 79"},
            "models": [{"name": "m", "phase": "Ready"}, {"name": "n", "phase": "Warming"}]}),
        ),
        coldnode(
            "a",
            json!({"phase": "Ready", "updatedAt": "2025-12-31T23:50:00Z",
            "gpu": {"healthy": true}}),
        ),
        coldnode("c", json!({})),
    ];
    let rows = node_rows(&cns, NOW);
    let names: Vec<&str> = rows.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        (rows[0].gpu, rows[0].stale, rows[0].age_seconds),
        ("healthy", true, Some(600))
    );
    assert_eq!((rows[1].models_ready, rows[1].models_total), (1, 2));
    assert_eq!(
        (rows[1].gpu, rows[1].gpu_reason.as_deref()),
        ("unhealthy", Some("xid 79"))
    );
    assert!(!rows[1].stale);
    assert_eq!((rows[2].gpu, rows[2].stale), ("unknown", true));
}

#[test]
fn tables_align_columns() {
    let t = table(
        &["NODE", "PHASE"],
        &[
            vec!["a-long-name".into(), "Ready".into()],
            vec!["b".into(), "".into()],
        ],
    );
    assert_eq!(t, "NODE         PHASE\na-long-name  Ready\nb\n");
}

#[test]
fn an_entry_for_an_older_generation_is_not_ready_for_the_current_spec() {
    let nodes = nodes(&[("a", &[]), ("b", &[])]);
    let mut m = model("m", None);
    m.metadata.generation = Some(3);
    let cns = [
        coldnode(
            "a",
            json!({"phase": "Ready", "models": [{"name": "m", "phase": "Ready", "observedGeneration": 2}]}),
        ),
        coldnode(
            "b",
            json!({"phase": "Ready", "models": [{"name": "m", "phase": "Ready", "observedGeneration": 3}]}),
        ),
    ];
    let v = &rollup(&[m], &nodes, &cns)[0];
    assert_eq!((v.selected, v.ready), (2, 1));
    let a = &v.nodes[0];
    assert_eq!((a.reported, a.phase), (false, Phase::Pending));
    assert!(a.reason.as_deref().unwrap().contains("latest spec"));
    assert_eq!(outcome(v), Outcome::Waiting);
}
