use std::time::{Duration, SystemTime};

use super::*;

fn repo(id: &str) -> RepoId {
    RepoId::parse(id).unwrap()
}

fn commit(n: u8) -> String {
    format!("{n}").repeat(40)
}

fn etag(n: u8) -> String {
    format!("{n:x}").repeat(40)
}

/// A snapshot of `id` at commit `c`, last used at `t` seconds, linking `(etag n, size)`.
fn snap(id: &str, c: u8, t: u64, blobs: &[(u8, u64)], refs: &[&str]) -> SnapshotBlobs {
    SnapshotBlobs {
        repo: repo(id),
        commit: commit(c),
        refs: refs.iter().map(|r| r.to_string()).collect(),
        last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(t),
        blobs: blobs.iter().map(|(e, s)| (etag(*e), *s)).collect(),
    }
}

fn usage(snapshots: Vec<SnapshotBlobs>) -> CacheUsage {
    let mut seen = BTreeSet::new();
    let used_bytes = snapshots
        .iter()
        .flat_map(|s| {
            s.blobs
                .iter()
                .map(move |(e, n)| ((s.repo.clone(), e.clone()), *n))
        })
        .filter(|(k, _)| seen.insert(k.clone()))
        .map(|(_, n)| n)
        .sum();
    CacheUsage {
        used_bytes,
        snapshots,
    }
}

fn plan(
    u: &CacheUsage,
    budget: u64,
    need: u64,
    wanted: &[Wanted],
    protect: &BTreeSet<(RepoId, String)>,
) -> Result<Vec<(String, String, u64)>, Error> {
    let demand = Demand {
        budget,
        need,
        wanted,
        protect,
    };
    plan_eviction(u, &demand).map(|p| {
        p.into_iter()
            .map(|e| (e.repo.to_string(), e.commit[..1].to_string(), e.bytes))
            .collect()
    })
}

fn want(id: &str, rev: &str) -> Wanted {
    Wanted {
        repo: repo(id),
        revision: rev.to_string(),
    }
}

#[test]
fn nothing_is_evicted_when_it_fits() {
    let u = usage(vec![snap("a/x", 1, 10, &[(1, 100)], &["main"])]);
    assert_eq!(plan(&u, 200, 100, &[], &BTreeSet::new()).unwrap(), []);
}

#[test]
fn least_recently_used_go_first_and_only_as_many_as_needed() {
    let u = usage(vec![
        snap("a/x", 1, 30, &[(1, 100)], &["main"]),
        snap("b/y", 2, 10, &[(2, 100)], &["main"]),
        snap("c/z", 3, 20, &[(3, 100)], &["main"]),
    ]);
    // 300 in use, 50 to fetch, budget 260: freeing the oldest (b/y) is enough.
    let p = plan(&u, 260, 50, &[], &BTreeSet::new()).unwrap();
    assert_eq!(p, [("b/y".to_string(), "2".to_string(), 100)]);
    let p = plan(&u, 160, 50, &[], &BTreeSet::new()).unwrap();
    assert_eq!(
        p,
        [
            ("b/y".to_string(), "2".to_string(), 100),
            ("c/z".to_string(), "3".to_string(), 100)
        ]
    );
}

#[test]
fn wanted_snapshots_stay_by_ref_or_commit() {
    let u = usage(vec![
        snap("a/x", 1, 10, &[(1, 100)], &["main"]),
        snap("b/y", 2, 20, &[(2, 100)], &[]),
        snap("c/z", 3, 30, &[(3, 100)], &["v1"]),
    ]);
    let wanted = [want("a/x", "main"), want("b/y", &commit(2))];
    let p = plan(&u, 250, 0, &wanted, &BTreeSet::new()).unwrap();
    assert_eq!(p, [("c/z".to_string(), "3".to_string(), 100)]);
}

#[test]
fn a_blob_shared_with_a_wanted_snapshot_frees_nothing() {
    // Two commits of one model share blob 1; the newer is wanted.
    let u = usage(vec![
        snap("a/x", 1, 10, &[(1, 100), (2, 50)], &[]),
        snap("a/x", 2, 20, &[(1, 100), (3, 70)], &["main"]),
    ]);
    let wanted = [want("a/x", "main")];
    let p = plan(&u, 200, 0, &wanted, &BTreeSet::new()).unwrap();
    assert_eq!(p, [("a/x".to_string(), "1".to_string(), 50)]);
}

#[test]
fn blobs_shared_by_two_evicted_snapshots_count_once_both_are_gone() {
    let u = usage(vec![
        snap("a/x", 1, 10, &[(1, 100)], &[]),
        snap("a/x", 2, 20, &[(1, 100)], &[]),
        snap("b/y", 3, 30, &[(3, 10)], &["main"]),
    ]);
    let p = plan(&u, 50, 0, &[want("b/y", "main")], &BTreeSet::new()).unwrap();
    assert_eq!(
        p,
        [
            ("a/x".to_string(), "1".to_string(), 0),
            ("a/x".to_string(), "2".to_string(), 100)
        ]
    );
}

#[test]
fn blobs_the_sync_counts_on_are_never_counted_as_freed() {
    let u = usage(vec![snap("a/x", 1, 10, &[(1, 100), (2, 100)], &["main"])]);
    let protect = BTreeSet::from([(repo("a/x"), etag(1))]);
    let e = plan(&u, 140, 50, &[], &protect).unwrap_err();
    assert_eq!(e.metric_label(), "over_budget");
    let p = plan(&u, 140, 50, &[], &BTreeSet::new()).unwrap();
    assert_eq!(p, [("a/x".to_string(), "1".to_string(), 200)]);
}

#[test]
fn over_budget_names_the_budget_the_need_and_what_was_kept() {
    let u = usage(vec![
        snap("a/x", 1, 10, &[(1, 1 << 30)], &["main"]),
        snap("b/y", 2, 20, &[(2, 1 << 20)], &[]),
    ]);
    let e = plan(
        &u,
        1 << 30,
        1 << 20,
        &[want("a/x", "main")],
        &BTreeSet::new(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cache budget 1.0 GiB (1073741824 bytes)"),
        "{msg}"
    );
    assert!(msg.contains("1.0 MiB (1048576 bytes) to download"), "{msg}");
    assert!(msg.contains("kept: a/x@111111111111"), "{msg}");
}

#[test]
fn sizes_parse_in_decimal_and_binary_units() {
    let cases: &[(&str, u64)] = &[
        ("1048576", 1 << 20),
        ("0", 0),
        ("500GiB", 500 << 30),
        ("500gib", 500 << 30),
        ("200G", 200_000_000_000),
        ("200GB", 200_000_000_000),
        ("64Mi", 64 << 20),
        ("1.5TiB", 3 << 39),
        (" 10 MiB ", 10 << 20),
        ("7B", 7),
        ("2k", 2000),
    ];
    for (text, want) in cases {
        assert_eq!(parse_size(text).unwrap(), *want, "{text}");
    }
}

#[test]
fn garbage_sizes_are_refused_clearly() {
    for bad in [
        "",
        "GiB",
        "ten",
        "1.2.3GiB",
        "5 parsecs",
        "-1G",
        "99999999999999PiB",
        "1e9",
    ] {
        let e = parse_size(bad).unwrap_err();
        assert_eq!(e.metric_label(), "invalid_size", "{bad}");
        assert!(e.to_string().starts_with("invalid size"), "{bad}: {e}");
    }
}

#[test]
fn sizes_format_for_people() {
    assert_eq!(format_size(512), "512 B");
    assert_eq!(format_size(3 << 29), "1.5 GiB");
}
