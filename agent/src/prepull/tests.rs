use std::time::Duration;

use super::*;
use crate::images::Fake;
use crate::images::fake::ImageFault;

pub(super) const IMG: &str = "registry.coldstart.test/test/img:v1";

pub(super) fn opts() -> Options {
    Options {
        stall_timeout: Duration::from_secs(10),
        min_rate_bytes: 64 << 10,
        min_rate_window: Duration::from_secs(60),
        attempts: 4,
        backoff: crate::backoff::Backoff::constant(Duration::from_secs(1), Duration::from_secs(4)),
        progress_interval: Duration::from_millis(500),
        margin_bytes: 1 << 20,
        unpack_ratio: 2.0,
        runtime_handler: None,
        fetch: crate::images::FetchOptions::default(),
    }
}

pub(super) fn image() -> ImageRef {
    ImageRef::parse(IMG).unwrap()
}

#[tokio::test(start_paused = true)]
async fn pulls_pins_and_reports_progress() {
    let fake = Fake::new();
    fake.publish(IMG, &[20 << 20, 12 << 20]);
    let mut events = Vec::new();
    let report = prepull(&fake, &image(), None, &opts(), |e| events.push(e))
        .await
        .unwrap();
    assert_eq!(report.attempts, 1);
    assert!(report.state.unpacked && report.state.pin_label && report.state.cri_pinned);
    assert_eq!(report.compressed_bytes, Some((32 << 20) + 1024));
    assert!(fake.pinned(IMG));
    let progress: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => Some(p.done),
            _ => None,
        })
        .collect();
    assert!(progress.len() >= 2, "{events:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[tokio::test(start_paused = true)]
async fn old_runtime_pins_with_a_warning() {
    let fake = Fake::new();
    fake.state().version = "1.6.20".to_string();
    fake.publish(IMG, &[1 << 20]);
    let report = prepull(&fake, &image(), None, &opts(), |_| {})
        .await
        .unwrap();
    assert!(report.state.pin_label);
    assert!(!report.state.cri_pinned);
    assert!(
        report.warnings[0].contains("ignores the pin label"),
        "{:?}",
        report.warnings
    );
}

#[tokio::test(start_paused = true)]
async fn disk_check_refuses_before_pulling() {
    let fake = Fake::new();
    fake.publish(IMG, &[10 << 20]);
    fake.state().available = 20 << 20; // 10 MiB + 20 MiB unpacked + 1 MiB margin do not fit
    let err = prepull(&fake, &image(), None, &opts(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.metric_label(), "disk_full", "{err}");
    assert!(err.to_string().contains("not enough disk space"), "{err}");
    assert!(!fake.state().calls.contains(&"pull".to_string()));
    assert_eq!(fake.state().served, 0);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    for (failure, label) in [
        (ImageFault::NotFound, "not_found"),
        (ImageFault::Unauthorized, "unauthorized"),
        (ImageFault::NoSpace, "no_space"),
    ] {
        let fake = Fake::new();
        fake.publish(IMG, &[1 << 20]);
        fake.state().fail_pulls.push_back(failure);
        let err = prepull(&fake, &image(), None, &opts(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.metric_label(), label);
        let pulls = fake.state().calls.iter().filter(|c| *c == "pull").count();
        assert_eq!(pulls, 1, "{failure:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn transient_errors_back_off_then_succeed() {
    let fake = Fake::new();
    fake.publish(IMG, &[1 << 20]);
    fake.state()
        .fail_pulls
        .extend([ImageFault::Unavailable, ImageFault::RegistryDown]);
    let started = tokio::time::Instant::now();
    let mut backoffs = Vec::new();
    let report = prepull(&fake, &image(), None, &opts(), |e| {
        if let Event::Retry { backoff, .. } = e {
            backoffs.push(backoff)
        }
    })
    .await
    .unwrap();
    assert_eq!(report.attempts, 3);
    assert_eq!(
        backoffs,
        vec![Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn retries_give_up_after_the_last_attempt() {
    let fake = Fake::new();
    fake.publish(IMG, &[1 << 20]);
    fake.state()
        .fail_pulls
        .extend([ImageFault::RegistryDown; 10]);
    let err = prepull(&fake, &image(), None, &opts(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.metric_label(), "registry_unreachable");
    assert_eq!(
        fake.state().calls.iter().filter(|c| *c == "pull").count(),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_pull_is_cancelled_and_retried() {
    let fake = Fake::new();
    fake.publish(IMG, &[8 << 20]);
    fake.state().stall_after = Some(3 << 20);
    let fake2 = fake.clone();
    let mut retries = 0;
    let report = prepull(&fake, &image(), None, &opts(), |e| {
        if let Event::Retry { error, .. } = e {
            assert!(error.contains("stalled"), "{error}");
            retries += 1;
            // The network recovers after the first stall.
            fake2.state().stall_after = None;
        }
    })
    .await
    .unwrap();
    assert_eq!(retries, 1);
    assert_eq!(report.attempts, 2);
    // The second attempt fetched only what the first had not.
    assert_eq!(fake.state().served, (8 << 20) + 1024);
}

#[tokio::test(start_paused = true)]
async fn a_pull_that_stalls_every_time_fails_as_stalled() {
    let fake = Fake::new();
    fake.publish(IMG, &[8 << 20]);
    fake.state().stall_after = Some(0);
    let err = prepull(&fake, &image(), None, &opts(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.metric_label(), "stalled");
    assert!(err.to_string().contains("no progress for 10s"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_runtime_restart_mid_pull_resumes_from_complete_blobs() {
    let fake = Fake::new();
    // Two blobs finish at different times: the small one completes before the restart.
    fake.publish(IMG, &[2 << 20, 20 << 20]);
    let fake2 = fake.clone();
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let report = prepull(&fake, &image(), None, &opts(), |e| {
        if let Event::Progress(p) = e
            && p.done > (8 << 20)
            && !restarted.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            fake2.restart();
        }
    })
    .await
    .unwrap();
    assert_eq!(report.attempts, 2);
    let served = fake.state().served;
    let total = (22 << 20) + 1024;
    assert!(served > total, "something was fetched twice: {served}");
    // Only the partial big layer was fetched again, not the complete small one and config.
    assert!(served - total < (20 << 20), "{served}");
}

#[tokio::test(start_paused = true)]
async fn present_by_digest_skips_the_pull() {
    let fake = Fake::new();
    let digest_ref = format!("registry.coldstart.test/test/img@sha256:{}", "a".repeat(64));
    fake.publish(&digest_ref, &[1 << 20]);
    let img = ImageRef::parse(&digest_ref).unwrap();
    prepull(&fake, &img, None, &opts(), |_| {}).await.unwrap();
    let again = prepull(&fake, &img, None, &opts(), |_| {}).await.unwrap();
    assert_eq!(again.attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn unknown_sizes_still_pull() {
    let fake = Fake::new();
    fake.publish(IMG, &[1 << 20]);
    // The registry does not answer our manifest request, but containerd's pull works.
    fake.state().calls.clear();
    let img = image();
    let mut unresolved = false;
    let report = prepull(&WithoutManifest(&fake), &img, None, &opts(), |e| {
        unresolved |= matches!(e, Event::Unresolved(_));
    })
    .await
    .unwrap();
    assert!(unresolved);
    assert!(report.compressed_bytes.is_none());
    assert!(report.warnings.iter().any(|w| w.contains("sizes unknown")));
}

/// The fake with a registry that refuses our manifest lookups.
struct WithoutManifest<'a>(&'a Fake);

impl Images for WithoutManifest<'_> {
    async fn runtime_info(&self) -> Result<RuntimeInfo, Error> {
        self.0.runtime_info().await
    }
    async fn disk_space(&self, p: &std::path::Path) -> Result<crate::images::DiskSpace, Error> {
        self.0.disk_space(p).await
    }
    async fn manifest(
        &self,
        i: &ImageRef,
        _: Option<&RegistryAuth>,
    ) -> Result<ImageManifest, Error> {
        Err(Error::Registry(format!("no answer for {i}")))
    }
    async fn pull(
        &self,
        i: &ImageRef,
        a: Option<&RegistryAuth>,
        h: Option<&str>,
    ) -> Result<String, Error> {
        self.0.pull(i, a, h).await
    }
    async fn progress(&self, b: &[crate::images::Blob]) -> Result<PullProgress, Error> {
        self.0.progress(b).await
    }
    async fn status(&self, i: &ImageRef) -> Result<Option<ImageState>, Error> {
        self.0.status(i).await
    }
    async fn set_pinned(&self, i: &ImageRef, p: bool) -> Result<(), Error> {
        self.0.set_pinned(i, p).await
    }
    async fn remove(&self, i: &ImageRef) -> Result<(), Error> {
        self.0.remove(i).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_pull_that_drips_below_the_floor_fails_as_too_slow() {
    let fake = Fake::new();
    fake.publish(IMG, &[8 << 20]);
    {
        // 100 bytes every tick: bytes always move (the stall detector stays quiet), but far
        // fewer than 64 KiB a minute.
        let mut st = fake.state();
        st.chunk = 100;
        st.tick = Duration::from_secs(1);
    }
    let mut retries = Vec::new();
    let err = prepull(&fake, &image(), None, &opts(), |e| {
        if let Event::Retry { error, .. } = e {
            retries.push(error);
        }
    })
    .await
    .unwrap_err();
    assert_eq!(err.metric_label(), "too_slow", "{err}");
    assert!(
        err.to_string()
            .contains("under the minimum of 65536 bytes per 60s"),
        "{err}"
    );
    assert_eq!(retries.len(), 3, "{retries:?}");
    assert!(
        retries.iter().all(|r| r.contains("too slow")),
        "{retries:?}"
    );
    assert_eq!(
        fake.state().calls.iter().filter(|c| *c == "pull").count(),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_pull_above_the_floor_completes() {
    let fake = Fake::new();
    fake.publish(IMG, &[1 << 20]);
    {
        // 2 KiB a second: 120 KiB a minute, above the floor.
        let mut st = fake.state();
        st.chunk = 2048;
        st.tick = Duration::from_secs(1);
    }
    let report = prepull(&fake, &image(), None, &opts(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.attempts, 1);
}
