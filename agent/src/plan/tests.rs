#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::api::{ColdModel, PartPhase, Phase};

fn model(name: &str, image: Option<&str>, selector: Value) -> ColdModel {
    let mut spec = json!({"repo": format!("org/{name}")});
    if let Some(i) = image {
        spec["image"] = json!(i);
    }
    if !selector.is_null() {
        spec["nodeSelector"] = selector;
    }
    serde_json::from_value(
        json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

/// The monotonic time of every pass in these tests.
const CLOCK: Mono = Mono(Duration::from_secs(100_000));

fn verified() -> LocalWeights {
    LocalWeights::Verified {
        last_attempt: CLOCK,
    }
}

/// A part that failed once, `ago` seconds before [`CLOCK`].
fn failed(reason: &str, ago: u64) -> Failed {
    Failed {
        reason: reason.into(),
        failures: 1,
        at: Mono(CLOCK.0 - Duration::from_secs(ago)),
    }
}

fn run(models: &[ColdModel], local: &Local, node: &[(&str, &str)]) -> Plan {
    let node_labels = labels(node);
    let inp = Inputs {
        node_labels: &node_labels,
        models,
        current: None,
        local,
        gpu_healthy: true,
        warming_deadline: Some(ts(1000)),
        now: ts(100),
        clock: CLOCK,
    };
    plan(&inp, &Limits::default())
}

#[test]
fn selector_table() {
    let node = labels(&[("pool", "a"), ("gpu", "h100")]);
    let cases = [
        (json!(null), true),
        (json!({}), true),
        (json!({"matchLabels": {"pool": "a"}}), true),
        (json!({"matchLabels": {"pool": "b"}}), false),
        (json!({"matchLabels": {"pool": "a", "zone": "x"}}), false),
        (
            json!({"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100", "a100"]}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["a100"]}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["h100"]}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["x"]}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "gpu", "operator": "Gt", "values": ["1"]}]}),
            false,
        ),
        (
            json!({"matchLabels": {"pool": "a"}, "matchExpressions": [{"key": "gpu", "operator": "Exists"}]}),
            true,
        ),
    ];
    for (sel, want) in cases {
        let s = (!sel.is_null()).then(|| serde_json::from_value(sel.clone()).unwrap());
        assert_eq!(matches(s.as_ref(), &node), want, "{sel}");
    }
}

#[test]
fn selection_by_node_labels() {
    let models = [
        model("a", None, json!({"matchLabels": {"pool": "a"}})),
        model("b", None, json!({"matchLabels": {"pool": "b"}})),
        model("all", None, json!(null)),
    ];
    let p = run(&models, &Local::default(), &[("pool", "a")]);
    assert_eq!(p.selected, ["a", "all"].map(String::from).into());
    assert_eq!(p.sync_weights, ["a", "all"]);
}

#[test]
fn one_image_pull_at_a_time_and_shared_images_pulled_once() {
    let models = [
        model("a", Some("img:1"), json!(null)),
        model("b", Some("img:1"), json!(null)),
        model("c", Some("img:2"), json!(null)),
    ];
    let p = run(&models, &Local::default(), &[]);
    assert_eq!(p.pull_images, ["img:1"]);
    let mut local = Local::default();
    local.images.insert("img:1".into(), LocalImage::Pulling);
    assert!(run(&models, &local, &[]).pull_images.is_empty());
    local
        .images
        .insert("img:1".into(), LocalImage::Present { pinned: false });
    let p = run(&models, &local, &[]);
    assert_eq!(
        (p.pull_images, p.pin_images),
        (vec!["img:2".into()], vec!["img:1".into()])
    );
    local
        .images
        .insert("img:2".into(), LocalImage::Failed(failed("pull", 60)));
    assert_eq!(
        run(&models, &local, &[]).pull_images,
        ["img:2"],
        "a failed pull is retried"
    );
}

#[test]
fn weight_syncs_up_to_the_limit() {
    let models: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| model(n, None, json!(null)))
        .collect();
    let mut local = Local::default();
    local.weights.insert("a".into(), LocalWeights::Syncing);
    local.weights.insert("b".into(), verified());
    local.weights.insert("c".into(), LocalWeights::Present);
    let p = run(&models, &local, &[]);
    assert_eq!(
        p.sync_weights,
        ["c"],
        "one in flight, limit two, the unverified one first by name"
    );
}

