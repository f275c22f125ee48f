//! The warmer over the real weights port: the Hub protocol against the fake Hub server, into a
//! real Hub cache on disk.

use coldstart_fakehub::{FakeHub, Options};

use super::*;
use crate::weights::cache::HubCache;
use crate::weights::{HubWeights, SyncSettings};

#[tokio::test]
async fn the_real_port_syncs_publishes_and_evicts() {
    let hub = FakeHub::start(Options::default()).await.unwrap();
    hub.add_repo_files(
        REPO,
        "main",
        vec![
            ("config.json".into(), b"{}".to_vec()),
            ("model.safetensors".into(), vec![7u8; 300_000]),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = HubCache::open(&dir.path().join("hub"), Some(&dir.path().join("state"))).unwrap();
    let mut settings = SyncSettings::new(&hub.url());
    settings.hub.attempts = 1;
    let weights = HubWeights::new(Arc::new(cache), settings);
    let images = FakeImages::new();
    let mut warmer = Warmer::new(
        Arc::new(images),
        Arc::new(weights),
        &dir.path().join("state"),
        prepull::Options::default(),
        Arc::new(crate::metrics::Metrics::new()),
        Arc::new(Notify::new()),
    )
    .unwrap();
    let models = vec![model(None, None)];
    let limits = Limits {
        eviction_grace: Duration::ZERO,
        ..limits()
    };
    let labels = BTreeMap::new();
    let mut last = None;
    for _ in 0..600 {
        let inputs = PassInputs {
            labels: &labels,
            models: &models,
            current: None,
            gpu: None,
            warming_deadline: None,
            now: Timestamp::now(),
        };
        let plan = warmer.pass(inputs, &limits, &NoSecrets).await;
        if ready(&plan) {
            last = Some(plan);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plan = last.expect("Ready within 30 s");
    let w = plan.status.models[0].weights.as_ref().unwrap();
    assert_eq!((w.bytes_done, w.bytes_total), (BYTES, Some(BYTES)));
    let commit = hub.commit(REPO, "main").unwrap().id;
    assert_eq!(w.resolved.as_deref(), Some(commit.as_str()));
    let snapshot = dir
        .path()
        .join("hub/models--acme--tiny/snapshots")
        .join(&commit);
    assert!(snapshot.join("model.safetensors").is_file());

    for _ in 0..600 {
        let inputs = PassInputs {
            labels: &labels,
            models: &[],
            current: None,
            gpu: None,
            warming_deadline: None,
            now: Timestamp::now(),
        };
        if warmer
            .pass(inputs, &limits, &NoSecrets)
            .await
            .unselected
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!snapshot.exists(), "evicted");
}
