use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::health::Readiness;

/// Counts passes; fails every other one; can hang forever.
#[derive(Debug, Default, Clone)]
struct Recorder {
    passes: Arc<AtomicUsize>,
    hang: bool,
}

impl Reconcile for Recorder {
    async fn reconcile(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let n = self.passes.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            shutdown.cancelled().await;
        }
        if n % 2 == 1 {
            return Err(Error::Images(crate::images::Error::Registry(
                "flaky".into(),
            )));
        }
        Ok(())
    }
}

fn spawn(
    r: Recorder,
) -> (
    Heartbeat,
    Arc<Metrics>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let hb = Heartbeat::new();
    let metrics = Arc::new(Metrics::new());
    let token = CancellationToken::new();
    let cfg = LoopConfig::new(Duration::from_secs(10));
    let task = tokio::spawn(run(r, cfg, hb.clone(), metrics.clone(), token.clone()));
    (hb, metrics, token, task)
}

#[tokio::test(start_paused = true)]
async fn ticks_beat_and_count_errors() {
    let rec = Recorder::default();
    let (hb, metrics, token, task) = spawn(rec.clone());
    let timeout = Duration::from_secs(30);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(rec.passes.load(Ordering::SeqCst), 1, "first pass at once");
    assert_eq!(hb.readiness(Instant::now(), timeout), Readiness::Ready);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(rec.passes.load(Ordering::SeqCst), 3);
    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains(r#"coldstart_reconcile_passes_total{outcome="error"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"coldstart_errors_total{source="images",kind="registry"} 1"#),
        "{text}"
    );
    token.cancel();
    task.await.expect("loop ends");
    assert_eq!(
        hb.readiness(Instant::now(), timeout),
        Readiness::NotReady("shutting down".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_pass_turns_readiness_off_and_cancel_ends_it() {
    let rec = Recorder {
        hang: true,
        ..Recorder::default()
    };
    let (hb, _metrics, token, task) = spawn(rec.clone());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rec.passes.load(Ordering::SeqCst), 1);
    assert!(matches!(
        hb.readiness(Instant::now(), Duration::from_secs(30)),
        Readiness::NotReady(_)
    ));
    token.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("loop stops after the pass observes the token")
        .expect("task");
}

#[test]
fn pass_errors_say_which_port_once_and_the_cause_once() {
    use std::io;
    let samples = [
        Error::Weights(crate::weights::Error::from(crate::fsx::Error::io(
            "rename",
            "/cache/refs/main",
            io::ErrorKind::PermissionDenied.into(),
        ))),
        Error::StatusFile(crate::fsx::Error::io(
            "write",
            "/state/status.json",
            io::Error::from_raw_os_error(28),
        )),
        Error::Images(crate::images::Error::Io {
            op: "read",
            path: "/etc/containerd/config.toml".into(),
            source: io::ErrorKind::NotFound.into(),
        }),
    ];
    for e in &samples {
        crate::errors::assert_no_repeated_cause(e);
    }
    assert_eq!(
        crate::errors::chain(&samples[1]),
        "status file: write /state/status.json: No space left on device (os error 28)"
    );
}