#[test]
fn removal_unpins_unless_shared_and_evicts_after_grace() {
    let models = [model("b", Some("img:shared"), json!(null))];
    let mut local = Local::default();
    let pinned = LocalImage::Present { pinned: true };
    local.images.insert("img:shared".into(), pinned.clone());
    local.images.insert("img:old".into(), pinned);
    local.weights.insert("b".into(), verified());
    local.weights.insert("gone".into(), verified());
    local.weights.insert("late".into(), verified());
    local.unselected_since.insert("late".into(), ts(100 - 3600));
    local.unselected_since.insert("gone".into(), ts(50));
    let p = run(&models, &local, &[]);
    assert_eq!(p.unpin_images, ["img:old"]);
    assert_eq!(p.unselected, ["gone", "late"]);
    assert_eq!(p.evict_weights, ["late"]);
}

#[test]
fn labels_taint_and_condition() {
    let models = [
        model("a", Some("img"), json!(null)),
        model("b", None, json!(null)),
    ];
    let mut local = Local::default();
    local
        .images
        .insert("img".into(), LocalImage::Present { pinned: true });
    local.weights.insert("a".into(), verified());
    local.weights.insert("b".into(), LocalWeights::Syncing);
    let p = run(&models, &local, &[]);
    assert_eq!(p.ready_labels, ["a".to_string()].into());
    assert!(!p.remove_warming_taint);
    assert_eq!(
        (p.models_warm.status, p.models_warm.reason),
        (false, REASON_WARMING)
    );
    assert_eq!(p.models_warm.message, "1 of 2 models warm; waiting for b");
    assert_eq!(p.status.phase, Phase::Warming);
    assert_eq!(
        p.status.models[1].weights.as_ref().unwrap().phase,
        PartPhase::Syncing
    );

    local.weights.insert("b".into(), verified());
    let p = run(&models, &local, &[]);
    assert!(p.remove_warming_taint);
    assert_eq!(p.ready_labels.len(), 2);
    assert_eq!(
        (p.models_warm.status, p.models_warm.reason),
        (true, REASON_WARM)
    );
    assert_eq!(p.status.phase, Phase::Ready);
}

#[test]
fn condition_reasons_table() {
    let models = [model("a", None, json!(null))];
    // (weights, gpu healthy, now, deadline) -> (status, reason, taint removed)
    let cases = [
        (verified(), true, 100, Some(50), true, REASON_WARM, true),
        (verified(), false, 100, None, true, REASON_WARM, false),
        (
            LocalWeights::Syncing,
            true,
            100,
            Some(1000),
            false,
            REASON_WARMING,
            false,
        ),
        (
            LocalWeights::Syncing,
            true,
            1000,
            Some(1000),
            false,
            REASON_DEADLINE,
            false,
        ),
        (
            LocalWeights::Failed(failed("hub", 60)),
            true,
            100,
            None,
            false,
            REASON_FAILED,
            false,
        ),
        (
            LocalWeights::Failed(failed("hub", 60)),
            true,
            2000,
            Some(1000),
            false,
            REASON_DEADLINE,
            false,
        ),
    ];
    for (w, gpu, now, deadline, status, reason, taint) in cases {
        let mut local = Local::default();
        local.weights.insert("a".into(), w.clone());
        let node = BTreeMap::new();
        let inp = Inputs {
            node_labels: &node,
            models: &models,
            current: None,
            local: &local,
            gpu_healthy: gpu,
            warming_deadline: deadline.map(ts),
            now: ts(now),
            clock: CLOCK,
        };
        let p = plan(&inp, &Limits::default());
        let got = (
            p.models_warm.status,
            p.models_warm.reason,
            p.remove_warming_taint,
        );
        assert_eq!(got, (status, reason, taint), "{w:?} gpu={gpu} now={now}");
    }
}

#[test]
fn no_models_means_warm() {
    let p = run(&[], &Local::default(), &[]);
    assert!(p.remove_warming_taint && p.models_warm.status);
    assert_eq!(p.status.phase, Phase::Ready);
}

