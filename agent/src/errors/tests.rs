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
