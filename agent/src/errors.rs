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

#[cfg(test)]
mod tests;
