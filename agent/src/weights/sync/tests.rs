//! The budget end to end in the library: real syncs from the fake Hub into a temp cache.

use std::time::{Duration, SystemTime};

use coldstart_fakehub::{FakeHub, Options};

use super::*;

mod hostile;
use crate::weights::cache::VerifyMode;
use crate::weights::hub::HubOptions;

const KIB: usize = 1 << 10;

fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn files(weights: &[u8], config: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        ("config.json".to_string(), config.to_vec()),
        ("model.safetensors".to_string(), weights.to_vec()),
    ]
}

struct Rig {
    hub: FakeHub,
    _dir: tempfile::TempDir,
    cache: Arc<HubCache>,
    syncer: Syncer,
}

async fn rig() -> Rig {
    let hub = FakeHub::start(Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(HubCache::open(&dir.path().join("hub"), None).unwrap());
    let client = HubClient::new(HubOptions::new(&hub.url())).unwrap();
    let syncer = Syncer::new(client, cache.clone(), TransferOptions::default());
    Rig {
        hub,
        _dir: dir,
        cache,
        syncer,
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn opts(revision: &str, budget: Option<u64>) -> SyncOptions {
    let mut o = SyncOptions::new(Filter::new(&[], &[]).unwrap());
    o.revision = revision.to_string();
    o.margin_bytes = 0;
    o.budget_bytes = budget;
    o
}

impl Rig {
    async fn sync(&self, repo: &str, revision: &str, budget: Option<u64>, t: u64) -> SyncReport {
        let repo = RepoId::parse(repo).unwrap();
        let mut o = opts(revision, budget);
        o.wanted = vec![Wanted {
            repo: repo.clone(),
            revision: revision.to_string(),
        }];
        self.syncer.sync(&repo, &o, at(t)).await.unwrap()
    }
}

#[tokio::test]
async fn the_least_recently_used_unwanted_snapshot_goes_and_shared_blobs_stay() {
    let r = rig().await;
    let config = br#"{"model_type":"llama"}"#;
    let a1 = r
        .hub
        .add_repo_files("org/a", "v1", files(&content(300 * KIB, 1), config));
    let a2 = r
        .hub
        .add_repo_files("org/a", "main", files(&content(300 * KIB, 2), config));
    r.hub
        .add_repo_files("org/b", "main", files(&content(300 * KIB, 3), b"{}"));
    r.hub
        .add_repo_files("org/c", "main", files(&content(300 * KIB, 4), b"{ }"));
    r.sync("org/a", &a1.id, None, 1).await;
    r.sync("org/a", "main", None, 3).await;
    r.sync("org/b", "main", None, 2).await;
    let used = r.cache.usage().unwrap().used_bytes;
    assert!(used > 900 * KIB as u64);

    // Too small even with everything else gone: fails before downloading or evicting.
    let tiny = 200 * KIB as u64;
    let repo_c = RepoId::parse("org/c").unwrap();
    let e = r
        .syncer
        .sync(&repo_c, &opts("main", Some(tiny)), at(4))
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "over_budget", "{e}");
    assert_eq!(r.cache.usage().unwrap().used_bytes, used, "nothing evicted");
    assert_eq!(r.cache.inventory().unwrap().len(), 3);
    assert!(
        e.to_string().contains("204800 bytes") && e.to_string().contains("kept: nothing"),
        "{e}"
    );

    // Room for c once the oldest (org/a at v1) goes; its config blob is shared with main.
    let budget = used + 100 * KIB as u64;
    let report = r.sync("org/c", "main", Some(budget), 4).await;
    let evicted: Vec<(String, String)> = report
        .evicted
        .iter()
        .map(|e| (e.repo.to_string(), e.commit.clone()))
        .collect();
    assert_eq!(evicted, [("org/a".to_string(), a1.id.clone())]);
    assert_eq!(
        report.evicted[0].bytes,
        300 * KIB as u64,
        "only the weights were exclusive"
    );
    assert!(r.cache.usage().unwrap().used_bytes <= budget);
    let repo_a = RepoId::parse("org/a").unwrap();
    let kept = r.cache.verify(&repo_a, &a2.id, VerifyMode::Full).unwrap();
    assert!(kept.is_ok(), "{kept:?}");
    let gone = r.cache.verify(&repo_a, &a1.id, VerifyMode::Quick).unwrap();
    assert!(!gone.is_ok());
    let inv: Vec<String> = r
        .cache
        .inventory()
        .unwrap()
        .iter()
        .map(|u| u.repo.to_string())
        .collect();
    assert_eq!(inv, ["org/b", "org/a", "org/c"]);
}

#[tokio::test]
async fn a_wanted_model_is_kept_even_when_it_is_the_oldest() {
    let r = rig().await;
    r.hub
        .add_repo_files("org/a", "main", files(&content(200 * KIB, 1), b"{}"));
    r.hub
        .add_repo_files("org/b", "main", files(&content(200 * KIB, 2), b"{ }"));
    r.hub
        .add_repo_files("org/c", "main", files(&content(200 * KIB, 3), b"{  }"));
    r.sync("org/a", "main", None, 1).await;
    r.sync("org/b", "main", None, 2).await;
    let used = r.cache.usage().unwrap().used_bytes;
    let repo_c = RepoId::parse("org/c").unwrap();
    let mut o = opts("main", Some(used + 50 * KIB as u64));
    o.wanted = vec![
        Wanted {
            repo: RepoId::parse("org/a").unwrap(),
            revision: "main".to_string(),
        },
        Wanted {
            repo: repo_c.clone(),
            revision: "main".to_string(),
        },
    ];
    let report = r.syncer.sync(&repo_c, &o, at(3)).await.unwrap();
    let evicted: Vec<String> = report.evicted.iter().map(|e| e.repo.to_string()).collect();
    assert_eq!(evicted, ["org/b"]);
}
