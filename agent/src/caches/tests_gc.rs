//! GC under a tiny budget keeps the in-use scope and the leased one, evicts the least recently
//! used first; retention leases persist and expire.

use std::collections::BTreeSet;

use super::gc::{self, KeptReason, ScopeUsage};
use super::leases::{LeaseTarget, Leases};
use super::scope::{current_scope, point_model, record_used};
use super::tests_support::{put, root, scope};

const KIB: u64 = 1024;

#[test]
fn a_tiny_budget_evicts_the_oldest_unprotected_scopes_only() {
    let (_dir, root) = root();
    // a: oldest, in use. b: leased files. c, d: free; c older than d. e: never used.
    let names: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let s = scope(&root, &format!("model-{m}"), 1);
            put(
                &root.scope_dir(&s.name).join("vllm/x.bin"),
                vec![0u8; 100 * KIB as usize],
            );
            record_used(&root, &s.name, 1000 + i as i64).unwrap();
            point_model(&root, &s).unwrap();
            s.name
        })
        .collect();
    let (a, b, c, d) = (&names[0], &names[1], &names[2], &names[3]);
    let leases = Leases::new(&root);
    leases
        .take(
            "ckpt-1",
            b,
            LeaseTarget::Files(vec!["vllm/x.bin".into()]),
            10_000,
            2000,
        )
        .unwrap();
    leases
        .take("ckpt-old", c, LeaseTarget::Scope, 1500, 1400)
        .unwrap(); // expired at 2000
    let in_use = BTreeSet::from([a.clone()]);
    // What an eviction interrupted by a crash left behind is swept.
    put(
        &root.scopes_dir().join(".coldstart-evict-1-0/vllm/y"),
        b"left",
    );

    // 400 KiB used, budget 350 KiB: one scope must go, the least recently used free one (c).
    let out = gc::collect(&root, 350 * KIB, &in_use, &leases, 2000).unwrap();
    let evicted: Vec<_> = out.plan.evict.iter().map(|u| u.scope.as_str()).collect();
    assert_eq!(evicted, [c.as_str()]);
    assert_eq!(out.freed_bytes, 100 * KIB);
    assert!(!root.scope_dir(c).exists() && !root.scope_state_dir(c).exists());
    assert_eq!(
        current_scope(&root, "model-c").unwrap(),
        None,
        "its link went with it"
    );
    let why = |s: &str| {
        out.plan
            .kept
            .iter()
            .find(|k| k.scope == s)
            .map(|k| k.reason.clone())
    };
    assert_eq!(why(a), Some(KeptReason::InUse));
    assert_eq!(why(b), Some(KeptReason::Leased(vec!["ckpt-1".into()])));
    assert_eq!(why(d), Some(KeptReason::WithinBudget));

    // Budget 0: d goes too; a (in use) and b (leased) stay, over budget, and say so.
    let out = gc::collect(&root, 0, &in_use, &leases, 2000).unwrap();
    let evicted: Vec<_> = out.plan.evict.iter().map(|u| u.scope.as_str()).collect();
    assert_eq!(evicted, [d.as_str()]);
    assert!(out.plan.over_budget());
    assert_eq!(out.plan.remaining_bytes, 200 * KIB);
    assert!(root.scope_dir(a).join("vllm/x.bin").exists());
    assert!(root.scope_dir(b).join("vllm/x.bin").exists());

    // Released, b goes next.
    assert!(leases.release("ckpt-1", 3000).unwrap());
    let out = gc::collect(&root, 0, &in_use, &leases, 3000).unwrap();
    assert_eq!(out.plan.evict.len(), 1);
    assert_eq!(&out.plan.evict[0].scope, b);
}

#[test]
fn the_planner_orders_by_last_use_and_never_used_first() {
    let u = |scope: &str, last: Option<i64>| ScopeUsage {
        scope: scope.into(),
        model: String::new(),
        bytes: 10,
        last_used_ns: last,
    };
    let usage = [u("new", Some(50)), u("never", None), u("old", Some(10))];
    let plan = gc::plan(&usage, 15, &BTreeSet::new(), &[], 0);
    let order: Vec<_> = plan.evict.iter().map(|e| e.scope.as_str()).collect();
    assert_eq!(order, ["never", "old"]);
    assert!(!plan.over_budget());
    let fits = gc::plan(&usage, 30, &BTreeSet::new(), &[], 0);
    assert!(fits.evict.is_empty());
}

#[test]
fn leases_persist_replace_expire_and_refuse_paths_outside_the_scope() {
    let (_dir, root) = root();
    let one = Leases::new(&root);
    one.take("x", "s1", LeaseTarget::Scope, 100, 0).unwrap();
    one.take("y", "s2", LeaseTarget::Files(vec!["vllm/a".into()]), 50, 0)
        .unwrap();
    // Another holder (another process) sees them; taking "x" again replaces it.
    let two = Leases::new(&root);
    two.take("x", "s3", LeaseTarget::Scope, 200, 10).unwrap();
    let ids: Vec<_> = one
        .list(20)
        .unwrap()
        .into_iter()
        .map(|l| (l.id, l.scope))
        .collect();
    assert_eq!(ids, [("x".into(), "s3".into()), ("y".into(), "s2".into())]);
    assert_eq!(one.list(60).unwrap().len(), 1, "y expired at 50");
    assert!(!two.release("nope", 60).unwrap());
    for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "", "a//b"] {
        let err = one
            .take("z", "s1", LeaseTarget::Files(vec![bad.into()]), 100, 0)
            .unwrap_err();
        assert_eq!(err.metric_label(), "invalid_lease", "{bad:?}");
    }
    assert!(one.take("", "s1", LeaseTarget::Scope, 100, 0).is_err());
    assert!(one.take("z", "../x", LeaseTarget::Scope, 100, 0).is_err());
}
