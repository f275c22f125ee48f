//! The status file of standalone mode: the node's [`ColdNodeStatus`] as JSON in
//! `<state dir>/status.json`, replaced atomically (temporary file, fsync, rename), written when
//! it changed (timestamps aside) or at least every `refresh` so readers can tell it is live.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::ColdNodeStatus;
use crate::fsx::{self, Error};

/// Name of the status file in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// Writes the status file.
#[derive(Debug)]
pub struct StatusFile {
    dir: PathBuf,
    refresh: Duration,
    last: Option<(ColdNodeStatus, Instant)>,
}

impl StatusFile {
    /// A writer into `dir`, rewriting an unchanged status every `refresh`.
    pub fn new(dir: impl Into<PathBuf>, refresh: Duration) -> StatusFile {
        StatusFile {
            dir: dir.into(),
            refresh,
            last: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATUS_FILE)
    }

    /// Writes `status` unless it equals the last one written (ignoring `updatedAt`) less than
    /// `refresh` ago, on the blocking pool (it fsyncs). Returns whether it wrote.
    pub async fn write(&mut self, status: &ColdNodeStatus) -> Result<bool, Error> {
        let mut bare = status.clone();
        bare.updated_at = None;
        if let Some((last, at)) = &self.last
            && *last == bare
            && at.elapsed() < self.refresh
        {
            return Ok(false);
        }
        let (dir, doc) = (self.dir.clone(), status.clone());
        tokio::task::spawn_blocking(move || write_json(&dir, &doc))
            .await
            .map_err(|e| Error::io("write", self.path(), std::io::Error::other(e)))??;
        self.last = Some((bare, Instant::now()));
        Ok(true)
    }
}

fn write_json(dir: &Path, status: &ColdNodeStatus) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
    let mut bytes = serde_json::to_vec_pretty(status)
        .map_err(|e| Error::io("encode status", dir, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    fsx::write_atomic(dir, STATUS_FILE, &bytes, 0o644)?;
    Ok(())
}
