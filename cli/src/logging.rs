//! coldctl's logs, on stderr: JSON lines, or text for a person at a terminal.
//!
//! A failure is reported once, by `main`, from the error the verb returns. So at any level
//! the logs leave out what would say it again: kube's client builder, which logs each failed
//! connection at ERROR, and the ERROR event a `#[tracing::instrument(err)]` function logs as
//! it returns an error to its caller. Warnings (a retry, a fallback) stay, one line each.

use tracing::{Level, Metadata};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the global subscriber: `filter` in `RUST_LOG` syntax, JSON lines when `json`.
pub fn init(filter: &str, json: bool) {
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = subscriber(filter, json, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing to `writer`.
fn subscriber<W>(filter: &str, json: bool, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // kube's client logs every failed connection at ERROR; our one `error:` line says it.
    let filter = if filter.contains("kube") {
        filter.to_string()
    } else {
        format!("{filter},kube_client::client::builder=off")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    let keep = filter_fn(|meta| !is_returned_error(meta));
    tracing_subscriber::registry().with(layer.with_filter(filter.and(keep)))
}

/// The event `#[instrument(err)]` logs when its function returns an error: at ERROR, with the
/// one field `error` and no message. The caller has the error and decides who sees it
/// (habit 6 of STYLE.md: instrumented errors log at debug; this holds the line at any level).
fn is_returned_error(meta: &Metadata<'_>) -> bool {
    let fields = meta.fields();
    meta.is_event()
        && *meta.level() == Level::ERROR
        && fields.len() == 1
        && fields.field("error").is_some()
}

#[cfg(test)]
mod tests;
