//! `GET /v1/status`: the models in force while the file is broken, the agent's version, and
//! the running tasks' bytes between passes.

use super::*;
use crate::api::{ModelStatus, PartPhase, PartStatus};
use crate::warmer::{LiveBytes, LiveTarget, LiveTask};

fn syncing(name: &str) -> ColdNodeStatus {
    ColdNodeStatus {
        models: vec![ModelStatus {
            name: name.into(),
            phase: Phase::Warming,
            weights: Some(PartStatus {
                phase: PartPhase::Syncing,
                bytes_done: 10,
                ..PartStatus::default()
            }),
            ..ModelStatus::default()
        }],
        ..ColdNodeStatus::default()
    }
}

#[tokio::test]
async fn a_broken_file_shows_the_models_in_force_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = api(dir.path()).await;
    let c = NodeClient::new(&a.socket).with_timeout(Duration::from_secs(20));
    let put = c
        .put_model(&ModelEntry::new("org/alpha"))
        .await
        .expect("put");
    let text = std::fs::read_to_string(a.file.path()).expect("file");
    assert!(
        text.ends_with("\n"),
        "a rewritten file ends its last line: {text:?}"
    );
    // The pass applied it; then the file breaks.
    a.shared
        .publish(syncing("org--alpha"), vec![put.model.clone()], Vec::new());
    write(a.file.path(), "[[model]\nrepo = ");
    let st = c.status().await.expect("status");
    assert_eq!(st.models, vec![put.model], "the models in force");
    let why = st.models_error.expect("the file's error");
    assert!(why.contains("models.toml"), "{why}");
    assert_eq!(st.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(st.status.models[0].name, "org--alpha");
    a.stop.cancel();
}

#[tokio::test]
async fn status_carries_the_running_tasks_bytes_between_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = api(dir.path()).await;
    let c = NodeClient::new(&a.socket).with_timeout(Duration::from_secs(20));
    let put = c
        .put_model(&ModelEntry::new("org/alpha"))
        .await
        .expect("put");
    let live = LiveTask::at(
        LiveTarget::Weights("org--alpha".into()),
        LiveBytes {
            done: 600,
            total: Some(1000),
            rate: Some(300),
        },
    );
    a.shared
        .publish(syncing("org--alpha"), vec![put.model], vec![live]);
    let st = c.status().await.expect("status");
    let w = st.status.models[0].weights.as_ref().expect("weights");
    assert_eq!(
        (w.bytes_done, w.bytes_total, w.bytes_per_second),
        (600, Some(1000), Some(300)),
        "{w:?}"
    );
    a.stop.cancel();
}

#[test]
fn a_ready_part_keeps_its_verified_bytes_and_other_models_are_untouched() {
    let mut status = syncing("org--alpha");
    status.models[0].weights.as_mut().expect("weights").phase = PartPhase::Ready;
    let live = [
        LiveTask::at(
            LiveTarget::Weights("org--alpha".into()),
            LiveBytes {
                done: 5,
                total: Some(7),
                rate: None,
            },
        ),
        LiveTask::at(
            LiveTarget::Weights("org--other".into()),
            LiveBytes {
                done: 99,
                total: None,
                rate: None,
            },
        ),
    ];
    let before = status.clone();
    live::overlay(&mut status, &[], &live);
    assert_eq!(status, before);
}
