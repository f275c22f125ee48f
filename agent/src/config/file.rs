//! The `--config` file read into [`FileConfig`], and why a configuration is refused.

use std::path::{Path, PathBuf};

use super::FileConfig;

/// Why the configuration was refused (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file cannot be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for our settings.
    #[error("config file {path}: {reason}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong, on one line.
        reason: String,
    },
    /// A setting has a value we refuse.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// Flag name.
        setting: &'static str,
        /// What is wrong, on one line, for people.
        reason: String,
    },
}

impl Error {
    /// Stable label for metrics and JSON output.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "config_read",
            Error::Parse { .. } => "config_parse",
            Error::Invalid { .. } => "config_invalid",
        }
    }
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        // toml's messages span lines (a source excerpt); keep the first for a one-line error.
        reason: e.message().lines().next().unwrap_or("invalid").to_string()
            + &e.span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default(),
    })
}
