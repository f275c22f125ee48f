#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;

use super::*;
use crate::api::{ColdModelSpec, PartPhase, Phase, model_name};
use crate::images::fake::{Fake as FakeImages, ImageFault};
use crate::plan::{Backoff, Limits};
use crate::weights::fake::{Fake as FakeWeights, WeightsFault};

mod gone;
mod real_hub;

const REPO: &str = "acme/tiny";
const IMAGE: &str = "registry.test/serve/vllm:v1";
const BYTES: u64 = 300_002;

struct NoSecrets;

impl Credentials for NoSecrets {
    async fn hub_token(&self, _: &ColdModel) -> Result<Option<String>, CredentialError> {
        Ok(None)
    }
    async fn pull_auth(
        &self,
        _: &ColdModel,
        _: &ImageRef,
    ) -> Result<Option<RegistryAuth>, CredentialError> {
        Ok(None)
    }
}

fn model(image: Option<&str>, revision: Option<&str>) -> ColdModel {
    let name = model_name(&RepoId::parse(REPO).unwrap());
    let mut m = ColdModel::new(
        &name,
        ColdModelSpec {
            repo: REPO.into(),
            revision: revision.map(String::from),
            include: vec![],
            exclude: vec![],
            token_secret_ref: None,
            image: image.map(String::from),
            image_pull_secret_ref: None,
            node_selector: None,
            compile_cache: None,
            snapshot: None,
        },
    );
    m.metadata.name = Some(name);
    m
}

type TestWarmer = Warmer<FakeImages, FakeWeights>;

struct Rig {
    images: FakeImages,
    weights: FakeWeights,
    warmer: TestWarmer,
    state: tempfile::TempDir,
}

fn rig() -> Rig {
    let images = FakeImages::new();
    images.publish(IMAGE, &[1 << 20, 1 << 19]);
    let weights = FakeWeights::new();
    weights.publish(REPO, "main", BYTES);
    let state = tempfile::tempdir().unwrap();
    let warmer = warmer_at(&images, &weights, state.path());
    Rig {
        images,
        weights,
        warmer,
        state,
    }
}

fn warmer_at(images: &FakeImages, weights: &FakeWeights, state: &std::path::Path) -> TestWarmer {
    let prepull = prepull::Options {
        attempts: 1,
        margin_bytes: 0,
        ..prepull::Options::default()
    };
    Warmer::new(
        Arc::new(images.clone()),
        Arc::new(weights.clone()),
        state,
        prepull,
        Arc::new(crate::metrics::Metrics::new()),
        Arc::new(Notify::new()),
    )
    .unwrap()
}

/// Limits whose backoff is an hour: a failed part is not tried again within a test.
fn limits() -> Limits {
    let hour = Duration::from_secs(3600);
    Limits {
        backoff: Backoff::try_new(hour, hour).unwrap(),
        ..Limits::default()
    }
}

/// One pass as both modes run it.
async fn pass(w: &mut TestWarmer, models: &[ColdModel], limits: &Limits) -> Plan {
    let labels = BTreeMap::new();
    let inputs = PassInputs {
        labels: &labels,
        models,
        current: None,
        gpu: None,
        warming_deadline: None,
        now: Timestamp::now(),
    };
    w.pass(inputs, limits, &NoSecrets).await
}