#[test]
fn failed_parts_wait_for_their_backoff() {
    let models = [model("a", Some("img"), json!(null))];
    let limits = Limits {
        backoff: Backoff::try_new(Duration::from_secs(10), Duration::from_secs(600)).unwrap(),
        ..Limits::default()
    };
    let node = BTreeMap::new();
    let run_at = |local: &Local| {
        let inp = Inputs {
            node_labels: &node,
            models: &models,
            current: None,
            local,
            gpu_healthy: true,
            warming_deadline: None,
            now: ts(100),
            clock: CLOCK,
        };
        plan(&inp, &limits)
    };
    // (seconds since the failure, failures in a row) -> retried now
    let cases = [
        (5, 1, false),
        (10, 1, true),
        (15, 2, false),
        (20, 2, true),
        (0, 0, true),
    ];
    for (ago, failures, due) in cases {
        let f = Failed {
            failures,
            ..failed("x", ago)
        };
        let mut local = Local::default();
        local
            .images
            .insert("img".into(), LocalImage::Failed(f.clone()));
        local.weights.insert("a".into(), LocalWeights::Failed(f));
        let p = run_at(&local);
        assert_eq!(
            !p.pull_images.is_empty(),
            due,
            "pull {ago}s after {failures} failures"
        );
        assert_eq!(
            !p.sync_weights.is_empty(),
            due,
            "sync {ago}s after {failures} failures"
        );
        assert_eq!(
            p.status.phase,
            Phase::Failed,
            "Failed while waiting or retrying"
        );
    }
}

#[test]
fn one_periodic_resync_at_a_time_and_only_when_nothing_else_syncs() {
    let models: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| model(n, None, json!(null)))
        .collect();
    let hour = Duration::from_secs(3600);
    let limits = Limits {
        resync_interval: hour,
        ..Limits::default()
    };
    let long_ago = LocalWeights::Verified {
        last_attempt: Mono(CLOCK.0 - hour),
    };
    let node = BTreeMap::new();
    let run_with = |local: &Local| {
        let inp = Inputs {
            node_labels: &node,
            models: &models,
            current: None,
            local,
            gpu_healthy: true,
            warming_deadline: None,
            now: ts(100),
            clock: CLOCK,
        };
        plan(&inp, &limits)
    };
    let mut local = Local::default();
    local.weights.insert("a".into(), verified());
    local.weights.insert("b".into(), long_ago.clone());
    local.weights.insert("c".into(), long_ago.clone());
    let p = run_with(&local);
    assert_eq!(
        p.resync_weights.as_deref(),
        Some("b"),
        "the first due, alone"
    );
    assert!(p.sync_weights.is_empty());
    assert_eq!(
        p.status.phase,
        Phase::Ready,
        "a re-sync keeps the model Ready"
    );

    local.weights.insert("a".into(), LocalWeights::Syncing);
    assert_eq!(run_with(&local).resync_weights, None, "another sync runs");
    local.weights.insert("a".into(), LocalWeights::Absent);
    let p = run_with(&local);
    assert_eq!(
        (p.sync_weights, p.resync_weights),
        (vec!["a".to_string()], None)
    );
}

#[test]
fn a_coldmodel_whose_name_cannot_make_a_label_is_skipped_not_fatal() {
    let long = "m".repeat(58);
    let models = [
        model("a", None, json!(null)),
        model("Bad_Name", None, json!(null)),
        model(&long, None, json!({"matchLabels": {"pool": "a"}})),
        model(&"n".repeat(57), None, json!({"matchLabels": {"pool": "b"}})),
    ];
    let mut local = Local::default();
    local.weights.insert("a".into(), verified());
    let p = run(&models, &local, &[("pool", "a")]);
    assert_eq!(p.selected, ["a".to_string()].into());
    assert_eq!(p.ready_labels, ["a".to_string()].into());
    assert!(
        p.remove_warming_taint,
        "skipped models do not hold the taint"
    );
    let skipped: Vec<&str> = p.status.skipped.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(skipped, ["Bad_Name", long.as_str()]);
    assert!(p.status.skipped[0].reason.contains("not a DNS label"));
    assert!(p.status.skipped[1].reason.contains("at most 57"));
}
