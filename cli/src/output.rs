//! Output helpers: one JSON or YAML document on stdout with `-o json|yaml`, human text
//! otherwise; progress
//! bars only when stderr is a terminal, plain lines when it is not.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable.
    Text,
    /// Exactly one JSON document on stdout.
    Json,
    /// Exactly one YAML document on stdout (the same shape as JSON).
    Yaml,
}

impl Format {
    /// Whether the output is a machine-readable document (JSON or YAML).
    pub fn is_document(self) -> bool {
        self != Format::Text
    }
}

/// Writes to stdout. A closed pipe (`coldctl status | head`) ends the process quietly with
/// 141, as a shell reports a SIGPIPE death, instead of the panic `print!` gives; any other
/// write error is one line on stderr and exit 1.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::write_stdout(format_args!($($t)*)) };
}

/// `println!` through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// Whether stderr is a terminal (progress bars) or a pipe/file (plain lines).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => crate::outln!("{s}"),
        Err(e) => eprintln!("error: cannot encode output: {e}"),
    }
}

/// Prints one document on stdout: YAML with `-o yaml`, JSON otherwise.
pub fn print_doc(format: Format, value: &serde_json::Value) {
    if format != Format::Yaml {
        return print_json(value);
    }
    match serde_yaml::to_string(value) {
        Ok(s) => crate::out!("{s}"),
        Err(e) => eprintln!("error: cannot encode output: {e}"),
    }
}

/// `value` with every object key in camelCase (`downloaded_bytes` -> `downloadedBytes`):
/// the library's reports name their fields the Rust way, and every document coldctl prints
/// is camelCase. Only keys change; values (paths, phases, problem kinds) stay as they are.
pub fn camel_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (camel(&k), camel_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camel_keys).collect()),
        other => other,
    }
}

fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A progress bar under a [`MultiProgress`], drawn only once its total is known: before
/// that a bar could only say `0 B/0 B`.
#[derive(Debug)]
pub struct SizedBar {
    multi: Option<MultiProgress>,
    template: &'static str,
    message: String,
    bar: Option<ProgressBar>,
}

impl SizedBar {
    /// A bar to draw under `multi` (none: nothing is drawn) with `template` and `message`.
    pub fn new(multi: Option<&MultiProgress>, template: &'static str, message: String) -> Self {
        SizedBar {
            multi: multi.cloned(),
            template,
            message,
            bar: None,
        }
    }

    /// Moves the bar; draws it the first time `total` is known and not zero.
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        let total = total.filter(|t| *t > 0);
        if self.bar.is_none()
            && let (Some(multi), Some(_)) = (&self.multi, total)
        {
            let bar = multi.add(ProgressBar::new(0));
            let style = ProgressStyle::with_template(self.template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(self.message.clone());
            self.bar = Some(bar);
        }
        if let (Some(bar), Some(total)) = (&self.bar, total) {
            bar.set_length(total.max(done));
            bar.set_position(done);
        }
    }

    /// The text after the bar.
    pub fn set_message(&mut self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.clone());
        }
        self.message = message;
    }

    /// A line above the bars.
    pub fn println(&self, line: String) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Whether the bar is on screen.
    #[cfg(test)]
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    /// Clears the bar (`keep`: leaves it as it stands).
    pub fn finish(&mut self, keep: bool) {
        if let Some(bar) = self.bar.take() {
            if keep {
                bar.abandon();
            } else {
                bar.finish_and_clear();
            }
        }
    }
}

impl Drop for SizedBar {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// `1536` -> `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bar_is_drawn_only_once_its_size_is_known() {
        use indicatif::{MultiProgress, ProgressDrawTarget};
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let mut bar = super::SizedBar::new(Some(&multi), "{bytes}/{total_bytes}", "m".into());
        bar.update(0, None);
        bar.update(0, Some(0));
        assert!(!bar.is_drawn(), "no 0 B/0 B bar");
        bar.update(10, Some(100));
        assert!(bar.is_drawn());
        let mut none = super::SizedBar::new(None, "{bytes}", "m".into());
        none.update(10, Some(100));
        assert!(!none.is_drawn(), "no terminal, no bar");
    }

    #[test]
    fn keys_become_camel_case_and_values_stay() {
        let doc = serde_json::json!({"downloaded_bytes": 1, "model": {"allow_patterns": ["a_b"],
            "repo": "org/x_y"}, "problems": [{"kind": "DanglingLink"}]});
        assert_eq!(
            super::camel_keys(doc),
            serde_json::json!({"downloadedBytes": 1, "model": {"allowPatterns": ["a_b"],
                "repo": "org/x_y"}, "problems": [{"kind": "DanglingLink"}]})
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
