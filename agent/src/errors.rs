//! How errors read on one line. The crate's rule (STYLE.md habit 4): a message says what
//! failed, its `#[source]` chain says why, and no message repeats its source. [`chain`] renders
//! an error and its causes the way `anyhow`'s `{:#}` does, for the places that keep a failure
//! as a string (status messages, events, the socket API).

use std::error::Error;

/// `err` and each of its sources, joined by `": "`. A source whose text the line already
/// contains is left out, so a cause never reads twice even from a foreign error type that
/// repeats its source in its message.
pub fn chain(err: &dyn Error) -> String {
    let mut line = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

/// Panics when rendering `err` as `{:#}` prints one of its causes more than once (a message
/// that repeats its `#[source]`). For the tests of each module's errors.
#[cfg(test)]
pub fn assert_no_repeated_cause(err: &(dyn Error + 'static)) {
    let mut line = err.to_string();
    let mut causes = Vec::new();
    let mut next = err.source();
    while let Some(cause) = next {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        causes.push(cause.to_string());
        next = cause.source();
    }
    for text in causes {
        assert_eq!(
            line.matches(&text).count(),
            1,
            "{text:?} repeated in {line:?}"
        );
    }
    assert_eq!(chain(err), line, "chain() reads as anyhow's {{:#}}");
}

#[cfg(test)]
mod tests;
