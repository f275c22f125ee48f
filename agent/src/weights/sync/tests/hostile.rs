//! A Hub that answers for another commit than the pinned one, and revisions refused before
//! any request.

use super::*;

fn model() -> Vec<(String, Vec<u8>)> {
    files(&content(100 * KIB, 9), br#"{"model_type":"llama"}"#)
}

#[tokio::test]
async fn a_pinned_commit_must_be_what_the_hub_resolves() {
    let r = rig().await;
    let pinned = r.hub.add_repo_files("org/a", "v1", model());
    let other = r
        .hub
        .add_repo_files("org/a", "main", files(b"other", b"{}"));
    r.hub.answer_revision_with(Some(&other.id));
    let repo = RepoId::parse("org/a").unwrap();
    let e = r
        .syncer
        .sync(&repo, &opts(&pinned.id, None), at(1))
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "commit_mismatch", "{e}");
    assert!(
        e.to_string().contains(&pinned.id) && e.to_string().contains(&other.id),
        "{e}"
    );
    let snapshots = r.cache.repo_dir(&repo).join("snapshots");
    assert!(!snapshots.exists() || std::fs::read_dir(&snapshots).unwrap().next().is_none());
    assert_eq!(r.hub.counters().tree, 0, "nothing listed");
}

#[tokio::test]
async fn revisions_are_checked_before_any_request() {
    let r = rig().await;
    r.hub.add_repo_files("org/a", "main", model());
    let repo = RepoId::parse("org/a").unwrap();
    for bad in ["../../x", "a b", "main.lock", "x/.coldstart-write-1", ""] {
        let e = r
            .syncer
            .sync(&repo, &opts(bad, None), at(1))
            .await
            .unwrap_err();
        assert_eq!(e.metric_label(), "invalid_revision", "{bad:?}: {e}");
        assert!(e.to_string().starts_with("invalid revision"), "{e}");
    }
    assert_eq!(r.hub.counters(), Default::default(), "no request was made");
}

#[tokio::test]
async fn a_pull_request_ref_is_encoded_and_stored_nested() {
    let r = rig().await;
    let c = r.hub.add_repo_files("org/a", "main", model());
    r.hub.set_ref("org/a", "refs/pr/1", &c.id).unwrap();
    let repo = RepoId::parse("org/a").unwrap();
    let report = r
        .syncer
        .sync(&repo, &opts("refs/pr/1", None), at(1))
        .await
        .unwrap();
    assert_eq!(report.commit, c.id);
    let stored = r.cache.repo_dir(&repo).join("refs/refs/pr/1");
    assert_eq!(std::fs::read_to_string(stored).unwrap(), c.id);
}
