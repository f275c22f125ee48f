use super::*;
use crate::snapshots::store::Meta;

fn pod(name: &str, ready_since: Option<i64>, containers: &[&str]) -> PodView {
    PodView {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: BTreeMap::from([(POD_MODEL_LABEL.to_string(), "m".to_string())]),
        containers: containers.iter().map(|c| (c.to_string(), 0)).collect(),
        ready_since,
        ip: Some("127.0.0.1".into()),
        captured: false,
    }
}

fn inputs(policy: &SnapshotPolicy) -> ModelInputs<'_> {
    ModelInputs {
        model: "m",
        policy,
        requested_at: None,
        newest_created: 0,
        offered: false,
        support: Ok(()),
    }
}

fn state(d: &Due) -> (&'static str, String) {
    match d {
        Due::Capture { pod, why, .. } => ("capture", format!("{} {why}", pod.name)),
        Due::Idle { state, message } => (state, message.clone()),
    }
}

#[test]
fn a_pod_ready_for_the_period_is_captured_once() {
    let policy = SnapshotPolicy {
        enabled: Some(true),
        ready_seconds: Some(60),
        ..Default::default()
    };
    let m = inputs(&policy);
    let pods = [pod("a", Some(1000), &["vllm"])];
    let (s, msg) = state(&due(&m, &pods, 1030));
    assert_eq!(s, "waiting");
    assert!(msg.contains("Ready for 30 s of 60 s"), "{msg}");
    match due(&m, &pods, 1060) {
        Due::Capture { container, pod, .. } => {
            assert_eq!((container.as_str(), pod.name.as_str()), ("vllm", "a"))
        }
        other => panic!("{other:?}"),
    }
    // A pod already captured is not taken again by the period rule (its snapshot did not fit).
    let mut taken = pods[0].clone();
    taken.captured = true;
    let (s, msg) = state(&due(&m, &[taken.clone()], 5000));
    assert_eq!(s, "waiting");
    assert!(msg.contains("no Ready pod"), "{msg}");
    let asked = ModelInputs {
        requested_at: Some(4000),
        ..m.clone()
    };
    assert_eq!(state(&due(&asked, &[taken], 5000)).0, "capture");
    // Held and fitting: nothing more.
    let held = ModelInputs {
        offered: true,
        newest_created: 1061,
        ..m.clone()
    };
    assert_eq!(state(&due(&held, &pods, 5000)).0, "captured");
    // A request newer than the newest snapshot captures again, at once.
    let asked = ModelInputs {
        requested_at: Some(2000),
        ..held.clone()
    };
    assert_eq!(state(&due(&asked, &pods, 2001)).0, "capture");
    let old_ask = ModelInputs {
        requested_at: Some(1000),
        ..held
    };
    assert_eq!(state(&due(&old_ask, &pods, 2001)).0, "captured");
}

#[test]
fn what_keeps_a_capture_from_happening_is_said() {
    let policy = SnapshotPolicy {
        enabled: Some(true),
        ..Default::default()
    };
    let m = inputs(&policy);
    let (s, msg) = state(&due(&m, &[pod("a", Some(0), &["c"])], 10_000));
    assert_eq!(s, "waiting");
    assert!(msg.contains("only on request"), "{msg}");
    let (_, msg) = state(&due(&m, &[pod("a", None, &["c"])], 10));
    assert!(msg.contains("no Ready pod"), "{msg}");
    let mut other = pod("b", Some(0), &["c"]);
    other.labels.insert(POD_MODEL_LABEL.into(), "n".into());
    let (_, msg) = state(&due(&m, &[other], 10));
    assert!(msg.contains("no Ready pod"), "{msg}");
    let asked = ModelInputs {
        requested_at: Some(5),
        ..m.clone()
    };
    let (_, msg) = state(&due(&asked, &[pod("a", Some(0), &["c", "d"])], 10));
    assert!(msg.contains("has 2 containers"), "{msg}");
    let named = SnapshotPolicy {
        container: Some("x".into()),
        ..policy.clone()
    };
    let (_, msg) = state(&due(
        &ModelInputs {
            policy: &named,
            ..asked.clone()
        },
        &[pod("a", Some(0), &["c"])],
        10,
    ));
    assert!(msg.contains("no container x"), "{msg}");
    let cannot = ModelInputs {
        support: Err("containerd 1.7.24 cannot restore".into()),
        ..asked
    };
    let (_, msg) = state(&due(&cannot, &[pod("a", Some(0), &["c"])], 10));
    assert!(msg.contains("1.7.24"), "{msg}");
}

