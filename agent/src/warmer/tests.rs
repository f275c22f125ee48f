#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use coldstart_fakehub::{FakeHub, Options};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;

use super::*;
use crate::api::ColdModelSpec;
use crate::images::fake::{Failure as PullFailure, Fake};
use crate::plan::{Inputs, Limits};

const REPO: &str = "acme/tiny";
const IMAGE: &str = "registry.test/serve/vllm:v1";

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
    let mut m = ColdModel::new(
        &model_name(&RepoId::parse(REPO).unwrap()),
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
    m.metadata.name = Some(model_name(&RepoId::parse(REPO).unwrap()));
    m
}

struct Rig {
    hub: FakeHub,
    images: Fake,
    warmer: Warmer<Fake>,
    dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let hub = FakeHub::start(Options::default()).await.unwrap();
    hub.add_repo_files(
        REPO,
        "main",
        vec![
            ("config.json".into(), b"{}".to_vec()),
            ("model.safetensors".into(), vec![7u8; 300_000]),
        ],
    );
    let images = Fake::new();
    images.publish(IMAGE, &[1 << 20, 1 << 19]);
    let dir = tempfile::tempdir().unwrap();
    let warmer = warmer_at(&hub, &images, dir.path());
    Rig {
        hub,
        images,
        warmer,
        dir,
    }
}

fn warmer_at(hub: &FakeHub, images: &Fake, dir: &std::path::Path) -> Warmer<Fake> {
    let cache = HubCache::open(&dir.join("hub"), Some(&dir.join("state"))).unwrap();
    let mut settings = Settings::new(&hub.url());
    settings.hub.attempts = 1;
    settings.retry_initial = Duration::from_secs(3600);
    settings.prepull.attempts = 1;
    settings.prepull.margin_bytes = 0;
    Warmer::new(
        Arc::new(images.clone()),
        Arc::new(cache),
        settings,
        Arc::new(crate::metrics::Metrics::new()),
        Arc::new(Notify::new()),
    )
    .unwrap()
}

/// One pass as the cluster pass runs it: observe, plan, execute, decorate.
async fn pass(w: &mut Warmer<Fake>, models: &[ColdModel], limits: &Limits) -> Plan {
    let labels = BTreeMap::new();
    let selected = selected(models, &labels);
    let local = w.observe(&selected).await;
    let now = Timestamp::now();
    let inputs = Inputs {
        node_labels: &labels,
        models,
        current: None,
        local: &local,
        gpu_healthy: true,
        warming_deadline: None,
        now,
    };
    let mut plan = crate::plan::plan(&inputs, limits);
    w.execute(&plan, models, &NoSecrets, now).await;
    w.decorate(&mut plan.status, None, models, now);
    plan
}

/// Passes until `done(plan)` (bounded).
async fn until(
    w: &mut Warmer<Fake>,
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
    panic!("no such plan within 30 s: {w:?}");
}

fn ready(p: &Plan) -> bool {
    p.status.phase == crate::api::Phase::Ready && !p.status.models.is_empty()
}

#[tokio::test]
async fn warms_image_and_weights_with_bytes_then_unpins_and_evicts_when_unselected() {
    let mut r = rig().await;
    let models = vec![model(Some(IMAGE), None)];
    let limits = Limits {
        eviction_grace: Duration::ZERO,
        ..Limits::default()
    };
    let plan = until(&mut r.warmer, &models, &limits, ready).await;
    let m = &plan.status.models[0];
    let w = m.weights.as_ref().unwrap();
    assert_eq!(w.bytes_done, 300_002);
    assert_eq!(w.bytes_total, Some(300_002));
    assert_eq!(
        w.resolved.as_deref(),
        Some(r.hub.commit(REPO, "main").unwrap().id.as_str())
    );
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
    let snaps = r.dir.path().join("hub/models--acme--tiny/snapshots");
    assert_eq!(std::fs::read_dir(snaps).unwrap().count(), 0, "evicted");
}

#[tokio::test]
async fn a_restarted_agent_unpins_what_it_pinned_before() {
    let mut r = rig().await;
    let models = vec![model(Some(IMAGE), None)];
    until(&mut r.warmer, &models, &Limits::default(), ready).await;
    assert!(r.images.pinned(IMAGE));
    // A new warmer over the same state directory, with the model gone meanwhile.
    let mut again = warmer_at(&r.hub, &r.images, r.dir.path());
    until(&mut again, &[], &Limits::default(), |_| true).await;
    assert!(!r.images.pinned(IMAGE), "the pin list survived the restart");
}

