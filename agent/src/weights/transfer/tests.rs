//! The engine against the in-repo fake Hub (real HTTP on loopback), one fault knob at a time.
//! Chunks are 64 KiB so small files exercise the multi-range paths.

use std::sync::Arc;
use std::time::Duration;

use coldstart_fakehub::{FakeHub, Options};

use super::*;
use crate::weights::cache::HubCache;
use crate::weights::hub::{HubClient, HubOptions};

const CHUNK: u64 = 64 << 10;

struct Rig {
    hub: FakeHub,
    _dir: tempfile::TempDir,
    cache: Arc<HubCache>,
    repo: RepoId,
    commit: String,
    tree: Vec<TreeEntry>,
}

fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

async fn rig(opts: Options, token: Option<&str>) -> Rig {
    let hub = FakeHub::start(opts).await.unwrap();
    let commit = hub.add_repo_files(
        "org/model",
        "main",
        vec![
            (
                "config.json".to_string(),
                br#"{"model_type":"llama"}"#.to_vec(),
            ),
            ("model.safetensors".to_string(), content(1 << 20, 7)),
            ("sub/dir/tokenizer.json".to_string(), content(200_000, 3)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(HubCache::open(&dir.path().join("hub"), None).unwrap());
    let repo = RepoId::parse("org/model").unwrap();
    let client = client(&hub, token);
    let tree = client.list_tree(&repo, &commit.id).await.unwrap();
    Rig {
        hub,
        _dir: dir,
        cache,
        repo,
        commit: commit.id.clone(),
        tree,
    }
}

fn client(hub: &FakeHub, token: Option<&str>) -> HubClient {
    let mut o = HubOptions::new(&hub.url());
    o.token = token.map(str::to_string);
    o.attempts = 4;
    o.backoff =
        crate::backoff::Backoff::constant(Duration::from_millis(20), Duration::from_secs(30));
    o.read_timeout = Duration::from_secs(2);
    HubClient::new(o).unwrap()
}

impl Rig {
    fn engine(&self, token: Option<&str>) -> Engine {
        Engine::new(client(&self.hub, token), self.cache.clone(), self.opts())
    }

    fn opts(&self) -> TransferOptions {
        TransferOptions {
            connections: 4,
            chunk_bytes: CHUNK,
            window_chunks: 8,
            range_attempts: 4,
            journal_interval: Duration::from_millis(20),
            ..TransferOptions::default()
        }
    }

    fn entry(&self, path: &str) -> TreeEntry {
        self.tree.iter().find(|e| e.path == path).unwrap().clone()
    }

    async fn fetch_all(&self, engine: &Engine) {
        for e in &self.tree {
            let path = engine.fetch(&self.repo, &self.commit, e).await.unwrap();
            assert!(self.cache.verify_blob(&self.repo, e).unwrap(), "{}", e.path);
            assert!(path.ends_with(e.etag()));
        }
    }
}

#[tokio::test]
async fn parallel_ranges_are_verified_and_finalized() {
    let r = rig(Options::default(), None).await;
    r.fetch_all(&r.engine(None)).await;
    let lfs = r.entry("model.safetensors");
    assert!(lfs.lfs.is_some());
    let blob = r.cache.blob_path(&r.repo, lfs.etag());
    assert_eq!(std::fs::read(&blob).unwrap(), content(1 << 20, 7));
    assert!(
        r.hub.ranges_seen().len() >= 16,
        "{:?}",
        r.hub.ranges_seen().len()
    );
    assert!(r.hub.max_connections() > 1);
    // Nothing partial is left behind.
    assert!(!r.cache.incomplete_path(&r.repo, lfs.etag()).exists());
}

#[tokio::test]
async fn a_server_ignoring_range_is_read_as_one_stream() {
    let r = rig(Options::default(), None).await;
    r.hub.set_ignore_range(true);
    r.fetch_all(&r.engine(None)).await;
}

#[tokio::test]
async fn truncated_bodies_resume_from_the_byte_reached() {
    let r = rig(Options::default(), None).await;
    r.hub.truncate_every(3, 10_000);
    r.fetch_all(&r.engine(None)).await;
    // Every third body was cut: the cut ranges were asked for again.
    let chunks: u64 = r
        .tree
        .iter()
        .filter(|e| e.content_size() > CHUNK)
        .map(|e| e.content_size().div_ceil(CHUNK))
        .sum();
    assert!(
        r.hub.ranges_seen().len() as u64 > chunks,
        "{:?}",
        r.hub.ranges_seen()
    );
}

#[tokio::test]
async fn corrupt_content_is_downloaded_again_and_never_finalized_wrong() {
    let r = rig(Options::default(), None).await;
    r.hub.corrupt_next();
    r.fetch_all(&r.engine(None)).await;
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let r = rig(Options::default(), None).await;
    r.hub.status_next(429, Some(1), 2);
    r.fetch_all(&r.engine(None)).await;
    r.hub.status_next(503, None, 3);
    let e = r.entry("config.json");
    std::fs::remove_file(r.cache.blob_path(&r.repo, e.etag())).unwrap();
    r.engine(None).fetch(&r.repo, &r.commit, &e).await.unwrap();
}

#[tokio::test]
async fn endless_server_errors_fail_with_the_status() {
    let r = rig(Options::default(), None).await;
    r.hub.status_next(500, None, 1000);
    let e = r.entry("config.json");
    let err = r
        .engine(None)
        .fetch(&r.repo, &r.commit, &e)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert!(!r.cache.blob_path(&r.repo, e.etag()).exists());
}

#[tokio::test]
async fn a_stalled_body_times_out_and_is_retried() {
    let r = rig(
        Options {
            stall_timeout: Duration::from_secs(20),
            ..Options::default()
        },
        None,
    )
    .await;
    r.hub.stall_next();
    r.fetch_all(&r.engine(None)).await;
    r.hub.release_stalls();
}

#[tokio::test]
async fn the_token_goes_to_the_hub_but_not_to_the_cdn() {
    let opts = Options {
        redirect_lfs_to: Some("127.0.0.2:0".parse().unwrap()),
        token: Some("hf_test".to_string()),
        ..Options::default()
    };
    let hub = FakeHub::start(opts).await.unwrap();
    let commit = hub.add_repo_files(
        "org/model",
        "main",
        vec![("model.safetensors".to_string(), content(300_000, 1))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(HubCache::open(&dir.path().join("hub"), None).unwrap());
    let repo = RepoId::parse("org/model").unwrap();
    let anonymous = client(&hub, None);
    let err = anonymous.list_tree(&repo, &commit.id).await.unwrap_err();
    assert_eq!(err.metric_label(), "unauthorized");
    let c = client(&hub, Some("hf_test"));
    let tree = c.list_tree(&repo, &commit.id).await.unwrap();
    let engine = Engine::new(
        c,
        cache.clone(),
        TransferOptions {
            chunk_bytes: CHUNK,
            ..TransferOptions::default()
        },
    );
    engine.fetch(&repo, &commit.id, &tree[0]).await.unwrap();
    assert!(cache.verify_blob(&repo, &tree[0]).unwrap());
    assert!(!hub.cdn_saw_auth(), "the token leaked to another host");
}

#[tokio::test]
async fn an_interrupted_download_resumes_from_its_journal() {
    let r = rig(Options::default(), None).await;
    let e = r.entry("model.safetensors");
    r.hub.set_rate_limit_per_connection(Some(96 << 10));
    let engine = r.engine(None);
    // Interrupted part-way, as a crash would.
    let _ = tokio::time::timeout(
        Duration::from_millis(2500),
        engine.fetch(&r.repo, &r.commit, &e),
    )
    .await;
    let journal = r
        .cache
        .state_dir()
        .join("journal")
        .join(r.repo.cache_folder())
        .join(format!("{}.json", e.etag()));
    assert!(journal.exists(), "progress was journaled");
    let served_before = r.hub.bytes_served();
    r.hub.set_rate_limit_per_connection(None);
    r.hub.reset_counters();
    engine.fetch(&r.repo, &r.commit, &e).await.unwrap();
    assert!(r.cache.verify_blob(&r.repo, &e).unwrap());
    let served_after = r.hub.bytes_served();
    assert!(served_before > 0);
    assert!(
        served_after < 1 << 20,
        "only the missing ranges were fetched again: {served_after}"
    );
    assert!(!journal.exists());
}

#[tokio::test]
async fn partial_ranges_are_journaled_and_resume_mid_range() {
    let r = rig(Options::default(), None).await;
    let e = r.entry("model.safetensors");
    let chunk = 512 << 10;
    let opts = TransferOptions {
        chunk_bytes: chunk,
        range_attempts: 1,
        ..r.opts()
    };
    let engine = Engine::new(client(&r.hub, None), r.cache.clone(), opts.clone());
    // The first range's body stops after 64 KiB (the read timeout ends it) and no retry is
    // allowed: what was written is journaled.
    r.hub.stall_next();
    let err = engine.fetch(&r.repo, &r.commit, &e).await.unwrap_err();
    assert_eq!(err.metric_label(), "read_timeout", "{err}");
    r.hub.release_stalls();
    r.hub.reset_counters();
    let engine = Engine::new(client(&r.hub, None), r.cache.clone(), opts);
    engine.fetch(&r.repo, &r.commit, &e).await.unwrap();
    assert!(r.cache.verify_blob(&r.repo, &e).unwrap());
    let ranges: Vec<String> = r.hub.ranges_seen().into_iter().map(|s| s.range).collect();
    assert!(
        ranges.contains(&format!("bytes=65536-{}", chunk - 1)),
        "the cut range resumed where it was cut: {ranges:?}"
    );
    assert_eq!(r.hub.bytes_served(), (1 << 20) - 65536);
}

#[tokio::test]
async fn a_silent_server_is_named_in_the_read_timeout() {
    let r = rig(Options::default(), None).await;
    let e = r.entry("model.safetensors");
    let mut o = HubOptions::new(&r.hub.url());
    o.read_timeout = Duration::from_secs(1);
    o.backoff =
        crate::backoff::Backoff::constant(Duration::from_millis(20), Duration::from_secs(30));
    let opts = TransferOptions {
        range_attempts: 2,
        ..r.opts()
    };
    let engine = Engine::new(HubClient::new(o).unwrap(), r.cache.clone(), opts);
    r.hub.drip(Some((1, Duration::from_secs(3))));
    let err = engine.fetch(&r.repo, &r.commit, &e).await.unwrap_err();
    r.hub.clear_faults();
    assert_eq!(err.metric_label(), "read_timeout", "{err}");
    assert_eq!(
        err.to_string(),
        "model.safetensors: the server sent nothing for 1 s"
    );
}

#[tokio::test]
async fn a_drip_under_the_floor_is_retried_on_fresh_connections_then_fails() {
    let r = rig(Options::default(), None).await;
    let e = r.entry("model.safetensors");
    let opts = TransferOptions {
        range_attempts: 3,
        min_rate_bytes: 64 << 10,
        min_rate_window: Duration::from_secs(1),
        ..r.opts()
    };
    let engine = Engine::new(client(&r.hub, None), r.cache.clone(), opts);
    // 100 bytes every 100 ms: never silent for the 2 s read timeout, 1 KB/s.
    r.hub.drip(Some((100, Duration::from_millis(100))));
    let before = r.hub.counters().connections_total;
    let err = engine.fetch(&r.repo, &r.commit, &e).await.unwrap_err();
    r.hub.clear_faults();
    assert_eq!(err.metric_label(), "too_slow", "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("model.safetensors: the server sent ")
            && text.ends_with("under the minimum of 65536 bytes per 1 s"),
        "{text}"
    );
    assert!(
        r.hub.counters().connections_total - before >= 3,
        "each attempt on a fresh connection"
    );
    // A drip above the floor is only slow.
    let opts = TransferOptions {
        min_rate_bytes: 1000,
        min_rate_window: Duration::from_secs(1),
        ..r.opts()
    };
    let engine = Engine::new(client(&r.hub, None), r.cache.clone(), opts);
    let small = r.entry("config.json");
    r.hub.drip(Some((4, Duration::from_millis(2))));
    engine.fetch(&r.repo, &r.commit, &small).await.unwrap();
    r.hub.clear_faults();
}
