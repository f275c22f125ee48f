//! What a verb hands back, and how `main` shows it, once: a verb returns its [`Output`] or a
//! [`CliError`] and prints no error of its own.
//!
//! Text mode: the result on stdout, each failure one `error: ...` line on stderr (`{:#}`, the
//! whole cause chain on that line). `-o json|yaml`: exactly one document on stdout, the
//! result or, for a failure, `{"ok": false, "error": "<all messages, '; '-joined>", "kind":
//! "<the first one's kind>", "errors": [{"kind", "error"}, ...]}` (stable: scripts read it),
//! and nothing on stderr. Usage errors are one `error:` line in every format, as clap's own.

use serde_json::{Value, json};

use crate::output::{self, Format};

/// Why no client for the cluster could be made; each is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No kubeconfig file and not in a pod.
    #[error(
        "no cluster configured (no kubeconfig at {looked}, not in a pod): give --kubeconfig, \
         or use --node to ask this node's agent, or --here to work in this process"
    )]
    NoCluster {
        /// Where a kubeconfig was looked for.
        looked: String,
    },
    /// A kubeconfig was found and cannot be used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file(s).
        path: String,
        /// What is wrong, on one line.
        reason: String,
    },
}

impl ConnectError {
    /// The stable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::NoCluster { .. } => "no_cluster",
            ConnectError::Kubeconfig { .. } => "kubeconfig",
        }
    }
}

#[cfg(test)]
mod tests;

/// Exit code of a failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when `--wait` runs out of time.
pub const EXIT_TIMEOUT: u8 = 3;
/// Exit code for bad usage (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// A verb's result, for stdout.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// `doc` under `-o json|yaml`, else `text` (which ends with a newline when not empty).
    Result {
        /// The JSON document (printed as YAML under `-o yaml`).
        doc: Value,
        /// What a person reads.
        text: String,
    },
    /// Nothing left to print: the verb printed as it went (`verify --watch`, a stream).
    Streamed,
}

impl Output {
    /// `doc`, or `line` and a newline.
    pub fn line(doc: Value, line: impl std::fmt::Display) -> Output {
        Output::Result {
            doc,
            text: format!("{line}\n"),
        }
    }

    /// `doc`, or `text` as it is (a table ends with its own newline).
    pub fn text(doc: Value, text: String) -> Output {
        Output::Result { doc, text }
    }

    /// Prints the result on stdout in `format`.
    pub fn print(&self, format: Format) {
        match (self, format) {
            (Output::Streamed, _) => {}
            (Output::Result { text, .. }, Format::Text) => crate::out!("{text}"),
            (Output::Result { doc, .. }, _) => output::print_doc(format, doc),
        }
    }
}

/// Why a verb did not succeed. [`CliError::exit_code`] and [`CliError::kind`] say it to
/// scripts, [`CliError::report`] prints it.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage, found before any work (exit 64).
    Usage(String),
    /// The work failed (exit 1): one error, or one per part that failed (`warm --here` with
    /// an image and a model).
    Failed(Vec<anyhow::Error>),
    /// The verb has a result and the result is a failure: `--wait` saw the model Failed
    /// (exit 1) or ran out of time (exit 3), `verify` found problems (exit 1). The result is
    /// printed as on success (its document says the outcome); `errors` are the text mode's
    /// `error:` lines, none when the result says it all.
    Outcome {
        /// The exit code.
        code: u8,
        /// The stable kind (`failed`, `timeout`, `problems`).
        kind: &'static str,
        /// What is printed on stdout.
        output: Output,
        /// Text mode's `error:` lines.
        errors: Vec<String>,
    },
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(vec![e])
    }
}

impl CliError {
    /// A usage error saying `msg`.
    pub fn usage(msg: impl std::fmt::Display) -> CliError {
        CliError::Usage(msg.to_string())
    }