#[tokio::test]
async fn a_failed_pull_is_reported_and_not_retried_before_its_backoff() {
    let mut r = rig().await;
    r.images.state().fail_pulls.push_back(PullFailure::NotFound);
    let models = vec![model(Some(IMAGE), None)];
    let plan = until(&mut r.warmer, &models, &Limits::default(), |p| {
        p.status.phase == crate::api::Phase::Failed
    })
    .await;
    let i = plan.status.models[0].image.as_ref().unwrap();
    assert_eq!(i.phase, PartPhase::Failed);
    assert!(i.reason.is_some() && i.message.is_some(), "{i:?}");
    let pulls_before = count_pulls(&r.images);
    for _ in 0..5 {
        pass(&mut r.warmer, &models, &Limits::default()).await;
    }
    assert_eq!(
        count_pulls(&r.images),
        pulls_before,
        "backoff of an hour holds"
    );
}

fn count_pulls(images: &Fake) -> usize {
    images
        .state()
        .calls
        .iter()
        .filter(|c| c.starts_with("pull"))
        .count()
}

#[tokio::test]
async fn a_revision_change_restarts_the_weights_at_the_new_commit() {
    let mut r = rig().await;
    let models = vec![model(None, None)];
    let plan = until(&mut r.warmer, &models, &Limits::default(), ready).await;
    let first = plan.status.models[0].weights.clone().unwrap().resolved;
    let next = r.hub.add_repo_files(
        REPO,
        "v2",
        vec![("config.json".into(), b"{\"v\":2}".to_vec())],
    );
    let models = vec![model(None, Some("v2"))];
    let plan = until(&mut r.warmer, &models, &Limits::default(), |p| {
        ready(p)
            && p.status.models[0]
                .weights
                .as_ref()
                .unwrap()
                .resolved
                .as_deref()
                == Some(next.id.as_str())
    })
    .await;
    assert_ne!(
        plan.status.models[0].weights.clone().unwrap().resolved,
        first
    );
}

#[tokio::test]
async fn weights_deleted_behind_our_back_are_synced_again() {
    let mut r = rig().await;
    let models = vec![model(None, None)];
    until(&mut r.warmer, &models, &Limits::default(), ready).await;
    let repo_dir = r.dir.path().join("hub/models--acme--tiny");
    std::fs::remove_dir_all(&repo_dir).unwrap();
    let plan = pass(&mut r.warmer, &models, &Limits::default()).await;
    assert_ne!(
        plan.status.phase,
        crate::api::Phase::Ready,
        "noticed at once"
    );
    until(&mut r.warmer, &models, &Limits::default(), ready).await;
    assert!(repo_dir.join("snapshots").is_dir());
}

#[tokio::test]
async fn transferred_bytes_reach_the_metrics() {
    let mut r = rig().await;
    let models = vec![model(Some(IMAGE), None)];
    until(&mut r.warmer, &models, &Limits::default(), ready).await;
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
    assert!(line("weights").ends_with(" 300002"), "{}", line("weights"));
    let image: u64 = line("image").rsplit(' ').next().unwrap().parse().unwrap();
    assert!(image >= (1 << 20) + (1 << 19), "{image}");
}

#[tokio::test]
async fn a_ready_model_stays_ready_through_periodic_resyncs_even_failed_ones() {
    let mut r = rig().await;
    r.warmer.settings.resync_interval = Duration::ZERO;
    let models = vec![model(None, None)];
    until(&mut r.warmer, &models, &Limits::default(), ready).await;
    let listings = || r.hub.requests(coldstart_fakehub::Endpoint::Tree);
    let before = listings();
    for _ in 0..40 {
        let plan = pass(&mut r.warmer, &models, &Limits::default()).await;
        assert!(ready(&plan), "Ready throughout: {:?}", plan.status);
        assert!(plan.ready_labels.contains(name_of(&models[0])));
        let w = plan.status.models[0].weights.as_ref().unwrap();
        assert_eq!(
            w.bytes_done, 300_002,
            "the verified bytes, not the re-sync's"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(listings() > before, "re-synced meanwhile");
    // The Hub fails every API call: re-syncs fail, the verified snapshot stays Ready.
    r.hub.status_next_api(500, None, 1000);
    for _ in 0..40 {
        let plan = pass(&mut r.warmer, &models, &Limits::default()).await;
        assert!(
            ready(&plan),
            "Ready despite failing re-syncs: {:?}",
            plan.status
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
