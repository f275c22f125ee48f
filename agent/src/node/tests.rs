#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coldstart_fakeapi::{FakeApi, Options, Outage};
use kube::{Client, Config};

use super::*;

const WAIT: Duration = Duration::from_secs(20);

async fn start(retry: bool) -> (FakeApi, NodeSurface) {
    let api = FakeApi::start(Options::default()).await.unwrap();
    api.create(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"pool": "a", "coldstart.dev/model.old": "ready"}},
        "spec": {"taints": [
            {"key": "other", "effect": "NoExecute"},
            {"key": WARMING_TAINT_KEY, "value": "true", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap();
    let mut cfg = Config::new(api.url().parse().unwrap());
    cfg.default_retry = retry;
    cfg.connect_timeout = Some(Duration::from_secs(2));
    let mut settings = Settings::new("n1");
    settings.taint_backoff =
        crate::backoff::Backoff::constant(Duration::from_millis(10), Duration::from_secs(1));
    let surface = NodeSurface::new(Client::try_from(cfg).unwrap(), settings);
    (api, surface)
}

fn taint_keys(api: &FakeApi) -> Vec<String> {
    let n = api.get("nodes", "", "n1").unwrap();
    let ts = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
    ts.iter()
        .map(|t| t["key"].as_str().unwrap().to_string())
        .collect()
}

/// The node as a watch store would hold it.
fn node(api: &FakeApi) -> Node {
    serde_json::from_value(api.get("nodes", "", "n1").unwrap()).unwrap()
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("bounded wait")
}

#[tokio::test]
async fn taint_removed_other_taints_kept_and_absent_is_noop() {
    let (api, s) = start(true).await;
    assert!(bounded(s.has_warming_taint()).await.unwrap());
    assert!(bounded(s.remove_warming_taint()).await.unwrap());
    assert_eq!(taint_keys(&api), ["other"]);
    assert!(!bounded(s.remove_warming_taint()).await.unwrap());
    assert_eq!(api.count("patch", "nodes"), 1);
    let r = api
        .requests()
        .into_iter()
        .find(|r| r.verb == "patch")
        .unwrap();
    assert_eq!(r.patch_type.as_deref(), Some("application/json-patch+json"));
}

#[tokio::test]
async fn taint_race_with_another_manager_keeps_both() {
    let (api, s) = start(true).await;
    let mut first = true;
    let other = api.clone();
    let removed = bounded(s.remove_warming_taint_with(|| {
        if std::mem::take(&mut first) {
            other
                .modify("nodes", "", "n1", |n| {
                    let t = json!({"key": "late", "effect": "NoSchedule"});
                    n["spec"]["taints"].as_array_mut().unwrap().push(t);
                })
                .unwrap();
        }
    }))
    .await
    .unwrap();
    assert!(removed);
    assert_eq!(taint_keys(&api), ["other", "late"]);
    assert_eq!(
        api.count("patch", "nodes"),
        2,
        "the first patch failed its test"
    );
    assert_eq!(
        api.count("get", "nodes"),
        2,
        "the retry read the node again"
    );
}

#[tokio::test]
async fn taint_conflicts_are_retried_then_bounded() {
    let (api, s) = start(true).await;
    api.conflict_next_writes("nodes", 2);
    assert!(bounded(s.remove_warming_taint()).await.unwrap());
    assert_eq!(taint_keys(&api), ["other"]);

    let (api, s) = start(true).await;
    api.conflict_next_writes("nodes", 10);
    let e = bounded(s.remove_warming_taint()).await.unwrap_err();
    assert!(matches!(e, Error::Conflict(5)), "{e}");
    assert_eq!(e.metric_label(), "conflict");
    assert_eq!(taint_keys(&api), ["other", WARMING_TAINT_KEY]);
}

#[tokio::test]
async fn model_labels_touch_only_our_prefix() {
    let (api, s) = start(true).await;
    let ready: BTreeSet<String> = ["m1".to_string(), "m2".to_string()].into();
    assert!(
        bounded(s.set_model_labels(&node(&api), &ready))
            .await
            .unwrap()
    );
    let labels = api.get("nodes", "", "n1").unwrap()["metadata"]["labels"].clone();
    assert_eq!(
        labels,
        json!({"pool": "a", "coldstart.dev/model.m1": "ready", "coldstart.dev/model.m2": "ready"})
    );
    assert!(
        !bounded(s.set_model_labels(&node(&api), &ready))
            .await
            .unwrap(),
        "no change, no write"
    );
    assert!(
        bounded(s.set_model_labels(&node(&api), &BTreeSet::new()))
            .await
            .unwrap()
    );
    let labels = api.get("nodes", "", "n1").unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels, json!({"pool": "a"}));
    let r = api
        .requests()
        .into_iter()
        .find(|r| r.verb == "patch")
        .unwrap();
    assert_eq!(
        r.patch_type.as_deref(),
        Some("application/merge-patch+json")
    );
}

fn warm(status: bool, reason: &'static str) -> Condition {
    Condition {
        type_: CONDITION_MODELS_WARM,
        status,
        reason,
        message: "m".into(),
    }
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn conditions(api: &FakeApi) -> Value {
    api.get("nodes", "", "n1").unwrap()["status"]["conditions"].clone()
}

#[tokio::test]
async fn conditions_applied_keep_kubelets_and_transition_times() {
    let (api, s) = start(true).await;
    let c = [warm(false, "Warming")];
    assert!(
        bounded(s.apply_conditions(&node(&api), &c, ts(100)))
            .await
            .unwrap()
    );
    assert!(
        !bounded(s.apply_conditions(&node(&api), &c, ts(200)))
            .await
            .unwrap()
    );
    let c2 = [warm(false, "WarmingDeadlineExceeded")];
    assert!(
        bounded(s.apply_conditions(&node(&api), &c2, ts(300)))
            .await
            .unwrap()
    );
    let conds = conditions(&api);
    assert_eq!(conds[0]["type"], "Ready");
    assert_eq!(conds[1]["reason"], "WarmingDeadlineExceeded");
    assert_eq!(
        conds[1]["lastTransitionTime"],
        ts(100).to_string(),
        "status unchanged"
    );
    let c3 = [warm(true, "ModelsWarm")];
    assert!(
        bounded(s.apply_conditions(&node(&api), &c3, ts(400)))
            .await
            .unwrap()
    );
    let conds = conditions(&api);
    assert_eq!(conds.as_array().unwrap().len(), 2);
    assert_eq!(conds[1]["status"], "True");
    assert_eq!(conds[1]["lastTransitionTime"], ts(400).to_string());
    let r = api
        .requests()
        .into_iter()
        .rfind(|r| r.verb == "patch")
        .unwrap();
    assert_eq!(
        (r.resource.as_str(), r.field_manager.as_deref()),
        ("nodes/status", Some(FIELD_MANAGER))
    );
    let mut bad = warm(true, "x");
    bad.type_ = "Ready";
    let r = s.apply_conditions(&node(&api), &[bad], ts(1)).await;
    assert!(matches!(r, Err(Error::NotOurCondition(_))));
}

#[tokio::test]
async fn coldnode_created_then_status_rate_limited() {
    let (api, mut s) = start(true).await;
    let mut st = ColdNodeStatus {
        phase: Phase::Warming,
        ..ColdNodeStatus::default()
    };
    assert!(
        bounded(s.write_status(&node(&api), &st, ts(100)))
            .await
            .unwrap()
    );
    let cn = api.get("coldnodes", "", "n1").unwrap();
    assert_eq!(cn["status"]["phase"], "Warming");
    assert!(
        !bounded(s.write_status(&node(&api), &st, ts(105)))
            .await
            .unwrap(),
        "rate-limited"
    );
    st.phase = Phase::Ready;
    assert!(
        bounded(s.write_status(&node(&api), &st, ts(106)))
            .await
            .unwrap(),
        "phase changed"
    );
    assert!(
        !bounded(s.write_status(&node(&api), &st, ts(110)))
            .await
            .unwrap()
    );
    assert!(
        bounded(s.write_status(&node(&api), &st, ts(116)))
            .await
            .unwrap(),
        "interval passed"
    );
    assert_eq!(api.count("create", "coldnodes"), 1);
    assert_eq!(api.count("patch", "coldnodes/status"), 3);
    let cn = api.get("coldnodes", "", "n1").unwrap();
    assert_eq!(cn["status"]["phase"], "Ready");
}

#[tokio::test]
async fn outage_is_a_retryable_error_then_writes_go_through() {
    let (api, mut s) = start(false).await;
    api.outage(Outage::Refuse).await;
    let e = bounded(s.remove_warming_taint()).await.unwrap_err();
    assert_eq!(e.metric_label(), "unreachable", "{e}");
    let st = ColdNodeStatus::default();
    let e = bounded(s.write_status(&node(&api), &st, ts(1)))
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "unreachable");
    api.restore().unwrap();
    assert!(bounded(s.remove_warming_taint()).await.unwrap());
    assert!(
        bounded(s.write_status(&node(&api), &st, ts(2)))
            .await
            .unwrap()
    );
    assert_eq!(taint_keys(&api), ["other"]);

    api.outage(Outage::Status503).await;
    let e = bounded(s.set_model_labels(&node(&api), &BTreeSet::new()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Api { code: 503, .. }), "{e}");
    api.restore().unwrap();
    assert!(
        bounded(s.set_model_labels(&node(&api), &BTreeSet::new()))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn the_coldnode_is_owned_by_its_node_new_or_existing() {
    let (api, mut s) = start(true).await;
    let uid = node(&api).metadata.uid.unwrap();
    let st = ColdNodeStatus::default();
    assert!(
        bounded(s.write_status(&node(&api), &st, ts(1)))
            .await
            .unwrap()
    );
    let owners = |api: &FakeApi| {
        api.get("coldnodes", "", "n1").unwrap()["metadata"]["ownerReferences"].clone()
    };
    assert_eq!(
        owners(&api),
        json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": uid}])
    );

    // A ColdNode left by an agent that set no owner gets one, other owners kept.
    let (api, mut s) = start(true).await;
    let uid = node(&api).metadata.uid.unwrap();
    let other = json!({"apiVersion": "x/v1", "kind": "X", "name": "x", "uid": "u-x"});
    api.create(
        json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
        "metadata": {"name": "n1", "ownerReferences": [other]}, "spec": {}}),
    )
    .unwrap();
    assert!(
        bounded(s.write_status(&node(&api), &st, ts(1)))
            .await
            .unwrap()
    );
    assert_eq!(
        owners(&api),
        json!([other, {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": uid}])
    );
}