/// Passes until `done(plan)`, 50 ms of (paused) time apart, at most 600 of them.
async fn until(
    w: &mut TestWarmer,
    models: &[ColdModel],
    limits: &Limits,
    done: impl Fn(&Plan) -> bool,
) -> Plan {
    for _ in 0..600 {
        let plan = pass(w, models, limits).await;
        if done(&plan) {
            return plan;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such plan within 600 passes: {w:?}");
}

fn ready(p: &Plan) -> bool {
    p.status.phase == Phase::Ready && !p.status.models.is_empty()
}

fn count_pulls(images: &FakeImages) -> usize {
    let st = images.state();
    st.calls.iter().filter(|c| c.starts_with("pull")).count()
}

#[tokio::test(start_paused = true)]
async fn warms_image_and_weights_with_bytes_then_unpins_and_evicts_when_unselected() {
    let mut r = rig();
    let models = vec![model(Some(IMAGE), None)];
    let limits = Limits {
        eviction_grace: Duration::ZERO,
        ..limits()
    };
    let plan = until(&mut r.warmer, &models, &limits, ready).await;
    let m = &plan.status.models[0];
    let w = m.weights.as_ref().unwrap();
    assert_eq!((w.bytes_done, w.bytes_total), (BYTES, Some(BYTES)));
    assert_eq!(w.resolved.as_ref(), r.weights.held(REPO).first());
    let i = m.image.as_ref().unwrap();
    assert_eq!(i.phase, PartPhase::Ready);
    // Layers and the config blob: the compressed size the manifest names.
    assert!(i.bytes_total.unwrap() > (1 << 20) + (1 << 19), "{i:?}");
    assert!(
        i.resolved.as_deref().unwrap().starts_with("sha256:"),
        "{i:?}"
    );
    assert!(r.images.pinned(IMAGE));
    assert!(plan.ready_labels.contains(name_of(&models[0])));

    // The model goes: unpinned at once, evicted after the (zero) grace.
    let plan = until(&mut r.warmer, &[], &limits, |p| p.unselected.is_empty()).await;
    assert!(plan.status.models.is_empty());
    assert!(!r.images.pinned(IMAGE), "unpinned");
    assert!(r.weights.held(REPO).is_empty(), "evicted");
    assert!(r.weights.state().calls.contains(&format!("evict {REPO}")));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_unpins_what_it_pinned_before() {
    let mut r = rig();
    let models = vec![model(Some(IMAGE), None)];
    until(&mut r.warmer, &models, &limits(), ready).await;
    assert!(r.images.pinned(IMAGE));
    // A new warmer over the same state directory, with the model gone meanwhile.
    let mut again = warmer_at(&r.images, &r.weights, r.state.path());
    until(&mut again, &[], &limits(), |_| true).await;
    assert!(!r.images.pinned(IMAGE), "the pin list survived the restart");
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_is_reported_and_retried_only_after_its_backoff() {
    let mut r = rig();
    r.images.state().fail_pulls.push_back(ImageFault::NotFound);
    let models = vec![model(Some(IMAGE), None)];
    let minute = Duration::from_secs(60);
    let limits = Limits {
        backoff: Backoff::try_new(minute, 10 * minute).unwrap(),
        ..limits()
    };
    let plan = until(&mut r.warmer, &models, &limits, |p| {
        p.status.phase == Phase::Failed
    })
    .await;
    let i = plan.status.models[0].image.as_ref().unwrap();
    assert_eq!(i.phase, PartPhase::Failed);
    assert_eq!(i.reason.as_deref(), Some("not_found"));
    assert!(
        i.message
            .as_deref()
            .unwrap()
            .contains("not found in its registry"),
        "{i:?}"
    );
    let pulls_before = count_pulls(&r.images);
    for _ in 0..5 {
        pass(&mut r.warmer, &models, &limits).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert_eq!(
        count_pulls(&r.images),
        pulls_before,
        "a minute's backoff holds"
    );
    tokio::time::sleep(minute).await;
    let plan = until(&mut r.warmer, &models, &limits, ready).await;
    assert!(count_pulls(&r.images) > pulls_before, "retried after it");
    assert_eq!(plan.status.models[0].image.as_ref().unwrap().message, None);
}

#[tokio::test(start_paused = true)]
async fn failed_syncs_back_off_doubling_on_the_monotonic_clock() {
    let mut r = rig();
    r.weights.state().fail_syncs.extend([
        WeightsFault::HubDown,
        WeightsFault::HubDown,
        WeightsFault::DiskFull,
    ]);
    let models = vec![model(None, None)];
    let ten = Duration::from_secs(10);
    let limits = Limits {
        backoff: Backoff::try_new(ten, Duration::from_secs(600)).unwrap(),
        ..limits()
    };
    // Each failure is followed by a wait of 10 s, then 20 s, then 40 s before the next try.
    let mut starts = Vec::new();
    let t0 = tokio::time::Instant::now();
    for _ in 0..400 {
        let syncs = r.weights.syncs();
        let plan = pass(&mut r.warmer, &models, &limits).await;
        if ready(&plan) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if r.weights.syncs() > syncs {
            starts.push(t0.elapsed().as_secs());
        }
    }
    assert_eq!(starts.len(), 4, "three failures, then success: {starts:?}");
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, wait) in gaps.iter().zip([10, 20, 40]) {
        // A pass a second, plus the pass that reaps the failure.
        assert!((wait..=wait + 2).contains(gap), "gaps {gaps:?}");
    }
    let text = r.warmer.metrics.encode().unwrap();
    assert!(text.contains("kind=\"disk_full\""), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_revision_change_restarts_the_weights_at_the_new_commit() {
    let mut r = rig();
    let models = vec![model(None, None)];
    let plan = until(&mut r.warmer, &models, &limits(), ready).await;
    let first = plan.status.models[0].weights.clone().unwrap().resolved;
    let next = r.weights.publish(REPO, "v2", 1000);
    let models = vec![model(None, Some("v2"))];
    let resolved = |p: &Plan| p.status.models[0].weights.clone().unwrap().resolved;
    let plan = until(&mut r.warmer, &models, &limits(), |p| {
        ready(p) && resolved(p).as_deref() == Some(next.as_str())
    })
    .await;
    assert_ne!(resolved(&plan), first);
}

#[tokio::test(start_paused = true)]
async fn a_spec_change_stops_the_running_sync() {
    let mut r = rig();
    r.weights.state().stalled = true;
    let models = vec![model(None, None)];
    until(&mut r.warmer, &models, &limits(), |p| {
        p.status.models[0].weights.as_ref().unwrap().phase == PartPhase::Syncing
    })
    .await;
    r.weights.publish(REPO, "v2", 10);
    r.weights.state().stalled = false;
    let plan = until(&mut r.warmer, &[model(None, Some("v2"))], &limits(), ready).await;
    let w = plan.status.models[0].weights.as_ref().unwrap();
    assert_eq!(w.bytes_done, 10, "the v2 sync, not the stalled main one");
    assert_eq!(r.weights.held(REPO).len(), 1, "main never published");
}

#[tokio::test(start_paused = true)]
async fn weights_deleted_behind_our_back_are_synced_again() {
    let mut r = rig();
    let models = vec![model(None, None)];
    until(&mut r.warmer, &models, &limits(), ready).await;
    r.weights.wipe(REPO);
    let plan = pass(&mut r.warmer, &models, &limits()).await;
    assert_ne!(plan.status.phase, Phase::Ready, "noticed at once");
    until(&mut r.warmer, &models, &limits(), ready).await;
    assert_eq!(r.weights.held(REPO).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn transferred_bytes_reach_the_metrics() {
    let mut r = rig();
    let models = vec![model(Some(IMAGE), None)];
    until(&mut r.warmer, &models, &limits(), ready).await;
    let text = r.warmer.metrics.encode().unwrap();
    let line = |part: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("coldstart_transferred_bytes_total")
                    && l.contains(&format!("part=\"{part}\""))
            })
            .unwrap_or_else(|| panic!("no {part} bytes in:\n{text}"))
            .to_string()
    };
    assert!(
        line("weights").ends_with(&format!(" {BYTES}")),
        "{}",
        line("weights")
    );
    let image: u64 = line("image").rsplit(' ').next().unwrap().parse().unwrap();
    assert!(image >= (1 << 20) + (1 << 19), "{image}");
}

#[tokio::test(start_paused = true)]
async fn a_ready_model_stays_ready_through_periodic_resyncs_even_failed_ones() {
    let mut r = rig();
    let limits = Limits {
        resync_interval: Duration::from_secs(60),
        ..limits()
    };
    let models = vec![model(None, None)];
    until(&mut r.warmer, &models, &limits, ready).await;
    let before = r.weights.syncs();
    // Every sync from now on fails: re-syncs fail, the verified snapshot stays Ready.
    r.weights
        .state()
        .fail_syncs
        .extend([WeightsFault::HubDown; 100]);
    for _ in 0..40 {
        let plan = pass(&mut r.warmer, &models, &limits).await;
        assert!(ready(&plan), "Ready throughout: {:?}", plan.status);
        assert!(plan.ready_labels.contains(name_of(&models[0])));
        let w = plan.status.models[0].weights.as_ref().unwrap();
        assert_eq!(w.bytes_done, BYTES, "the verified bytes, not the re-sync's");
        assert_eq!(
            w.message, None,
            "a failed re-sync is no failure of the model"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // 400 s at one re-sync a minute after the last attempt ended.
    let resyncs = r.weights.syncs() - before;
    assert!((5..=7).contains(&resyncs), "{resyncs} re-syncs");
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_cache_is_counted_and_changes_nothing() {
    let mut r = rig();
    let models = vec![model(None, None)];
    until(&mut r.warmer, &models, &limits(), ready).await;
    r.weights.state().disk_gone = true;
    let plan = pass(&mut r.warmer, &models, &limits()).await;
    assert!(ready(&plan), "the last inventory stands: {:?}", plan.status);
    let text = r.warmer.metrics.encode().unwrap();
    assert!(text.contains("source=\"weights\""), "{text}");
}
