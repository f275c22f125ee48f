//! Atomic edits of the desired-state file: read, change one entry, write a temporary file,
//! fsync, rename over the file, fsync the directory. The file stays the one source of truth:
//! the socket API edits it and the reload path applies it like any hand edit.
//!
//! Edits are serialised by a mutex within the process and by an `flock` on a sibling lock
//! file (`<file>.lock`) across processes, so two editors never lose each other's change. A
//! file that does not parse is never overwritten: the edit is refused, and the operator's
//! text stays as it is.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::Flock;

use super::Error;
use super::models::{self, Desired, Document, ModelEntry, NamedModel};
use crate::fsx;

// The models file and its lock file are 0644, like the cache's small files: the agent runs as
// root; operators read them.
use fsx::FILE_MODE;

/// Serialises edits within this process; the flock serialises processes.
static EDITS: Mutex<()> = Mutex::new(());

/// The desired-state file at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsFile {
    path: PathBuf,
}

/// What [`ModelsFile::put_model`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The entry as written, with its name.
    pub model: NamedModel,
    /// Whether the model was new (else an entry of the same name was replaced).
    pub created: bool,
}

impl ModelsFile {
    /// The file at `path` (it need not exist).
    pub fn new(path: impl Into<PathBuf>) -> ModelsFile {
        ModelsFile { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the file; `None` when it does not exist.
    pub fn load(&self) -> Result<Option<Desired>, Error> {
        match self.read_document()? {
            Some(doc) => Desired::from_document(&self.path, doc).map(Some),
            None => Ok(None),
        }
    }

    /// Adds `entry`, or replaces the entry with the same name in place; other entries stay as
    /// they are. Refused when the entry is invalid or the file does not parse.
    pub fn put_model(&self, entry: ModelEntry) -> Result<Put, Error> {
        let name = entry.validate().map_err(Error::Entry)?;
        self.edit(|doc| {
            let existing = doc
                .models
                .iter()
                .position(|m| m.validate().is_ok_and(|n| n == name));
            let created = match existing {
                Some(i) => {
                    doc.models[i] = entry.clone();
                    false
                }
                None => {
                    doc.models.push(entry.clone());
                    true
                }
            };
            Ok(Put {
                model: NamedModel {
                    name: name.clone(),
                    model: entry.clone(),
                },
                created,
            })
        })
    }

    /// Removes the entry named `key` (its name or its repo id) and returns it; other entries
    /// stay as they are. [`Error::NotFound`] when no entry matches.
    pub fn remove_model(&self, key: &str) -> Result<NamedModel, Error> {
        self.edit(|doc| {
            let found = doc.models.iter().enumerate().find_map(|(i, m)| {
                let name = m.validate().ok()?;
                m.matches(&name, key).then_some((i, name))
            });
            let Some((i, name)) = found else {
                return Err(Error::NotFound(key.to_string()));
            };
            let model = doc.models.remove(i);
            Ok(NamedModel { name, model })
        })
    }

    /// Runs `change` on the parsed file under both locks and writes the result atomically
    /// when `change` succeeds.
    fn edit<T>(&self, change: impl FnOnce(&mut Document) -> Result<T, Error>) -> Result<T, Error> {
        let _serial = EDITS.lock().unwrap_or_else(PoisonError::into_inner);
        let _lock = self.lock()?;
        let mut doc = self.read_document()?.unwrap_or_default();
        // A file whose entries are already invalid is the operator's to fix, not ours to
        // rewrite (the write would drop nothing, but the reload would keep refusing it).
        Desired::from_document(&self.path, doc.clone())?;
        let out = change(&mut doc)?;
        Desired::from_document(&self.path, doc.clone())?;
        let text = models::render(&doc).map_err(|reason| Error::Invalid {
            path: self.path.clone(),
            reason,
        })?;
        let (dir, name) = self.dir_and_name()?;
        fsx::write_atomic(&dir, &name, text.as_bytes(), FILE_MODE).map_err(|e| Error::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    fn read_document(&self) -> Result<Option<Document>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    path: self.path.clone(),
                    reason: format!("read: {e}"),
                });
            }
        };
        models::parse_document(&self.path, &text).map(Some)
    }

    fn dir_and_name(&self) -> Result<(PathBuf, String), Error> {
        let name = self.path.file_name().and_then(|n| n.to_str());
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        match (dir, name) {
            (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_string())),
            (None, Some(name)) => Ok((PathBuf::from("."), name.to_string())),
            _ => Err(Error::Io {
                path: self.path.clone(),
                reason: "not a file path".into(),
            }),
        }
    }

    /// Takes the exclusive flock on `<file>.lock` (created 0644 when absent, never removed:
    /// removing a lock file races with the next locker).
    fn lock(&self) -> Result<Flock<File>, Error> {
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                reason: format!("create directory: {e}"),
            })?;
        }
        fsx::lock_exclusive(&lock_path).map_err(|e| Error::Io {
            path: lock_path,
            reason: format!("lock: {e}"),
        })
    }
}