    /// The process's exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Failed(_) => EXIT_FAILURE,
            CliError::Outcome { code, .. } => *code,
        }
    }

    /// The stable label scripts match on: the first failure's kind for [`CliError::Failed`].
    pub fn kind(&self) -> String {
        match self {
            CliError::Usage(_) => "usage".into(),
            CliError::Failed(errors) => errors.first().map_or_else(|| "error".into(), kind),
            CliError::Outcome { kind, .. } => (*kind).into(),
        }
    }

    /// The error document of `-o json|yaml`, for a failure that has no result of its own.
    pub fn document(&self) -> Option<Value> {
        let CliError::Failed(errors) = self else {
            return None;
        };
        let msgs: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
        let each: Vec<Value> = errors
            .iter()
            .zip(&msgs)
            .map(|(e, m)| json!({"kind": kind(e), "error": m}))
            .collect();
        Some(json!({
            "ok": false,
            "error": msgs.join("; "),
            "kind": self.kind(),
            "errors": each,
        }))
    }

    /// The `error: ` lines (without the prefix) a person reads in `format`.
    pub fn lines(&self, format: Format) -> Vec<String> {
        match (self, format) {
            (CliError::Usage(msg), _) => vec![msg.clone()],
            (_, Format::Json | Format::Yaml) => Vec::new(),
            (CliError::Failed(errors), Format::Text) => {
                errors.iter().map(|e| format!("{e:#}")).collect()
            }
            (CliError::Outcome { errors, .. }, Format::Text) => errors.clone(),
        }
    }

    /// Prints the failure in `format` (stderr lines, then the document or result on stdout);
    /// returns the exit code.
    pub fn report(&self, format: Format) -> u8 {
        for line in self.lines(format) {
            eprintln!("error: {line}");
        }
        match self {
            CliError::Usage(_) => {}
            CliError::Failed(_) if format == Format::Text => {}
            CliError::Failed(_) => {
                if let Some(doc) = self.document() {
                    output::print_doc(format, &doc);
                }
            }
            CliError::Outcome { output, .. } => output.print(format),
        }
        self.exit_code()
    }
}

/// A model the verb names does not exist: kind `not_found`, exit 1. The message names the
/// model and where it was looked for.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// A write would change fields another field manager owns (`warm` without
/// `--force-conflicts`): kind `conflict`, exit 1. The message names the manager and the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Conflict(pub String);

/// A model's compile-cache policy is disabled (`cache env`): kind `cache_disabled`, exit 1.
/// The message names the model and the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CacheDisabled(pub String);

/// Prints a verb's result or failure in `format`; returns the exit code.
pub fn render(result: &Result<Output, CliError>, format: Format) -> u8 {
    match result {
        Ok(output) => {
            output.print(format);
            0
        }
        Err(e) => e.report(format),
    }
}

/// The stable label of an error from either port, the local agent, a missing model or a
/// missing cluster; `error` for the rest. The README's table lists them.
pub fn kind(err: &anyhow::Error) -> String {
    if err.downcast_ref::<NotFound>().is_some() {
        return "not_found".into();
    }
    if err.downcast_ref::<Conflict>().is_some() {
        return "conflict".into();
    }
    if err.downcast_ref::<CacheDisabled>().is_some() {
        return "cache_disabled".into();
    }
    if let Some(e) = err.downcast_ref::<ConnectError>() {
        return e.kind().into();
    }
    if let Some(e) = err.downcast_ref::<coldstart_agent::images::Error>() {
        return e.metric_label().into();
    }
    if let Some(e) = err.downcast_ref::<coldstart_agent::weights::Error>() {
        return e.metric_label().into();
    }
    if let Some(e) = err.downcast_ref::<coldstart_agent::caches::Error>() {
        return e.metric_label().into();
    }
    if let Some(e) = err.downcast_ref::<coldstart_agent::snapshots::Error>() {
        return e.metric_label().into();
    }
    if let Some(e) = err.downcast_ref::<coldstart_agent::standalone::ClientError>() {
        return e.kind().into();
    }
    "error".into()
}
