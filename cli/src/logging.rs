//! coldctl's logs, on stderr: JSON lines, or text for a person at a terminal.
//!
//! A failure is reported once, by `main`, from the error the verb returns. So the logs leave
//! out what would say it again: kube's client builder, which logs each failed connection at
//! ERROR. The agent library's instrumented functions log the errors they return at debug
//! (STYLE.md habit 6; a test in the agent checks every one). Warnings (a retry, a fallback)
//! stay, one line each.

use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::EnvFilter;
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
    tracing_subscriber::registry().with(layer.with_filter(filter))
}

#[cfg(test)]
mod tests;
