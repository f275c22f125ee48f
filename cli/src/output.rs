//! Output helpers: one JSON or YAML document on stdout with `-o json|yaml`, human text
//! otherwise; progress
//! bars only when stderr is a terminal, plain lines when it is not.

use std::io::IsTerminal;

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
    fn bytes_are_human() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