#[test]
fn the_newest_stay_within_keep_and_bytes() {
    let held = [
        ("old".to_string(), 100, 10),
        ("mid".to_string(), 200, 10),
        ("new".to_string(), 300, 10),
    ];
    assert_eq!(evictions(&held, 1, None), ["mid", "old"]);
    assert_eq!(evictions(&held, 2, None), ["old"]);
    assert!(evictions(&held, 3, None).is_empty());
    assert_eq!(evictions(&held, 3, Some(25)), ["old"]);
    // The newest stays even alone over the budget.
    assert_eq!(evictions(&held, 3, Some(5)), ["mid", "old"]);
}

fn record(model: &str) -> Record {
    Record {
        name: "m-1".into(),
        container_name: "c".into(),
        base_image: "r/x@sha256:aa".into(),
        layer_digest: "sha256:bb".into(),
        layer_size: 1,
        key: CompatKey {
            image_digest: "sha256:aa".into(),
            gpu_product: "NVIDIA H200".into(),
            gpu_count: 1,
            driver: "570.1".into(),
            kernel: "6.1.0".into(),
            criu: "4.2.1".into(),
            model_commit: "abc".into(),
            runtime: "io.containerd.runc.v2".into(),
        },
        meta: Meta {
            model: model.into(),
            image: Some(local_image(model, "h")),
            ..Meta::default()
        },
    }
}

#[test]
fn restorable_only_when_everything_fits() {
    let here = HereFacts {
        gpu_product: "NVIDIA H200".into(),
        gpus: 8,
        driver: "570.1".into(),
        kernel: "6.1.0".into(),
        criu: "4.2.1".into(),
    };
    let now = ModelNow {
        image_digest: "sha256:aa".into(),
        model_commit: "abc".into(),
    };
    let r = record("m");
    restorable(&r, &Ok(()), &here, Some(&now), true).unwrap();
    let why = |r: &Record, s: Result<(), String>, h: &HereFacts, m: Option<&ModelNow>, p| {
        restorable(r, &s, h, m, p).unwrap_err()
    };
    assert!(why(&record(""), Ok(()), &here, Some(&now), true).contains("by hand"));
    assert!(
        why(
            &r,
            Err("containerd 2.4.0 removed".into()),
            &here,
            Some(&now),
            true
        )
        .contains("2.4.0")
    );
    assert!(why(&r, Ok(()), &here, None, true).contains("not warm"));
    let moved = ModelNow {
        image_digest: "sha256:cc".into(),
        ..now.clone()
    };
    let e = why(&r, Ok(()), &here, Some(&moved), true);
    assert!(
        e.contains("image digest is \"sha256:aa\" in the snapshot, \"sha256:cc\" here"),
        "{e}"
    );
    let small = HereFacts {
        gpus: 0,
        ..here.clone()
    };
    assert!(why(&r, Ok(()), &small, Some(&now), true).contains("gpu count"));
    let upgraded = HereFacts {
        driver: "580.2".into(),
        ..here.clone()
    };
    assert!(why(&r, Ok(()), &upgraded, Some(&now), true).contains("driver"));
    assert!(why(&r, Ok(()), &here, Some(&now), false).contains("not in containerd"));
}
