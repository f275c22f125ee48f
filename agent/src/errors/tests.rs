#![allow(clippy::unwrap_used)]

use std::io;

use super::{assert_no_repeated_cause, chain};

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

#[test]
fn no_cause_of_the_weights_and_fsx_errors_is_printed_twice() {
    let samples = [
        crate::weights::Error::io("open", "/cache/blobs/x", io::ErrorKind::NotFound.into()),
        crate::weights::Error::from(crate::fsx::Error::io("fsync", "/cache", enospc())),
    ];
    for e in &samples {
        assert_no_repeated_cause(e);
    }
    // The same check fails on an error that repeats its source.
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] io::Error);
    let bad = Repeats(io::ErrorKind::TimedOut.into());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_no_repeated_cause(&bad)
    }));
    assert!(caught.is_err(), "a repeated cause is caught");
}

#[test]
fn a_message_says_what_failed_and_the_chain_says_why() {
    let e = crate::weights::Error::from(crate::fsx::Error::io("write", "/state/x.json", enospc()));
    assert_eq!(
        chain(&e),
        "write /state/x.json: No space left on device (os error 28)"
    );
}

#[test]
fn a_foreign_error_that_repeats_its_source_is_not_repeated() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] io::Error);
    let e = Repeats(io::ErrorKind::TimedOut.into());
    assert_eq!(chain(&e), "outer: timed out");
}

/// STYLE.md habit 6: an instrumented function logs the error it returns at debug; the caller
/// decides what a person sees (one line per failure). Checked over the whole crate's source.
#[test]
fn every_instrumented_error_logs_at_debug() {
    let mut offenders = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let attr = line.trim_start();
                if attr.starts_with("#[instrument(")
                    && attr.contains("err")
                    && !attr.contains("err(level = \"debug\")")
                {
                    offenders.push(format!("{}:{}: {attr}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
