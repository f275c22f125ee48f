use std::io::Write;
use std::sync::{Arc, Mutex};

use super::subscriber;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

// As every instrumented function of the agent library logs a returned error (STYLE.md habit 6).
#[tracing::instrument(skip_all, err(level = "debug"))]
fn fails() -> Result<(), String> {
    Err("the disk is full".into())
}

/// Runs `f` under coldctl's subscriber (`filter`, JSON or text); returns the lines logged.
fn logged(filter: &str, json: bool, f: impl FnOnce()) -> Vec<String> {
    let out = Captured::default();
    let writer = out.clone();
    tracing::subscriber::with_default(subscriber(filter, json, move || writer.clone()), f);
    out.lines()
}

#[test]
fn an_error_returned_to_the_caller_is_not_logged_again() {
    for (filter, json) in [("warn", true), ("warn", false), ("info", true)] {
        let lines = logged(filter, json, || {
            let _ = fails();
            tracing::error!(target: "kube_client::client::builder", "connection refused");
        });
        assert!(lines.is_empty(), "{filter} {json}: {lines:?}");
    }
}

#[test]
fn warnings_and_errors_with_a_message_stay() {
    let lines = logged("warn", true, || {
        tracing::warn!(attempt = 1, "hub request failed, retrying");
        tracing::error!(error = "boom", "the watcher stopped");
        tracing::info!("not at warn");
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("retrying") && lines[1].contains("the watcher stopped"));
    let lines = logged("warn,kube=debug", false, || {
        tracing::error!(target: "kube_client::client::builder", "connection refused");
    });
    assert_eq!(
        lines.len(),
        1,
        "asking for kube's logs shows them: {lines:?}"
    );
}
