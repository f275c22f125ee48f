//! The images the agent pinned, kept in the state directory so that an image a ColdModel no
//! longer wants is unpinned even when the agent restarted in between.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::fsx::{self, Error};

const FILE: &str = "pinned-images.json";

/// The set of image references we pinned (or are pulling to pin).
#[derive(Debug)]
pub(super) struct ManagedImages {
    dir: PathBuf,
    refs: BTreeSet<String>,
    dirty: bool,
}

impl ManagedImages {
    /// Reads the list from `state_dir` (empty when absent).
    pub(super) fn load(state_dir: &Path) -> Result<ManagedImages, Error> {
        let path = state_dir.join(FILE);
        let refs = match fsx::read_optional(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::io("parse", &path, std::io::Error::other(e)))?,
            None => BTreeSet::new(),
        };
        Ok(ManagedImages {
            dir: state_dir.to_path_buf(),
            refs,
            dirty: false,
        })
    }

    pub(super) fn refs(&self) -> &BTreeSet<String> {
        &self.refs
    }

    pub(super) fn add(&mut self, image: &str) {
        self.dirty |= self.refs.insert(image.to_string());
    }

    pub(super) fn remove(&mut self, image: &str) {
        self.dirty |= self.refs.remove(image);
    }

    /// Writes the list atomically when it changed, on the blocking pool (it fsyncs).
    pub(super) async fn save(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.refs)
            .map_err(|e| Error::io("encode", &self.dir, std::io::Error::other(e)))?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || fsx::write_atomic(&dir, FILE, &bytes, 0o644))
            .await
            .map_err(|e| Error::io("write", self.dir.join(FILE), std::io::Error::other(e)))??;
        self.dirty = false;
        Ok(())
    }
}
