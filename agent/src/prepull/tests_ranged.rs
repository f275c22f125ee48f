//! The ranged fetch step of a pre-pull, against the fake: fetched then unpacked, fallen back
//! with the reason said, resumed after a containerd restart under one lease, released after.

use std::time::Duration;

use super::tests::{IMG, image, opts};
use super::*;
use crate::images::Fake;

#[tokio::test(start_paused = true)]
async fn blobs_are_fetched_first_then_the_cri_pull_only_unpacks() {
    let fake = Fake::new();
    fake.publish(IMG, &[20 << 20, 1 << 20]);
    fake.state().ranged = true;
    let mut events = Vec::new();
    let report = prepull(&fake, &image(), None, &opts(), |e| events.push(e))
        .await
        .unwrap();
    let fetch = report.fetch.expect("the fetch ran");
    assert_eq!(fetch.fallback, None);
    assert_eq!(fetch.blobs, 3);
    assert_eq!(fetch.bytes, (21 << 20) + 1024);
    let st = fake.state();
    // Every byte came through the fetch: the pull found them present.
    assert_eq!(st.served, (21 << 20) + 1024);
    let calls: Vec<&str> = st.calls.iter().map(String::as_str).collect();
    let at = |name: &str| calls.iter().position(|c| *c == name).unwrap();
    assert!(
        at("create_lease") < at("fetch") && at("fetch") < at("pull"),
        "{calls:?}"
    );
    assert!(
        st.leases.is_empty(),
        "the lease is released: {:?}",
        st.leases
    );
    assert!(events.iter().any(|e| matches!(e, Event::Fetched(_))));
    assert!(events.iter().any(|e| matches!(e, Event::Fetching { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_cannot_work_says_why_and_the_cri_pull_does_it_all() {
    let fake = Fake::new();
    fake.publish(IMG, &[4 << 20]);
    let mut why = None;
    let report = prepull(&fake, &image(), None, &opts(), |e| {
        if let Event::Fallback(w) = e {
            why = Some(w);
        }
    })
    .await
    .unwrap();
    assert!(why.unwrap().contains("ignores Range"));
    assert!(report.fetch.unwrap().fallback.is_some());
    assert_eq!(report.attempts, 1);
    assert!(fake.state().leases.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_fetch_cut_by_a_containerd_restart_resumes_under_the_same_lease() {
    let fake = Fake::new();
    fake.publish(IMG, &[40 << 20]);
    fake.state().ranged = true;
    let restarter = {
        let fake = fake.clone();
        tokio::spawn(async move {
            // 1 MiB per 100 ms: a quarter in.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            fake.restart();
        })
    };
    let mut retries = 0;
    let report = prepull(&fake, &image(), None, &opts(), |e| {
        retries += usize::from(matches!(e, Event::Retry { .. }));
    })
    .await
    .unwrap();
    restarter.await.unwrap();
    assert_eq!(retries, 1);
    assert_eq!(report.attempts, 2);
    let st = fake.state();
    assert_eq!(st.leases_created, 1, "one lease across attempts");
    assert!(st.leases.is_empty());
    let fetch = report.fetch.unwrap();
    assert!(fetch.fallback.is_none());
    // The fake loses partial ingests on restart (containerd keeps them; the system tests
    // count what a real restart refetches): all was fetched, some of it twice.
    assert!(fetch.bytes > 40 << 20);
}

#[tokio::test(start_paused = true)]
async fn the_ranged_fetch_can_be_turned_off() {
    let fake = Fake::new();
    fake.publish(IMG, &[4 << 20]);
    fake.state().ranged = true;
    let mut o = opts();
    o.fetch.enabled = false;
    let report = prepull(&fake, &image(), None, &o, |_| {}).await.unwrap();
    assert!(report.fetch.is_none());
    let st = fake.state();
    assert!(!st.calls.iter().any(|c| c == "fetch" || c == "create_lease"));
}

#[tokio::test(start_paused = true)]
async fn a_fetch_outliving_its_lease_goes_on_under_a_new_one() {
    let fake = Fake::new();
    // 40 MiB at 1 MiB per 100 ms: 4 s, against a lease of 2 s renewed at 1.8 s.
    fake.publish(IMG, &[40 << 20]);
    fake.state().ranged = true;
    let mut o = opts();
    o.fetch.lease_ttl = Duration::from_secs(2);
    let report = prepull(&fake, &image(), None, &o, |_| {}).await.unwrap();
    assert_eq!(report.attempts, 1, "a renewal costs no attempt");
    let st = fake.state();
    assert!(st.leases_created >= 2, "{}", st.leases_created);
    assert!(
        st.leases.is_empty(),
        "every lease released: {:?}",
        st.leases
    );
    assert!(report.fetch.unwrap().fallback.is_none());
}
